#include "mayhem/flags.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace mayhem {

namespace {

constexpr double kDay = 86400;
// Counts go up to 2^53: every one of them is exact as a double (JSON, the summary's numbers).
constexpr std::uint64_t kCountMax = std::uint64_t{1} << 53;

constexpr FlagRange real(const char* flag, double lo, double hi, const char* unit = "",
                         bool lo_open = false) {
  return {flag, false, lo, hi, lo_open, 0, 0, unit};
}
constexpr FlagRange above_zero(const char* flag, double hi, const char* unit = "") {
  return real(flag, 0, hi, unit, true);
}
constexpr FlagRange count(const char* flag, std::uint64_t lo, std::uint64_t hi,
                          const char* unit = "") {
  return {flag, true, 0, 0, false, lo, hi, unit};
}

// The one table (every row a flag of one or more of mayhem, mayhem publish, mayhem top, mayhem
// profile). Durations are at most a day: every seconds -> nanoseconds conversion of them
// (and of the products the service makes of them) stays far inside int64 (clock.hpp saturates
// beyond that anyway).
constexpr auto kRanges = std::to_array<FlagRange>({
    // mayhem (src/cli/run.cpp); --messages, --rate, --seed, --stream-replicas and --nats-wait are
    // also `mayhem publish`'s
    count("--messages", 0, kCountMax),
    real("--publish-interval", 0, kDay, "seconds"),
    real("--rate", 0, 1e9, "msgs/s"),
    count("--seed", 0, std::numeric_limits<std::uint64_t>::max()),
    real("--latency-scale", 0, kDay, "seconds"),
    real("--fail-rate", 0, 1),
    count("--restart-retries", 0, 16),
    real("--restart-backoff", 0, 1000, "x --latency-scale"),
    count("--io-threads", 1, 4096),
    real("--store-retry-for", 0, kDay, "seconds"),
    count("--store-group-commit", 0, 1),
    above_zero("--extend-interval", kDay, "seconds"),
    above_zero("--ack-deadline", kDay, "seconds"),
    count("--max-in-flight", 1, kCountMax),
    count("--queue-capacity", 1, kCountMax),
    count("--batch-size", 1, 128),
    count("--threads", 1, 1024),
    count("--save-concurrency", 0, 4096),
    count("--restart-concurrency", 0, 4096),
    // spdlog's async queue allocates every slot up front
    count("--log-queue", 1, 1 << 20, "lines"),
    count("--log-buffer", 0, 64 << 20, "bytes"),
    above_zero("--shutdown-timeout", kDay, "seconds"),
    above_zero("--trace-sample", 1),
    real("--slow-task-ms", 0, kDay * 1000, "ms"),
    count("--stream-replicas", 1, 5),
    real("--nats-wait", 0, 3600, "seconds"),
    // mayhem publish only (src/cli/publish.cpp)
    count("--max-pending", 1, 1'000'000),
    count("--malformed", 0, kCountMax),
    above_zero("--timeout", kDay, "seconds"),
    // mayhem top only (src/cli/top.cpp)
    real("--interval", 0.05, 3600, "seconds"),
    // mayhem profile only (src/cli/profile.cpp; the endpoint's own bounds: observe/capture.hpp)
    count("--seconds", 1, 300, "seconds"),
    above_zero("--sample", 1),
});

std::string trimmed(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

}  // namespace

std::span<const FlagRange> flag_ranges() {
  return kRanges;
}

const FlagRange& flag_range(std::string_view flag) {
  for (const auto& r : kRanges)
    if (flag == r.flag) return r;
  throw std::logic_error(fmt::format("no range for {} in src/flags.cpp", flag));
}

std::string describe(const FlagRange& r) {
  std::string s = r.integer ? fmt::format("[{}, {}]", r.ilo, r.ihi)
                            : fmt::format("{}{}, {}]", r.lo_open ? "(" : "[", r.lo, r.hi);
  if (*r.unit) s += std::string(" ") + r.unit;
  return s;
}

std::optional<std::string> check_number(const FlagRange& r, const std::string& raw,
                                        double* real_out, std::uint64_t* int_out) {
  const std::string text = trimmed(raw);
  const char* kind = r.integer ? "a whole number" : "a finite number";
  const auto within = [&] {
    return fmt::format("must be {} within {} (got '{}')", kind, describe(r), raw);
  };
  if (text.empty())
    return fmt::format("needs a value: {} within {} (got an empty one)", kind, describe(r));
  if (r.integer) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc::result_out_of_range) return within();
    if (ec != std::errc() || end != text.data() + text.size() || v < r.ilo || v > r.ihi)
      return within();
    if (int_out) *int_out = v;
    return std::nullopt;
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return within();
  if (check_value(r, v)) return within();
  if (real_out) *real_out = v;
  return std::nullopt;
}

std::optional<std::string> check_value(const FlagRange& r, double v) {
  const bool ok = r.integer ? v >= static_cast<double>(r.ilo) && v <= static_cast<double>(r.ihi)
                            : std::isfinite(v) && (r.lo_open ? v > r.lo : v >= r.lo) && v <= r.hi;
  if (ok) return std::nullopt;
  return fmt::format("must be {} within {} (got {})",
                     r.integer ? "a whole number" : "a finite number", describe(r), v);
}

}  // namespace mayhem
