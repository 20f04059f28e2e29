// Live per-stage numbers for the stats endpoint and `mayhem top`: an `Observer` that counts each
// stage's calls and messages and times its bodies (own time = the body minus stage bodies nested in
// it, e.g. an inline completion inside a submit; total time = the whole body). Every thread writes
// only its own slot (single-writer relaxed atomics, no locks, no shared cache lines); `collect()`
// sums the slots while the service runs. Installed only when someone may look (--stats-addr,
// --live): with no observer the pipeline pays one branch per batch. While nobody looks, a body
// costs two counter bumps at its exit (calls, messages) in the thread's own slot, inline, and is
// not timed: timing costs two clock reads per body (docs/PROFILING.md, "Cost"). Bodies running now
// (`active`, `in_flight`) are known for the bodies that started while someone looked. Bodies are
// timed while someone watches (each `collect()` arms timing for `watch_window`) and, so that the
// histograms fill from the start with nobody watching, for one `slice` from the first body and from
// each `time_slice()` (the service calls it once a second: about 1% of the bodies).
// Zones (MAYHEM_ZONE, mayhem/observe/zone.hpp) are timed per stage only while someone drills into
// that stage: `watch_zones(stage)` arms them for `zone_window` (a drill-down calls it on every
// refresh); each zone is counted in the innermost stage body it runs in. Unwatched, a zone costs
// one relaxed load at entry and one at exit.
// Other observers get the hooks through it: `also(o)` (the command line's --profile profiler, for
// the whole run) and `attach(o)`/`detach()` (an on-demand capture's profiler, mayhem/observe/
// capture.hpp, via LiveObserver). They are called after the collector's entry and before its exit,
// from paths the fast path leaves only while one is set (`Watch::bits`), so with none the endpoint
// costs the counting alone; a body that is only handed on (nothing timed) gets no frame, its exit
// is handed on from the fast path. Around each call to the attached one the thread marks itself
// busy in its own slot (one exchange, one store), so that `detach()` can wait until no thread is
// inside it: afterwards it may be read alone and destroyed.
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

namespace detail {
// The slot this thread used last and whose it is: keyed by the collector's unique id, never by
// address, so a later collector at the same address cannot pick up a stale slot.
struct CollectorSlotCache {
  std::uint64_t owner = 0;
  void* slot = nullptr;
};
inline thread_local CollectorSlotCache t_collector_slot;
}  // namespace detail

class StageCollector final : public Observer {
 public:
  explicit StageCollector(const Clock& clock, Nanos watch_window = 60 * kNanosPerSecond,
                          Nanos zone_window = 10 * kNanosPerSecond, Nanos slice = 10'000'000);
  ~StageCollector() override;
  StageCollector(const StageCollector&) = delete;
  StageCollector& operator=(const StageCollector&) = delete;

  // Inline and leaf (every slower path is a tail call): a body on a thread with no watched body
  // open, while nothing is wanted beyond counting, is only counted at its exit.
  void on_entry(Stage stage, std::uint32_t items, Message* const* msgs = nullptr) override {
    const detail::CollectorSlotCache& last = detail::t_collector_slot;
    if (last.owner != id_) [[unlikely]]
      return entry_first(stage, items, msgs);
    Slot& s = *static_cast<Slot*>(last.slot);
    const std::uint32_t bits = watch_.bits.load(std::memory_order_relaxed);
    if (s.depth != 0 || bits != 0) [[unlikely]] {
      // Only handed on (a capture, --profile), outside any frame: no frame (the fast exit hands
      // the exit on), nothing timed.
      if (s.depth == 0 && bits == kForward) return forward_entry_out(s, stage, items, msgs);
      return entry_slow(s, stage, items, msgs);
    }
  }
  void on_exit(Stage stage, std::uint32_t items) override {
    const detail::CollectorSlotCache& last = detail::t_collector_slot;
    if (last.owner != id_) [[unlikely]]
      return exit_first(stage, items);
    Slot& s = *static_cast<Slot*>(last.slot);
    Counts& p = s.counts[static_cast<int>(stage)];
    if (s.depth != 0) [[unlikely]]
      return exit_slow(s, p, stage, items);
    p.items_out.bump(items);
    p.exited.bump(1);
    // A body with no frame is handed on at its exit while another observer gets the hooks.
    if (watch_.bits.load(std::memory_order_relaxed) & kForward) [[unlikely]]
      forward_exit_out(s, stage, items);
  }
  void on_pull(Message* const* msgs, std::uint32_t n) override {
    if (watch_.bits.load(std::memory_order_relaxed) & kForward) [[unlikely]]
      forward_pull(msgs, n);
  }
  void on_zone_entry(const ZoneSite& site) override;
  void on_zone_exit(const ZoneSite& site) override;

  // `o` (null: none) gets every hook from now on, for good; set it before any hook runs. It must
  // outlive the hooks.
  void also(Observer* o);
  // Attaches `o` (from the next body on); false when another one is attached. A body entered
  // before may be handed to it at its exit (an exit with no entry: observers ignore those).
  bool attach(Observer* o);
  // Detaches what is attached and returns once no thread is inside one of its hooks.
  void detach();

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
  // Times bodies for one slice from now (a watcher's longer window is kept).
  void time_slice() const { arm_until(clock_.now() + slice_); }
  bool timing() const { return (watch_.bits.load(std::memory_order_relaxed) & kArmed) != 0; }
  bool forwarding() const { return (watch_.bits.load(std::memory_order_relaxed) & kForward) != 0; }
  // Messages of the bodies of `stage` that ended so far (for derived in-flight/queued numbers).
  std::uint64_t items_done(Stage stage) const;

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
  struct Counts {
    Counter1 exited, items_out;  // every body, at its exit
    // Bodies entered while watched (a frame pushed): bodies and messages inside a body now.
    Counter1 w_entered, w_exited, w_items_in, w_items_out;
  };
  struct Timed {                        // filled only while someone watches
    Counter1 zoned_calls, zoned_total;  // bodies timed with their zones watched
    Histogram own, total;
    std::array<ZoneCell, kMaxZones> zones;
  };
  using TimedStages = std::array<Timed, kStageCount>;
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
    std::array<Counts, kStageCount> counts;
    // Allocated by the thread's first timed body (about 300 KB, so not for a thread never timed),
    // then published for readers.
    std::atomic<TimedStages*> timed{nullptr};
    std::unique_ptr<TimedStages> timed_owned;
    std::array<Frame, 8> stack{};
    int depth = 0;  // frames beyond the array are counted but not timed
    std::array<ZoneFrame, 8> zones{};
    int zone_depth = 0;                                // zone frames beyond the array are not timed
    alignas(64) std::atomic<std::uint32_t> inside{0};  // in the attached observer's hook now
  };

  const Clock& clock_;
  const Nanos window_, zone_window_, slice_;
  // Watch::bits: a bit per stage whose zones are watched (kZoneMask), kArmed while bodies are
  // timed, kForward while another observer gets the hooks; one load tells a body whether anything
  // beyond counting is wanted.
  static constexpr std::uint32_t kArmed = 1u << 31;
  static constexpr std::uint32_t kForward = 1u << 30;
  static constexpr std::uint32_t kZoneMask = kForward - 1;
  static constexpr Nanos kFromFirstBody = -1;  // Watch::until before the first timed body
  static_assert(kStageCount < 30);
  struct alignas(64) Watch {  // read by every body, written about once per collect()
    std::atomic<std::uint32_t> bits{0};
    std::atomic<Nanos> until{0};
    std::array<std::atomic<Nanos>, kStageCount> zone_until{};
  };
  mutable Watch watch_;
  Observer* also_ = nullptr;
  std::atomic<Observer*> attached_{nullptr};
  std::mutex attach_mutex_;  // attach and detach, so that kForward follows attached_
  const std::uint64_t id_;   // unique per collector (see slot())
  tbb::enumerable_thread_specific<Slot*> local_{nullptr};  // this thread's slot, found fast
  mutable std::mutex mutex_;                               // taken once per thread, and by readers
  std::vector<std::unique_ptr<Slot>> slots_;               // every thread's slot (owned here)

  Slot& slot() {
    if (detail::t_collector_slot.owner == id_) [[likely]]
      return *static_cast<Slot*>(detail::t_collector_slot.slot);
    return slot_slow();
  }
  [[gnu::noinline]] Slot& slot_slow();  // this thread's first body
  // Bodies are timed until at least `until`.
  void arm_until(Nanos until) const;
  // A body that may be timed: pushes its frame (depth counts every frame, timed or not).
  void entry_slow(Slot& s, Stage stage, std::uint32_t items, Message* const* msgs);
  // Pops the frame of a body entered on the slow path, records its times, counts its exit.
  void exit_slow(Slot& s, Counts& p, Stage stage, std::uint32_t items);
  // This thread's first hook on this collector (or its cache holds another's slot): finds the
  // slot, then goes the usual way.
  [[gnu::noinline]] void entry_first(Stage stage, std::uint32_t items, Message* const* msgs);
  void zone_entry_own(const ZoneSite& site);  // the collector's own zone timing
  void zone_exit_own(const ZoneSite& site);
  // The hooks handed on to `also_` and the attached observer (entries: also_ first).
  void forward_entry(Slot& s, Stage stage, std::uint32_t items, Message* const* msgs);
  void forward_exit(Slot& s, Stage stage, std::uint32_t items);
  [[gnu::noinline]] void forward_entry_out(Slot& s, Stage stage, std::uint32_t items,
                                           Message* const* msgs);
  [[gnu::noinline]] void forward_exit_out(Slot& s, Stage stage, std::uint32_t items);
  void forward_pull(Message* const* msgs, std::uint32_t n);
  void forward_zone_entry(const ZoneSite& site);
  void forward_zone_exit(const ZoneSite& site);
  // Calls the attached observer, if one is still attached, with this thread marked busy around it.
  // The mark is stored before the slot is read again (both sequentially consistent): detach()
  // stores null, then waits for every mark to read 0 once, so a thread either sees null or is
  // waited for.
  template <typename F>
  void call_attached(Slot& s, F call) {
    s.inside.store(1, std::memory_order_seq_cst);
    if (Observer* o = attached_.load(std::memory_order_seq_cst)) call(*o);
    s.inside.store(0, std::memory_order_release);
  }
  void set_forwarding();  // kForward on while also_ or attached_ (under attach_mutex_)
  [[gnu::noinline]] void exit_first(Stage stage, std::uint32_t items);
};

// The configured concurrency of the limited stages (0 = unlimited).
struct StageLimits {
  std::uint32_t save = 0, restart = 0;
};

// Adds one row per stage from `collector` to `s`, whose numbers must be read already (counters
// before the collector's counts): each stage's in-flight and queued messages are derived from the
// flow between stages.
void add_stage_rows(StatsSnapshot& s, const StageCollector& collector, StageLimits limits);

}  // namespace mayhem
