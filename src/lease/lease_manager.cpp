#include "mayhem/lease/lease_manager.hpp"

#include <algorithm>

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

void LeaseManager::link_back(Lot* lot) {
  lot->next = nullptr;
  lot->prev = tail_;
  if (tail_)
    tail_->next = lot;
  else
    head_ = lot;
  tail_ = lot;
}

void LeaseManager::unlink(Lot* lot) {
  if (lot->prev)
    lot->prev->next = lot->next;
  else
    head_ = lot->next;
  if (lot->next)
    lot->next->prev = lot->prev;
  else
    tail_ = lot->prev;
  lot->prev = lot->next = nullptr;
}

void LeaseManager::free_lot(Lot* lot) {
  messages_.release(lot->batch.msgs, lot->batch.size);
  recycle_lot(lot);
}

void LeaseManager::recycle_lot(Lot* lot) {
  lot->batch.size = 0;
  lots_.release_one(lot);
}

void LeaseManager::extend_lot(Lot* lot, Nanos now) {
  extend_buf_.clear();
  for (std::uint32_t i = 0; i < lot->batch.size; ++i) {
    Message* m = lot->batch.msgs[i];
    LeaseState expected = LeaseState::kActive;
    if (!m->lease.compare_exchange_strong(expected, LeaseState::kExtending,
                                          std::memory_order_acq_rel)) {
      continue;  // results already handled: no more extensions
    }
    if (now > m->deadline_ns) metrics_.late_extensions.add(1);
    m->deadline_ns = now + cfg_.ack_deadline;
    ++m->extended_cnt;
    extend_buf_.push_back(m);
  }
  if (extend_buf_.empty()) return;
  if (hook_) hook_(extend_buf_.data(), extend_buf_.size());
  // Hand the messages back before logging, so a stage waiting in mark_done() is held only for the
  // extension itself. Logging after is safe: a tracked lot's messages are freed by this thread
  // only.
  for (Message* m : extend_buf_) m->lease.store(LeaseState::kActive, std::memory_order_release);
  metrics_.extensions.add(extend_buf_.size());
  if (log_->should_log(spdlog::level::info)) {
    for (Message* m : extend_buf_)
      log_->info("Extended deadline by {} seconds for {}", deadline_text_, *m);
  }
}

Nanos LeaseManager::tick() {
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
  // Extend every due lot and move it to the back: with a constant interval (> 0),
  // due = now + interval keeps the FIFO sorted and a moved lot is never due again in this pass.
  while (head_ && head_->due <= now) {
    Lot* lot = head_;
    extend_lot(lot, now);
    unlink(lot);
    lot->due = now + cfg_.extend_interval;
    link_back(lot);
  }
  return head_ ? std::min(head_->due, now + cfg_.poll) : now + cfg_.poll;
}

void LeaseManager::start() {
  {
    std::lock_guard lock(wake_mutex_);
    stop_requested_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void LeaseManager::run() {
  for (;;) {
    const Nanos next = tick();
    const Nanos wait = std::max<Nanos>(next - clock_.now(), 100'000);
    std::unique_lock lock(wake_mutex_);
    if (wake_cv_.wait_for(lock, std::chrono::nanoseconds(wait), [&] { return stop_requested_; }))
      return;
  }
}

void LeaseManager::stop() {
  {
    std::lock_guard lock(wake_mutex_);
    stop_requested_ = true;
  }
  wake_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  tick();  // free whatever was released since the last pass
}

}  // namespace mayhem
