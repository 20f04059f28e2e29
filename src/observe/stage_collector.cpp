#include "mayhem/observe/stage_collector.hpp"

#include <algorithm>
#include <tuple>

namespace mayhem {

namespace {
std::atomic<std::uint64_t> g_next_id{1};
// The slot this thread used last, and whose it is: a hit skips the ETS lookup. Keyed by a unique
// id, never by address, so a later collector at the same address cannot pick up a stale slot.
struct LastSlot {
  std::uint64_t owner = 0;
  void* slot = nullptr;
};
thread_local LastSlot t_last;
}  // namespace

StageCollector::StageCollector(const Clock& clock, Nanos watch_window)
    : clock_(clock), window_(watch_window), id_(g_next_id.fetch_add(1, std::memory_order_relaxed)) {
  // Timed from the start for one window, as if someone had just looked: the first scrape (or a
  // scraper's first minutes) sees the stage histograms filled, not empty.
  watch_.until.store(clock_.now() + window_, std::memory_order_relaxed);
  watch_.armed.store(true, std::memory_order_release);
}

StageCollector::Slot& StageCollector::slot() {
  if (t_last.owner == id_) return *static_cast<Slot*>(t_last.slot);
  Slot*& mine = local_.local();
  if (mine == nullptr) {  // first call on this thread: once per thread, not per batch
    auto fresh = std::make_unique<Slot>();
    mine = fresh.get();
    std::lock_guard lock(mutex_);
    slots_.push_back(std::move(fresh));
  }
  t_last = LastSlot{id_, mine};
  return *mine;
}

void StageCollector::on_entry(Stage stage, std::uint32_t items, Message* const* /*msgs*/) {
  Slot& s = slot();
  PerStage& p = s.stages[static_cast<int>(stage)];
  p.entered.bump(1);
  p.items_in.bump(items);
  constexpr int kFrames = static_cast<int>(std::tuple_size_v<decltype(s.stack)>);
  if (s.depth < kFrames) {
    // A body nested in a timed one is timed too, so the parent's own time stays right.
    const bool timed =
        watch_.armed.load(std::memory_order_acquire) || (s.depth > 0 && s.stack[s.depth - 1].timed);
    Nanos start = 0;
    if (timed) {
      start = clock_.now();
      // Nobody asked for a while: stop timing. (If this races with a collect() re-arming, at most
      // one refresh goes untimed: the next collect() arms again.)
      if (s.depth == 0 && start > watch_.until.load(std::memory_order_relaxed))
        watch_.armed.store(false, std::memory_order_relaxed);
    }
    s.stack[s.depth] = Frame{stage, timed, start, 0};
  }
  ++s.depth;
}

void StageCollector::on_exit(Stage stage, std::uint32_t items) {
  Slot& s = slot();
  PerStage& p = s.stages[static_cast<int>(stage)];
  if (s.depth > 0) {
    --s.depth;
    if (s.depth < static_cast<int>(s.stack.size()) && s.stack[s.depth].stage == stage &&
        s.stack[s.depth].timed) {
      const Frame& f = s.stack[s.depth];
      const Nanos total = std::max<Nanos>(clock_.now() - f.start, 0);
      const Nanos own = std::max<Nanos>(total - f.child, 0);
      p.total.record(static_cast<std::uint64_t>(total));
      p.own.record(static_cast<std::uint64_t>(own));
      if (s.depth > 0 && s.depth - 1 < static_cast<int>(s.stack.size()))
        s.stack[s.depth - 1].child += total;
    }
  }
  p.items_out.bump(items);
  p.exited.bump(1);
}

std::vector<StageSnapshot> StageCollector::collect() const {
  watch_.until.store(clock_.now() + window_, std::memory_order_relaxed);
  watch_.armed.store(true, std::memory_order_release);
  std::vector<StageSnapshot> rows(kStageCount);
  std::vector<Histogram> own(kStageCount), total(kStageCount);
  std::vector<std::uint64_t> entered(kStageCount), exited(kStageCount), in(kStageCount),
      out(kStageCount);
  {
    std::lock_guard lock(mutex_);
    for (const auto& slot : slots_) {
      for (int i = 0; i < kStageCount; ++i) {
        const PerStage& p = slot->stages[i];
        // Exits before entries: a body that ends between the two reads never shows as negative.
        exited[i] += p.exited.get();
        out[i] += p.items_out.get();
        entered[i] += p.entered.get();
        in[i] += p.items_in.get();
        p.own.merge_into(own[i]);
        p.total.merge_into(total[i]);
      }
    }
  }
  for (int i = 0; i < kStageCount; ++i) {
    StageSnapshot& r = rows[i];
    r.name = to_string(static_cast<Stage>(i));
    r.calls = exited[i];
    r.items = out[i];
    r.active = std::max<std::int64_t>(static_cast<std::int64_t>(entered[i] - exited[i]), 0);
    r.in_flight = std::max<std::int64_t>(static_cast<std::int64_t>(in[i] - out[i]), 0);
    r.own = HistogramData::of(own[i]);
    r.total = HistogramData::of(total[i]);
  }
  return rows;
}

std::uint64_t StageCollector::items_entered(Stage stage) const {
  std::uint64_t n = 0;
  std::lock_guard lock(mutex_);
  for (const auto& slot : slots_) n += slot->stages[static_cast<int>(stage)].items_in.get();
  return n;
}

}  // namespace mayhem

namespace mayhem {

namespace {
std::int64_t at_least_zero(std::uint64_t a, std::uint64_t b) {
  return a > b ? static_cast<std::int64_t>(a - b) : 0;
}
}  // namespace

void add_stage_rows(StatsSnapshot& s, const StageCollector& collector, StageLimits limits) {
  const std::uint64_t backlog = s.backlog;
  // Completions first, then submissions: "submitted and not completed" never goes negative.
  const auto entered = [&](Stage st) { return collector.items_entered(st); };
  const std::uint64_t settle_in = entered(Stage::kSettle),
                      restarted_in = entered(Stage::kRestarted), saved_in = entered(Stage::kSaved);
  s.stages = collector.collect();
  const std::uint64_t cleanup_in = entered(Stage::kCleanup), restart_in = entered(Stage::kRestart),
                      save_in = entered(Stage::kSave);
  auto row = [&](Stage st) -> StageSnapshot& { return s.stages[static_cast<int>(st)]; };
  row(Stage::kPublish).limit = 1;
  row(Stage::kConsume).limit = 1;
  row(Stage::kLease).limit = 1;
  row(Stage::kSave).limit = limits.save;
  row(Stage::kRestart).limit = limits.restart;
  // Neither publish (its order count, 0 flat out) nor consume (0: unknown up front) knows its
  // message count on entry; the pipeline counts what they made and pulled (a broker source has
  // no publish stage).
  row(Stage::kPublish).items = s.scope == NumberScope::kBroker ? 0 : s.published;
  row(Stage::kConsume).items = s.consumed;
  row(Stage::kConsume).queued = static_cast<std::int64_t>(backlog);
  row(Stage::kSave).in_flight = at_least_zero(save_in, saved_in);
  row(Stage::kSave).queued = at_least_zero(s.consumed, save_in);
  row(Stage::kRestart).in_flight = at_least_zero(restart_in, restarted_in);
  // Save hands every lot on to restart; retries come back to restart too.
  row(Stage::kRestart).queued =
      at_least_zero(row(Stage::kSave).items + s.restart_retries, restart_in);
  row(Stage::kCleanup).in_flight = at_least_zero(cleanup_in, settle_in);
  row(Stage::kSaved).errors = s.save_failed;
  row(Stage::kRestarted).errors = s.restart_failed;
  row(Stage::kRestarted).retries = s.restart_retries;
  row(Stage::kSettle).errors = s.nacked;
}

}  // namespace mayhem
