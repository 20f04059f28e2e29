#include "mayhem/observe/stage_collector.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string>
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

StageCollector::StageCollector(const Clock& clock, Nanos watch_window, Nanos zone_window)
    : clock_(clock),
      window_(watch_window),
      zone_window_(zone_window),
      id_(g_next_id.fetch_add(1, std::memory_order_relaxed)) {
  // Timed from the start for one window, as if someone had just looked: the first scrape (or a
  // scraper's first minutes) sees the stage histograms filled, not empty.
  watch_.until.store(clock_.now() + window_, std::memory_order_relaxed);
  watch_.armed.store(true, std::memory_order_release);
}

StageCollector::~StageCollector() {
  if (watch_.zone_mask.load(std::memory_order_relaxed) != 0)
    g_zone_listeners.fetch_sub(1, std::memory_order_relaxed);
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
  // A zone frame left over (its exit came while no zone was watched) ends with its stage body.
  if (s.depth == 0) s.zone_depth = 0;
  constexpr int kFrames = static_cast<int>(std::tuple_size_v<decltype(s.stack)>);
  if (s.depth < kFrames) {
    const std::uint32_t bit = 1u << static_cast<int>(stage);
    bool zoned = (watch_.zone_mask.load(std::memory_order_relaxed) & bit) != 0;
    // A body nested in a timed one is timed too, so the parent's own time stays right.
    const bool timed = zoned || watch_.armed.load(std::memory_order_acquire) ||
                       (s.depth > 0 && s.stack[s.depth - 1].timed);
    Nanos start = 0;
    if (timed) {
      start = clock_.now();
      // Nobody asked for a while: stop timing. (If this races with a collect() re-arming, at most
      // one refresh goes untimed: the next collect() arms again.)
      if (s.depth == 0 && start > watch_.until.load(std::memory_order_relaxed))
        watch_.armed.store(false, std::memory_order_relaxed);
      if (zoned &&
          start > watch_.zone_until[static_cast<int>(stage)].load(std::memory_order_relaxed)) {
        const std::uint32_t before = watch_.zone_mask.fetch_and(~bit, std::memory_order_relaxed);
        // The last watched stage's window ended: zones stop calling observers for it.
        if (before == bit) g_zone_listeners.fetch_sub(1, std::memory_order_relaxed);
        zoned = false;
      }
    }
    s.stack[s.depth] = Frame{stage, timed, zoned, start, 0};
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
      if (f.zoned) {
        p.zoned_calls.bump(1);
        p.zoned_total.bump(static_cast<std::uint64_t>(total));
      }
      if (s.depth > 0 && s.depth - 1 < static_cast<int>(s.stack.size()))
        s.stack[s.depth - 1].child += total;
    }
  }
  p.items_out.bump(items);
  p.exited.bump(1);
}

void StageCollector::on_zone_entry(const ZoneSite& site) {
  if (watch_.zone_mask.load(std::memory_order_relaxed) == 0) return;
  Slot& s = slot();
  if (s.depth <= 0 || s.depth > static_cast<int>(s.stack.size()) ||
      s.zone_depth >= static_cast<int>(s.zones.size()) || !s.stack[s.depth - 1].zoned)
    return;
  const int id = zone_id(site);
  if (id < 0) return;
  s.zones[s.zone_depth++] = ZoneFrame{&site, id, s.depth, clock_.now()};
}

void StageCollector::on_zone_exit(const ZoneSite& site) {
  if (watch_.zone_mask.load(std::memory_order_relaxed) == 0) return;
  Slot& s = slot();
  if (s.zone_depth == 0 || s.zones[s.zone_depth - 1].site != &site) return;
  const ZoneFrame z = s.zones[--s.zone_depth];
  if (z.stage_depth != s.depth) return;  // not in the stage body it started in: drop it
  const Nanos dt = std::max<Nanos>(clock_.now() - z.start, 0);
  ZoneCell& c = s.stages[static_cast<int>(s.stack[z.stage_depth - 1].stage)].zones[z.id];
  c.hits.bump(1);
  c.time.bump(static_cast<std::uint64_t>(dt));
  const bool nested = s.zone_depth > 0 && s.zones[s.zone_depth - 1].stage_depth == z.stage_depth;
  c.parent.store(nested ? s.zones[s.zone_depth - 1].id : -1, std::memory_order_relaxed);
}

void StageCollector::watch_zones(Stage stage) {
  const int i = static_cast<int>(stage);
  if (i < 0 || i >= kStageCount) return;
  watch_.zone_until[i].store(clock_.now() + zone_window_, std::memory_order_relaxed);
  // The first watched stage: zones call observers from now on (see g_zone_listeners).
  if (watch_.zone_mask.fetch_or(1u << i, std::memory_order_relaxed) == 0)
    g_zone_listeners.fetch_add(1, std::memory_order_relaxed);
}

bool StageCollector::watch_zones(const std::string& stages) {
  std::vector<Stage> chosen;
  std::size_t from = 0;
  for (;;) {
    const std::size_t comma = stages.find(',', from);
    const std::string name = stages.substr(from, comma == std::string::npos ? comma : comma - from);
    int found = -1;
    for (int i = 0; i < kStageCount; ++i)
      if (name == to_string(static_cast<Stage>(i))) found = i;
    if (found < 0) return false;
    chosen.push_back(static_cast<Stage>(found));
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  for (Stage st : chosen) watch_zones(st);
  return true;
}

bool StageCollector::watching_zones(Stage stage) const {
  return (watch_.zone_mask.load(std::memory_order_relaxed) & (1u << static_cast<int>(stage))) != 0;
}

namespace {
// "src/..." of a __FILE__ path (the part from the last "src/" on), else the whole path.
std::string source_path(const char* file) {
  const std::string f = file ? file : "";
  const auto at = f.rfind("src/");
  return at == std::string::npos ? f : f.substr(at);
}
}  // namespace

std::vector<StageSnapshot> StageCollector::collect() const {
  watch_.until.store(clock_.now() + window_, std::memory_order_relaxed);
  watch_.armed.store(true, std::memory_order_release);
  std::vector<StageSnapshot> rows(kStageCount);
  std::vector<Histogram> own(kStageCount), total(kStageCount);
  std::vector<std::uint64_t> entered(kStageCount), exited(kStageCount), in(kStageCount),
      out(kStageCount), zoned_calls(kStageCount), zoned_total(kStageCount);
  struct ZoneSum {
    std::uint64_t hits = 0, time = 0;
    int parent = -1;
  };
  std::vector<std::array<ZoneSum, kMaxZones>> zones(kStageCount);
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
        zoned_calls[i] += p.zoned_calls.get();
        zoned_total[i] += p.zoned_total.get();
        for (int z = 0; z < kMaxZones; ++z) {
          const std::uint64_t hits = p.zones[z].hits.get();
          if (hits == 0) continue;
          zones[i][z].hits += hits;
          zones[i][z].time += p.zones[z].time.get();
          zones[i][z].parent = p.zones[z].parent.load(std::memory_order_relaxed);
        }
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
    r.zones.calls = zoned_calls[i];
    r.zones.total = zoned_total[i];
    for (int z = 0; z < kMaxZones; ++z) {
      const ZoneSite* site = zones[i][z].hits ? zone_site(z) : nullptr;
      if (!site) continue;
      const ZoneSite* parent = zone_site(zones[i][z].parent);
      r.zones.rows.push_back(ZoneRow{
          site->name, source_path(site->file), site->line,
          parent ? fmt::format("{}:{}", source_path(parent->file), parent->line) : std::string(),
          zones[i][z].hits, zones[i][z].time});
    }
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
