#include "mayhem/faults.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "mayhem/rng.hpp"

namespace mayhem {

std::optional<FaultSpec> parse_fault(const std::string& text, std::string& error) {
  const auto a = text.find(':');
  const auto b = a == std::string::npos ? a : text.find(':', a + 1);
  if (b == std::string::npos) {
    error = fmt::format("--inject wants STAGE:FAULT:PROBABILITY (got '{}')", text);
    return std::nullopt;
  }
  const std::string stage = text.substr(0, a), fault = text.substr(a + 1, b - a - 1),
                    prob = text.substr(b + 1);
  FaultSpec spec{};
  if (stage == "save")
    spec.op = Op::kSave;
  else if (stage == "restart")
    spec.op = Op::kRestart;
  else if (stage == "cleanup")
    spec.op = Op::kCleanup;
  else {
    error = fmt::format("--inject: unknown stage '{}' (save, restart, cleanup)", stage);
    return std::nullopt;
  }
  if (fault == "error")
    spec.kind = FaultKind::kError;
  else if (fault == "crash")
    spec.kind = FaultKind::kCrash;
  else if (fault == "hang")
    spec.kind = FaultKind::kHang;
  else {
    error = fmt::format("--inject: unknown fault '{}' (error, crash, hang)", fault);
    return std::nullopt;
  }
  try {
    std::size_t used = 0;
    spec.probability = std::stod(prob, &used);
    if (used != prob.size()) throw std::invalid_argument(prob);
  } catch (const std::exception&) {
    error = fmt::format("--inject: probability '{}' is not a number", prob);
    return std::nullopt;
  }
  if (!(spec.probability >= 0 && spec.probability <= 1)) {
    error = fmt::format("--inject: probability must be within [0, 1] (got {})", prob);
    return std::nullopt;
  }
  return spec;
}

std::function<void(Op, const Message&)> make_fault_hook(std::vector<FaultSpec> specs,
                                                        std::shared_ptr<spdlog::logger> log) {
  if (specs.empty()) return {};
  return [specs = std::move(specs), log = std::move(log)](Op op, const Message& m) {
    for (const FaultSpec& f : specs) {
      if (f.op != op) continue;
      const auto key =
          0xFA170000ULL + static_cast<std::uint64_t>(op) * 8 + static_cast<std::uint64_t>(f.kind);
      if (!(to_unit(mix(m.seed, key)) < f.probability)) continue;
      switch (f.kind) {
        case FaultKind::kError:
          throw InjectedIoError(fmt::format("injected {} error for {}", to_string(op), m));
        case FaultKind::kCrash:
          throw std::runtime_error(fmt::format("injected crash in {} for {}", to_string(op), m));
        case FaultKind::kHang:
          if (log) log->warn("Injecting a hang into {} for {}", to_string(op), m);
          for (;;) std::this_thread::sleep_for(std::chrono::hours(1));  // never returns
      }
    }
  };
}

}  // namespace mayhem
