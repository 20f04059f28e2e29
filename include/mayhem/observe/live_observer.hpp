// The observer a watched service installs (--stats-addr, --live): the stage collector, the profiler
// the command line asked for (if any), and a slot where an on-demand capture (GET /profile, GET
// /trace: mayhem/observe/capture.hpp) attaches its own profiler while it runs and detaches it when
// it ends. While nothing is attached each hook costs a load of the slot and a branch, then goes
// straight on to the collector, so an endpoint nobody captures from costs what the collector
// costs. While a profiler is attached, each hook
// also marks its thread busy around the call (one exchange and one store into the thread's own
// slot) so that `detach()` can wait until no thread is inside the profiler: after it returns the
// profiler may be read alone and destroyed.
// Use: `LiveObserver live(collector, cli_profiler); deps.observer = &live;` ...
//      `if (live.attach(&p)) { wait; live.detach(); read p; }`
#pragma once

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "mayhem/observe/observer.hpp"
#include "mayhem/observe/stage_collector.hpp"

namespace mayhem {

class LiveObserver final : public Observer {
 public:
  // `also` (null: none) gets every hook after the collector; both must outlive this object.
  LiveObserver(StageCollector& collector, Observer* also);
  ~LiveObserver() override;
  LiveObserver(const LiveObserver&) = delete;
  LiveObserver& operator=(const LiveObserver&) = delete;

  // Each hook: with nothing else to call, straight on to the collector (a tail call); otherwise
  // the out-of-line path. Exits run in the reverse order of entries.
  void on_entry(Stage stage, std::uint32_t items, Message* const* msgs) override {
    if (others()) [[unlikely]]
      return entry_all(stage, items, msgs);
    collector_.on_entry(stage, items, msgs);
  }
  void on_exit(Stage stage, std::uint32_t items) override {
    if (others()) [[unlikely]]
      return exit_all(stage, items);
    collector_.on_exit(stage, items);
  }
  void on_pull(Message* const* msgs, std::uint32_t n) override {
    if (others()) [[unlikely]]
      return pull_all(msgs, n);
    collector_.on_pull(msgs, n);
  }
  void on_zone_entry(const ZoneSite& site) override {
    if (others()) [[unlikely]]
      return zone_entry_all(site);
    collector_.on_zone_entry(site);
  }
  void on_zone_exit(const ZoneSite& site) override {
    if (others()) [[unlikely]]
      return zone_exit_all(site);
    collector_.on_zone_exit(site);
  }

  // Attaches `o` (from the next hook on); false when another one is attached.
  bool attach(Observer* o);
  // Detaches what is attached and returns once no thread is inside one of its hooks.
  void detach();
  // Messages submitted to each I/O operation (save, restart, cleanup: op_index) and not completed
  // yet, from the collector's counts (Profiler::seed_in_flight).
  std::array<std::uint64_t, kOpCount> io_in_flight() const;

 private:
  struct alignas(64) Busy {
    std::atomic<std::uint32_t> inside{0};
  };
  Busy& busy();
  [[gnu::noinline]] Busy& busy_slow();  // this thread's first capture hook
  bool others() const {
    return also_ != nullptr || attached_.load(std::memory_order_relaxed) != nullptr;
  }
  void entry_all(Stage stage, std::uint32_t items, Message* const* msgs);
  void exit_all(Stage stage, std::uint32_t items);
  void pull_all(Message* const* msgs, std::uint32_t n);
  void zone_entry_all(const ZoneSite& site);
  void zone_exit_all(const ZoneSite& site);
  // A hook's call to the attached observer, if one is still attached, with this thread marked
  // busy around it. The mark is stored before the slot is read again (both sequentially
  // consistent): detach() stores null, then waits for every mark to read 0 once, so a thread
  // either sees null or is waited for.
  template <typename F>
  void forward(F call) {
    Busy& b = busy();
    b.inside.store(1, std::memory_order_seq_cst);
    if (Observer* o = attached_.load(std::memory_order_seq_cst)) call(*o);
    b.inside.store(0, std::memory_order_release);
  }

  StageCollector& collector_;
  Observer* const also_;
  std::atomic<Observer*> attached_{nullptr};
  const std::uint64_t id_;  // unique per object (the thread-local cache's key)
  tbb::enumerable_thread_specific<Busy*> local_{nullptr};
  std::mutex mutex_;                          // registering a thread's mark; attach/detach
  std::vector<std::unique_ptr<Busy>> marks_;  // every thread's mark (owned here)
};

}  // namespace mayhem
