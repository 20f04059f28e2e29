#include "mayhem/observe/profiler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <queue>
#include <tuple>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "mayhem/message.hpp"
#include "mayhem/rng.hpp"

namespace mayhem {

namespace {

constexpr int kStages = static_cast<int>(Stage::kCount);
constexpr int kNodes = kStages + kMaxZones;
constexpr int kRoot = kNodes;  // the parent of an outermost frame
constexpr int kMaxDepth = 16;
constexpr int kWaits = 4;  // pub/sub queue, save I/O, restart I/O, cleanup I/O
constexpr const char* kWaitNames[kWaits] = {"pub/sub queue", "save I/O", "restart I/O",
                                            "cleanup I/O"};
constexpr std::uint64_t kSampleSalt = 0x7ACE5A3B1EULL;
// Sampling: a message's pool slot index is its address >> kSlotShift; in every window of
// kWindow consecutive slots (one pool slab), the first `threshold_` are sampled.
constexpr int kSlotShift = std::bit_width(sizeof(Message)) - 1;
constexpr std::uint32_t kWindow = 1024;

// Single-writer counters: the owning thread loads and stores (no RMW), readers load.
using U64 = std::atomic<std::uint64_t>;
inline void bump(U64& a, std::uint64_t v) {
  a.store(a.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

// Per stage: which I/O op it submits (0 save, 1 restart, 2 cleanup) or completes (3 + op); -1
// neither.
constexpr std::int8_t kIoSlot[kStages] = {
    -1,  // publish
    -1,  // consume
    0,   // save
    3,   // saved
    1,   // restart
    4,   // restarted
    2,   // cleanup
    5,   // settle
    -1,  // lease
};

const char* stage_file(int node) {
  return node == static_cast<int>(Stage::kLease) ? "src/lease/lease_manager.cpp"
                                                 : "src/pipeline/pipeline.cpp";
}

// The time-stamp counter is used only where the kernel trusts it as its own clock source (then it
// is invariant and synchronised across cores); anything else falls back to steady_clock.
bool tsc_usable() {
#if defined(__x86_64__)
  static const bool ok = [] {
    std::ifstream f("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string s;
    return static_cast<bool>(f >> s) && s == "tsc";
  }();
  return ok;
#else
  return false;
#endif
}

std::int64_t read_tsc() {
#if defined(__x86_64__)
  return static_cast<std::int64_t>(__rdtsc());
#else
  return steady_now();
#endif
}

// Nanoseconds per TSC tick, measured against steady_clock over 200 us (once per profiler).
double calibrate_tsc() {
  const Nanos n0 = steady_now();
  const std::int64_t t0 = read_tsc();
  Nanos n1;
  do {
    n1 = steady_now();
  } while (n1 - n0 < 200'000);
  const std::int64_t t1 = read_tsc();
  return t1 > t0 ? static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0) : 1.0;
}

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
// allocation per 4096 events).
class TraceLog {
 public:
  static constexpr std::size_t kChunk = 4096;
  void push(const TraceEvent& e) {
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
};

std::atomic<std::uint64_t> g_generation{1};

struct TlsSlot {
  std::uint64_t gen = 0;
  Profiler::ThreadData* td = nullptr;
};
thread_local TlsSlot t_slot;

std::string message_text(std::uint64_t seq, const char* name, std::uint32_t items) {
  if (items == 0) return "no messages";
  return fmt::format("{} message{}, first PubSubMessage(instance_name='{}') seq {}", items,
                     items == 1 ? "" : "s", name, seq);
}

// One (caller, callee) pair of a thread: calls, inclusive ticks, messages. 32-byte aligned so a
// pop touches one cache line.
struct alignas(32) Cell {
  U64 calls{0}, incl{0}, items{0};
};

}  // namespace

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
  int index = 0;
  ThreadData* next = nullptr;
  int depth = 0;
  int overflow = 0;        // pushes beyond kMaxDepth (ignored, but kept balanced)
  std::uint64_t runs = 0;  // publish runs, for sampling them
  Frame stack[kMaxDepth];
  Cell cells[kNodes + 1][kNodes];  // [parent][node]
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
  TraceLog trace;
};

std::optional<ProfileSort> parse_profile_sort(const std::string& s) {
  if (s == "tottime") return ProfileSort::kTottime;
  if (s == "cumtime") return ProfileSort::kCumtime;
  if (s == "ncalls") return ProfileSort::kNcalls;
  if (s == "name") return ProfileSort::kName;
  return std::nullopt;
}

Profiler::Profiler(ProfilerConfig cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log)
    : cfg_(cfg),
      clock_(clock),
      log_(std::move(log)),
      steady_(&clock == &SteadyClock::instance()),
      tsc_(steady_ && tsc_usable()),
      start_(clock.now()),
      time_all_(cfg.profile || cfg.slow_task > 0 || !cfg.trace),
      profile_only_(cfg.profile && !cfg.trace && cfg.slow_task <= 0),
      count_(cfg.profile || cfg.trace),
      gen_(g_generation.fetch_add(1, std::memory_order_relaxed)),
      threshold_(cfg.trace_sample <= 0 ? 0
                                       : static_cast<std::uint32_t>(std::clamp<double>(
                                             std::round(cfg.trace_sample * kWindow), 1, kWindow))),
      sample_all_(cfg.trace_sample >= 1) {
  start_ticks_ = tsc_ ? read_tsc() : start_;
  if (tsc_) ns_per_tick_ = calibrate_tsc();
  slow_ticks_ = static_cast<Ticks>(static_cast<double>(cfg_.slow_task) / ns_per_tick_);
  watchdog_ticks_ = static_cast<Ticks>(static_cast<double>(cfg_.watchdog_every) / ns_per_tick_);
}

Profiler::~Profiler() {
  ThreadData* t = threads_.load(std::memory_order_acquire);
  while (t) {
    ThreadData* next = t->next;
    delete t;
    t = next;
  }
}

// Sampling by where the message lives, not its contents: the check must not touch the message
// (a cache miss per message would cost more than the whole trace). In every window of 1024
// consecutive pool slots (a pool slab is 1024 messages) the first round(P x 1024) are sampled:
// any 1024 consecutive slots hold exactly that many, so the fraction is exact however small the
// pool, and slots are reused in turn, so about a fraction P of messages is traced (P is rounded
// to a multiple of 1/1024, at least 1/1024). The sampled slots are neighbours: the pool hands
// out neighbouring slots together, so a sampled message's batch-mates tend to be sampled too, and
// few stage bodies carry a sampled message (at P = 1 % with 128-message batches nearly every
// body would carry one if the sampled slots were spread out).
bool Profiler::sampled(const Message* m) const {
  const auto slot = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(m) >> kSlotShift);
  return (slot & (kWindow - 1)) < threshold_;
}

#if defined(__SSE2__)
namespace {
// Profiler::sampled for four message pointers: slot index (shift), position in its window (and),
// compare; lanes of all ones where sampled.
inline __m128i sampled4(Message* const* msgs, __m128i window_mask, __m128i thr) {
  const __m128i a =
      _mm_srli_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msgs)), kSlotShift);
  const __m128i b =
      _mm_srli_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msgs + 2)), kSlotShift);
  // The low 32 bits of the four 64-bit lanes, in order.
  const __m128i lo = _mm_castps_si128(
      _mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0)));
  return _mm_cmplt_epi32(_mm_and_si128(lo, window_mask), thr);  // both < 2^31: signed is fine
}
}  // namespace
#endif

// Which of msgs[0..n) (n <= 64) are sampled, as a bit mask (only for batches that have one).
std::uint64_t Profiler::sampled_mask(Message* const* msgs, std::uint32_t n) const {
  std::uint64_t mask = 0;
  std::uint32_t i = 0;
#if defined(__SSE2__)
  const __m128i window_mask = _mm_set1_epi32(static_cast<int>(kWindow - 1));
  const __m128i thr = _mm_set1_epi32(static_cast<int>(threshold_));
  for (; i + 4 <= n; i += 4)
    mask |= static_cast<std::uint64_t>(
                _mm_movemask_ps(_mm_castsi128_ps(sampled4(msgs + i, window_mask, thr))))
            << i;
#endif
  for (; i < n; ++i) mask |= static_cast<std::uint64_t>(sampled(msgs[i])) << i;
  return mask;
}

// Does the batch carry a sampled message? Four pointers at a time with SSE2 (every x86-64 has
// it): about 2.5 instructions per message and no branch but the loop's.
bool Profiler::any_sampled(Message* const* msgs, std::uint32_t n) const {
  if (sample_all_) return n > 0;
  std::uint32_t i = 0;
  bool any = false;
#if defined(__SSE2__)
  const __m128i window_mask = _mm_set1_epi32(static_cast<int>(kWindow - 1));
  const __m128i thr = _mm_set1_epi32(static_cast<int>(threshold_));
  __m128i acc = _mm_setzero_si128();
  for (; i + 8 <= n; i += 8)
    acc = _mm_or_si128(acc, _mm_or_si128(sampled4(msgs + i, window_mask, thr),
                                         sampled4(msgs + i + 4, window_mask, thr)));
  if (i + 4 <= n) {
    acc = _mm_or_si128(acc, sampled4(msgs + i, window_mask, thr));
    i += 4;
  }
  any = _mm_movemask_epi8(acc) != 0;
#endif
  for (; i < n; ++i) any |= sampled(msgs[i]);
  return any;
}

Profiler::Ticks Profiler::ticks() const {
  if (tsc_) return read_tsc();
  return steady_ ? steady_now() : clock_.now();  // the real clock: no virtual call
}

Nanos Profiler::now() const {
  return steady_ ? steady_now() : clock_.now();
}

double Profiler::report_ns_per_tick() const {
  if (!tsc_) return 1;
  const Ticks t = read_tsc();
  const Nanos n = steady_now();
  // Over at least 50 ms the run itself calibrates better than the 200 us at the start.
  if (n - start_ < 50'000'000 || t <= start_ticks_) return ns_per_tick_;
  return static_cast<double>(n - start_) / static_cast<double>(t - start_ticks_);
}

Nanos Profiler::to_ns(Ticks t) const {
  return tsc_ ? std::llround(static_cast<double>(t) * ns_per_tick_) : t;
}

Profiler::ThreadData* Profiler::local() {
  TlsSlot& s = t_slot;
  if (s.gen == gen_) return s.td;
  auto* t = new ThreadData();
  t->index = thread_count_.fetch_add(1, std::memory_order_relaxed);
  ThreadData* head = threads_.load(std::memory_order_relaxed);
  do {
    t->next = head;
  } while (!threads_.compare_exchange_weak(head, t, std::memory_order_release,
                                           std::memory_order_relaxed));
  s.gen = gen_;
  s.td = t;
  return t;
}

// The table: one call of `node` under its parent frame (the root when outermost).
void Profiler::account(ThreadData& t, int node, std::uint32_t items, Ticks dur) {
  const int parent =
      t.depth > 0 && t.stack[t.depth - 1].node >= 0 ? t.stack[t.depth - 1].node : kRoot;
  Cell& c = t.cells[parent][node];
  bump(c.calls, 1);
  bump(c.incl, static_cast<std::uint64_t>(dur));
  bump(c.items, items);
}

// Trace: does a stage's batch carry a sampled message? A stage entered inside an unsampled stage
// body on the same thread is a zero-delay completion of a subset of that body's messages (see
// observer.hpp), so it is not scanned again.
bool Profiler::scan_sampled(const ThreadData& t, Message* const* msgs, std::uint32_t n) const {
  if (t.depth >= 2) {
    const Frame& up = t.stack[t.depth - 2];
    if (up.carries && !up.sampled) return false;
  }
  return any_sampled(msgs, n);
}

// A batch with sampled messages: remember which (the slice's args) and record their I/O
// submission or completion (paired into wait spans when the trace is written).
void Profiler::note_sampled(ThreadData& t, Frame& f, Stage stage, Message* const* msgs,
                            std::uint32_t n, Ticks now) {
  const int slot = kIoSlot[static_cast<int>(stage)];
  for (std::uint32_t base = 0; base < n; base += 64) {
    for (std::uint64_t mask = sampled_mask(msgs + base, std::min<std::uint32_t>(n - base, 64));
         mask != 0; mask &= mask - 1) {
      const std::uint64_t seq =
          msgs[base + static_cast<std::uint32_t>(std::countr_zero(mask))]->seq;
      if (f.nseq < 3) f.seqs[f.nseq] = seq;
      if (f.nseq < 255) ++f.nseq;
      if (slot < 0) continue;
      TraceEvent e;
      e.kind = slot < 3 ? TraceEvent::kIoBegin : TraceEvent::kIoEnd;
      e.ts = now - start_ticks_;
      e.node = static_cast<std::uint8_t>(slot % 3);
      e.seqs[0] = seq;
      t.trace.push(e);
    }
  }
}

// --profile alone (the common case, and the one with a cost budget) takes a short path: the
// thread's slot, a frame, one clock read, two counters. Trace sampling and slow-task bookkeeping
// are on the general path below.
void Profiler::on_entry(Stage stage, std::uint32_t items, Message* const* msgs) {
  if (!profile_only_) [[unlikely]]
    return entry_general(stage, items, msgs);
  ThreadData& t = *local();
  const int d = t.depth;
  if (d == kMaxDepth || t.overflow > 0) [[unlikely]] {
    ++t.overflow;
    return;
  }
  t.depth = d + 1;
  const int node = static_cast<int>(stage);
  Frame& f = t.stack[d];
  const Ticks now = ticks();
  f.start = now;
  f.items = items;
  f.node = static_cast<std::int16_t>(node);
  f.carries = msgs != nullptr;
  f.timed = true;
  f.sampled = false;
  if (const int io = kIoSlot[node]; io >= 0) {
    bump(t.io_n[io], items);
    bump(t.io_t[io],
         static_cast<std::uint64_t>(items) * static_cast<std::uint64_t>(now - start_ticks_));
  }
}

void Profiler::on_exit(Stage stage, std::uint32_t items) {
  if (!profile_only_) [[unlikely]]
    return exit_general(stage, items);
  ThreadData& t = *local();
  if (t.overflow > 0) [[unlikely]] {
    --t.overflow;
    return;
  }
  if (t.depth == 0) [[unlikely]]
    return;
  const int d = --t.depth;
  const Frame& f = t.stack[d];
  const int node = static_cast<int>(stage);
  if (f.node != node) [[unlikely]]
    return;
  const Ticks now = ticks();
  if (stage == Stage::kPublish) bump(t.published, items);
  account(t, node, std::max(items, f.items), std::max<Ticks>(now - f.start, 0));
}

void Profiler::entry_general(Stage stage, std::uint32_t items, Message* const* msgs) {
  ThreadData& t = *local();
  if (t.depth == kMaxDepth || t.overflow > 0) [[unlikely]] {
    ++t.overflow;
    return;
  }
  const int node = static_cast<int>(stage);
  Frame& f = t.stack[t.depth++];
  f.node = static_cast<std::int16_t>(node);
  f.items = items;
  f.carries = msgs != nullptr;
  f.sampled = false;
  f.timed = true;
  f.nseq = 0;
  const int io = kIoSlot[node];
  if (count_ && io >= 0) bump(t.io_n[io], items);
  // Trace only: a body that carries messages is timed (and becomes a slice) only when one of
  // them is sampled, so the others cost the scan and no clock read. Publish, consume and the
  // lease tick (rare, and sampled differently) are always timed.
  if (cfg_.trace && msgs && items > 0) {
    f.sampled = scan_sampled(t, msgs, items);
    if (!f.sampled && !time_all_) {
      f.timed = false;
      return;
    }
  }
  const Ticks now = ticks();
  f.start = now;
  if (cfg_.profile && io >= 0)
    bump(t.io_t[io],
         static_cast<std::uint64_t>(items) * static_cast<std::uint64_t>(now - start_ticks_));
  if (f.sampled) note_sampled(t, f, stage, msgs, items, now);
  if (cfg_.slow_task > 0 || stage == Stage::kLease) [[unlikely]]
    entry_rare(t, f, stage, items, msgs, now);
}

void Profiler::entry_rare(ThreadData& t, Frame& f, Stage stage, std::uint32_t items,
                          Message* const* msgs, Ticks now) {
  if (stage == Stage::kLease && !t.saw_lease.load(std::memory_order_relaxed))
    t.saw_lease.store(true, std::memory_order_relaxed);
  if (cfg_.slow_task <= 0) return;
  f.first_seq = 0;
  f.first_name[0] = '\0';
  if (msgs && items > 0) {  // for its warnings only: one load
    f.first_seq = msgs[0]->seq;
    std::memcpy(f.first_name, msgs[0]->instance_name, sizeof f.first_name);
    f.first_name[sizeof f.first_name - 1] = '\0';
  }
  if (t.depth == 1) {
    std::uint64_t name[2] = {};
    std::memcpy(name, f.first_name, sizeof f.first_name);
    t.active_stage.store(static_cast<std::uint8_t>(stage), std::memory_order_relaxed);
    t.active_items.store(items, std::memory_order_relaxed);
    t.active_seq.store(f.first_seq, std::memory_order_relaxed);
    t.active_name[0].store(name[0], std::memory_order_relaxed);
    t.active_name[1].store(name[1], std::memory_order_relaxed);
    t.active_start.store(now, std::memory_order_release);
  }
}

void Profiler::exit_general(Stage stage, std::uint32_t items) {
  ThreadData& t = *local();
  if (t.overflow > 0) [[unlikely]] {
    --t.overflow;
    return;
  }
  if (t.depth == 0) [[unlikely]]
    return;  // unbalanced (an observer installed mid-body): ignore
  const Frame& f = t.stack[--t.depth];
  const int node = static_cast<int>(stage);
  if (f.node != node) [[unlikely]]
    return;  // unbalanced: drop the frame
  if (stage == Stage::kPublish && count_) bump(t.published, items);
  if (!f.timed) return;
  const Ticks now = ticks();
  items = std::max(items, f.items);  // consume learns its count from on_pull
  const Ticks dur = std::max<Ticks>(now - f.start, 0);
  if (cfg_.profile) account(t, node, items, dur);
  if (cfg_.trace || cfg_.slow_task > 0) exit_rare(t, f, stage, items, dur, now);
}

void Profiler::exit_rare(ThreadData& t, const Frame& f, Stage stage, std::uint32_t items, Ticks dur,
                         Ticks now) {
  if (cfg_.trace) {
    bool keep = f.sampled || stage == Stage::kLease;
    if (stage == Stage::kPublish) {
      // publish does not see message pointers: keep a run with the chance that one of its
      // messages is sampled.
      const double p = std::min(1.0, cfg_.trace_sample * std::max<std::uint32_t>(items, 1));
      keep = to_unit(mix(t.runs++, kSampleSalt + static_cast<std::uint64_t>(t.index))) < p;
    }
    if (keep) {
      TraceEvent e;
      e.kind = TraceEvent::kSlice;
      e.ts = f.start - start_ticks_;
      e.dur = dur;
      e.items = items;
      e.node = static_cast<std::uint8_t>(stage);
      e.nseq = f.nseq;
      std::copy(f.seqs, f.seqs + 3, e.seqs);
      t.trace.push(e);
    }
  }
  if (cfg_.slow_task > 0 && t.depth == 0) {
    t.active_start.store(0, std::memory_order_release);
    if (dur > slow_ticks_) {
      slow_tasks_.fetch_add(1, std::memory_order_relaxed);
      if (log_)
        log_->warn("Executing stage {} ({}) took {:.3f} seconds", to_string(stage),
                   message_text(f.first_seq, f.first_name, items), nanos_to_seconds(to_ns(dur)));
    }
  }
  if (stage == Stage::kLease) lease_tick(t, now);
}

// The lease thread ticks every few milliseconds: it samples the counter tracks (so they are
// time-based, not per batch) and runs the watchdog.
void Profiler::lease_tick(ThreadData& t, Ticks now) {
  if (cfg_.trace) {
    std::uint64_t published = 0, pulled = 0, settled = 0;
    for (const ThreadData* o = threads_.load(std::memory_order_acquire); o; o = o->next) {
      published += o->published.load(std::memory_order_relaxed);
      pulled += o->pulled.load(std::memory_order_relaxed);
      settled += o->io_n[5].load(std::memory_order_relaxed);
    }
    TraceEvent e;
    e.kind = TraceEvent::kCounter;
    e.ts = now - start_ticks_;
    e.node = 0;
    e.dur = static_cast<std::int64_t>(pulled >= settled ? pulled - settled : 0);
    t.trace.push(e);
    e.node = 1;
    e.dur = static_cast<std::int64_t>(published >= pulled ? published - pulled : 0);
    t.trace.push(e);
  }
  if (cfg_.slow_task > 0 && now - last_check_.load(std::memory_order_relaxed) >= watchdog_ticks_) {
    last_check_.store(now, std::memory_order_relaxed);
    check_stuck();
  }
}

void Profiler::on_pull(Message* const* msgs, std::uint32_t n) {
  ThreadData& t = *local();
  // The innermost stage frame (consume) learns its messages and whether one is sampled.
  Frame* f = nullptr;
  for (int d = t.overflow > 0 ? 0 : t.depth; d > 0; --d)
    if (t.stack[d - 1].node >= 0 && t.stack[d - 1].node < kStages) {
      f = &t.stack[d - 1];
      break;
    }
  if (cfg_.slow_task > 0 && f && f->items == 0 && n > 0) {
    f->first_seq = msgs[0]->seq;
    std::memcpy(f->first_name, msgs[0]->instance_name, sizeof f->first_name);
    f->first_name[sizeof f->first_name - 1] = '\0';
  }
  if (f) f->items += n;
  if (count_) bump(t.pulled, n);
  Nanos now = 0;
  if (cfg_.profile) {
    now = this->now();
    // n x now - the sum of publish times: one load per message (publish times come from the same
    // clock, so no message is younger than now).
    std::uint64_t published = 0;
    for (std::uint32_t i = 0; i < n; ++i)
      published += static_cast<std::uint64_t>(msgs[i]->published_ns);
    const auto wait = static_cast<std::int64_t>(n * static_cast<std::uint64_t>(now) - published);
    bump(t.pulled_wait, static_cast<std::uint64_t>(std::max<std::int64_t>(wait, 0)));
  }
  if (!cfg_.trace || !any_sampled(msgs, n)) return;
  if (!cfg_.profile) now = this->now();
  for (std::uint32_t base = 0; base < n; base += 64) {
    for (std::uint64_t mask = sampled_mask(msgs + base, std::min<std::uint32_t>(n - base, 64));
         mask != 0; mask &= mask - 1) {
      const Message& m = *msgs[base + static_cast<std::uint32_t>(std::countr_zero(mask))];
      if (f) {
        if (f->nseq < 3) f->seqs[f->nseq] = m.seq;
        if (f->nseq < 255) ++f->nseq;
        f->sampled = true;
      }
      TraceEvent e;
      e.kind = TraceEvent::kQueueSpan;
      e.ts = std::max<Nanos>(m.published_ns - start_, 0);
      e.dur = std::max<Nanos>(now - start_ - e.ts, 0);
      e.seqs[0] = m.seq;
      t.trace.push(e);
    }
  }
}

// Zones feed the table only: with --profile off they cost one call and one branch.
void Profiler::on_zone_entry(const ZoneSite& site) {
  if (!cfg_.profile) return;
  ThreadData& t = *local();
  if (t.depth == kMaxDepth || t.overflow > 0) {
    ++t.overflow;
    return;
  }
  const int id = zone_id(site);
  Frame& f = t.stack[t.depth++];
  // An unregistered zone (table full) still takes a frame, so entries and exits stay paired.
  f.node = static_cast<std::int16_t>(id < 0 ? -1 : kStages + id);
  f.items = 0;
  f.carries = false;
  f.timed = true;
  f.sampled = false;
  f.start = ticks();
}

void Profiler::on_zone_exit(const ZoneSite& site) {
  if (!cfg_.profile) return;
  ThreadData& t = *local();
  const Ticks now = ticks();
  if (t.overflow > 0) {
    --t.overflow;
    return;
  }
  if (t.depth == 0) return;
  const Frame& f = t.stack[--t.depth];
  const int id = zone_id(site);
  const int node = id < 0 ? -1 : kStages + id;
  if (f.node != node || node < 0) return;
  account(t, node, 0, std::max<Ticks>(now - f.start, 0));
}

std::size_t Profiler::check_stuck() {
  if (cfg_.slow_task <= 0) return 0;
  const Ticks now = ticks();
  std::size_t reported = 0;
  for (ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    const Ticks start = t->active_start.load(std::memory_order_acquire);
    if (start == 0 || now - start <= slow_ticks_) continue;
    if (t->reported_start.load(std::memory_order_relaxed) == start) continue;
    const auto stage = static_cast<Stage>(t->active_stage.load(std::memory_order_relaxed));
    const std::uint32_t items = t->active_items.load(std::memory_order_relaxed);
    const std::uint64_t seq = t->active_seq.load(std::memory_order_relaxed);
    std::uint64_t name[2] = {t->active_name[0].load(std::memory_order_relaxed),
                             t->active_name[1].load(std::memory_order_relaxed)};
    if (t->active_start.load(std::memory_order_acquire) != start) continue;  // it moved on
    char text[16] = {};
    std::memcpy(text, name, sizeof name);
    text[11] = '\0';
    t->reported_start.store(start, std::memory_order_relaxed);
    stuck_reports_.fetch_add(1, std::memory_order_relaxed);
    ++reported;
    if (log_)
      log_->warn(
          "Stage {} has been running for {:.3f} seconds and has not returned ({}; thread "
          "{})",
          to_string(stage), nanos_to_seconds(to_ns(now - start)), message_text(seq, text, items),
          t->index);
  }
  return reported;
}

// ---- snapshot ----------------------------------------------------------------------------------

ProfileSnapshot Profiler::snapshot() const {
  ProfileSnapshot s;
  const double r = report_ns_per_tick();
  auto ns = [&](std::uint64_t ticks) {
    return tsc_ ? static_cast<Nanos>(std::llround(static_cast<double>(ticks) * r))
                : static_cast<Nanos>(ticks);
  };
  const Ticks now_ticks = ticks() - start_ticks_;
  s.wall = now() - start_;
  s.slow_tasks = slow_tasks_.load(std::memory_order_relaxed);
  s.stuck_reports = stuck_reports_.load(std::memory_order_relaxed);
  constexpr std::size_t kCells = static_cast<std::size_t>((kNodes + 1) * kNodes);
  std::vector<std::uint64_t> c(kCells), in(kCells), it(kCells);
  std::uint64_t io_n[6] = {}, io_t[6] = {};
  std::uint64_t pulled = 0, pulled_wait = 0;
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    ++s.threads;
    for (int p = 0; p <= kNodes; ++p)
      for (int n = 0; n < kNodes; ++n) {
        const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
        const Cell& cell = t->cells[p][n];
        c[k] += cell.calls.load(std::memory_order_relaxed);
        in[k] += cell.incl.load(std::memory_order_relaxed);
        it[k] += cell.items.load(std::memory_order_relaxed);
      }
    for (int i = 0; i < 6; ++i) {
      io_n[i] += t->io_n[i].load(std::memory_order_relaxed);
      io_t[i] += t->io_t[i].load(std::memory_order_relaxed);
    }
    pulled += t->pulled.load(std::memory_order_relaxed);
    pulled_wait += t->pulled_wait.load(std::memory_order_relaxed);
  }
  // Times in nanoseconds: each edge's inclusive time is converted once; a row's cumtime is the
  // sum over its callers, and its tottime is cumtime minus the time in its callees (cProfile's
  // tottime), so tottime + children == cumtime holds exactly.
  std::vector<Nanos> in_ns(kCells);
  for (std::size_t k = 0; k < kCells; ++k) in_ns[k] = c[k] ? ns(in[k]) : 0;
  std::array<int, kNodes> row_of{};
  row_of.fill(-1);
  for (int n = 0; n < kNodes; ++n) {
    ProfileRow r;
    for (int p = 0; p <= kNodes; ++p) {
      const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
      r.ncalls += c[k];
      r.items += it[k];
      r.cumtime += in_ns[k];
    }
    if (r.ncalls == 0) continue;
    Nanos children = 0;
    for (int callee = 0; callee < kNodes; ++callee)
      children += in_ns[static_cast<std::size_t>(n * kNodes + callee)];
    // A live snapshot may see callees of a call still running: never below zero.
    r.tottime = std::max<Nanos>(r.cumtime - children, 0);
    r.cumtime = r.tottime + children;
    if (n < kStages) {
      r.kind = ProfileRow::Kind::kStage;
      r.name = to_string(static_cast<Stage>(n));
      r.file = stage_file(n);
    } else {
      const ZoneSite* z = zone_site(n - kStages);
      r.kind = ProfileRow::Kind::kZone;
      r.name = z ? z->name : "?";
      r.file = z ? z->file : "?";
      r.line = z ? z->line : 0;
    }
    row_of[n] = static_cast<int>(s.rows.size());
    s.rows.push_back(std::move(r));
  }
  for (int p = 0; p <= kNodes; ++p)
    for (int n = 0; n < kNodes; ++n) {
      const std::size_t k = static_cast<std::size_t>(p * kNodes + n);
      if (c[k] == 0) continue;
      s.edges.push_back({p == kRoot ? -1 : row_of[p], row_of[n], c[k], in_ns[k]});
    }
  // Waits: the pub/sub queue (publish -> pull), and each I/O op (submit -> completion). Operations
  // still pending count up to now.
  ProfileRow q;
  q.kind = ProfileRow::Kind::kWait;
  q.name = kWaitNames[0];
  q.ncalls = q.items = pulled;
  q.tottime = q.cumtime = static_cast<Nanos>(pulled_wait);
  s.rows.push_back(q);
  for (int op = 0; op < 3; ++op) {
    ProfileRow r;
    r.kind = ProfileRow::Kind::kWait;
    r.name = kWaitNames[op + 1];
    r.ncalls = r.items = io_n[op + 3];
    const std::uint64_t pending = io_n[op] - io_n[op + 3];
    const std::uint64_t total =
        io_t[op + 3] - io_t[op] + pending * static_cast<std::uint64_t>(now_ticks);
    const auto signed_total = static_cast<std::int64_t>(total);
    r.tottime = r.cumtime = signed_total > 0 ? ns(static_cast<std::uint64_t>(signed_total)) : 0;
    s.rows.push_back(r);
  }
  return s;
}

// ---- reports -----------------------------------------------------------------------------------

namespace {

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string row_label(const ProfileRow& r) {
  switch (r.kind) {
    case ProfileRow::Kind::kStage:
      return fmt::format("stage:{} ({} msgs)", r.name, r.items);
    case ProfileRow::Kind::kZone: {
      std::string name = r.name;
      if (name.size() > 60) name = name.substr(0, 57) + "...";
      return fmt::format("{}:{}({})", base_name(r.file), r.line, name);
    }
    case ProfileRow::Kind::kWait:
      return fmt::format("wait:{} (per message)", r.name);
  }
  return r.name;
}

double per_call_us(Nanos t, std::uint64_t n) {
  return n == 0 ? 0.0 : static_cast<double>(t) / 1e3 / static_cast<double>(n);
}

}  // namespace

std::string format_table(const ProfileSnapshot& s, ProfileSort sort) {
  std::vector<const ProfileRow*> rows;
  std::uint64_t calls = 0;
  for (const auto& r : s.rows) {
    if (r.ncalls == 0) continue;
    rows.push_back(&r);
    if (r.kind != ProfileRow::Kind::kWait) calls += r.ncalls;
  }
  const char* order = "internal time";
  auto by = [&](auto key) {
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const ProfileRow* a, const ProfileRow* b) { return key(*a) > key(*b); });
  };
  switch (sort) {
    case ProfileSort::kTottime:
      by([](const ProfileRow& r) { return r.tottime; });
      break;
    case ProfileSort::kCumtime:
      order = "cumulative time";
      by([](const ProfileRow& r) { return r.cumtime; });
      break;
    case ProfileSort::kNcalls:
      order = "call count";
      by([](const ProfileRow& r) { return r.ncalls; });
      break;
    case ProfileSort::kName:
      order = "name";
      std::stable_sort(rows.begin(), rows.end(), [](const ProfileRow* a, const ProfileRow* b) {
        return row_label(*a) < row_label(*b);
      });
      break;
  }
  std::string out = fmt::format(
      "         {} stage and zone calls on {} threads in {:.3f} seconds\n"
      "         (times in seconds, percall in microseconds; stages and zones: thread time, "
      "tottime excludes children;\n"
      "          waits: message time, summed over messages, so they overlap each other)\n\n"
      "   Ordered by: {}\n\n",
      calls, s.threads, nanos_to_seconds(s.wall), order);
  out += fmt::format("{:>10} {:>10} {:>10} {:>10} {:>10}  {}\n", "ncalls", "tottime", "percall",
                     "cumtime", "percall", "name");
  for (const ProfileRow* r : rows) {
    out += fmt::format("{:>10} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}  {}\n", r->ncalls,
                       nanos_to_seconds(r->tottime), per_call_us(r->tottime, r->ncalls),
                       nanos_to_seconds(r->cumtime), per_call_us(r->cumtime, r->ncalls),
                       row_label(*r));
  }
  return out;
}

std::string format_lines(const ProfileSnapshot& s) {
  std::string out;
  for (std::size_t p = 0; p < s.rows.size(); ++p) {
    const ProfileRow& parent = s.rows[p];
    if (parent.kind == ProfileRow::Kind::kWait) continue;
    std::vector<std::pair<const ProfileRow*, const ProfileEdge*>> lines;
    for (const auto& e : s.edges)
      if (e.caller == static_cast<int>(p) &&
          s.rows[static_cast<std::size_t>(e.callee)].kind == ProfileRow::Kind::kZone)
        lines.emplace_back(&s.rows[static_cast<std::size_t>(e.callee)], &e);
    if (lines.empty()) continue;
    std::sort(lines.begin(), lines.end(),
              [](const auto& a, const auto& b) { return a.first->line < b.first->line; });
    const double total_us = static_cast<double>(parent.cumtime) / 1e3;
    auto pct = [&](double us) { return total_us > 0 ? 100.0 * us / total_us : 0.0; };
    out += fmt::format("Timer unit: 1e-06 s\n\nTotal time: {:g} s\n",
                       nanos_to_seconds(parent.cumtime));
    if (parent.kind == ProfileRow::Kind::kStage)
      out += fmt::format("Function: stage {} ({} calls, {} messages) in {}\n\n", parent.name,
                         parent.ncalls, parent.items, parent.file);
    else
      out += fmt::format("Function: zone {} at {}:{}\n\n", parent.name, base_name(parent.file),
                         parent.line);
    out += fmt::format("{:>6} {:>10} {:>14} {:>10} {:>8}  {}\n", "Line #", "Hits", "Time",
                       "Per Hit", "% Time", "Line Contents");
    out += std::string(80, '=') + "\n";
    for (const auto& [row, edge] : lines) {
      const double us = static_cast<double>(edge->incl) / 1e3;
      out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10.1f} {:>8.1f}  {}\n", row->line, edge->calls,
                         us, edge->calls ? us / static_cast<double>(edge->calls) : 0.0, pct(us),
                         row->name);
    }
    const double rest = static_cast<double>(parent.tottime) / 1e3;
    out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10} {:>8.1f}  {}\n\n", "", parent.ncalls, rest,
                       "", pct(rest), "(rest of the body: everything outside the zones above)");
  }
  return out;
}

void write_callgrind(const ProfileSnapshot& s, std::ostream& out, const std::string& cmd) {
  // Callgrind format (valgrind.org/docs/manual/cl-format.html). Event "ns" is thread time in stage
  // bodies and zones; "wait_ns" is message time spent waiting (queue, simulated I/O).
  Nanos total_self = 0, total_wait = 0;
  for (const auto& r : s.rows) {
    if (r.kind == ProfileRow::Kind::kWait)
      total_wait += r.cumtime;
    else
      total_self += r.tottime;
  }
  out << "# callgrind format\nversion: 1\ncreator: mayhem --profile-out\n";
  out << "cmd: " << cmd << "\npart: 1\npositions: line\n";
  out << "event: ns : Thread time (ns)\nevent: wait_ns : Message wait time (ns)\n";
  out << "events: ns wait_ns\n";
  out << "summary: " << total_self << " " << total_wait << "\n\n";
  std::map<std::string, int> files;
  auto fl = [&](const std::string& key, const std::string& f) {
    auto [it, fresh] = files.emplace(f, static_cast<int>(files.size()) + 1);
    return fresh ? fmt::format("{}=({}) {}\n", key, it->second, f)
                 : fmt::format("{}=({})\n", key, it->second);
  };
  auto fn_name = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    switch (r.kind) {
      case ProfileRow::Kind::kStage:
        return fmt::format("stage {}", r.name);
      case ProfileRow::Kind::kZone:
        return fmt::format("zone {}:{} {}", base_name(r.file), r.line, r.name);
      case ProfileRow::Kind::kWait:
        return fmt::format("wait {}", r.name);
    }
    return r.name;
  };
  std::vector<bool> named(s.rows.size() + 1, false);
  auto fn = [&](const std::string& key, int id, const std::string& name) {
    // Function ids: 1 = the root, row r = r + 2. Names are compressed after first use.
    const auto slot = static_cast<std::size_t>(id);
    if (named[slot]) return fmt::format("{}=({})\n", key, id + 1);
    named[slot] = true;
    return fmt::format("{}=({}) {}\n", key, id + 1, name);
  };
  auto file_of = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    return r.kind == ProfileRow::Kind::kWait ? std::string("(message waits)") : r.file;
  };
  auto id_of = [](int row) { return row + 1; };  // root is 0
  auto line_of = [&](int row) { return s.rows[static_cast<std::size_t>(row)].line; };

  // The root: every outermost stage, and the waits.
  out << fl("fl", "(mayhem)") << fn("fn", 0, "mayhem (all threads)") << "0 0 0\n";
  for (const auto& e : s.edges) {
    if (e.caller != -1) continue;
    out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
    out << "calls=" << e.calls << " " << line_of(e.callee) << "\n0 " << e.incl << " 0\n";
  }
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    if (s.rows[r].kind != ProfileRow::Kind::kWait || s.rows[r].ncalls == 0) continue;
    const int row = static_cast<int>(r);
    out << fl("cfl", file_of(row)) << fn("cfn", id_of(row), fn_name(row));
    out << "calls=" << s.rows[r].ncalls << " 0\n0 0 " << s.rows[r].cumtime << "\n";
  }
  out << "\n";
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    const ProfileRow& row = s.rows[r];
    if (row.ncalls == 0) continue;
    const int ri = static_cast<int>(r);
    out << fl("fl", file_of(ri)) << fn("fn", id_of(ri), fn_name(ri));
    if (row.kind == ProfileRow::Kind::kWait) {
      out << "0 0 " << row.cumtime << "\n\n";
      continue;
    }
    out << row.line << " " << row.tottime << " 0\n";
    for (const auto& e : s.edges) {
      if (e.caller != ri) continue;
      out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
      out << "calls=" << e.calls << " " << line_of(e.callee) << "\n";
      out << line_of(e.callee) << " " << e.incl << " 0\n";
    }
    out << "\n";
  }
  out << "totals: " << total_self << " " << total_wait << "\n";
}

// ---- trace -------------------------------------------------------------------------------------

namespace {

std::string us(Nanos ns) {  // exact: microseconds with three decimals
  if (ns < 0) ns = 0;
  return fmt::format("{}.{:03}", ns / 1000, ns % 1000);
}

struct Interval {
  Nanos start, end;
  std::uint64_t seq;
};

// Greedy interval partitioning: each interval gets the lowest free lane, so slices on one lane
// never overlap.
std::vector<int> assign_lanes(std::vector<Interval>& v) {
  std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) {
    return std::tie(a.start, a.end) < std::tie(b.start, b.end);
  });
  std::vector<int> lane(v.size());
  using Busy = std::pair<Nanos, int>;  // (end, lane)
  std::priority_queue<Busy, std::vector<Busy>, std::greater<>> busy;
  std::priority_queue<int, std::vector<int>, std::greater<>> free_lanes;
  int lanes = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    while (!busy.empty() && busy.top().first <= v[i].start) {
      free_lanes.push(busy.top().second);
      busy.pop();
    }
    int l;
    if (!free_lanes.empty()) {
      l = free_lanes.top();
      free_lanes.pop();
    } else {
      l = lanes++;
    }
    lane[i] = l;
    busy.emplace(v[i].end, l);
  }
  return lane;
}

}  // namespace

bool Profiler::write_trace(const std::string& path, std::string& err) const {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  std::string buf;
  buf.reserve(1 << 20);
  bool first = true;
  auto emit = [&](const std::string& ev) {
    if (!first) buf += ",\n";
    first = false;
    buf += ev;
    if (buf.size() > (1 << 20)) {
      std::fwrite(buf.data(), 1, buf.size(), f);
      buf.clear();
    }
  };
  buf += "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  constexpr int kPidStages = 1, kPidWaits = 2;
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: stage bodies per thread"}}}})j",
      kPidStages));
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: sampled messages waiting (queue, I/O)"}}}})j",
      kPidWaits));
  // Slices, I/O and counters were recorded in ticks; queue spans in nanoseconds.
  const double ratio = report_ns_per_tick();
  auto ns = [&](std::int64_t ticks) {
    return tsc_ ? static_cast<Nanos>(std::llround(static_cast<double>(ticks) * ratio)) : ticks;
  };
  std::vector<Interval> spans[kWaits];
  // Open I/O per (op, seq), in time order: begin/end pairs (retries give several).
  std::vector<std::tuple<int, std::uint64_t, Nanos, int>> io;  // op, seq, ts, 0 begin / 1 end
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    const int tid = t->index + 1;
    const bool lease = t->saw_lease.load(std::memory_order_relaxed);
    emit(fmt::format(
        R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{}"}}}})j",
        kPidStages, tid,
        lease ? std::string("lease thread") : fmt::format("pipeline thread {}", tid)));
    t->trace.each([&](const TraceEvent& e) {
      switch (e.kind) {
        case TraceEvent::kSlice: {
          const auto stage = static_cast<Stage>(e.node);
          std::string seqs;
          for (int i = 0; i < std::min<int>(e.nseq, 3); ++i)
            seqs += fmt::format("{}{}", i ? "," : "", e.seqs[i]);
          emit(fmt::format(
              R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"stage","args":{{"messages":{},"sampled":{},"sampled_seqs":[{}]}}}})j",
              kPidStages, tid, us(ns(e.ts)), us(ns(e.ts + e.dur) - ns(e.ts)),
              stage == Stage::kLease ? "lease tick" : to_string(stage), e.items, e.nseq, seqs));
          break;
        }
        case TraceEvent::kCounter:
          emit(fmt::format(
              R"j({{"ph":"C","pid":{},"ts":{},"name":"{}","args":{{"messages":{}}}}})j", kPidStages,
              us(ns(e.ts)), e.node == 0 ? "in flight" : "queue depth", e.dur));
          break;
        case TraceEvent::kQueueSpan:
          spans[0].push_back({e.ts, e.ts + e.dur, e.seqs[0]});
          break;
        case TraceEvent::kIoBegin:
        case TraceEvent::kIoEnd:
          io.emplace_back(e.node, e.seqs[0], ns(e.ts), e.kind == TraceEvent::kIoBegin ? 0 : 1);
          break;
      }
    });
  }
  std::sort(io.begin(), io.end());
  for (std::size_t i = 0; i + 1 < io.size(); ++i) {
    const auto& [op, seq, ts, kind] = io[i];
    const auto& [op2, seq2, ts2, kind2] = io[i + 1];
    if (kind == 0 && kind2 == 1 && op == op2 && seq == seq2) {
      spans[op + 1].push_back({ts, ts2, seq});
      ++i;
    }
  }
  for (int w = 0; w < kWaits; ++w) {
    const std::vector<int> lane = assign_lanes(spans[w]);
    int lanes = 0;
    for (std::size_t i = 0; i < spans[w].size(); ++i) {
      const int tid = (w + 1) * 100000 + lane[i];
      lanes = std::max(lanes, lane[i] + 1);
      emit(fmt::format(
          R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"wait","args":{{"seq":{}}}}})j",
          kPidWaits, tid, us(spans[w][i].start), us(spans[w][i].end - spans[w][i].start),
          kWaitNames[w], spans[w][i].seq));
    }
    for (int l = 0; l < lanes; ++l)
      emit(fmt::format(
          R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{} lane {}"}}}})j",
          kPidWaits, (w + 1) * 100000 + l, kWaitNames[w], l));
  }
  buf += "\n]}\n";
  std::fwrite(buf.data(), 1, buf.size(), f);
  if (std::fclose(f) != 0) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace mayhem

namespace mayhem {

namespace {
void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  std::ofstream f(path, std::ios::trunc);
  if (!f)
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': {}", flag, path, std::strerror(errno)));
}
}  // namespace

std::unique_ptr<Profiler> make_profiler(const Options& o, const Clock& clock,
                                        std::shared_ptr<spdlog::logger> log) {
  if (!o.profile && o.profile_out.empty() && o.trace_out.empty() && o.slow_task_ms <= 0)
    return nullptr;
  check_writable(o.profile_out, "--profile-out");
  check_writable(o.trace_out, "--trace-out");
  ProfilerConfig cfg;
  cfg.profile = o.profile || !o.profile_out.empty();
  cfg.trace = !o.trace_out.empty();
  cfg.trace_sample = o.trace_sample;
  cfg.slow_task = static_cast<Nanos>(o.slow_task_ms * 1e6);
  return std::make_unique<Profiler>(cfg, clock, std::move(log));
}

bool write_profile_reports(const Profiler& p, const Options& o, std::ostream& table_out,
                           const std::string& cmd, std::string& err) {
  if (o.profile || !o.profile_out.empty()) {
    const ProfileSnapshot s = p.snapshot();
    if (o.profile) {
      table_out << format_table(s,
                                parse_profile_sort(o.profile_sort).value_or(ProfileSort::kTottime))
                << "\n"
                << format_lines(s);
      table_out.flush();
    }
    if (!o.profile_out.empty()) {
      std::ofstream f(o.profile_out, std::ios::trunc);
      write_callgrind(s, f, cmd);
      f.close();
      if (!f) {
        err = fmt::format("--profile-out: cannot write '{}'", o.profile_out);
        return false;
      }
    }
  }
  if (!o.trace_out.empty() && !p.write_trace(o.trace_out, err)) return false;
  return true;
}

}  // namespace mayhem
