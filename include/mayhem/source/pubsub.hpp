// The embedded pub/sub: a bounded, in-process queue between the publish and consume stages. Both
// hand messages over in bulk, so it is a ring of message pointers behind a small lock taken once
// per batch (a copy of the batch's pointers under it), not a per-message lock-free queue: a
// batch costs two lock operations and a copy. It counts what it was told (acks, nacks) like a
// broker would, so tests can check the accounting.
// Use: publish stage calls `publish(msgs, n)` (after checking `free_capacity()`); consume calls
// `pull`. One publishing thread at a time and one pulling thread at a time (both stages are
// serial); `drain` may run beside a late pull (shutdown).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "mayhem/observe/numbers.hpp"
#include "mayhem/source/source.hpp"

namespace mayhem {

class InProcessPubSub final : public Source {
 public:
  explicit InProcessPubSub(std::uint64_t capacity)
      : capacity_(capacity),
        ring_(std::bit_ceil(static_cast<std::size_t>(std::min<std::uint64_t>(capacity, 4096)) +
                            kBatchCapacity)) {}

  bool publishable() const override { return true; }
  std::uint64_t free_capacity() const override {
    std::uint64_t d = depth_.load();  // seq_cst: the publisher's park re-check relies on it
    return d >= capacity_ ? 0 : capacity_ - d;
  }
  void publish(Message* const* msgs, std::size_t n) override {
    {
      Guard g(lock_);
      if (tail_ - head_ + n > ring_.size()) grow(tail_ - head_ + n);
      // In at most two runs: up to the ring's end, then from its start.
      const std::size_t at = tail_ & (ring_.size() - 1);
      const std::size_t first = std::min(n, ring_.size() - at);
      std::copy_n(msgs, first, ring_.data() + at);
      std::copy_n(msgs + first, n - first, ring_.data());
      tail_ += n;
    }
    const std::uint64_t depth = depth_.fetch_add(n) + n;
    // One publishing thread: a plain max, no read-modify-write (read by the summary).
    if (depth > peak_depth_.load(std::memory_order_relaxed))
      peak_depth_.store(depth, std::memory_order_relaxed);
  }

  std::size_t pull(Message** out, std::size_t max) override { return take(out, max); }
  // The same as pull: the lock lets it run beside a consume task's pull (see Source::drain).
  std::size_t drain(Message** out, std::size_t max) override { return take(out, max); }
  // Counted, and told, at the timeout: nothing to do (see Source::return_unsettled).
  void return_unsettled(Message* const*, std::size_t) override {}
  // Anonymous nacks: the pub/sub would redeliver them.
  void unsettled_at_timeout(std::uint64_t n) override { nack(nullptr, n); }
  void ack(Message* const* msgs, std::size_t n) override {
    acks_.fetch_add(n, std::memory_order_relaxed);
    if (audit_) audit_(true, msgs, n);
  }
  void nack(Message* const* msgs, std::size_t n) override {
    nacks_.fetch_add(n, std::memory_order_relaxed);
    if (audit_) audit_(false, msgs, n);
  }
  // Tests: sees every ack and nack, per batch, on the settling thread (msgs is null for the
  // anonymous nacks of a timed-out shutdown). Set before the service starts.
  using Audit = std::function<void(bool ack, Message* const* msgs, std::size_t n)>;
  void set_audit(Audit audit) { audit_ = std::move(audit); }
  void extend(Message* const*, std::size_t) override {}
  std::uint64_t backlog() const override { return depth_.load(std::memory_order_acquire); }
  void report(Numbers& n) const override {
    n.scope = NumberScope::kInProcess;
    n.backlog = backlog();
    n.peak_backlog = peak_backlog();
    n.queue_capacity = capacity_;
  }

  // The most messages ever waiting at once (the publisher's view; at most capacity + one batch
  // as publish checks free_capacity() first).
  std::uint64_t peak_backlog() const { return peak_depth_.load(std::memory_order_relaxed); }
  std::uint64_t acks() const { return acks_.load(std::memory_order_relaxed); }
  std::uint64_t nacks() const { return nacks_.load(std::memory_order_relaxed); }

 private:
  // A test-and-test-and-set lock, held for one batch's copy: a waiter spins briefly, then yields
  // (the holder may have been preempted).
  class Guard {
   public:
    explicit Guard(std::atomic<bool>& l) : l_(l) {
      for (int spins = 0; l_.exchange(true, std::memory_order_acquire);) {
        while (l_.load(std::memory_order_relaxed)) {
          if (++spins > 64) std::this_thread::yield();
        }
      }
    }
    ~Guard() { l_.store(false, std::memory_order_release); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    std::atomic<bool>& l_;
  };

  std::size_t take(Message** out, std::size_t max) {
    std::size_t got;
    {
      Guard g(lock_);
      got = std::min<std::size_t>(max, tail_ - head_);
      const std::size_t at = head_ & (ring_.size() - 1);
      const std::size_t first = std::min(got, ring_.size() - at);
      std::copy_n(ring_.data() + at, first, out);
      std::copy_n(ring_.data(), got - first, out + first);
      head_ += got;
    }
    if (got != 0) depth_.fetch_sub(got);
    return got;
  }
  // Under the lock: a ring with room for `need` pointers, in order from head_ (rare: the ring
  // starts with room for the capacity and a batch, up to 4096 + a batch).
  void grow(std::size_t need) {
    std::vector<Message*> bigger(std::bit_ceil(need));
    const std::size_t mask = ring_.size() - 1;
    for (std::size_t i = head_; i != tail_; ++i) bigger[i - head_] = ring_[i & mask];
    tail_ -= head_;
    head_ = 0;
    ring_.swap(bigger);
  }

  const std::uint64_t capacity_;
  // The ring (a power of two) and its positions, all under lock_.
  alignas(64) std::atomic<bool> lock_{false};
  std::vector<Message*> ring_;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
  alignas(64) std::atomic<std::uint64_t> depth_{0};
  std::atomic<std::uint64_t> peak_depth_{0};  // written by the publisher only
  alignas(64) std::atomic<std::uint64_t> acks_{0};
  std::atomic<std::uint64_t> nacks_{0};
  Audit audit_;
};

}  // namespace mayhem
