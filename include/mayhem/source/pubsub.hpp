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

#include "mayhem/source/source.hpp"

namespace mayhem {

class InProcessPubSub final : public Source {
 public:
  explicit InProcessPubSub(std::uint64_t capacity)
      : capacity_(capacity), queue_(4096), producer_(queue_), consumer_(queue_) {}

  std::uint64_t free_capacity() const {
    std::uint64_t d = depth_.load();  // seq_cst: the publisher's park re-check relies on it
    return d >= capacity_ ? 0 : capacity_ - d;
  }
  void publish(Message* const* msgs, std::size_t n) {
    queue_.enqueue_bulk(producer_, msgs, n);
    depth_.fetch_add(n);
  }

  std::size_t pull(Message** out, std::size_t max) override {
    std::size_t got = queue_.try_dequeue_bulk(consumer_, out, max);
    if (got != 0) depth_.fetch_sub(got);
    return got;
  }
  void ack(Message* const*, std::size_t n) override {
    acks_.fetch_add(n, std::memory_order_relaxed);
  }
  void nack(Message* const*, std::size_t n) override {
    nacks_.fetch_add(n, std::memory_order_relaxed);
  }
  void extend(Message* const*, std::size_t) override {}
  std::uint64_t backlog() const override { return depth_.load(std::memory_order_acquire); }

  std::uint64_t acks() const { return acks_.load(std::memory_order_relaxed); }
  std::uint64_t nacks() const { return nacks_.load(std::memory_order_relaxed); }

 private:
  const std::uint64_t capacity_;
  moodycamel::ConcurrentQueue<Message*> queue_;
  moodycamel::ProducerToken producer_;
  moodycamel::ConsumerToken consumer_;
  alignas(64) std::atomic<std::uint64_t> depth_{0};
  alignas(64) std::atomic<std::uint64_t> acks_{0};
  std::atomic<std::uint64_t> nacks_{0};
};

}  // namespace mayhem
