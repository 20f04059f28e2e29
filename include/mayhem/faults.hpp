// Fault injection from the command line (`--inject STAGE:FAULT:PROBABILITY`, repeatable): proves
// the service's promises under failure. Stages: save, restart, cleanup (the pipeline's I/O stages)
// and timer (the lease thread's deadline extensions). Faults: `error` (an expected failure, handled
// per message like the reference's failures: a failed save, a failed restart attempt, a cleanup
// that cannot ack so the message is nacked, an extension that fails and is retried on the lease
// thread's next pass), `crash` (an unexpected exception: the global handler shuts down gracefully,
// exit status 1), `hang` (the stage never returns; shutdown gives up after --shutdown-timeout).
// Whether a message is hit is a pure function of its seed (and, for the timer, of the extension
// attempt), so runs are reproducible.
// Use: `std::string err; auto spec = parse_fault("save:crash:0.01", err);` (nullopt: `err` says
// why), then `Service::Deps d; d.fault = make_fault_hook({*spec}, log); d.timer_fault =
// make_timer_fault_hook({*spec}, log);`
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "mayhem/io/io_service.hpp"
#include "mayhem/message.hpp"
#include "mayhem/stage.hpp"

namespace mayhem {

enum class FaultKind : std::uint8_t { kError, kCrash, kHang };

const char* to_string(FaultKind k);

struct FaultSpec {
  // Stage::kSave, kRestart, kCleanup or kLease (`timer` on the command line: StageInfo::inject).
  Stage stage;
  FaultKind kind;
  double probability;
};

// Thrown by an `error` fault in a pipeline stage: the stage treats it as its operation failing.
struct InjectedIoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses one "STAGE:FAULT:PROBABILITY"; nullopt (and `error` filled with one line naming the
// problem) when malformed. Never throws, whatever the input (it is fuzzed: fuzz/fuzz_inject.cpp).
std::optional<FaultSpec> parse_fault(std::string_view text, std::string& error);

// The hook the pipeline calls inside each message's guard (save, restart, cleanup specs); empty
// when there are none. A hang is announced on `log` (WARNING) before it starts, so it can be told
// from a slow stage.
std::function<void(Op, const Message&)> make_fault_hook(std::vector<FaultSpec> specs,
                                                        std::shared_ptr<spdlog::logger> log = {});

// The lease thread's hook (timer specs; empty when there are none), called before the
// `attempt`-th extension of `m` (attempts count from 0 per message). Returns true when this
// extension fails (an expected error); throws std::runtime_error for `crash`; never returns for
// `hang` (announced on `log` first).
using TimerFaultHook = std::function<bool(const Message& m, std::uint32_t attempt)>;
TimerFaultHook make_timer_fault_hook(std::vector<FaultSpec> specs,
                                     std::shared_ptr<spdlog::logger> log = {});

}  // namespace mayhem
