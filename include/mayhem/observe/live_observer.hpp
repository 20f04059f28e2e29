// The capture-facing side of a watched service (--stats-addr, --live): what an on-demand capture
// (GET /profile, GET /trace: mayhem/observe/capture.hpp) attaches its profiler to while it runs.
// The pipeline's observer is the stage collector itself, which hands every hook on to the
// command line's profiler (`also`, if any) and to the attached one, from its slow path only: with
// nothing attached a hook costs the collector's counting alone. `detach()` returns once no thread
// is inside the attached profiler's hooks, so it may then be read alone and destroyed.
// Use: `StageCollector c(clock); LiveObserver live(c, cli_profiler); deps.observer = &c;` ...
//      `if (live.attach(&p)) { wait; live.detach(); read p; }`
#pragma once

#include <array>
#include <cstdint>

#include "mayhem/observe/observer.hpp"
#include "mayhem/observe/stage_collector.hpp"

namespace mayhem {

class LiveObserver {
 public:
  // `also` (null: none) gets every hook after the collector; both must outlive this object.
  LiveObserver(StageCollector& collector, Observer* also);
  ~LiveObserver();
  LiveObserver(const LiveObserver&) = delete;
  LiveObserver& operator=(const LiveObserver&) = delete;

  // Attaches `o` (from the next body on); false when another one is attached.
  bool attach(Observer* o) { return collector_.attach(o); }
  // Detaches what is attached and returns once no thread is inside one of its hooks.
  void detach() { collector_.detach(); }
  // Messages submitted to each I/O operation (save, restart, cleanup: op_index) and not completed
  // yet, from the collector's counts (Profiler::seed_in_flight).
  std::array<std::uint64_t, kOpCount> io_in_flight() const;

 private:
  StageCollector& collector_;
};

}  // namespace mayhem
