#include "mayhem/observe/stage_collector.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <thread>
#include <tuple>

namespace mayhem {

namespace {
std::atomic<std::uint64_t> g_next_id{1};
}  // namespace

StageCollector::StageCollector(const Clock& clock, Nanos watch_window, Nanos zone_window,
                               Nanos slice)
    : clock_(clock),
      window_(watch_window),
      zone_window_(zone_window),
      slice_(slice),
      id_(g_next_id.fetch_add(1, std::memory_order_relaxed)) {
  // The first slice starts with the first body (a service may take a while to start).
  watch_.until.store(kFromFirstBody, std::memory_order_relaxed);
  watch_.bits.store(kArmed, std::memory_order_release);
}

void StageCollector::arm_until(Nanos until) const {
  Nanos now = watch_.until.load(std::memory_order_relaxed);
  while (now < until &&
         !watch_.until.compare_exchange_weak(now, until, std::memory_order_relaxed)) {
  }
  watch_.bits.fetch_or(kArmed, std::memory_order_release);
}

StageCollector::~StageCollector() {
  if ((watch_.bits.load(std::memory_order_relaxed) & kZoneMask) != 0)
    g_zone_listeners.fetch_sub(1, std::memory_order_relaxed);
}

StageCollector::Slot& StageCollector::slot_slow() {
  Slot*& mine = local_.local();
  if (mine == nullptr) {  // first call on this thread: once per thread, not per batch
    auto fresh = std::make_unique<Slot>();
    mine = fresh.get();
    std::lock_guard lock(mutex_);
    slots_.push_back(std::move(fresh));
  }
  detail::t_collector_slot = detail::CollectorSlotCache{id_, mine};
  return *mine;
}

// Inlined into the slow paths: the hand-off is a few instructions, not two more calls.
[[gnu::always_inline]] inline void StageCollector::forward_entry(Slot& s, Stage stage,
                                                                 std::uint32_t items,
                                                                 Message* const* msgs) {
  if (also_) also_->on_entry(stage, items, msgs);
  if (attached_.load(std::memory_order_relaxed))
    call_attached(s, [&](Observer& o) { o.on_entry(stage, items, msgs); });
}

[[gnu::always_inline]] inline void StageCollector::forward_exit(Slot& s, Stage stage,
                                                                std::uint32_t items) {
  if (attached_.load(std::memory_order_relaxed))
    call_attached(s, [&](Observer& o) { o.on_exit(stage, items); });
  if (also_) also_->on_exit(stage, items);
}

void StageCollector::forward_entry_out(Slot& s, Stage stage, std::uint32_t items,
                                       Message* const* msgs) {
  forward_entry(s, stage, items, msgs);
}

void StageCollector::forward_exit_out(Slot& s, Stage stage, std::uint32_t items) {
  forward_exit(s, stage, items);
}

void StageCollector::entry_slow(Slot& s, Stage stage, std::uint32_t items, Message* const* msgs) {
  constexpr int kFrames = static_cast<int>(std::tuple_size_v<decltype(s.stack)>);
  // Only handed on (a capture, --profile): outside any frame nothing is timed and no frame is
  // pushed (on_entry does that; the fast exit hands the exit on); inside an untimed frame a frame
  // keeps the exits paired.
  if (watch_.bits.load(std::memory_order_relaxed) == kForward) {
    if (s.depth == 0) return forward_entry(s, stage, items, msgs);
    if (s.depth <= kFrames && !s.stack[s.depth - 1].timed) {
      Counts& p = s.counts[static_cast<int>(stage)];
      p.w_entered.bump(1);
      p.w_items_in.bump(items);
      if (s.depth < kFrames) s.stack[s.depth] = Frame{stage, false, false, 0, 0};
      ++s.depth;
      return forward_entry(s, stage, items, msgs);
    }
  }
  Counts& p = s.counts[static_cast<int>(stage)];
  p.w_entered.bump(1);
  p.w_items_in.bump(items);
  // A zone frame left over (its exit came while no zone was watched) ends with its stage body.
  if (s.depth == 0) s.zone_depth = 0;
  if (s.timed_owned == nullptr) {  // this thread's first timed body
    s.timed_owned = std::make_unique<TimedStages>();
    s.timed.store(s.timed_owned.get(), std::memory_order_release);
  }
  if (s.depth < kFrames) {
    const std::uint32_t bit = 1u << static_cast<int>(stage);
    const std::uint32_t bits = watch_.bits.load(std::memory_order_acquire);
    bool zoned = (bits & bit) != 0;
    // A body nested in a timed one is timed too, so the parent's own time stays right.
    const bool timed = zoned || (bits & kArmed) != 0 || (s.depth > 0 && s.stack[s.depth - 1].timed);
    Nanos start = 0;
    if (timed) {
      start = clock_.now();
      // Nobody asked for a while: stop timing. (If this races with a collect() re-arming, at most
      // one refresh goes untimed: the next collect() arms again.)
      Nanos until = watch_.until.load(std::memory_order_relaxed);
      if (until == kFromFirstBody &&
          watch_.until.compare_exchange_strong(until, start + slice_, std::memory_order_relaxed))
        until = start + slice_;
      if (s.depth == 0 && start > until) watch_.bits.fetch_and(~kArmed, std::memory_order_relaxed);
      if (zoned &&
          start > watch_.zone_until[static_cast<int>(stage)].load(std::memory_order_relaxed)) {
        const std::uint32_t before = watch_.bits.fetch_and(~bit, std::memory_order_relaxed);
        // The last watched stage's window ended: zones stop calling observers for it.
        if ((before & kZoneMask) == bit) g_zone_listeners.fetch_sub(1, std::memory_order_relaxed);
        zoned = false;
      }
    }
    s.stack[s.depth] = Frame{stage, timed, zoned, start, 0};
  }
  ++s.depth;
  if (watch_.bits.load(std::memory_order_relaxed) & kForward) forward_entry(s, stage, items, msgs);
}

void StageCollector::entry_first(Stage stage, std::uint32_t items, Message* const* msgs) {
  slot_slow();
  on_entry(stage, items, msgs);
}

void StageCollector::exit_first(Stage stage, std::uint32_t items) {
  slot_slow();
  on_exit(stage, items);
}

void StageCollector::exit_slow(Slot& s, Counts& p, Stage stage, std::uint32_t items) {
  if (watch_.bits.load(std::memory_order_relaxed) & kForward) forward_exit(s, stage, items);
  --s.depth;
  if (s.depth < static_cast<int>(s.stack.size()) && s.stack[s.depth].stage == stage &&
      s.stack[s.depth].timed) {
    const Frame& f = s.stack[s.depth];
    Timed& t = (*s.timed_owned)[static_cast<int>(stage)];
    const Nanos total = std::max<Nanos>(clock_.now() - f.start, 0);
    const Nanos own = std::max<Nanos>(total - f.child, 0);
    t.total.record(static_cast<std::uint64_t>(total));
    t.own.record(static_cast<std::uint64_t>(own));
    if (f.zoned) {
      t.zoned_calls.bump(1);
      t.zoned_total.bump(static_cast<std::uint64_t>(total));
    }
    if (s.depth > 0 && s.depth - 1 < static_cast<int>(s.stack.size()))
      s.stack[s.depth - 1].child += total;
  }
  p.w_items_out.bump(items);
  p.w_exited.bump(1);
  p.items_out.bump(items);
  p.exited.bump(1);
}

void StageCollector::on_zone_entry(const ZoneSite& site) {
  const std::uint32_t bits = watch_.bits.load(std::memory_order_relaxed);
  if (bits & kZoneMask) zone_entry_own(site);
  if (bits & kForward) forward_zone_entry(site);
}

void StageCollector::on_zone_exit(const ZoneSite& site) {
  const std::uint32_t bits = watch_.bits.load(std::memory_order_relaxed);
  if (bits & kForward) forward_zone_exit(site);
  if (bits & kZoneMask) zone_exit_own(site);
}

// ---- other observers: --profile's (also_) and a capture's (attached_) ---------------------------

void StageCollector::forward_pull(Message* const* msgs, std::uint32_t n) {
  if (also_) also_->on_pull(msgs, n);
  if (attached_.load(std::memory_order_relaxed))
    call_attached(slot(), [&](Observer& o) { o.on_pull(msgs, n); });
}

void StageCollector::forward_zone_entry(const ZoneSite& site) {
  if (also_) also_->on_zone_entry(site);
  if (attached_.load(std::memory_order_relaxed))
    call_attached(slot(), [&](Observer& o) { o.on_zone_entry(site); });
}

void StageCollector::forward_zone_exit(const ZoneSite& site) {
  if (attached_.load(std::memory_order_relaxed))
    call_attached(slot(), [&](Observer& o) { o.on_zone_exit(site); });
  if (also_) also_->on_zone_exit(site);
}

void StageCollector::set_forwarding() {
  if (also_ != nullptr || attached_.load(std::memory_order_relaxed) != nullptr)
    watch_.bits.fetch_or(kForward, std::memory_order_seq_cst);
  else
    watch_.bits.fetch_and(~kForward, std::memory_order_seq_cst);
}

void StageCollector::also(Observer* o) {
  std::lock_guard lock(attach_mutex_);
  also_ = o;
  set_forwarding();
}

bool StageCollector::attach(Observer* o) {
  Observer* none = nullptr;
  std::lock_guard lock(attach_mutex_);
  if (o == nullptr || !attached_.compare_exchange_strong(none, o, std::memory_order_seq_cst))
    return false;
  set_forwarding();
  return true;
}

void StageCollector::detach() {
  {
    std::lock_guard lock(attach_mutex_);
    if (attached_.exchange(nullptr, std::memory_order_seq_cst) == nullptr) return;
    set_forwarding();
  }
  // A thread whose slot is registered after this copy registers it after the exchange above (the
  // mutex orders the two), so its load sees null: only the slots copied here can be inside.
  std::vector<Slot*> slots;
  {
    std::lock_guard lock(mutex_);
    for (const auto& sl : slots_) slots.push_back(sl.get());
  }
  for (Slot* sl : slots) {
    // A hook is a few hundred nanoseconds; a thread preempted inside one is waited for.
    for (int spins = 0; sl->inside.load(std::memory_order_seq_cst) != 0; ++spins) {
      if (spins < 64)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

// ---- the collector's own zone timing ---------------------------------------------------------

void StageCollector::zone_entry_own(const ZoneSite& site) {
  Slot& s = slot();
  if (s.depth <= 0 || s.depth > static_cast<int>(s.stack.size()) ||
      s.zone_depth >= static_cast<int>(s.zones.size()) || !s.stack[s.depth - 1].zoned)
    return;
  const int id = zone_id(site);
  if (id < 0) return;
  s.zones[s.zone_depth++] = ZoneFrame{&site, id, s.depth, clock_.now()};
}

void StageCollector::zone_exit_own(const ZoneSite& site) {
  Slot& s = slot();
  if (s.zone_depth == 0 || s.zones[s.zone_depth - 1].site != &site) return;
  const ZoneFrame z = s.zones[--s.zone_depth];
  if (z.stage_depth != s.depth) return;  // not in the stage body it started in: drop it
  const Nanos dt = std::max<Nanos>(clock_.now() - z.start, 0);
  // A zone frame is pushed only inside a zoned stage frame, whose entry allocated `timed`.
  ZoneCell& c = (*s.timed_owned)[static_cast<int>(s.stack[z.stage_depth - 1].stage)].zones[z.id];
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
  if ((watch_.bits.fetch_or(1u << i, std::memory_order_relaxed) & kZoneMask) == 0)
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
  return (watch_.bits.load(std::memory_order_relaxed) & (1u << static_cast<int>(stage))) != 0;
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
  arm_until(clock_.now() + window_);
  std::vector<StageSnapshot> rows(kStageCount);
  std::vector<Histogram> own(kStageCount), total(kStageCount);
  std::vector<std::uint64_t> exited(kStageCount), out(kStageCount), w_entered(kStageCount),
      w_exited(kStageCount), w_in(kStageCount), w_out(kStageCount), zoned_calls(kStageCount),
      zoned_total(kStageCount);
  struct ZoneSum {
    std::uint64_t hits = 0, time = 0;
    int parent = -1;
  };
  std::vector<std::array<ZoneSum, kMaxZones>> zones(kStageCount);
  {
    std::lock_guard lock(mutex_);
    for (const auto& slot : slots_) {
      for (int i = 0; i < kStageCount; ++i) {
        const Counts& c = slot->counts[i];
        // Exits before entries: a body that ends between the two reads never shows as negative.
        exited[i] += c.exited.get();
        out[i] += c.items_out.get();
        w_exited[i] += c.w_exited.get();
        w_out[i] += c.w_items_out.get();
        w_entered[i] += c.w_entered.get();
        w_in[i] += c.w_items_in.get();
        const TimedStages* timed = slot->timed.load(std::memory_order_acquire);
        if (timed == nullptr) continue;  // this thread was never watched
        const Timed& p = (*timed)[i];
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
    r.active = std::max<std::int64_t>(static_cast<std::int64_t>(w_entered[i] - w_exited[i]), 0);
    r.in_flight = std::max<std::int64_t>(static_cast<std::int64_t>(w_in[i] - w_out[i]), 0);
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

std::uint64_t StageCollector::items_done(Stage stage) const {
  std::uint64_t n = 0;
  std::lock_guard lock(mutex_);
  for (const auto& slot : slots_) n += slot->counts[static_cast<int>(stage)].items_out.get();
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
  // Counted as each body ends (a submit's messages are submitted when its body ends). Completions
  // first, then submissions: "submitted and not completed" never goes negative, except inside a
  // submit whose completion ran inline (clamped to 0: nothing is pending then).
  const auto done = [&](Stage st) { return collector.items_done(st); };
  const std::uint64_t settle_in = done(Stage::kSettle), restarted_in = done(Stage::kRestarted),
                      saved_in = done(Stage::kSaved);
  s.stages = collector.collect();
  const std::uint64_t cleanup_in = done(Stage::kCleanup), restart_in = done(Stage::kRestart),
                      save_in = done(Stage::kSave);
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
