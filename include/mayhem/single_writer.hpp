// The single-writer counter bump: a counter that one thread writes and any thread may read is
// advanced with a relaxed load and a relaxed store, no read-modify-write (no locked instruction,
// no cache line taken exclusively by a reader's RMW). Readers see every value whole, possibly a
// little stale. Only correct while one thread at a time writes the counter: for shared counters use
// fetch_add (mayhem::Counter in metrics.hpp).
// Use: `single_writer_add(slot.calls, 1);` (the owning thread); `slot.calls.load(relaxed)` (readers).
#pragma once

#include <atomic>
#include <cstdint>

namespace mayhem {

// always_inline: its callers (Histogram::record, the stage collector, the profiler) compile as they
// did with the load and store written in place.
[[gnu::always_inline]] inline void single_writer_add(std::atomic<std::uint64_t>& counter,
                                                     std::uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace mayhem
