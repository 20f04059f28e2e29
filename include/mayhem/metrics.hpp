// Counters and latency histograms for the whole service, cheap enough for 10M msgs/s: stages add
// per batch (one atomic add per batch, not per message), counters are grouped by the stage that
// writes them so writers on different cores never share a cache line, and latencies go into
// per-thread log-linear histograms (single writer each, merged when read).
// Use: `metrics.acked.add(n)`; `metrics.latency.local().record(ns)`; `metrics.latency_merged()`.
#pragma once

#include <oneapi/tbb/enumerable_thread_specific.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>

#include "mayhem/single_writer.hpp"

namespace mayhem {

// A counter with a single cache line of its own.
struct alignas(64) Counter {
  std::atomic<std::uint64_t> value{0};
  void add(std::uint64_t n) { value.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t get() const { return value.load(std::memory_order_relaxed); }
};

// Log-linear histogram: exact below 32, then 32 sub-buckets per power of two (~3% resolution).
// One writer per instance; readers may read concurrently (relaxed atomics, no RMW on the hot path).
class Histogram {
 public:
  static constexpr int kSubBits = 5;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  Histogram() = default;
  Histogram(const Histogram& other) { other.merge_into(*this); }  // a snapshot
  Histogram& operator=(const Histogram&) = delete;

  static int index_of(std::uint64_t v);
  static std::uint64_t lower_bound_of(int index);
  static std::uint64_t upper_bound_of(int index);  // inclusive

  void record(std::uint64_t v) {
    single_writer_add(buckets_[index_of(v)], 1);
    single_writer_add(count_, 1);
    single_writer_add(sum_, v);
    if (v > max_.load(std::memory_order_relaxed)) max_.store(v, std::memory_order_relaxed);
  }
  void merge_into(Histogram& dst) const;  // dst must not be written concurrently

  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  std::uint64_t sum() const { return sum_.load(std::memory_order_relaxed); }
  std::uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  std::uint64_t bucket(int i) const { return buckets_[i].load(std::memory_order_relaxed); }
  // Nearest-rank percentile (0 < q <= 1), reported as the bucket's upper bound, capped at max().
  std::uint64_t percentile(double q) const;

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
};

// One histogram per recording thread, merged when read. Unlike iterating a
// tbb::enumerable_thread_specific, merging is safe while a new thread adds its histogram (the live
// stats endpoint reads while the service runs): each thread registers its own once, under a mutex.
class ThreadHistograms {
 public:
  Histogram& local() {
    Histogram*& mine = mine_.local();
    if (mine == nullptr) {
      std::lock_guard lock(mutex_);
      mine = &all_.emplace_back();
    }
    return *mine;
  }
  void merge_into(Histogram& dst) const {
    std::lock_guard lock(mutex_);
    for (const auto& h : all_) h.merge_into(dst);
  }

 private:
  tbb::enumerable_thread_specific<Histogram*> mine_{nullptr};
  mutable std::mutex mutex_;
  std::deque<Histogram> all_;  // stable addresses
};

struct Metrics {
  // publish stage
  Counter published;
  // consume stage
  Counter consumed;
  std::atomic<std::uint64_t> peak_in_flight{0};
  // save / restart stages
  Counter saved, save_failed;
  Counter restarted, restart_failed, restart_retries;
  // settle stage
  Counter acked, nacked;
  // lease thread
  Counter extensions, late_extensions, extension_failed;
  // shared gauge: consumed and not yet settled (consume adds, settle subtracts)
  alignas(64) std::atomic<std::uint64_t> in_flight{0};

  // end-to-end latency (published -> acked), one histogram per settling thread
  ThreadHistograms latency;

  Histogram latency_merged() const;
  std::uint64_t settled() const { return acked.get() + nacked.get(); }
};

}  // namespace mayhem
