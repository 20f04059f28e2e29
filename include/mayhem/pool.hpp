// A grow-only object pool shared by threads: free objects sit in a moodycamel lock-free queue and
// are taken and returned in bulk, so the hot path allocates nothing (glibc malloc/free of objects
// freed on another thread than the one that allocated them is slower: docs/ARCHITECTURE.md, "Why
// pools"). Memory grows in slabs to the peak and is kept until the pool is destroyed. Once a pool
// holds a 2 MiB huge page's worth of objects, it grows a huge page at a time (aligned, advised as a
// transparent huge page): a pool grows to the peak in flight within its first seconds (hundreds of
// MB at the reference's latency profile), and every stage's first touch of a cold message also
// missed the TLB (perf put the workers' stalls on the prefetches' page walks, 1M msgs/s).
// Use: `Pool<Message> p(1024); n = p.acquire(out, 128); ...; p.release(out, n);`.
#pragma once

#include <concurrentqueue/concurrentqueue.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace mayhem {

template <typename T>
class Pool {
 public:
  // `slab_size` objects a slab, until the pool holds a huge page's worth: then a huge page each.
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
    const std::size_t size = capacity() >= kHugeObjects ? kHugeObjects : slab_size_;
    Slab slab(allocate_slab(size), SlabFree{size});
    T* base = slab.get();
    {
      std::lock_guard lock(slabs_mutex_);
      slabs_.push_back(std::move(slab));
    }
    capacity_.fetch_add(size, std::memory_order_relaxed);
    std::size_t give = n < size ? n : size;
    for (std::size_t i = 0; i < give; ++i) out[i] = base + i;
    std::vector<T*> rest;
    rest.reserve(size - give);
    for (std::size_t i = give; i < size; ++i) rest.push_back(base + i);
    release(rest.data(), rest.size());
    return give;
  }

  static constexpr std::size_t kHugePage = std::size_t{2} << 20;
  // A huge page's worth of objects (at least one).
  static constexpr std::size_t kHugeObjects = sizeof(T) < kHugePage ? kHugePage / sizeof(T) : 1;
  struct SlabFree {
    std::size_t n;
    void operator()(T* p) const {
      std::destroy_n(p, n);
      std::free(p);
    }
  };
  using Slab = std::unique_ptr<T, SlabFree>;
  // `n` objects, default-initialized (as `new T[n]`); a huge page's worth on its own huge page.
  static T* allocate_slab(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    const bool huge = n == kHugeObjects && bytes > kHugePage / 2;
    const std::size_t align = huge ? kHugePage : std::max(alignof(T), alignof(std::max_align_t));
    const std::size_t size = (bytes + align - 1) / align * align;
    void* raw = std::aligned_alloc(align, size);
    if (!raw) throw std::bad_alloc();
    // A hint: the kernel falls back to 4 KiB pages when it has no huge page to give.
    if (huge) madvise(raw, size, MADV_HUGEPAGE);
    return std::uninitialized_default_construct_n(static_cast<T*>(raw), n) - n;
  }

  const std::size_t slab_size_;
  moodycamel::ConcurrentQueue<T*> free_;
  std::mutex slabs_mutex_;
  std::vector<Slab> slabs_;
  std::atomic<std::size_t> capacity_{0};
};

}  // namespace mayhem
