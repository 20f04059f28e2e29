// The embedded pub/sub: a bounded, lock-free, in-process queue between the publish and consume
// stages (moodycamel ConcurrentQueue, bulk hand-offs with producer/consumer tokens). It counts
// what it was told (acks, nacks) like a broker would, so tests can check the accounting.
// Use: publish stage calls `publish(msgs, n)` (after checking `free_capacity()`); consume calls
// `pull`. One publishing thread at a time and one pulling thread at a time (both stages are
// serial).
#pragma once

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <cstdint>
#include <functional>

#include "mayhem/observe/numbers.hpp"
#include "mayhem/source/source.hpp"

namespace mayhem {

class InProcessPubSub final : public Source {
 public:
  explicit InProcessPubSub(std::uint64_t capacity)
      : capacity_(capacity),
        queue_(4096),
        producer_(queue_),
        consumer_(queue_),
        drain_consumer_(queue_) {}

  bool publishable() const override { return true; }
  std::uint64_t free_capacity() const override {
    std::uint64_t d = depth_.load();  // seq_cst: the publisher's park re-check relies on it
    return d >= capacity_ ? 0 : capacity_ - d;
  }
  void publish(Message* const* msgs, std::size_t n) override {
    queue_.enqueue_bulk(producer_, msgs, n);
    const std::uint64_t depth = depth_.fetch_add(n) + n;
    // One publishing thread: a plain max, no read-modify-write (read by the summary).
    if (depth > peak_depth_.load(std::memory_order_relaxed))
      peak_depth_.store(depth, std::memory_order_relaxed);
  }

  std::size_t pull(Message** out, std::size_t max) override {
    std::size_t got = queue_.try_dequeue_bulk(consumer_, out, max);
    if (got != 0) depth_.fetch_sub(got);
    return got;
  }
  // Its own consumer token: pull's may still be in use by a consume task (see Source::drain).
  std::size_t drain(Message** out, std::size_t max) override {
    std::size_t got = queue_.try_dequeue_bulk(drain_consumer_, out, max);
    if (got != 0) depth_.fetch_sub(got);
    return got;
  }
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
  const std::uint64_t capacity_;
  moodycamel::ConcurrentQueue<Message*> queue_;
  moodycamel::ProducerToken producer_;
  moodycamel::ConsumerToken consumer_;
  moodycamel::ConsumerToken drain_consumer_;  // shutdown's nack_backlog (main thread)
  alignas(64) std::atomic<std::uint64_t> depth_{0};
  std::atomic<std::uint64_t> peak_depth_{0};  // written by the publisher only
  alignas(64) std::atomic<std::uint64_t> acks_{0};
  std::atomic<std::uint64_t> nacks_{0};
  Audit audit_;
};

}  // namespace mayhem
