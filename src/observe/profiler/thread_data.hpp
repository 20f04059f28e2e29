// Private to the profiler (src/observe/profiler/): the per-thread slot that the collector writes
// and the readers merge (snapshot, watchdog, trace writer), with the stage/zone node numbering, the
// trace event log and the single-writer counters. Not a public header: include it from the
// profiler's .cpp files only.
// Use: `const Profiler::ThreadData& t = ...; t.cells[parent][node].calls.load(...)`.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/message.hpp"
#include "mayhem/observe/profiler.hpp"
#include "mayhem/single_writer.hpp"

namespace mayhem::profiler_detail {

// Nodes: the stages, then the zones; a frame's parent is a node or the root.
inline constexpr int kStages = static_cast<int>(Stage::kCount);
inline constexpr int kNodes = kStages + kMaxZones;
inline constexpr int kRoot = kNodes;  // the parent of an outermost frame
inline constexpr int kMaxDepth = 16;
inline constexpr int kWaits = 4;  // pub/sub queue, save I/O, restart I/O, cleanup I/O
inline constexpr const char* kWaitNames[kWaits] = {"pub/sub queue", "save I/O", "restart I/O",
                                                   "cleanup I/O"};
inline constexpr std::uint64_t kSampleSalt = 0x7ACE5A3B1EULL;
// Sampling: a message's pool slot index is its address >> kSlotShift; in every window of
// kWindow consecutive slots (one pool slab), the first `threshold_` are sampled.
inline constexpr int kSlotShift = std::bit_width(sizeof(Message)) - 1;
inline constexpr std::uint32_t kWindow = 1024;

// Single-writer counters: the owning thread bumps them with single_writer_add (no RMW), readers
// load.
using U64 = std::atomic<std::uint64_t>;

// Per stage: which I/O op it submits (0 save, 1 restart, 2 cleanup) or completes (3 + op); -1
// neither (from the stage table, mayhem/stage.hpp).
inline constexpr auto kIoSlot = [] {
  std::array<std::int8_t, kStages> slot{};
  for (int s = 0; s < kStages; ++s) {
    const StageInfo& i = kStageInfo[s];
    const bool io = i.op >= 0 && i.op < kOpCount;
    slot[s] = static_cast<std::int8_t>(io ? i.op : i.completes >= 0 ? kOpCount + i.completes : -1);
  }
  return slot;
}();
static_assert(kIoSlot[static_cast<int>(Stage::kSaved)] == 3 &&
              kIoSlot[static_cast<int>(Stage::kLease)] == -1);

struct TraceEvent {
  // Slices, I/O and counters are timed in ticks; queue spans (from a message's publish time) in
  // nanoseconds. Both relative to the profiler's start; converted when written.
  enum Kind : std::uint8_t { kSlice, kIoBegin, kIoEnd, kQueueSpan, kCounter };
  std::int64_t ts = 0;
  std::int64_t dur = 0;  // slices and spans; counters: the value
  std::uint32_t items = 0;
  Kind kind = kSlice;
  std::uint8_t node = 0;  // stage (slices), op (I/O), counter index
  std::uint8_t nseq = 0;  // sampled messages in a slice (seqs holds the first three)
  std::uint64_t seqs[3] = {};
};

// Append-only event log of one thread, in chunks (no reallocation of events already written; one
// allocation per 4096 events), holding at most `cap` events (0: no limit; the rest are counted).
class TraceLog {
 public:
  static constexpr std::size_t kChunk = 4096;
  void set_cap(std::size_t cap) { cap_ = cap; }
  std::size_t dropped() const { return dropped_; }
  void push(const TraceEvent& e) {
    if (cap_ != 0 && kept_ == cap_) [[unlikely]] {
      ++dropped_;
      return;
    }
    ++kept_;
    if (used_ == kChunk || chunks_.empty()) {
      chunks_.push_back(std::make_unique_for_overwrite<TraceEvent[]>(kChunk));
      used_ = 0;
    }
    chunks_.back()[used_++] = e;
  }
  template <typename F>
  void each(F f) const {
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      const std::size_t n = c + 1 == chunks_.size() ? used_ : kChunk;
      for (std::size_t i = 0; i < n; ++i) f(chunks_[c][i]);
    }
  }

 private:
  std::vector<std::unique_ptr<TraceEvent[]>> chunks_;
  std::size_t used_ = 0;
  std::size_t cap_ = 0, kept_ = 0, dropped_ = 0;
};

// One (caller, callee) pair of a thread: calls, inclusive ticks, messages. 32-byte aligned so a
// pop touches one cache line.
struct alignas(32) Cell {
  U64 calls{0}, incl{0}, items{0};
};

// "N messages, first PubSubMessage(instance_name='...') seq S", for slow-task warnings.
std::string message_text(std::uint64_t seq, const char* name, std::uint32_t items);

}  // namespace mayhem::profiler_detail

namespace mayhem {

struct Profiler::Frame {
  std::int64_t start = 0;  // ticks
  std::uint32_t items = 0;
  std::int16_t node = 0;
  bool carries = false;  // entered with message pointers
  bool timed = false;    // start was read (else the exit reads no clock either)
  bool sampled = false;  // carries a sampled message (trace)
  std::uint8_t nseq = 0;
  std::uint64_t seqs[3] = {};
  std::uint64_t first_seq = 0;  // for slow-task warnings
  char first_name[12] = {};
};

struct Profiler::ThreadData {
  using U64 = profiler_detail::U64;
  static constexpr int kNodes = profiler_detail::kNodes;
  int index = 0;
  ThreadData* next = nullptr;
  std::thread::id owner;  // the thread that writes this slot
  int depth = 0;
  int overflow = 0;        // pushes beyond kMaxDepth (ignored, but kept balanced)
  std::uint64_t runs = 0;  // publish runs, for sampling them
  Frame stack[profiler_detail::kMaxDepth];
  profiler_detail::Cell cells[kNodes + 1][kNodes];  // [parent][node]
  // Waits, as sums of n x (ticks since start) mod 2^64: completions minus submissions is the total
  // wait of the completed operations, with no per-message state. [0..2] submit, [3..5] complete.
  U64 io_n[6] = {}, io_t[6] = {};
  U64 pulled = {}, pulled_wait = {}, published = {};
  // The outermost stage now running on this thread (the watchdog reads these).
  std::atomic<std::int64_t> active_start{0};  // ticks; 0 = none
  std::atomic<std::uint8_t> active_stage{0};
  std::atomic<std::uint32_t> active_items{0};
  std::atomic<std::uint64_t> active_seq{0};
  std::atomic<std::uint64_t> active_name[2] = {};
  std::atomic<std::int64_t> reported_start{0};
  std::atomic<bool> saw_lease{false};
  profiler_detail::TraceLog trace;
};

}  // namespace mayhem
