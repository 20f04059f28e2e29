// AsyncIo: simulated I/O completed by one timing-wheel thread. Submitters (TBB workers) push
// entries through a lock-free queue in bulk; the wheel thread files them into slots of `tick_`
// nanoseconds (chunked lists, so memory follows the number of pending operations, not the slot
// count), and every tick delivers what is due, grouped into batches per operation. The wheel has
// at most kMaxSlots slots whatever the longest delay; a deadline beyond its horizon waits in a
// min-heap by tick and moves into the wheel once within reach, so memory follows the operations
// pending, not the delays (a slot per tick of a 3.3e5 s longest delay was 1 GB).
#include <concurrentqueue/concurrentqueue.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "mayhem/io/io_service.hpp"
#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {

struct Entry {
  Message* msg;
  std::uint64_t tick_op;  // due tick << 2 | op_index(op)
  std::uint64_t tick() const { return tick_op >> 2; }
  Op op() const { return kOps[tick_op & 3]; }
};

// An entry filed in a slot, in 8 bytes instead of 16 (one per pending operation, so per message
// in flight): the slot gives its tick, and the op sits in the message pointer's low bits.
using Filed = std::uintptr_t;
static_assert(alignof(Message) >= 4 && kOpCount <= 4,
              "the op fits in a message pointer's low bits");
Filed pack(const Entry& e) {
  return reinterpret_cast<std::uintptr_t>(e.msg) | static_cast<std::uintptr_t>(e.tick_op & 3);
}
Message* message_of(Filed f) {
  return reinterpret_cast<Message*>(f & ~std::uintptr_t{3});
}
Op op_of(Filed f) {
  return kOps[f & 3];
}

struct Chunk {
  static constexpr std::uint32_t kCap = 126;  // 1 KiB a chunk
  std::uint32_t size = 0;
  Chunk* next = nullptr;
  Filed entries[kCap];
};

class AsyncIo final : public IoService {
 public:
  AsyncIo(BatchPool& batches, const Clock& clock, Nanos max_delay)
      : batches_(batches), clock_(clock) {
    // Each tick that delivers wakes the TBB workers, and each wake-up costs them ~0.1-0.3 ms of
    // spinning for more work before they sleep; 256 ticks over the longest delay (3.9 ms at the
    // reference's 1 s) keeps that to ~250 wake-ups a second while adding at most one tick to a
    // simulated call (0.4% of the longest).
    tick_ = std::clamp<Nanos>(max_delay / 256, 100'000, 5'000'000);
    // Enough slots for every delay when the longest is short (284 at the reference's profile);
    // longer delays go to `far_` first.
    slots_.resize(static_cast<std::size_t>(std::min<Nanos>(max_delay / tick_ + 4, kMaxSlots)));
  }
  ~AsyncIo() override {
    cancel_all();
    for (auto& s : slots_) free_chain(s.head);
    for (Chunk* c : free_chunks_) delete c;
  }

  void start(IoSink sink) override {
    sink_ = std::move(sink);
    last_tick_ = static_cast<std::uint64_t>(clock_.now() / tick_);
    thread_ = std::thread([this] {
      name_this_thread("mayhem-wheel");
      run();
    });
  }

  void submit(Op op, Message* const* msgs, const Nanos* delays, std::size_t n) override {
    if (n == 0) return;
    submitters_.fetch_add(1);
    if (cancelled_.load()) {
      deliver_cancelled(op, msgs, n);
    } else {
      // Count before enqueueing (seq_cst): pending_ == 0 then means nothing is queued or filed, so
      // the wheel thread may sleep and skip empty ticks; the sleeping check after the enqueue pairs
      // with the wheel thread's store(sleeping) then load(pending), so a wake-up is never lost.
      pending_.fetch_add(n);
      const Nanos now = clock_.now();
      std::array<Entry, kBatchCapacity> buf;
      std::size_t i = 0;
      while (i < n) {
        const std::size_t k = std::min<std::size_t>(n - i, buf.size());
        for (std::size_t j = 0; j < k; ++j) {
          const auto due = static_cast<std::uint64_t>((now + delays[i + j] + tick_ - 1) / tick_);
          buf[j] = Entry{msgs[i + j], due << 2 | static_cast<std::uint64_t>(op_index(op))};
        }
        queue_.enqueue_bulk(buf.data(), k);
        i += k;
      }
      if (sleeping_.load()) wake();
    }
    submitters_.fetch_sub(1);
  }

  void cancel_all() override {
    if (cancelled_.exchange(true)) return;
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    // A submitter that saw `cancelled_ == false` may still be enqueueing: wait it out (Dekker:
    // both sides use seq_cst), then everything left is ours to cancel.
    while (submitters_.load() != 0) std::this_thread::yield();
    std::vector<Entry> rest;
    drain_queue([&](const Entry& e) { rest.push_back(e); });
    for (auto& s : slots_) {
      for (Chunk* c = s.head; c; c = c->next)
        for (std::uint32_t i = 0; i < c->size; ++i)
          rest.push_back(Entry{message_of(c->entries[i]), c->entries[i] & 3});
      free_chain(s.head);
      s = Slot{};
    }
    rest.insert(rest.end(), far_.begin(), far_.end());
    far_.clear();
    in_wheel_ = 0;
    for (int op = 0; op < kOpCount; ++op) {
      Batch* b = nullptr;
      for (const Entry& e : rest) {
        if (e.op() != kOps[op]) continue;
        if (!b) b = new_batch(true);
        b->push(e.msg);
        if (b->full()) {
          sink_(kOps[op], b);
          b = nullptr;
        }
      }
      if (b) sink_(kOps[op], b);
    }
    pending_.store(0, std::memory_order_relaxed);
  }

  std::size_t pending() const override { return pending_.load(std::memory_order_relaxed); }
  bool zero_delay_inline() const override { return true; }

 private:
  void wake() {
    {
      std::lock_guard lock(mutex_);
      sleeping_.store(false);
    }
    cv_.notify_one();
  }

  struct Slot {
    Chunk* head = nullptr;
    Chunk* tail = nullptr;
  };

  // The wheel's size whatever the longest delay: 64 KB of slots, a horizon of 20 s at the
  // largest tick (5 ms), 0.4 s at the smallest.
  static constexpr Nanos kMaxSlots = 4096;
  // Orders `far_` as a min-heap by due tick (the op in the low bits only breaks ties).
  static bool later(const Entry& a, const Entry& b) { return a.tick_op > b.tick_op; }

  Batch* new_batch(bool cancelled) { return acquire_batch(batches_, cancelled); }

  void deliver_cancelled(Op op, Message* const* msgs, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
      Batch* b = new_batch(true);
      while (i < n && !b->full()) b->push(msgs[i++]);
      sink_(op, b);
    }
  }

  // Hands queued entries to `f`, at most `limit` of them (rounded up to the buffer); returns true
  // when the queue looked empty before the limit was reached.
  template <typename F>
  bool drain_queue(F&& f, std::size_t limit = SIZE_MAX) {
    std::array<Entry, 512> buf;
    for (std::size_t seen = 0; seen < limit;) {
      const std::size_t n = queue_.try_dequeue_bulk(buf.data(), buf.size());
      for (std::size_t i = 0; i < n; ++i) f(buf[i]);
      if (n < buf.size()) return true;
      seen += n;
    }
    return false;
  }

  Chunk* new_chunk() {
    if (free_chunks_.empty()) return new Chunk;
    Chunk* c = free_chunks_.back();
    free_chunks_.pop_back();
    c->size = 0;
    c->next = nullptr;
    return c;
  }
  void free_chain(Chunk* c) {
    while (c) {
      Chunk* next = c->next;
      free_chunks_.push_back(c);
      c = next;
    }
  }

  void file(const Entry& e) {
    if (e.tick() <= last_tick_) {
      emit(e.msg, e.op());
      return;
    }
    if (e.tick() - last_tick_ >= slots_.size()) {
      far_.push_back(e);
      std::push_heap(far_.begin(), far_.end(), later);
      return;
    }
    ++in_wheel_;
    Slot& s = slots_[e.tick() % slots_.size()];
    if (!s.tail || s.tail->size == Chunk::kCap) {
      Chunk* c = new_chunk();
      if (s.tail)
        s.tail->next = c;
      else
        s.head = c;
      s.tail = c;
    }
    s.tail->entries[s.tail->size++] = pack(e);
  }

  void emit(Message* m, Op op) {
    Batch*& b = out_[op_index(op)];
    if (!b) b = new_batch(false);
    b->push(m);
    if (b->full()) flush(op);
  }
  void flush(Op op) {
    Batch*& b = out_[op_index(op)];
    if (!b) return;
    pending_.fetch_sub(b->size, std::memory_order_relaxed);
    sink_(op, b);
    b = nullptr;
  }

  // Moves the far entries that came within the wheel's horizon into their slots.
  void pull_far() {
    while (!far_.empty() && far_.front().tick() - last_tick_ < slots_.size()) {
      std::pop_heap(far_.begin(), far_.end(), later);
      const Entry e = far_.back();
      far_.pop_back();
      file(e);
    }
  }

  // Delivers every slot up to `now_tick`, each far entry at its own tick.
  void advance(std::uint64_t now_tick) {
    while (last_tick_ < now_tick) {
      if (in_wheel_ == 0) {
        // The slots are empty: skip them, up to the tick before the nearest far entry (after a
        // long sleep, or a test clock that jumps hours, this is one step instead of millions).
        std::uint64_t to = now_tick;
        if (!far_.empty()) to = std::min(to, far_.front().tick() - 1);
        if (to > last_tick_) {
          last_tick_ = to;
          pull_far();
          continue;
        }
      }
      ++last_tick_;
      Slot& s = slots_[last_tick_ % slots_.size()];
      for (Chunk* c = s.head; c; c = c->next) {
        for (std::uint32_t i = 0; i < c->size; ++i)
          emit(message_of(c->entries[i]), op_of(c->entries[i]));
        in_wheel_ -= c->size;
      }
      free_chain(s.head);
      s = Slot{};
      pull_far();
    }
  }

  // At most this many queued entries are filed between two looks at the clock and at
  // cancellation. Under overload (submitters outpacing this thread) an unbounded drain never
  // ended: shutdown's join waited on it for over 20 s, and entries filed against a stale
  // `last_tick_` fell past the wheel's horizon into `far_`.
  static constexpr std::size_t kDrainRound = 64 * 1024;

  void run() {
    for (;;) {
      // Deliver what is due first, so entries are filed against the current tick.
      advance(static_cast<std::uint64_t>(clock_.now() / tick_));
      const bool drained = drain_queue([&](const Entry& e) { file(e); }, kDrainRound);
      for (int op = 0; op < kOpCount; ++op) flush(kOps[op]);
      if (cancelled_.load()) return;  // cancel_all takes what is left
      if (!drained) continue;         // more queued: no sleep
      std::unique_lock lock(mutex_);
      if (stop_) return;
      // Nothing pending: sleep until a submitter wakes us (no idle ticking; at zero latency the
      // wheel is never used). Otherwise sleep to the next tick.
      sleeping_.store(true);
      if (pending_.load() == 0) {
        cv_.wait_for(lock, std::chrono::milliseconds(50),
                     [&] { return stop_ || !sleeping_.load(); });
        sleeping_.store(false);
        if (stop_) return;
        // The tick before now (not below 0: at clock 0, `now / tick - 1` wrapped around to
        // UINT64_MAX and every later entry was "due" at once).
        const auto now_tick = static_cast<std::uint64_t>(clock_.now() / tick_);
        if (now_tick > 0) last_tick_ = std::max(last_tick_, now_tick - 1);
        continue;
      }
      sleeping_.store(false);
      const Nanos next = static_cast<Nanos>(last_tick_ + 1) * tick_;
      const Nanos wait = std::max<Nanos>(next - clock_.now(), 20'000);
      if (cv_.wait_for(lock, std::chrono::nanoseconds(wait), [&] { return stop_; })) return;
    }
  }

  BatchPool& batches_;
  const Clock& clock_;
  Nanos tick_;
  IoSink sink_;
  moodycamel::ConcurrentQueue<Entry> queue_;
  std::atomic<int> submitters_{0};
  std::atomic<bool> cancelled_{false};
  std::atomic<std::size_t> pending_{0};
  std::atomic<bool> sleeping_{false};

  // wheel thread only
  std::vector<Slot> slots_;
  std::vector<Entry> far_;    // beyond the horizon: a min-heap by due tick (`later`)
  std::size_t in_wheel_ = 0;  // entries filed in `slots_`
  std::vector<Chunk*> free_chunks_;
  std::uint64_t last_tick_ = 0;
  std::array<Batch*, kOpCount> out_{};

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace

std::unique_ptr<IoService> make_async_io(BatchPool& batches, const Clock& clock, Nanos max_delay) {
  return std::make_unique<AsyncIo>(batches, clock, std::max<Nanos>(max_delay, 1'000'000));
}

}  // namespace mayhem
