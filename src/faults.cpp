#include "mayhem/faults.hpp"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <thread>

#include "mayhem/rng.hpp"

namespace mayhem {

const char* to_string(FaultKind k) {
  switch (k) {
    case FaultKind::kError:
      return "error";
    case FaultKind::kCrash:
      return "crash";
    case FaultKind::kHang:
      return "hang";
  }
  return "?";
}

namespace {

// Outside input is echoed back in error messages: keep it short and printable.
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) out += "...";
  return out;
}

template <std::size_t N>
std::optional<FaultKind> lookup(std::string_view name, const FaultKind (&all)[N]) {
  for (FaultKind e : all)
    if (name == to_string(e)) return e;
  return std::nullopt;
}

// The stage `--inject` calls `name` (StageInfo::inject).
std::optional<Stage> inject_stage(std::string_view name) {
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i)
    if (kStageInfo[i].inject && name == kStageInfo[i].inject) return static_cast<Stage>(i);
  return std::nullopt;
}

// Where fault `kind` of `stage` hits message `seed`, attempt `attempt`.
bool hits(const FaultSpec& f, std::uint64_t seed, std::uint32_t attempt) {
  const auto key = 0xFA170000ULL + static_cast<std::uint64_t>(op_index(f.stage)) * 8 +
                   static_cast<std::uint64_t>(f.kind);
  const std::uint64_t h = attempt == 0 ? mix(seed, key) : mix(mix(seed, key), attempt);
  return to_unit(h) < f.probability;
}

[[noreturn]] void hang_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace

std::optional<FaultSpec> parse_fault(std::string_view text, std::string& error) {
  const auto a = text.find(':');
  const auto b = a == std::string_view::npos ? a : text.find(':', a + 1);
  if (b == std::string_view::npos) {
    error = fmt::format("--inject wants STAGE:FAULT:PROBABILITY (got '{}')", shown(text));
    return std::nullopt;
  }
  const std::string_view stage = text.substr(0, a), fault = text.substr(a + 1, b - a - 1),
                         prob = text.substr(b + 1);
  FaultSpec spec{};
  static constexpr FaultKind kKinds[] = {FaultKind::kError, FaultKind::kCrash, FaultKind::kHang};
  if (auto s = inject_stage(stage)) {
    spec.stage = *s;
  } else {
    error =
        fmt::format("--inject: unknown stage '{}' (save, restart, cleanup, timer)", shown(stage));
    return std::nullopt;
  }
  if (auto k = lookup(fault, kKinds)) {
    spec.kind = *k;
  } else {
    error = fmt::format("--inject: unknown fault '{}' (error, crash, hang)", shown(fault));
    return std::nullopt;
  }
  // from_chars: no locale, no exceptions, no leading whitespace or '+', the whole text or nothing.
  const auto [end, ec] = std::from_chars(prob.data(), prob.data() + prob.size(), spec.probability);
  if (prob.empty() || ec != std::errc() || end != prob.data() + prob.size()) {
    error = fmt::format("--inject: probability '{}' is not a number", shown(prob));
    return std::nullopt;
  }
  if (!(spec.probability >= 0 && spec.probability <= 1)) {
    error = fmt::format("--inject: probability must be within [0, 1] (got {})", shown(prob));
    return std::nullopt;
  }
  return spec;
}

std::function<void(Op, const Message&)> make_fault_hook(std::vector<FaultSpec> specs,
                                                        std::shared_ptr<spdlog::logger> log) {
  std::erase_if(specs, [](const FaultSpec& f) { return f.stage == Stage::kLease; });
  if (specs.empty()) return {};
  return [specs = std::move(specs), log = std::move(log)](Op op, const Message& m) {
    for (const FaultSpec& f : specs) {
      if (f.stage != op || !hits(f, m.seed, 0)) continue;
      switch (f.kind) {
        case FaultKind::kError:
          throw InjectedIoError(fmt::format("injected {} error for {}", to_string(op), m));
        case FaultKind::kCrash:
          throw std::runtime_error(fmt::format("injected crash in {} for {}", to_string(op), m));
        case FaultKind::kHang:
          if (log) log->warn("Injecting a hang into {} for {}", to_string(op), m);
          hang_forever();
      }
    }
  };
}

TimerFaultHook make_timer_fault_hook(std::vector<FaultSpec> specs,
                                     std::shared_ptr<spdlog::logger> log) {
  std::erase_if(specs, [](const FaultSpec& f) { return f.stage != Stage::kLease; });
  if (specs.empty()) return {};
  return [specs = std::move(specs), log = std::move(log)](const Message& m, std::uint32_t attempt) {
    bool failed = false;
    for (const FaultSpec& f : specs) {
      if (!hits(f, m.seed, attempt)) continue;
      switch (f.kind) {
        case FaultKind::kError:
          failed = true;
          break;
        case FaultKind::kCrash:
          throw std::runtime_error(fmt::format("injected crash in timer for {}", m));
        case FaultKind::kHang:
          if (log) log->warn("Injecting a hang into timer for {}", m);
          hang_forever();
      }
    }
    return failed;
  };
}

}  // namespace mayhem
