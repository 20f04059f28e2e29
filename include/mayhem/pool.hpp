// A grow-only object pool shared by threads: free objects sit in a moodycamel lock-free queue and
// are taken and returned in bulk, so the hot path allocates nothing (glibc malloc/free of objects
// freed on another thread than the one that allocated them is slower: docs/ARCHITECTURE.md, "Why
// pools"). Memory grows in slabs to the peak and is kept until the pool is destroyed.
// Use: `Pool<Message> p(1024); n = p.acquire(out, 128); ...; p.release(out, n);`.
#pragma once

#include <concurrentqueue/concurrentqueue.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace mayhem {

template <typename T>
class Pool {
 public:
  explicit Pool(std::size_t slab_size = 1024) : slab_size_(slab_size) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Fills `out` with exactly `n` objects (growing the pool when the free list runs short).
  // Objects are handed out in whatever state they were released in: callers reset what they use.
  void acquire(T** out, std::size_t n) {
    std::size_t got = free_.try_dequeue_bulk(out, n);
    while (got < n) got += grow(out + got, n - got);
  }
  T* acquire_one() {
    T* t = nullptr;
    acquire(&t, 1);
    return t;
  }
  void release(T* const* objs, std::size_t n) {
    if (n != 0) free_.enqueue_bulk(objs, n);
  }
  void release_one(T* t) { free_.enqueue(t); }

  std::size_t capacity() const { return capacity_.load(std::memory_order_relaxed); }

 private:
  // Allocates a slab, hands up to `n` of its objects to `out`, frees the rest. Rare (cold path).
  std::size_t grow(T** out, std::size_t n) {
    std::unique_ptr<T[]> slab(new T[slab_size_]);
    T* base = slab.get();
    {
      std::lock_guard lock(slabs_mutex_);
      slabs_.push_back(std::move(slab));
    }
    capacity_.fetch_add(slab_size_, std::memory_order_relaxed);
    std::size_t give = n < slab_size_ ? n : slab_size_;
    for (std::size_t i = 0; i < give; ++i) out[i] = base + i;
    std::vector<T*> rest;
    rest.reserve(slab_size_ - give);
    for (std::size_t i = give; i < slab_size_; ++i) rest.push_back(base + i);
    release(rest.data(), rest.size());
    return give;
  }

  const std::size_t slab_size_;
  moodycamel::ConcurrentQueue<T*> free_;
  std::mutex slabs_mutex_;
  std::vector<std::unique_ptr<T[]>> slabs_;
  std::atomic<std::size_t> capacity_{0};
};

}  // namespace mayhem
