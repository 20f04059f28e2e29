// GroupCommitStore: the writer thread the real stores share (see group_commit.hpp).
// The save stage appends message pointers under one lock per batch; the writer swaps the whole
// queue out, hands it to the backend as one transaction (retrying transient failures), and
// delivers completions in batches of up to 128 through the sink. The queues are vectors swapped
// back and forth, so their capacity is reused and the steady state allocates nothing per message.
#include "mayhem/store/group_commit.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "mayhem/thread_name.hpp"

namespace mayhem {

std::int64_t unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

struct GroupCommitStore::Impl {
  std::unique_ptr<StoreBackend> db;
  BatchPool& batches;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log;
  const Nanos retry_for;
  const bool group_commit;
  SaveSink sink;        // set by start(), before the writer exists
  RecordSink recorded;  // likewise

  std::mutex mutex;
  std::condition_variable work_cv;  // the writer waits for work
  std::condition_variable idle_cv;  // cancel_saves waits for the writer's current saves
  std::vector<Message*> saves;
  std::vector<Settlement> settlements;
  // record_acks: handed back once their settlements are committed, each call's as one batch.
  std::vector<Message*> acks;
  std::vector<std::uint32_t> ack_calls;  // how many of `acks` each call gave
  bool writer_waiting = false;
  bool writing_saves = false;
  bool cancelled = false;
  bool stopping = false;
  bool writer_done = false;  // writer_loop returned (done_cv)
  std::condition_variable done_cv;
  std::thread writer;
  bool closed = false;     // close() has run (caller thread only)
  bool abandoned = false;  // close() left the writer behind: this state must outlive it

  std::atomic<std::uint64_t> rows{0}, duplicates{0}, failures{0}, transactions{0}, outcomes{0};

  Impl(std::unique_ptr<StoreBackend> d, BatchPool& b, const Clock& c,
       std::shared_ptr<spdlog::logger> l, Nanos r, bool g)
      : db(std::move(d)), batches(b), clock(c), log(std::move(l)), retry_for(r), group_commit(g) {}

  // Waits on `cv` for `pred` until `give_up_at` (the store's clock); false if it still fails.
  template <typename Pred>
  bool wait_until(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Nanos give_up_at,
                  Pred pred) {
    if (give_up_at == kNoDeadline) {
      cv.wait(lock, pred);
      return true;
    }
    while (!pred()) {
      const Nanos left = give_up_at - clock.now();
      if (left <= 0) return false;
      cv.wait_for(lock, std::chrono::nanoseconds(std::min<Nanos>(left, 10'000'000)));
    }
    return true;
  }

  void deliver(Message* const* msgs, std::size_t n, bool cancel) {
    std::size_t i = 0;
    while (i < n) {
      Batch* b = acquire_batch(batches, cancel);
      while (i < n && !b->full()) b->push(msgs[i++]);
      sink(b);
    }
  }
  void deliver(const std::vector<Message*>& msgs, bool cancel) {
    deliver(msgs.data(), msgs.size(), cancel);
  }
  // The recorded acks, one batch per record_acks call; `cancel`: not recorded (to be nacked).
  void deliver_recorded(Message* const* msgs, std::size_t n, bool cancel) {
    Batch* b = acquire_batch(batches, cancel);
    for (std::size_t i = 0; i < n; ++i) b->push(msgs[i]);
    recorded(b);
  }
  void deliver_recorded(const std::vector<Message*>& msgs, const std::vector<std::uint32_t>& calls,
                        bool cancel) {
    std::size_t at = 0;
    for (const std::uint32_t n : calls) {
      deliver_recorded(msgs.data() + at, n, cancel);
      at += n;
    }
  }

  // What a write did: committed; failed (for good, or the retries ran out: the saves have
  // `save_failed` set, the settlements are not recorded); stopped by the shutdown (nothing known
  // to be written: the saves complete as cancelled).
  enum class Written { kCommitted, kFailed, kStopped };

  // One transaction per save (--store-group-commit 0, for measuring group commit against it):
  // the settlements go with the first. Completes the saves written; the rest, once the shutdown
  // stopped it, as cancelled. Returns what became of the settlements.
  Written write_each(const std::vector<Message*>& batch, const std::vector<Settlement>& done) {
    std::vector<Message*> one(1);
    const std::vector<Settlement> none;
    std::size_t i = 0;
    Written first = Written::kCommitted, w = Written::kCommitted;
    for (; i < batch.size() && w != Written::kStopped; ++i) {
      one[0] = batch[i];
      w = write(one, i == 0 ? done : none);
      if (i == 0) first = w;
    }
    if (batch.empty()) first = w = write(batch, done);
    const std::size_t ok = w != Written::kStopped ? batch.size() : i - 1;
    deliver(batch.data(), ok, false);
    deliver(batch.data() + ok, batch.size() - ok, true);
    return first;
  }

  bool shutdown_gives_up() const {
    return db->give_up_now.load() || clock.now() >= db->give_up_at.load();
  }

  // Sleeps `ns` (real time) between retries; false as soon as the shutdown gives up.
  bool pause(Nanos ns) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
    while (std::chrono::steady_clock::now() < until) {
      if (shutdown_gives_up()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return !shutdown_gives_up();
  }

  // One group commit, retried while the failure is transient and `retry_for` lasts. Saves that
  // failed (for good, or when the retries ran out) have `save_failed` set.
  Written write(const std::vector<Message*>& batch, const std::vector<Settlement>& done) {
    const auto first = std::chrono::steady_clock::now();
    Nanos backoff = 50'000'000;
    for (std::uint32_t retries = 0;; ++retries) {
      for (Message* m : batch) m->save_failed = false;
      WriteCounts c;
      const StoreBackend::Result r = db->write(batch, done, c);
      if (r == StoreBackend::Result::kDone) {
        rows.fetch_add(c.inserted, std::memory_order_relaxed);
        duplicates.fetch_add(c.duplicates, std::memory_order_relaxed);
        failures.fetch_add(c.failed, std::memory_order_relaxed);
        outcomes.fetch_add(c.recorded, std::memory_order_relaxed);
        transactions.fetch_add(c.transactions, std::memory_order_relaxed);
        if (retries != 0)
          log->warn("{}: written after {} retries ({} saves, {} settlements)", db->label(), retries,
                    batch.size(), done.size());
        return c.settlements_lost ? Written::kFailed : Written::kCommitted;
      }
      const Nanos elapsed = (std::chrono::steady_clock::now() - first).count();
      const bool shutting_down = r == StoreBackend::Result::kGaveUp || db->gave_up.exchange(false);
      if (retries == 0 && !shutting_down && elapsed < retry_for)
        log->warn("{}: {}; retrying with backoff and reconnects for up to {:g} s", db->label(),
                  db->error(), static_cast<double>(retry_for) / 1e9);
      if (shutting_down ||
          (elapsed < retry_for && !pause(std::min(backoff, retry_for - elapsed)))) {
        log->warn("{}: {}; shutting down, {} saves cancelled and {} settlements not recorded",
                  db->label(), db->error(), batch.size(), done.size());
        return Written::kStopped;
      }
      if (elapsed >= retry_for) {
        for (Message* m : batch) m->save_failed = true;
        failures.fetch_add(batch.size(), std::memory_order_relaxed);
        log->error(
            "{}: {}; gave up after {} retries in {:.1f} s: {} saves failed (nacked), {} "
            "settlements not recorded",
            db->label(), db->error(), retries, static_cast<double>(elapsed) / 1e9, batch.size(),
            done.size());
        return Written::kFailed;
      }
      backoff = std::min<Nanos>(backoff * 2, 1'000'000'000);
      db->reconnect();
    }
  }

  void writer_loop() {
    std::vector<Message*> batch, acked;
    std::vector<std::uint32_t> calls;
    std::vector<Settlement> done;
    for (;;) {
      {
        std::unique_lock lock(mutex);
        // writer_waiting is set before every wait: a submitter clears it when it notifies.
        while (!stopping && saves.empty() && settlements.empty()) {
          writer_waiting = true;
          work_cv.wait(lock);
        }
        writer_waiting = false;
        if (saves.empty() && settlements.empty()) {  // stopping, and nothing left
          writer_done = true;
          done_cv.notify_all();
          return;
        }
        batch.swap(saves);
        done.swap(settlements);
        acked.swap(acks);
        calls.swap(ack_calls);
        writing_saves = !batch.empty();
      }
      Written w;
      if (group_commit) {
        w = write(batch, done);
        deliver(batch, w == Written::kStopped);
      } else {
        w = write_each(batch, done);
      }
      // The acks go to the broker only now that their rows say `acked`.
      deliver_recorded(acked, calls, w != Written::kCommitted);
      batch.clear();
      done.clear();
      acked.clear();
      calls.clear();
      bool notify;
      {
        std::lock_guard lock(mutex);
        notify = writing_saves;
        writing_saves = false;
      }
      if (notify) idle_cv.notify_all();
    }
  }
};

GroupCommitStore::GroupCommitStore(std::unique_ptr<StoreBackend> backend, BatchPool& batches,
                                   const Clock& clock, std::shared_ptr<spdlog::logger> log,
                                   Nanos retry_for, bool group_commit)
    : impl_(std::make_unique<Impl>(std::move(backend), batches, clock, std::move(log),
                                   std::max<Nanos>(retry_for, 0), group_commit)) {}

GroupCommitStore::~GroupCommitStore() {
  close();
  if (impl_->abandoned) (void)impl_.release();  // the writer left behind still uses it
}

void GroupCommitStore::start(SaveSink saved, RecordSink recorded) {
  Impl& s = *impl_;
  s.sink = std::move(saved);
  s.recorded = std::move(recorded);
  s.log->info("{}: {}{}", s.db->label(), s.db->describe(),
              s.group_commit ? "" : "; one transaction per save (--store-group-commit 0)");
  s.writer = std::thread([&s] {
    name_this_thread(s.db->thread_name());
    s.writer_loop();
  });
}

Batch* GroupCommitStore::save(Message* const* msgs, std::size_t n) {
  if (n == 0) return nullptr;
  Impl& s = *impl_;
  bool notify = false;
  {
    std::lock_guard lock(s.mutex);
    if (!s.cancelled && !s.stopping) {
      s.saves.insert(s.saves.end(), msgs, msgs + n);
      notify = s.writer_waiting;
      s.writer_waiting = false;  // one notification per wait is enough
      n = 0;
    }
  }
  if (notify) s.work_cv.notify_one();
  if (n != 0) s.deliver(std::vector<Message*>(msgs, msgs + n), true);  // shutting down
  return nullptr;  // every save completes through the sink
}

void GroupCommitStore::settled(Message* const* msgs, std::size_t n) {
  Impl& s = *impl_;
  const std::int64_t now = unix_ms();
  bool notify = false;
  {
    std::lock_guard lock(s.mutex);
    if (s.stopping) return;
    for (std::size_t i = 0; i < n; ++i) {
      const Message& m = *msgs[i];
      if (!m.saved) continue;  // no row was written by this delivery
      s.settlements.push_back(Settlement{m.id, now, m.acked, m.restarted});
    }
    notify = s.writer_waiting && !s.settlements.empty();
    if (notify) s.writer_waiting = false;
  }
  if (notify) s.work_cv.notify_one();
}

void GroupCommitStore::record_acks(Message* const* msgs, std::size_t n) {
  if (n == 0) return;
  Impl& s = *impl_;
  const std::int64_t now = unix_ms();
  bool notify = false, refused = false;
  {
    std::lock_guard lock(s.mutex);
    if (s.stopping) {
      refused = true;
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        const Message& m = *msgs[i];
        s.settlements.push_back(Settlement{m.id, now, true, m.restarted});
      }
      s.acks.insert(s.acks.end(), msgs, msgs + n);
      s.ack_calls.push_back(static_cast<std::uint32_t>(n));
      notify = s.writer_waiting;
      s.writer_waiting = false;
    }
  }
  if (notify) s.work_cv.notify_one();
  if (refused) s.deliver_recorded(msgs, n, true);  // the writer has stopped: nack them
}

bool GroupCommitStore::cancel_saves(Nanos give_up_at) {
  Impl& s = *impl_;
  std::vector<Message*> rest;
  bool finished;
  {
    std::unique_lock lock(s.mutex);
    s.cancelled = true;
    // A transaction waiting for another connection's lock, or for its next retry, has written
    // nothing: it gives up at once. So does every later one (the acks the drain still records,
    // the last settlements): one try each, so the drain never waits on the database.
    s.db->give_up_now.store(true);
    finished = s.wait_until(lock, s.idle_cv, give_up_at, [&] { return !s.writing_saves; });
    rest.swap(s.saves);
  }
  if (s.sink) s.deliver(rest, true);
  return finished;
}

bool GroupCommitStore::close(Nanos give_up_at) {
  Impl& s = *impl_;
  if (s.closed) return !s.abandoned;
  s.closed = true;
  s.db->give_up_at.store(give_up_at);
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
  }
  s.work_cv.notify_all();
  if (s.writer.joinable()) {
    bool done;
    {
      std::unique_lock lock(s.mutex);
      // Waits and retries give up at give_up_at: leave the writer 20 ms more to notice and stop.
      const Nanos until = give_up_at == kNoDeadline ? kNoDeadline : give_up_at + 20'000'000;
      done = s.wait_until(lock, s.done_cv, until, [&] { return s.writer_done; });
    }
    if (!done) {
      s.log->error("{}: the writer did not finish by the shutdown deadline; leaving it",
                   s.db->label());
      s.abandoned = true;
      s.writer.detach();
      return false;
    }
    s.writer.join();
  }
  const StoreStats st = stats();
  if (s.sink)
    s.log->info(
        "{} closed: {} rows inserted, {} duplicates, {} failed writes, {} settlements recorded, {} "
        "transactions",
        s.db->label(), st.rows_inserted, st.duplicates, st.write_failures, st.outcomes,
        st.transactions);
  s.db->close();
  return true;
}

StoreStats GroupCommitStore::stats() const {
  const Impl& s = *impl_;
  StoreStats st;
  st.rows_inserted = s.rows.load(std::memory_order_relaxed);
  st.duplicates = s.duplicates.load(std::memory_order_relaxed);
  st.write_failures = s.failures.load(std::memory_order_relaxed);
  st.transactions = s.transactions.load(std::memory_order_relaxed);
  st.outcomes = s.outcomes.load(std::memory_order_relaxed);
  return st;
}

}  // namespace mayhem
