// The lease thread: one timer thread that keeps every in-flight message's ack deadline alive, the
// threaded form of the reference's per-message `extend()` task. It tracks lots (the batches
// consume pulled), not messages: consume registers a lot and the pipeline releases it when all of
// its messages are settled, both through lock-free queues, so the hot path never takes a lock or
// wakes this thread. Every `extend_interval` it extends, in bulk, each message of a due lot that is
// still being worked on; it also frees released lots (their messages go back to the pool).
// Failures: an extension that fails (the fault hook, `--inject timer:error:P`) is logged and
// counted, and its lot is retried on the thread's next pass (every `poll`) until every message in
// it is extended; an exception escaping a pass goes to the fatal handler (the service's global
// handler: graceful shutdown, exit 1) and the thread keeps running, so released lots are still
// freed; a thread that never returns is left behind by stop_within() after its timeout.
// Use: `LeaseManager lm(cfg, clock, log, metrics, msgs, lots); lm.start(); lm.register_lot(l);
// ... lm.release_lot(l); ... lm.stop();`. Tests call `tick()` with a ManualClock instead of
// start().
#pragma once

#include <concurrentqueue/concurrentqueue.h>
#include <spdlog/logger.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/observer.hpp"

namespace mayhem {

class LeaseManager {
 public:
  struct Config {
    Nanos extend_interval = 2 * kNanosPerSecond;
    Nanos ack_deadline = 3 * kNanosPerSecond;
    Nanos poll = 5'000'000;  // how often the thread drains its queues when nothing is due
  };
  // Called on the lease thread with messages held in LeaseState::kExtending (so it may touch
  // their broker handles); e.g. JetStream's in-progress ack. Never called under a lock.
  using ExtendHook = std::function<void(Message* const* msgs, std::size_t n)>;
  // Fault injection (see faults.hpp): called before the `attempt`-th extension of a message; true
  // means this extension failed. May throw (an unexpected error) or never return (a hang).
  using FaultHook = std::function<bool(const Message& m, std::uint32_t attempt)>;
  // The global exception handler, for an exception that escapes a pass of the lease thread.
  using FatalHandler = std::function<void(std::exception_ptr)>;

  LeaseManager(Config cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log,
               Metrics& metrics, MessagePool& messages, LotPool& lots, ExtendHook hook = {},
               Observer* observer = nullptr);
  ~LeaseManager();
  LeaseManager(const LeaseManager&) = delete;
  LeaseManager& operator=(const LeaseManager&) = delete;

  // Any thread, lock-free. Consume has already done each message's first extension.
  void register_lot(Lot* lot) {
    lot->tracking.store(Lot::Tracking::kUnseen, std::memory_order_relaxed);
    registrations_.enqueue(lot);
  }
  // Any thread, lock-free: the pipeline is done with the lot (every message settled). A lot the
  // lease thread has not taken yet gives its messages back right here (the common case at high
  // rates and low latency); otherwise the lease thread unlinks and frees it on its next pass.
  void release_lot(Lot* lot) {
    auto expected = Lot::Tracking::kUnseen;
    if (lot->tracking.compare_exchange_strong(expected, Lot::Tracking::kReleasing,
                                              std::memory_order_acq_rel)) {
      messages_.release(lot->batch.msgs, lot->batch.size);
      // Only now may the lease thread recycle the Lot (and consume refill its array).
      lot->tracking.store(Lot::Tracking::kReleasedEarly, std::memory_order_release);
      return;
    }
    releases_.enqueue(lot);
  }

  // One pass of the thread's loop: take registrations and releases, extend what is due, free what
  // is released. Returns the time the next lot is due (or now + poll when none is).
  Nanos tick();

  // Before start(): fault injection and the handler for unexpected exceptions on the thread.
  void set_fault_hook(FaultHook hook) { fault_ = std::move(hook); }
  void set_fatal_handler(FatalHandler handler) { on_fatal_ = std::move(handler); }

  void start();
  // Joins the thread, then frees every lot already released. Lots still tracked are reported.
  void stop();
  // stop(), waiting at most `timeout` for the thread. False when it did not finish (a pass that
  // never returns): the thread is then detached and left running, nothing is freed, and this
  // object must outlive the process (the caller exits promptly).
  bool stop_within(Nanos timeout);

  // Lots registered and not yet freed, as of the last tick (lease thread's view).
  std::size_t tracked_lots() const { return tracked_.load(std::memory_order_relaxed); }

  // Results stage: the message needs no more extensions (the reference's `event.set()`).
  static void mark_done(Message& m);
  const Config& config() const { return cfg_; }

 private:
  void link_back(Lot* lot);
  void unlink(Lot* lot);
  void free_lot(Lot* lot);               // messages back to the pool, then recycle_lot
  void recycle_lot(Lot* lot);            // the Lot object alone
  bool extend_lot(Lot* lot, Nanos now);  // false when an extension failed (retry the lot)
  void link_retry(Lot* lot);
  void run();
  Nanos pass(bool extend);  // tick(); with extend = false only takes registrations and releases

  const Config cfg_;
  const std::string deadline_text_;  // the extension amount as the reference prints it ("3")
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Metrics& metrics_;
  MessagePool& messages_;
  LotPool& lots_;
  ExtendHook hook_;
  Observer* observer_;
  FaultHook fault_;
  FatalHandler on_fatal_;
  bool faults_off_ = false;  // after a crash the thread keeps freeing lots, without faults

  moodycamel::ConcurrentQueue<Lot*> registrations_;
  moodycamel::ConcurrentQueue<Lot*> releases_;

  // Lease-thread state: lots in due order (the interval is constant, so a FIFO stays sorted).
  Lot* head_ = nullptr;
  Lot* tail_ = nullptr;
  // Lots with a failed extension, retried every `poll` (due = now + poll keeps it sorted too).
  Lot* retry_head_ = nullptr;
  Lot* retry_tail_ = nullptr;
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
