#include "mayhem/lease/lease_manager.hpp"
#include "mayhem/thread_name.hpp"

#include <algorithm>
#include <bitset>
#include <limits>

namespace mayhem {

LeaseManager::LeaseManager(Config cfg, const Clock& clock, std::shared_ptr<spdlog::logger> log,
                           Metrics& metrics, MessagePool& messages, LotPool& lots, ExtendHook hook,
                           Observer* observer)
    : cfg_(cfg),
      deadline_text_(fmt::format("{:g}", nanos_to_seconds(cfg.ack_deadline))),
      clock_(clock),
      log_(std::move(log)),
      metrics_(metrics),
      messages_(messages),
      lots_(lots),
      hook_(std::move(hook)),
      observer_(observer) {
  drain_buf_.resize(256);
  extend_buf_.reserve(kBatchCapacity);
}

LeaseManager::~LeaseManager() {
  stop();
}

void LeaseManager::mark_done(Message& m) {
  // The lease thread holds kExtending only while it extends one lot (and runs the broker hook, in
  // bulk): wait it out.
  LeaseState expected = LeaseState::kActive;
  while (!m.lease.compare_exchange_weak(expected, LeaseState::kDone, std::memory_order_acq_rel)) {
    if (expected == LeaseState::kDone) return;
    expected = LeaseState::kActive;
  }
}

namespace {
void append(Lot*& head, Lot*& tail, Lot* lot) {
  lot->next = nullptr;
  lot->prev = tail;
  if (tail)
    tail->next = lot;
  else
    head = lot;
  tail = lot;
}
}  // namespace

void LeaseManager::link_back(Lot* lot) {
  lot->retrying = false;
  append(head_, tail_, lot);
}

void LeaseManager::link_retry(Lot* lot) {
  lot->retrying = true;
  append(retry_head_, retry_tail_, lot);
}

void LeaseManager::unlink(Lot* lot) {
  Lot*& head = lot->retrying ? retry_head_ : head_;
  Lot*& tail = lot->retrying ? retry_tail_ : tail_;
  if (lot->prev)
    lot->prev->next = lot->next;
  else
    head = lot->next;
  if (lot->next)
    lot->next->prev = lot->prev;
  else
    tail = lot->prev;
  lot->prev = lot->next = nullptr;
  lot->retrying = false;
}

void LeaseManager::free_lot(Lot* lot) {
  messages_.release(lot->batch.msgs, lot->batch.size);
  recycle_lot(lot);
}

void LeaseManager::recycle_lot(Lot* lot) {
  lot->batch.size = 0;
  lots_.release_one(lot);
}

bool LeaseManager::extend_lot(Lot* lot, Nanos now) {
  extend_buf_.clear();
  // Fault injection first, before any message of the lot is held in kExtending: a hook that
  // throws or never returns then leaves every message free for mark_done().
  std::bitset<kBatchCapacity> failed;
  if (fault_ && !faults_off_) {
    for (std::uint32_t i = 0; i < lot->batch.size; ++i) {
      const Message& m = *lot->batch.msgs[i];
      if (m.lease.load(std::memory_order_acquire) != LeaseState::kActive) continue;
      if (fault_(m, m.extended_cnt + lot->failed_passes)) failed.set(i);
    }
    if (failed.any()) {
      metrics_.extension_failed.add(failed.count());
      for (std::uint32_t i = 0; i < lot->batch.size; ++i)
        if (failed.test(i))
          log_->error("Could not extend deadline for {}: injected timer error; retrying",
                      *lot->batch.msgs[i]);
    }
  }
  for (std::uint32_t i = 0; i < lot->batch.size; ++i) {
    Message* m = lot->batch.msgs[i];
    LeaseState expected = LeaseState::kActive;
    if (failed.test(i) || !m->lease.compare_exchange_strong(expected, LeaseState::kExtending,
                                                            std::memory_order_acq_rel)) {
      continue;  // failed (retried with the lot), or results already handled: no extension
    }
    if (now > m->deadline_ns) metrics_.late_extensions.add(1);
    m->deadline_ns = now + cfg_.ack_deadline;
    ++m->extended_cnt;
    extend_buf_.push_back(m);
  }
  if (extend_buf_.empty()) return failed.none();
  if (hook_) {
    try {
      hook_(extend_buf_.data(), extend_buf_.size());
    } catch (...) {
      for (Message* m : extend_buf_) m->lease.store(LeaseState::kActive, std::memory_order_release);
      throw;
    }
  }
  // Hand the messages back before logging, so a stage waiting in mark_done() is held only for the
  // extension itself. Logging after is safe: a tracked lot's messages are freed by this thread
  // only.
  for (Message* m : extend_buf_) m->lease.store(LeaseState::kActive, std::memory_order_release);
  metrics_.extensions.add(extend_buf_.size());
  if (log_->should_log(spdlog::level::info)) {
    for (Message* m : extend_buf_)
      log_->info("Extended deadline by {} seconds for {}", deadline_text_, *m);
  }
  return failed.none();
}

Nanos LeaseManager::tick() {
  return pass(true);
}

Nanos LeaseManager::pass(bool extend) {
  ObserveScope scope(observer_, Stage::kLease, 0);
  const Nanos now = clock_.now();
  std::size_t tracked = tracked_.load(std::memory_order_relaxed);
  // Registrations first. A lot released before the lease thread took it (kReleasedEarly) already
  // gave its messages back: only the Lot object is recycled here.
  for (;;) {
    const std::size_t n = registrations_.try_dequeue_bulk(drain_buf_.data(), drain_buf_.size());
    for (std::size_t i = 0; i < n; ++i) {
      Lot* lot = drain_buf_[i];
      auto expected = Lot::Tracking::kUnseen;
      if (!lot->tracking.compare_exchange_strong(expected, Lot::Tracking::kTracked,
                                                 std::memory_order_acq_rel)) {
        // Released early. The releasing thread may still be reading the lot's array: wait for
        // kReleasedEarly (one bulk enqueue away) before the Lot can be reused.
        while (lot->tracking.load(std::memory_order_acquire) != Lot::Tracking::kReleasedEarly)
          std::this_thread::yield();
        recycle_lot(lot);
        continue;
      }
      lot->due = now + cfg_.extend_interval;
      lot->failed_passes = 0;
      link_back(lot);
      ++tracked;
    }
    if (n < drain_buf_.size()) break;
  }
  // Releases of tracked lots (a release can only be queued after the lot became kTracked).
  for (;;) {
    const std::size_t n = releases_.try_dequeue_bulk(drain_buf_.data(), drain_buf_.size());
    for (std::size_t i = 0; i < n; ++i) {
      Lot* lot = drain_buf_[i];
      unlink(lot);
      free_lot(lot);
      --tracked;
    }
    if (n < drain_buf_.size()) break;
  }
  tracked_.store(tracked, std::memory_order_relaxed);
  if (!extend) return now + cfg_.poll;
  // Extend every due lot and move it to the back: with a constant interval (> 0),
  // due = now + interval keeps the FIFO sorted and a moved lot is never due again in this pass. A
  // lot with a failed extension goes to the retry list instead (due = now + poll, sorted too, as
  // poll is constant), and rejoins the schedule once all its messages are extended. A lot is
  // unlinked only after extend_lot() returns, so an exception leaves both lists intact.
  auto extend_due = [&](Lot*& head) {
    while (head && head->due <= now) {
      Lot* lot = head;
      const bool ok = extend_lot(lot, now);
      unlink(lot);
      if (ok) {
        lot->due = now + cfg_.extend_interval;
        link_back(lot);
      } else {
        ++lot->failed_passes;
        lot->due = now + cfg_.poll;
        link_retry(lot);
      }
    }
  };
  extend_due(head_);
  extend_due(retry_head_);
  Nanos next = now + cfg_.poll;
  if (head_) next = std::min(next, head_->due);
  if (retry_head_) next = std::min(next, retry_head_->due);
  return next;
}

void LeaseManager::start() {
  {
    std::lock_guard lock(wake_mutex_);
    stop_requested_ = false;
    exited_ = false;
  }
  thread_ = std::thread([this] {
    name_this_thread("mayhem-lease");
    run();
  });
}

void LeaseManager::run() {
  for (;;) {
    Nanos next;
    try {
      next = tick();
    } catch (...) {
      // The global handler shuts the service down gracefully; meanwhile this thread goes on
      // freeing released lots (and extending, without injected faults, so a fault that would
      // hit again on every pass does not fire again).
      faults_off_ = true;
      if (on_fatal_)
        on_fatal_(std::current_exception());
      else
        log_->error("Unexpected exception on the lease thread");
      next = clock_.now() + cfg_.poll;
    }
    const Nanos wait = std::max<Nanos>(next - clock_.now(), 100'000);
    std::unique_lock lock(wake_mutex_);
    if (wake_cv_.wait_for(lock, std::chrono::nanoseconds(wait), [&] { return stop_requested_; })) {
      exited_ = true;
      exited_cv_.notify_all();
      return;
    }
  }
}

void LeaseManager::stop() {
  stop_within(std::numeric_limits<Nanos>::max() / 2);
}

bool LeaseManager::stop_within(Nanos timeout) {
  if (abandoned_) return false;
  if (thread_.joinable()) {
    std::unique_lock lock(wake_mutex_);
    stop_requested_ = true;
    wake_cv_.notify_all();
    if (!exited_cv_.wait_for(lock, std::chrono::nanoseconds(timeout), [&] { return exited_; })) {
      // A pass never returned (e.g. --inject timer:hang): leave the thread and everything it
      // may touch behind.
      abandoned_ = true;
      lock.unlock();
      thread_.detach();
      return false;
    }
    lock.unlock();
    thread_.join();
  }
  pass(false);  // free whatever was released since the last pass (no extensions: we are done)
  return true;
}

}  // namespace mayhem
