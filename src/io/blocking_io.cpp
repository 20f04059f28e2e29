// BlockingIo: the plain synchronous-and-threaded answer. Every simulated I/O call occupies one pool
// thread for its whole duration (it really blocks, in sem_clockwait, so cancellation can cut it
// short). Jobs reach the pool through two lock-free queues and one semaphore that counts them:
// cleanup jobs (each one finishes a message: its ack follows) in one queue, served first, saves
// and restarts in the other. With one FIFO a cleanup waited behind every save and restart queued
// before it: 5,000 broker messages pulled at once put ~10,000 of those ahead of the first
// cleanup, their leases ran out meanwhile and the broker redelivered them (issue 13, bug 1).
// Completions are combined: each
// goes into a lock-free queue, and whichever pool thread finds nobody delivering hands everything
// queued to the graph in batches (one TBB enqueue per batch instead of hundreds of threads
// contending in the arena's submit path, which measured 50% of all CPU at 512 threads).
#include <concurrentqueue/concurrentqueue.h>
#include <concurrentqueue/lightweightsemaphore.h>
#include <semaphore.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#include "mayhem/io/io_service.hpp"
#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {

// moodycamel's semaphore spins up to 10000 times by default before sleeping. With hundreds of
// pool threads idling that spinning eats both cores (measured: ~1 ms of CPU per message at 512
// threads); these threads are meant to block, so they sleep at once (kSemaSpins = 0).
constexpr int kSemaSpins = 0;

struct Job {
  Message* msg = nullptr;  // null: a wake-up sent by cancel_all
  Nanos delay = 0;
  Op op = Op::kSave;
};

struct Completion {
  Message* msg;
  Op op;
  bool cancelled;
};

class BlockingIo final : public IoService {
 public:
  BlockingIo(BatchPool& batches, std::uint32_t threads) : batches_(batches), count_(threads) {}
  ~BlockingIo() override { cancel_all(); }

  void start(IoSink sink) override {
    sink_ = std::move(sink);
    workers_.reserve(count_);
    for (std::uint32_t i = 0; i < count_; ++i) {
      auto w = std::make_unique<Worker>();
      sem_init(&w->wake, 0, 0);
      workers_.push_back(std::move(w));
    }
    for (auto& w : workers_)
      w->thread = std::thread([this, w = w.get()] {
        name_this_thread("mayhem-io");
        run(*w);
      });
  }

  void submit(Op op, Message* const* msgs, const Nanos* delays, std::size_t n) override {
    if (n == 0) return;
    submitters_.fetch_add(1);
    if (cancelled_.load()) {
      for (std::size_t i = 0; i < n; ++i) deliver(op, msgs[i], true);
    } else {
      Job buf[kBatchCapacity];
      auto& queue = queues_[op == Op::kCleanup ? kFirst : kSecond];
      pending_.fetch_add(n, std::memory_order_relaxed);
      std::size_t i = 0;
      while (i < n) {
        std::size_t k = 0;
        for (; k < kBatchCapacity && i < n; ++k, ++i) buf[k] = Job{msgs[i], delays[i], op};
        queue.enqueue_bulk(buf, k);
        ready_.signal(static_cast<moodycamel::LightweightSemaphore::ssize_t>(k));
      }
    }
    submitters_.fetch_sub(1);
  }

  void cancel_all() override {
    if (cancelled_.exchange(true)) return;
    for (auto& w : workers_) sem_post(&w->wake);
    for (std::size_t i = 0; i < workers_.size(); ++i) queues_[kFirst].enqueue(Job{});
    ready_.signal(static_cast<moodycamel::LightweightSemaphore::ssize_t>(workers_.size()));
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
      sem_destroy(&w->wake);
    }
    while (submitters_.load() != 0) std::this_thread::yield();
    Job j;
    for (auto& queue : queues_)
      while (queue.try_dequeue(j))
        if (j.msg) deliver(j.op, j.msg, true);
    pending_.store(0, std::memory_order_relaxed);
  }

  std::size_t pending() const override { return pending_.load(std::memory_order_relaxed); }
  bool zero_delay_inline() const override { return false; }

 private:
  struct Worker {
    std::thread thread;
    sem_t wake;
  };

  void deliver(Op op, Message* m, bool cancelled) {
    done_.enqueue(Completion{m, op, cancelled});
    // Count after enqueueing. The thread that takes the count from 0 delivers; whoever adds while
    // it delivers is covered by its loop (it keeps going until the count it owes drops to 0).
    if (undelivered_.fetch_add(1) != 0) return;
    std::size_t owed = 1;
    Completion buf[kBatchCapacity];
    for (;;) {
      std::size_t delivered = 0;
      while (delivered < owed) {
        const std::size_t want = std::min<std::size_t>(owed - delivered, kBatchCapacity);
        const std::size_t got = done_.try_dequeue_bulk(buf, want);
        if (got == 0) {
          std::this_thread::yield();  // counted but not yet visible in its producer's sub-queue
          continue;
        }
        hand_over(buf, got);
        delivered += got;
      }
      owed = undelivered_.fetch_sub(delivered) - delivered;
      if (owed == 0) return;
    }
  }

  // Groups completions into one batch per (operation, cancelled) and passes them to the sink.
  void hand_over(const Completion* c, std::size_t n) {
    Batch* out[kOpCount][2] = {};
    for (std::size_t i = 0; i < n; ++i) {
      Batch*& b = out[op_index(c[i].op)][c[i].cancelled ? 1 : 0];
      if (!b) b = acquire_batch(batches_, c[i].cancelled);
      b->push(c[i].msg);
    }
    for (int op = 0; op < kOpCount; ++op)
      for (Batch* b : out[op])
        if (b) sink_(kOps[op], b);
  }

  // Blocks for `delay` ns; false when woken early by cancel_all.
  static bool block_for(sem_t& wake, Nanos delay) {
    timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    const Nanos total = deadline.tv_nsec + delay;
    deadline.tv_sec += static_cast<time_t>(total / kNanosPerSecond);
    deadline.tv_nsec = static_cast<long>(total % kNanosPerSecond);
    for (;;) {
      if (sem_clockwait(&wake, CLOCK_MONOTONIC, &deadline) == 0) return false;
      if (errno == ETIMEDOUT) return true;
      // EINTR: wait again
    }
  }

  // The next job, cleanup first. The semaphore counted one job per slot, enqueued before the
  // count was signalled, so one is there; it may take a few tries to become visible (moodycamel's
  // own blocking queue loops the same way).
  Job take() {
    Job j;
    while (!queues_[kFirst].try_dequeue(j) && !queues_[kSecond].try_dequeue(j)) {
    }
    return j;
  }

  void run(Worker& w) {
    for (;;) {
      if (!ready_.wait(500'000)) {  // 500 ms, then look at the cancellation flag
        if (cancelled_.load()) return;
        continue;
      }
      const Job j = take();
      if (!j.msg) return;  // cancel_all's wake-up
      bool cancelled = cancelled_.load();
      if (!cancelled && j.delay > 0) cancelled = !block_for(w.wake, j.delay);
      pending_.fetch_sub(1, std::memory_order_relaxed);
      deliver(j.op, j.msg, cancelled);
    }
  }

  BatchPool& batches_;
  const std::uint32_t count_;
  IoSink sink_;
  static constexpr int kFirst = 0;   // cleanup, and cancel_all's wake-ups
  static constexpr int kSecond = 1;  // save and restart
  moodycamel::ConcurrentQueue<Job> queues_[2];
  moodycamel::LightweightSemaphore ready_{0, kSemaSpins};  // one count per queued job
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int> submitters_{0};
  std::atomic<bool> cancelled_{false};
  std::atomic<std::size_t> pending_{0};
  moodycamel::ConcurrentQueue<Completion> done_;
  std::atomic<std::size_t> undelivered_{0};
};

}  // namespace

std::unique_ptr<IoService> make_blocking_io(BatchPool& batches, std::uint32_t threads) {
  return std::make_unique<BlockingIo>(batches, threads);
}

}  // namespace mayhem
