// Simulated I/O, behind one interface so the pipeline does not care how waiting is done.
// `AsyncIo` completes operations from one timing-wheel thread (no thread held per call);
// `BlockingIo` runs each call on a pool thread that really blocks. Completions come back in
// batches through the sink given to `start`, which the pipeline wires to its async_node gateways.
// Operations are stages (`Op`, mayhem/stage.hpp): kSave, kRestart, kCleanup.
// Use: `io.start(sink); io.submit(Op::kSave, msgs, delays, n); ... io.cancel_all();`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "mayhem/clock.hpp"
#include "mayhem/message.hpp"
#include "mayhem/options.hpp"
#include "mayhem/stage.hpp"

namespace mayhem {

// Receives a batch of completed operations (batch->cancelled says whether they were cancelled).
// The sink takes ownership of the batch. Called from I/O threads, or inline from `submit`.
using IoSink = std::function<void(Op, Batch*)>;

class IoService {
 public:
  virtual ~IoService() = default;
  virtual void start(IoSink sink) = 0;
  // Starts `n` operations; operation i completes `delays[i]` ns from now.
  virtual void submit(Op op, Message* const* msgs, const Nanos* delays, std::size_t n) = 0;
  // Completes everything pending as cancelled, now; later submissions complete at once as
  // cancelled. Stops the service's threads. Idempotent.
  virtual void cancel_all() = 0;
  virtual std::size_t pending() const = 0;
  // True when a zero delay may be completed by the caller without going through the service.
  virtual bool zero_delay_inline() const = 0;
};

std::unique_ptr<IoService> make_async_io(BatchPool& batches, const Clock& clock, Nanos max_delay);
std::unique_ptr<IoService> make_blocking_io(BatchPool& batches, std::uint32_t threads);

}  // namespace mayhem
