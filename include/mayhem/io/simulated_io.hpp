// The reference's mocked I/O calls, simulated: each operation of a message (save, restart,
// cleanup) waits a random latency (up to --latency-scale seconds; a restart retry adds
// --restart-backoff x 2^(attempt-1), scaled) and fails with probability --fail-rate (cleanup never
// fails). The draws are pure functions of (message seed, operation, attempt), so a --seed
// reproduces a run bit for bit. `submit` hands a batch of operations to an IoService with their
// drawn delays; the zero-delay ones come back to the caller, when the IoService allows it
// (IoService::zero_delay_inline), to be completed inline without a task hop.
// Use: `SimulatedIo sim(opts, io, batches, observer); Batch* now = sim.submit(Op::kRestart, msgs,
// n); if (now) complete(now);` and `sim.fails(m, Op::kRestart, attempt)` when one completes. The
// pipeline submits restarts and cleanups through it, the memory store (store.hpp) its saves.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mayhem/clock.hpp"
#include "mayhem/io/io_service.hpp"
#include "mayhem/message.hpp"
#include "mayhem/options.hpp"
#include "mayhem/rng.hpp"
#include "mayhem/stage.hpp"

namespace mayhem {

class Observer;

class SimulatedIo {
 public:
  // The longest delay one operation can draw: --latency-scale x (1 + the last retry's backoff);
  // the timing wheel of the async I/O model is sized from it.
  static Nanos max_delay(const Options& opts);
  SimulatedIo(const Options& opts, IoService& io, BatchPool& batches, Observer* observer = nullptr)
      : io_(io),
        batches_(batches),
        observer_(observer),
        scale_(opts.latency_scale),
        backoff_(opts.restart_backoff),
        fail_rate_(opts.fail_rate),
        inline_zero_(io.zero_delay_inline()) {}

  // The latency of `m`'s operation `op`; a restart's includes the backoff for the message's
  // current attempt (m.restart_attempts).
  Nanos delay(const Message& m, Op op) const {
    if (scale_ == 0) return 0;  // before touching the message: at zero latency it may be cold
    const std::uint32_t attempt = op == Op::kRestart ? m.restart_attempts : 0;
    const auto key =
        static_cast<std::uint64_t>(op_index(op)) * 64 + static_cast<std::uint64_t>(attempt) * 2;
    double s = to_unit(mix(m.seed, key)) * scale_;
    // backoff x 2^(attempt-1) x scale, without a shift (UB from 32 attempts on): ldexp scales
    // exactly and saturates to inf, which seconds_to_nanos turns into kForever.
    if (op == Op::kRestart && attempt > 0)
      s += std::ldexp(backoff_ * scale_,
                      static_cast<int>(std::min<std::uint32_t>(attempt - 1, 4096)));
    return seconds_to_nanos(s);
  }

  // Whether attempt `attempt` of `m`'s operation `op` fails (--fail-rate; cleanup never fails).
  bool fails(const Message& m, Op op, std::uint32_t attempt) const {
    if (op == Op::kCleanup) return false;
    const auto key =
        static_cast<std::uint64_t>(op_index(op)) * 64 + static_cast<std::uint64_t>(attempt) * 2 + 1;
    return to_unit(mix(m.seed, key)) < fail_rate_;
  }

  // Every operation completes at once, inline (zero latency, an IoService that allows it):
  // submit() would hand back a copy of its whole input.
  bool completes_now() const { return scale_ == 0 && inline_zero_; }

  // Starts `n` operations `op`, each completing after its delay through the IoService's sink.
  // Returns the zero-delay ones in a batch (from the pool) when the caller may complete them
  // inline; null when there are none.
  Batch* submit(Op op, Message* const* msgs, std::uint32_t n);

 private:
  IoService& io_;
  BatchPool& batches_;
  Observer* observer_;
  const double scale_;
  const double backoff_;
  const double fail_rate_;
  const bool inline_zero_;
};

}  // namespace mayhem
