// Live per-stage numbers for the stats endpoint and `mayhem top`: an `Observer` that counts each
// stage's calls and messages and times its bodies (own time = the body minus stage bodies nested in
// it, e.g. an inline completion inside a submit; total time = the whole body). Every thread writes
// only its own slot (single-writer relaxed atomics, no locks, no shared cache lines); `collect()`
// sums the slots while the service runs. Installed only when someone may look (--stats-addr,
// --live): with no observer the pipeline pays one branch per batch. Timing costs two clock reads
// per body (their cost: docs/PROFILING.md, "Cost"), so bodies are timed for the first `watch_window`
// (the histograms are filled before anyone first looks) and afterwards only while someone watches:
// each `collect()` arms timing for `watch_window` again; calls and messages are always counted.
// Zones (MAYHEM_ZONE, mayhem/observe/zone.hpp) are timed per stage only while someone drills into
// that stage: `watch_zones(stage)` arms them for `zone_window` (a drill-down calls it on every
// refresh); each zone is counted in the innermost stage body it runs in. Unwatched, a zone costs
// one relaxed load at entry and one at exit.
// Use: `StageCollector c(clock); deps.observer = &c; ... auto rows = c.collect();`
#pragma once

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/observer.hpp"
#include "mayhem/observe/stats.hpp"
#include "mayhem/observe/zone.hpp"
#include "mayhem/single_writer.hpp"

namespace mayhem {

inline constexpr int kStageCount = static_cast<int>(Stage::kCount);

class StageCollector final : public Observer {
 public:
  explicit StageCollector(const Clock& clock, Nanos watch_window = 60 * kNanosPerSecond,
                          Nanos zone_window = 10 * kNanosPerSecond);
  ~StageCollector() override;
  StageCollector(const StageCollector&) = delete;
  StageCollector& operator=(const StageCollector&) = delete;

  void on_entry(Stage stage, std::uint32_t items, Message* const* msgs = nullptr) override;
  void on_exit(Stage stage, std::uint32_t items) override;
  void on_zone_entry(const ZoneSite& site) override;
  void on_zone_exit(const ZoneSite& site) override;

  // Times the zones inside `stage`'s bodies (and the bodies themselves) from now until
  // `zone_window` has passed; collect() then fills that stage's `zones`.
  void watch_zones(Stage stage);
  // The same by name: "save" or "save,saved". False (and nothing armed) for an unknown name.
  bool watch_zones(const std::string& stages);
  bool watching_zones(Stage stage) const;

  // One row per stage, in pipeline order, with calls, items, active, own/total histograms, zones; the
  // fields the collector cannot know (limit, queued, errors, retries) are left for the caller.
  // `in_flight` is the messages inside the body now. Also (re)arms timing for the watch window.
  std::vector<StageSnapshot> collect() const;
  bool timing() const { return watch_.armed.load(std::memory_order_relaxed); }
  // Messages that entered `stage`'s body so far (for derived in-flight/queued numbers).
  std::uint64_t items_entered(Stage stage) const;

 private:
  struct Counter1 {  // single writer: the owning thread
    std::atomic<std::uint64_t> v{0};
    void bump(std::uint64_t n) { single_writer_add(v, n); }
    std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
  };
  struct ZoneCell {
    Counter1 hits, time;
    std::atomic<int> parent{-1};  // the enclosing zone's id; -1: the stage body
  };
  struct PerStage {
    Counter1 entered, exited, items_in, items_out;
    Counter1 zoned_calls, zoned_total;  // bodies timed with their zones watched
    Histogram own, total;
    std::array<ZoneCell, kMaxZones> zones;
  };
  struct Frame {
    Stage stage;
    bool timed;
    bool zoned;  // its zones are timed
    Nanos start;
    Nanos child;
  };
  struct ZoneFrame {
    const ZoneSite* site;
    int id;
    int stage_depth;  // the depth of the stage frame it runs in (1 = the outermost)
    Nanos start;
  };
  struct alignas(64) Slot {
    std::array<PerStage, kStageCount> stages;
    std::array<Frame, 8> stack{};
    int depth = 0;  // frames beyond the array are counted but not timed
    std::array<ZoneFrame, 8> zones{};
    int zone_depth = 0;  // zone frames beyond the array are not timed
  };

  const Clock& clock_;
  const Nanos window_, zone_window_;
  struct alignas(64) Watch {  // read by every body, written about once per collect()
    std::atomic<bool> armed{false};
    std::atomic<Nanos> until{0};
    std::atomic<std::uint32_t> zone_mask{0};  // bit per stage whose zones are watched
    std::array<std::atomic<Nanos>, kStageCount> zone_until{};
  };
  mutable Watch watch_;
  const std::uint64_t id_;                                 // unique per collector (see slot())
  tbb::enumerable_thread_specific<Slot*> local_{nullptr};  // this thread's slot, found fast
  mutable std::mutex mutex_;                               // taken once per thread, and by readers
  std::vector<std::unique_ptr<Slot>> slots_;               // every thread's slot (owned here)

  Slot& slot();
};

// The configured concurrency of the limited stages (0 = unlimited).
struct StageLimits {
  std::uint32_t save = 0, restart = 0;
};

// Adds one row per stage from `collector` to `s`, whose numbers must be read already (counters
// before the collector's counts): each stage's in-flight and queued messages are derived from the
// flow between stages.
void add_stage_rows(StatsSnapshot& s, const StageCollector& collector, StageLimits limits);

// Calls several observers in order (exit hooks in reverse order), e.g. the stage collector and a
// profiler at once. Null entries are skipped when added.
class FanOutObserver final : public Observer {
 public:
  void add(Observer* o) {
    if (o) observers_.push_back(o);
  }
  bool empty() const { return observers_.empty(); }
  // The one observer to install: null for none, the only one, or this fan-out.
  Observer* get() {
    if (observers_.empty()) return nullptr;
    return observers_.size() == 1 ? observers_.front() : this;
  }
  void on_entry(Stage stage, std::uint32_t items, Message* const* msgs) override {
    for (Observer* o : observers_) o->on_entry(stage, items, msgs);
  }
  void on_exit(Stage stage, std::uint32_t items) override {
    for (auto it = observers_.rbegin(); it != observers_.rend(); ++it) (*it)->on_exit(stage, items);
  }
  void on_pull(Message* const* msgs, std::uint32_t n) override {
    for (Observer* o : observers_) o->on_pull(msgs, n);
  }
  void on_zone_entry(const ZoneSite& site) override {
    for (Observer* o : observers_) o->on_zone_entry(site);
  }
  void on_zone_exit(const ZoneSite& site) override {
    for (auto it = observers_.rbegin(); it != observers_.rend(); ++it) (*it)->on_zone_exit(site);
  }

 private:
  std::vector<Observer*> observers_;
};

}  // namespace mayhem
