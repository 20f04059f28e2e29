// The profiler's watchdog and the lease thread's tick: every few milliseconds the lease thread
// samples the trace's counter tracks (in flight, queue depth) and looks for outermost stage bodies
// that have run longer than `--slow-task-ms` without returning. Both read the other threads'
// slots (relaxed loads). Also the collector's rare paths (entry_rare, exit_rare: a stage body's
// slow-task bookkeeping, its trace slice, the lease tick), out of the hot file.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "mayhem/observe/profiler.hpp"
#include "mayhem/rng.hpp"
#include "thread_data.hpp"

namespace mayhem {

using namespace profiler_detail;

std::string profiler_detail::message_text(std::uint64_t seq, const char* name,
                                          std::uint32_t items) {
  if (items == 0) return "no messages";
  return fmt::format("{} message{}, first PubSubMessage(instance_name='{}') seq {}", items,
                     items == 1 ? "" : "s", name, seq);
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

}  // namespace mayhem
