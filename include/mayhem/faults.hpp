// Fault injection from the command line (`--inject STAGE:FAULT:PROBABILITY`, repeatable): proves
// the service's promises under failure. Stages: save, restart, cleanup. Faults: `error` (an
// expected I/O failure, handled per message like the reference's failures: a failed save, a failed
// restart attempt, a cleanup that cannot ack so the message is nacked), `crash` (an unexpected
// exception: the global handler shuts down gracefully, exit status 1), `hang` (the stage never
// returns; shutdown gives up after --shutdown-timeout). Whether a message is hit is a pure function
// of its seed, so runs are reproducible.
// Use: `auto specs = parse_faults({"save:crash:0.01"}); Service::Deps d; d.fault =
// make_fault_hook(specs);`
#pragma once

#include <spdlog/logger.h>

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mayhem/io/io_service.hpp"
#include "mayhem/message.hpp"

namespace mayhem {

enum class FaultKind { kError, kCrash, kHang };

struct FaultSpec {
  Op op;
  FaultKind kind;
  double probability;
};

// Thrown by an `error` fault: the stage treats it as its operation failing.
struct InjectedIoError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses one "STAGE:FAULT:PROBABILITY"; nullopt (and `error` filled) when malformed.
std::optional<FaultSpec> parse_fault(const std::string& text, std::string& error);
// The hook the pipeline calls inside each message's guard; empty when there are no specs. A hang
// is announced on `log` (WARNING) before it starts, so it can be told from a slow stage.
std::function<void(Op, const Message&)> make_fault_hook(std::vector<FaultSpec> specs,
                                                        std::shared_ptr<spdlog::logger> log = {});

}  // namespace mayhem
