// SimulatedIo::submit (see simulated_io.hpp): draws each operation's delay, keeps the zero-delay
// ones for the caller when the IoService allows it, and hands the rest to the IoService in one call.
#include "mayhem/io/simulated_io.hpp"

#include <algorithm>
#include <cmath>

#include "mayhem/observe/zone.hpp"

namespace mayhem {

Nanos SimulatedIo::max_delay(const Options& opts) {
  // backoff x 2^(retries-1) without a shift (UB from 32 retries on); inf saturates below.
  const double max_backoff =
      opts.restart_retries == 0
          ? 0
          : std::ldexp(opts.restart_backoff,
                       static_cast<int>(std::min<std::uint32_t>(opts.restart_retries - 1, 4096)));
  return seconds_to_nanos(opts.latency_scale * (1.0 + max_backoff));
}

Batch* SimulatedIo::submit(Op op, Message* const* msgs, std::uint32_t n) {
  if (completes_now()) {
    // Zero latency: every operation completes now, without a look at its message.
    if (n == 0) return nullptr;
    Batch* all = acquire_batch(batches_);
    std::copy_n(msgs, n, all->msgs);
    all->size = n;
    return all;
  }
  Batch* now_batch = nullptr;
  Message* later[kBatchCapacity];
  Nanos delays[kBatchCapacity];
  std::uint32_t nl = 0;
  // The delay reads the message's seed (its state line): cold for a restart retry, on the other
  // core's cache for a cleanup whose gather completed there.
  const bool reads = scale_ != 0;
  if (reads) prefetch_ahead(msgs, n);
  for (std::uint32_t i = 0; i < n; ++i) {
    Message* m = msgs[i];
    if (reads && i + kPrefetchAhead < n) prefetch_state(msgs[i + kPrefetchAhead]);
    const Nanos d = delay(*m, op);
    if (d == 0 && inline_zero_) {
      if (!now_batch) now_batch = acquire_batch(batches_);
      now_batch->push(m);
    } else {
      later[nl] = m;
      delays[nl++] = d;
    }
  }
  if (nl != 0) MAYHEM_ZONED(observer_, io_.submit(op, later, delays, nl));  // n = 0: a no-op
  return now_batch;
}

}  // namespace mayhem
