// The profiler's collector: the hot path. Per-thread slots found through a thread_local, stage
// and zone frames, the time base (TSC or the clock), I/O and queue waits as sums, the lease
// thread's tick (counter tracks, watchdog) and slow-task warnings. Trace sampling by pool slot is
// in sampling.cpp; the readers are in snapshot.cpp (table data, watchdog), trace_writer.cpp and
// reports.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "mayhem/message.hpp"
#include "mayhem/observe/profiler.hpp"
#include "mayhem/rng.hpp"
#include "thread_data.hpp"

namespace mayhem {

using namespace profiler_detail;

namespace {

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

std::atomic<std::uint64_t> g_generation{1};

// This thread's slot of the profiler that last asked (t_slot) and of the one before (t_prev): a
// capture's profiler and --profile's, live at once, each find theirs without a search.
struct TlsSlot {
  std::uint64_t gen = 0;
  Profiler::ThreadData* td = nullptr;
};
thread_local TlsSlot t_slot, t_prev;

}  // namespace

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
  // Zones feed the table only: without it (a trace alone) they need not call observers.
  if (cfg_.profile) g_zone_listeners.fetch_add(1, std::memory_order_relaxed);
}

Profiler::~Profiler() {
  if (cfg_.profile) g_zone_listeners.fetch_sub(1, std::memory_order_relaxed);
  ThreadData* t = threads_.load(std::memory_order_acquire);
  while (t) {
    ThreadData* next = t->next;
    delete t;
    t = next;
  }
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
  const Ticks end = end_ticks_.load(std::memory_order_acquire);
  const Ticks t = end != 0 ? end : read_tsc();
  const Nanos n = end != 0 ? end_ns_.load(std::memory_order_relaxed) : steady_now();
  if (end != 0 && t > start_ticks_)
    return static_cast<double>(n - start_) / double(t - start_ticks_);
  // Over at least 50 ms the run itself calibrates better than the 200 us at the start.
  if (n - start_ < 50'000'000 || t <= start_ticks_) return ns_per_tick_;
  return static_cast<double>(n - start_) / static_cast<double>(t - start_ticks_);
}

Nanos Profiler::to_ns(Ticks t) const {
  return tsc_ ? std::llround(static_cast<double>(t) * ns_per_tick_) : t;
}

void Profiler::seed_in_flight(const std::array<std::uint64_t, kOpCount>& n) {
  for (int op = 0; op < kOpCount; ++op) io_seed_[op].store(n[op], std::memory_order_relaxed);
}

void Profiler::freeze() {
  if (end_ticks_.load(std::memory_order_relaxed) != 0) return;
  end_ns_.store(now(), std::memory_order_relaxed);
  end_ticks_.store(ticks(), std::memory_order_release);
}

Profiler::ThreadData* Profiler::local() {
  const TlsSlot& s = t_slot;
  if (s.gen == gen_) [[likely]]
    return s.td;
  return local_slow();
}

Profiler::ThreadData* Profiler::local_slow() {
  std::swap(t_slot, t_prev);
  if (t_slot.gen == gen_) return t_slot.td;
  // Neither cached: this thread's slot from the list, else a new one (once per thread).
  const std::thread::id me = std::this_thread::get_id();
  for (ThreadData* o = threads_.load(std::memory_order_acquire); o; o = o->next)
    if (o->owner == me) {
      t_slot = TlsSlot{gen_, o};
      return o;
    }
  auto* t = new ThreadData();
  t->owner = me;
  t->trace.set_cap(cfg_.trace_max_events);
  t->index = thread_count_.fetch_add(1, std::memory_order_relaxed);
  ThreadData* head = threads_.load(std::memory_order_relaxed);
  do {
    t->next = head;
  } while (!threads_.compare_exchange_weak(head, t, std::memory_order_release,
                                           std::memory_order_relaxed));
  t_slot = TlsSlot{gen_, t};
  return t;
}

// The table: one call of `node` under its parent frame (the root when outermost).
void Profiler::account(ThreadData& t, int node, std::uint32_t items, Ticks dur) {
  const int parent =
      t.depth > 0 && t.stack[t.depth - 1].node >= 0 ? t.stack[t.depth - 1].node : kRoot;
  Cell& c = t.cells[parent][node];
  single_writer_add(c.calls, 1);
  single_writer_add(c.incl, static_cast<std::uint64_t>(dur));
  single_writer_add(c.items, items);
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

// One entry path and one exit path, each compiled twice. kProfileOnly is --profile alone (no
// trace, no slow-task checks): the common case, and the one with a cost budget. There the trace
// and slow-task tests fold away at compile time and what is left is the thread's slot, a frame,
// one clock read and two counters. on_entry/on_exit choose with one test; both instances are
// inlined where they are called (the short one into on_entry/on_exit).
void Profiler::on_entry(Stage stage, std::uint32_t items, Message* const* msgs) {
  if (!profile_only_) [[unlikely]]
    return entry_general(stage, items, msgs);
  stage_entry<true>(stage, items, msgs);
}

void Profiler::on_exit(Stage stage, std::uint32_t items) {
  if (!profile_only_) [[unlikely]]
    return exit_general(stage, items);
  stage_exit<true>(stage, items);
}

// The other configurations (trace, slow-task checks), out of line.
void Profiler::entry_general(Stage stage, std::uint32_t items, Message* const* msgs) {
  stage_entry<false>(stage, items, msgs);
}

void Profiler::exit_general(Stage stage, std::uint32_t items) {
  stage_exit<false>(stage, items);
}

template <bool kProfileOnly>
void Profiler::stage_entry(Stage stage, std::uint32_t items, Message* const* msgs) {
  ThreadData& t = *local();
  const int d = t.depth;
  if (d == kMaxDepth || t.overflow > 0) [[unlikely]] {
    ++t.overflow;
    return;
  }
  t.depth = d + 1;
  const int node = static_cast<int>(stage);
  Frame& f = t.stack[d];
  f.items = items;
  f.node = static_cast<std::int16_t>(node);
  f.carries = msgs != nullptr;
  f.timed = true;
  f.sampled = false;
  const int io = kIoSlot[node];
  if constexpr (!kProfileOnly) {
    f.nseq = 0;
    if (count_ && io >= 0) single_writer_add(t.io_n[io], items);
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
  }
  const Ticks now = ticks();
  f.start = now;
  if (io >= 0 && (kProfileOnly || cfg_.profile)) {
    if (kProfileOnly) single_writer_add(t.io_n[io], items);  // else counted before the trace check
    single_writer_add(t.io_t[io], static_cast<std::uint64_t>(items) *
                                      static_cast<std::uint64_t>(now - start_ticks_));
  }
  if constexpr (!kProfileOnly) {
    if (f.sampled) note_sampled(t, f, stage, msgs, items, now);
    if (cfg_.slow_task > 0 || stage == Stage::kLease) [[unlikely]]
      entry_rare(t, f, stage, items, msgs, now);
  }
}

template <bool kProfileOnly>
void Profiler::stage_exit(Stage stage, std::uint32_t items) {
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
  if (stage == Stage::kPublish && (kProfileOnly || count_)) single_writer_add(t.published, items);
  if (!kProfileOnly && !f.timed) return;
  const Ticks now = ticks();
  items = std::max(items, f.items);  // consume learns its count from on_pull
  const Ticks dur = std::max<Ticks>(now - f.start, 0);
  if (kProfileOnly || cfg_.profile) account(t, node, items, dur);
  if (!kProfileOnly && (cfg_.trace || cfg_.slow_task > 0)) exit_rare(t, f, stage, items, dur, now);
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
  if (count_) single_writer_add(t.pulled, n);
  Nanos now = 0;
  if (cfg_.profile) {
    now = this->now();
    // n x now - the sum of publish times: one load per message (publish times come from the same
    // clock, so no message is younger than now).
    // Eight at a time through a pointer, two sums: about half the loop's instructions.
    const auto at = [](const Message* m) { return static_cast<std::uint64_t>(m->published_ns); };
    std::uint64_t published = 0, published2 = 0;
    Message* const* p = msgs;
    for (Message* const* const end8 = msgs + (n & ~7u); p != end8; p += 8) {
      published += (at(p[0]) + at(p[1])) + (at(p[2]) + at(p[3]));
      published2 += (at(p[4]) + at(p[5])) + (at(p[6]) + at(p[7]));
    }
    for (Message* const* const end = msgs + n; p != end; ++p) published += at(*p);
    published += published2;
    const auto wait = static_cast<std::int64_t>(n * static_cast<std::uint64_t>(now) - published);
    single_writer_add(t.pulled_wait, static_cast<std::uint64_t>(std::max<std::int64_t>(wait, 0)));
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

}  // namespace mayhem
