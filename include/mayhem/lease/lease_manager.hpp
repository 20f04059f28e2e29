// The lease thread: one timer thread that keeps every in-flight message's ack deadline alive, the
// threaded form of the reference's per-message `extend()` task; the pipeline reaches it through
// `Leases` (leases.hpp). It tracks lots (the batches consume pulled), not messages: consume
// registers a lot (`hold`) and the pipeline releases it when all of its messages are settled,
// both through lock-free queues, so the hot path never takes a lock or wakes this thread. A lease
// runs from delivery to settle: a lot's first extension is due one `extend_interval` after its
// earliest message deadline minus `ack_deadline` (the time a broker
// source delivered or last extended it, or consume's time for the in-process pub/sub), and a
// message is extended until settle takes it (`mark_done`), cleanup included. Each due lot is
// extended in bulk; released lots are recycled here (settle already gave their messages back to
// the pool, one by one as they settled: a lot only keeps each message's lease state).
// Failures: an extension that fails (the fault hook, `--inject timer:error:P`) is logged and
// counted, and only the messages that failed are retried, after poll x 2^k (k = consecutive
// passes with a failure), capped at a quarter of the margin `ack_deadline - extend_interval` (at
// least `poll`), and never later than the lot's next round; an exception escaping a pass goes to
// the fatal handler (the service's global handler: graceful shutdown, exit 1) and the thread keeps
// running, so released lots are still freed; a thread that never returns is left behind by
// stop_within() after its timeout.
// Any configuration is safe: `extend_interval` and `ack_deadline` are clamped to [1 ms, 1 year]
// and `poll` to [100 us, extend_interval], so a pass always ends (every rescheduled lot is due
// strictly later than now) and no due time overflows.
// Use: `LeaseManager lm(cfg, clock, log, metrics, lots); lm.start(); lm.register_lot(l, d);
// ... LeaseManager::mark_done(m) at settle ... lm.release_lot(l); ... lm.stop();`. Tests call
// `tick()` with a ManualClock instead of start().
#pragma once

#include <concurrentqueue/concurrentqueue.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <bitset>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/lease/leases.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/observer.hpp"

namespace mayhem {

class LeaseManager final : public Leases {
 public:
  struct Config {
    Nanos extend_interval = 2 * kNanosPerSecond;
    Nanos ack_deadline = 3 * kNanosPerSecond;
    Nanos poll = 5'000'000;  // how often the thread drains its queues; the first retry backoff
  };
  // Called on the lease thread with messages held in LeaseState::kExtending (so it may touch
  // their broker handles); e.g. JetStream's in-progress ack. Never called under a lock.
  using ExtendHook = std::function<void(Message* const* msgs, std::size_t n)>;
  // Fault injection (see faults.hpp): called before the `attempt`-th extension of a message, with
  // a copy of its identity (seed, instance name, id, counts: not the live message, which settle
  // may take meanwhile); true means this extension failed. May throw (an unexpected error) or
  // never return (a hang).
  using FaultHook = std::function<bool(const Message& m, std::uint32_t attempt)>;
  // The global exception handler, for an exception that escapes a pass of the lease thread.
  using FatalHandler = std::function<void(std::exception_ptr)>;

  LeaseManager(Config cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log,
               Metrics& metrics, LotPool& lots, ExtendHook hook = {}, Observer* observer = nullptr);
  ~LeaseManager();
  LeaseManager(const LeaseManager&) = delete;
  LeaseManager& operator=(const LeaseManager&) = delete;

  // Any thread, lock-free. Consume has already done each message's first extension (or the
  // source did, at delivery) and attached it (Lot::attach); `earliest_deadline` is the smallest
  // `deadline_ns` of the lot's messages: its first extension is due `extend_interval -
  // ack_deadline` after it.
  void register_lot(Lot* lot, Nanos earliest_deadline) {
    lot->lease_all();
    lot->due = earliest_deadline;
    lot->tracking.store(Lot::Tracking::kUnseen, std::memory_order_relaxed);
    registrations_.enqueue(lot);
  }
  // The same, reading the earliest deadline from the lot's messages.
  void register_lot(Lot* lot) {
    Nanos earliest = std::numeric_limits<Nanos>::max();
    for (std::uint32_t i = 0; i < lot->batch.size; ++i)
      earliest = std::min(earliest, lot->batch.msgs[i]->deadline_ns);
    register_lot(lot, earliest);
  }
  // Leases: counts the lot's first extensions (Metrics::extensions), then register_lot.
  void hold(Lot* lot, Nanos earliest, std::uint32_t n) override {
    metrics_.extensions.add(n);
    register_lot(lot, earliest);
  }
  void release(Lot* lot) override { release_lot(lot); }

  // Any thread, lock-free: the pipeline is done with the lot (every message settled, so none of
  // its message pointers may be read again). A lot the lease thread has not taken yet is only
  // marked (the common case at high rates and low latency): the lease thread recycles it when
  // the registration arrives; otherwise it unlinks and recycles it on its next pass.
  void release_lot(Lot* lot) {
    auto expected = Lot::Tracking::kUnseen;
    if (lot->tracking.compare_exchange_strong(expected, Lot::Tracking::kReleasedEarly,
                                              std::memory_order_acq_rel))
      return;
    releases_.enqueue(lot);
  }

  // One pass of the thread's loop: take registrations and releases, extend what is due, free what
  // is released. Returns the time the next lot is due (or now + poll when none is).
  Nanos tick();

  // Before start(): fault injection and the handler for unexpected exceptions on the thread.
  void set_fault_hook(FaultHook hook) { fault_ = std::move(hook); }
  void set_fatal_handler(FatalHandler handler) { on_fatal_ = std::move(handler); }

  void start();
  // Joins the thread, then recycles every lot already released. Lots still tracked are reported.
  void stop();
  // stop(), waiting at most `timeout` for the thread. False when it did not finish (a pass that
  // never returns): the thread is then detached and left running, nothing is recycled, and this
  // object must outlive the process (the caller exits promptly).
  bool stop_within(Nanos timeout);

  // Lots registered and not yet freed, as of the last tick (lease thread's view).
  std::size_t tracked_lots() const { return tracked_.load(std::memory_order_relaxed); }

  // Settle, before it acks or nacks: the message needs no more extensions (the reference's
  // `event.set()`, moved from handle_results to settle so the lease covers cleanup). Waits out an
  // extension in progress (the lease thread holds kExtending while it uses the broker handle),
  // so the caller owns the message afterwards. Idempotent.
  static void mark_done(Message& m) { Leases::done(m); }
  static void mark_done(Message* const* msgs, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) mark_done(*msgs[i]);
  }
  const Config& config() const { return cfg_; }
  // The range every extend interval and ack deadline is clamped to, [1 ms, 1 year]: a pass always
  // ends and `now + d` never overflows. Also used for the NATS prefetch ring's extensions.
  static Nanos clamp_interval(Nanos d) {
    return std::clamp<Nanos>(d, 1'000'000, 365LL * 24 * 3600 * kNanosPerSecond);
  }

 private:
  // The schedule: a binary min-heap of lots by `due` (the key is copied into the entry, so sifting
  // reads no lot). Lot::heap_index follows each lot, so a release unlinks it in O(log n).
  struct Entry {
    Nanos due;
    Lot* lot;
  };
  void heap_push(Lot* lot);
  void heap_erase(Lot* lot);
  void heap_reschedule_top(Nanos due);  // the head lot's new due time
  void heap_place(std::size_t i, Entry e);
  void sift_up(std::size_t i, Entry e);
  void sift_down(std::size_t i, Entry e);

  void recycle_lot(Lot* lot);  // back to the lot pool (its messages went back at settle)
  // Extends the lot's messages (all of them on a round, else only those that failed last time);
  // records which failed in lot->failed.
  void extend_lot(Lot* lot, Nanos now, bool round);
  // The injected faults of this pass's messages (`wanted`), each asked on a copy of the message
  // taken while it is held; true for each that failed.
  std::bitset<kBatchCapacity> inject_faults(Lot* lot, const std::bitset<kBatchCapacity>& wanted);
  Nanos retry_delay(std::uint8_t k) const;
  void run();
  Nanos pass(bool extend);  // tick(); with extend = false only takes registrations and releases

  const Config cfg_;
  const std::string deadline_text_;  // the extension amount as the reference prints it ("3")
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Metrics& metrics_;
  LotPool& lots_;
  ExtendHook hook_;
  Observer* observer_;
  FaultHook fault_;
  FatalHandler on_fatal_;
  bool faults_off_ = false;  // after a crash the thread keeps freeing lots, without faults

  moodycamel::ConcurrentQueue<Lot*> registrations_;
  moodycamel::ConcurrentQueue<Lot*> releases_;

  // Lease-thread state.
  std::vector<Entry> heap_;
  Nanos retry_cap_;  // the longest retry backoff
  std::vector<Lot*> drain_buf_;
  std::vector<Message*> extend_buf_;
  std::atomic<std::size_t> tracked_{0};

  std::thread thread_;
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::condition_variable exited_cv_;
  bool stop_requested_ = false;
  bool exited_ = false;     // the thread has left run() (guarded by wake_mutex_)
  bool abandoned_ = false;  // stop_within() gave up on the thread
};

}  // namespace mayhem
