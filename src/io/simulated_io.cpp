// SimulatedIo::submit (see simulated_io.hpp): draws each operation's delay, keeps the zero-delay
// ones for the caller when the IoService allows it, and hands the rest to the IoService in one call.
#include "mayhem/io/simulated_io.hpp"

#include "mayhem/observe/zone.hpp"

namespace mayhem {

Batch* SimulatedIo::submit(Op op, Message* const* msgs, std::uint32_t n) {
  Batch* now_batch = nullptr;
  Message* later[kBatchCapacity];
  Nanos delays[kBatchCapacity];
  std::uint32_t nl = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    Message* m = msgs[i];
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
