// The Mayhem service: owns every piece (pools, pub/sub, I/O, lease thread, pacer, the graph) and
// runs the whole life of one run: start, wait for a stop reason, then the reference's shutdown
// sequence (stop intake, nack outstanding messages, cancel work in flight, stop the timer, flush
// logs and metrics). `run()` returns the exit status; `summary()` gives the numbers.
// Time: every timed part (the pacer, the async I/O wheel, the lease thread, the shutdown's
// deadline, the store, the NATS source's leases, the stage collector, the summary's wall time)
// reads the one Clock in `Deps::clock` (default: the steady clock). Tests inject a ManualClock:
// with the async I/O model and --latency-scale > 0 no I/O completes, no extension falls due and
// the pacer orders nothing until the test advances the clock (each thread re-reads it within a few
// ms of real time), and a shutdown gives up (--shutdown-timeout) only once the clock passes its
// deadline. Real time remains in the blocking I/O model (its threads really block for the drawn
// delays, so its tests run on real time) and in waits that are safety nets, not behaviour: the
// log flush once a second, the bounded waits for the lease thread to stop and for a settle in
// progress when the shutdown seals (Pipeline::seal_settle, 100 ms), the NATS client's and the
// stats endpoint's own timers.
// Use: `Service svc(opts); int rc = svc.run();` — tests inject a clock-free logger (and a
// ManualClock: `deps.clock = &clock`) and call `request_stop(SIGINT)` from another thread instead
// of sending a real signal.
#pragma once

#include <spdlog/logger.h>

#include <functional>
#include <memory>

#include "mayhem/clock.hpp"
#include "mayhem/io/io_service.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/observer.hpp"
#include "mayhem/observe/stats.hpp"
#include "mayhem/options.hpp"
#include "mayhem/summary.hpp"

namespace mayhem {

class InProcessPubSub;

class Service {
 public:
  struct Deps {
    std::shared_ptr<spdlog::logger> log;  // null: built from the options
    Observer* observer = nullptr;
    bool handle_signals = false;  // the binary: true (blocks signals, starts sigwait thread)
    // Fault hook run inside each message's exception guard (see Pipeline::Control::fault).
    std::function<void(Op, const Message&)> fault;
    // Fault hook of the lease thread (see LeaseManager::FaultHook, make_timer_fault_hook).
    std::function<bool(const Message&, std::uint32_t attempt)> timer_fault = {};
    // Tests: every ack and nack of the in-process pub/sub (see InProcessPubSub::set_audit).
    std::function<void(bool ack, Message* const* msgs, std::size_t n)> audit = {};
    // The service's time (null: SteadyClock::instance()); it must outlive the Service. Tests pass
    // a ManualClock (see the top comment).
    const Clock* clock = nullptr;
  };

  explicit Service(Options opts);
  Service(Options opts, Deps deps);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Runs until all `messages` are settled, a signal, or a fatal error. Returns the exit status:
  // 0 after a completed run or a signal, 1 after an unexpected exception or a timed-out shutdown.
  int run();
  // As if `signo` had been delivered (thread-safe; for tests and embedding).
  void request_stop(int signo);
  // Waits until run() has started its pipeline (tests use it before request_stop).
  void wait_started();

  // True after a shutdown that timed out (--shutdown-timeout) with a stage still running: the
  // service's state is deliberately leaked; the caller should exit the process promptly.
  bool abandoned() const;

  Summary summary() const;
  // Live numbers (thread-safe, any time; counters only until run() has started): what the stats
  // endpoint (--stats-addr) serves and `--live` shows. After run() its numbers are the summary's;
  // the endpoint keeps serving them until the Service is destroyed.
  StatsSnapshot stats_snapshot() const;
  // Times the zones of these stages ("save" or "save,saved") for the next 10 s, so the following
  // snapshots carry their `zones` (`mayhem top`'s drill-down). False: an unknown stage name, or
  // no stage collector (neither --stats-addr nor --live).
  bool watch_zones(const std::string& stages);
  std::uint16_t stats_port() const;  // the endpoint's bound port once run() started it; else 0
  const Metrics& metrics() const;
  const InProcessPubSub& pubsub() const;
  const Options& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mayhem
