// The profiler's watchdog and the lease thread's tick: every few milliseconds the lease thread
// samples the trace's counter tracks (in flight, queue depth) and looks for outermost stage bodies
// that have run longer than `--slow-task-ms` without returning. Both read the other threads'
// slots (relaxed loads).
#include <fmt/format.h>

#include <cstring>

#include "mayhem/observe/profiler.hpp"
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

}  // namespace mayhem
