// SqliteStore: one writer thread, group commit, idempotent inserts (see sqlite_store.hpp).
// The save stage appends message pointers under one lock per batch; the writer swaps the whole
// queue out, writes it in one BEGIN IMMEDIATE ... COMMIT, and delivers completions in batches of
// up to 128 through the sink. The queues are vectors swapped back and forth, so their capacity is
// reused and the steady state allocates nothing per message.
#include "mayhem/store/sqlite_store.hpp"
#include "mayhem/thread_name.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace mayhem {

namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS saves (\n"
    "  message_id    TEXT PRIMARY KEY NOT NULL,  -- uuid, 8-4-4-4-12\n"
    "  instance_name TEXT NOT NULL,\n"
    "  hostname      TEXT NOT NULL,\n"
    "  published_at  INTEGER NOT NULL,  -- unix ms\n"
    "  saved_at      INTEGER NOT NULL,  -- unix ms, the commit that wrote the row\n"
    "  settled_at    INTEGER,           -- unix ms, last settlement (NULL until settled)\n"
    "  outcome       TEXT NOT NULL,     -- saved | acked | nacked (the last settlement)\n"
    "  restarted     INTEGER            -- 1 restarted, 0 restart failed or cancelled\n"
    ") WITHOUT ROWID";

constexpr const char* kInsert =
    "INSERT INTO saves (message_id, instance_name, hostname, published_at, saved_at, outcome) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 'saved') ON CONFLICT (message_id) DO NOTHING";
constexpr const char* kUpdate =
    "UPDATE saves SET outcome = ?2, restarted = ?3, settled_at = ?4 WHERE message_id = ?1";

struct Settlement {
  std::array<std::uint8_t, 16> id;
  std::int64_t settled_ms;
  bool acked;
  bool restarted;
};

std::int64_t wall_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct SqliteStore::Impl {
  std::string path;
  BatchPool& batches;
  const Clock& clock;
  std::shared_ptr<spdlog::logger> log;
  Nanos wall_offset_ns = 0;  // wall clock minus the service clock, to date published_ns

  sqlite3* db = nullptr;
  sqlite3_stmt* insert = nullptr;
  sqlite3_stmt* update = nullptr;
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  sqlite3_stmt* rollback = nullptr;
  SaveSink sink;  // set by start(), before the writer exists

  std::mutex mutex;
  std::condition_variable work_cv;  // the writer waits for work
  std::condition_variable idle_cv;  // cancel_saves waits for the writer's current saves
  std::vector<Message*> saves;
  std::vector<Settlement> settlements;
  bool writer_waiting = false;
  bool writing_saves = false;
  bool cancelled = false;
  bool stopping = false;
  bool writer_done = false;  // writer_loop returned (done_cv)
  std::condition_variable done_cv;
  std::thread writer;
  bool closed = false;     // close() has run (caller thread only)
  bool abandoned = false;  // close() left the writer behind: this state must outlive it

  // Waiting for another connection's lock (the busy handler): up to 5 s, and at shutdown no
  // later than the deadline; `busy_give_up_now` (cancel_saves) gives up at once. A wait that
  // gave up for the shutdown sets `busy_gave_up`: that transaction's saves are cancelled.
  static constexpr int kBusyLimitMs = 5000;
  std::atomic<Nanos> busy_give_up_at{kNoDeadline};
  std::atomic<bool> busy_give_up_now{false};
  std::atomic<bool> busy_gave_up{false};

  std::atomic<std::uint64_t> rows{0}, duplicates{0}, failures{0}, transactions{0}, outcomes{0};

  Impl(std::string p, BatchPool& b, const Clock& c, std::shared_ptr<spdlog::logger> l)
      : path(std::move(p)), batches(b), clock(c), log(std::move(l)) {
    wall_offset_ns = wall_ms() * 1'000'000 - clock.now();
  }
  ~Impl() { finalize(); }

  [[noreturn]] void fail(const std::string& what) {
    const std::string msg = fmt::format("--store sqlite:{}: {}", path, what);
    finalize();
    throw StoreError(msg);
  }
  std::string errmsg() const { return db ? sqlite3_errmsg(db) : "out of memory"; }

  void exec(const char* sql, const char* what) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string e = err ? err : errmsg();
      sqlite3_free(err);
      fail(fmt::format("{}: {}", what, e));
    }
  }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      fail(fmt::format("cannot prepare '{}': {}", sql, errmsg()));
    return s;
  }

  void open() {
    const int rc =
        sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    if (rc != SQLITE_OK) fail(fmt::format("cannot open the database: {}", errmsg()));
    sqlite3_busy_handler(db, &Impl::on_busy, this);
    if (sqlite3_db_readonly(db, "main") == 1) fail("the database is read-only");
    // journal_mode answers with the mode in force: anything but "wal" is refused.
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, nullptr) != SQLITE_OK)
      fail(fmt::format("cannot open the database: {}", errmsg()));
    const int step = sqlite3_step(s);
    std::string mode;
    if (step == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(s, 0);
      mode = t ? reinterpret_cast<const char*>(t) : "";
    }
    sqlite3_finalize(s);
    if (step != SQLITE_ROW) fail(fmt::format("cannot open the database: {}", errmsg()));
    if (mode != "wal") fail(fmt::format("cannot use WAL mode (journal_mode is '{}')", mode));
    exec("PRAGMA synchronous=FULL", "cannot set synchronous=FULL");
    exec("PRAGMA cache_size=-65536", "cannot set cache_size");
    // BEGIN IMMEDIATE takes the write lock: a database we cannot write fails here, at start.
    exec("BEGIN IMMEDIATE", "cannot write to the database");
    exec(kSchema, "cannot create table saves");
    exec("COMMIT", "cannot write to the database");
    insert = prepare(kInsert);
    update = prepare(kUpdate);
    begin = prepare("BEGIN IMMEDIATE");
    commit = prepare("COMMIT");
    rollback = prepare("ROLLBACK");
  }

  // SQLite's busy handler: non-zero to try again. Sleeps 1 ms a try (SQLite's own busy_timeout
  // sleeps up to 100 ms, too coarse for a shutdown deadline).
  static int on_busy(void* self, int tries) {
    auto& s = *static_cast<Impl*>(self);
    if (s.busy_give_up_now.load() || s.clock.now() >= s.busy_give_up_at.load()) {
      s.busy_gave_up.store(true);
      return 0;
    }
    if (tries >= kBusyLimitMs) return 0;  // 5 s of 1 ms tries: as busy_timeout 5000 did
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 1;
  }

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

  void finalize() {
    for (sqlite3_stmt** s : {&insert, &update, &begin, &commit, &rollback}) {
      sqlite3_finalize(*s);
      *s = nullptr;
    }
    if (db) sqlite3_close(db);
    db = nullptr;
  }

  // Runs a statement with no result rows; returns the SQLite result code (SQLITE_DONE is OK).
  static int run(sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
  }

  void deliver(const std::vector<Message*>& msgs, bool cancel) {
    std::size_t i = 0;
    while (i < msgs.size()) {
      Batch* b = acquire_batch(batches, cancel);
      while (i < msgs.size() && !b->full()) b->push(msgs[i++]);
      sink(b);
    }
  }

  void fail_all(const std::vector<Message*>& msgs, const char* what) {
    for (Message* m : msgs) m->save_failed = true;
    failures.fetch_add(msgs.size(), std::memory_order_relaxed);
    log->error("SQLite store: {} ({} saves failed): {}", what, msgs.size(), errmsg());
  }

  // A transaction that gave up waiting for another connection's lock because of the shutdown:
  // nothing of it was written, its saves complete as cancelled (nacked), not as failed.
  bool gave_up_for_shutdown(const std::vector<Message*>& batch,
                            const std::vector<Settlement>& done) {
    if (!busy_gave_up.exchange(false)) return false;
    for (Message* m : batch) m->save_failed = false;
    log->warn(
        "SQLite store: the database is locked by another connection; shutting down, {} saves "
        "cancelled and {} settlements not recorded",
        batch.size(), done.size());
    return true;
  }

  // One group commit: every queued save and settlement in one transaction. A save whose INSERT
  // fails is marked save_failed (the statement is undone, the transaction goes on); if the
  // transaction itself is lost (BEGIN or COMMIT fails, or SQLite rolled it back), every save in it
  // is marked failed. Returns false when it gave up on another connection's lock because of the
  // shutdown: then nothing was written and the saves are to complete as cancelled.
  bool write(const std::vector<Message*>& batch, const std::vector<Settlement>& done) {
    if (run(begin) != SQLITE_DONE) {
      if (gave_up_for_shutdown(batch, done)) return false;
      if (!batch.empty()) fail_all(batch, "cannot begin a transaction");
      if (!done.empty())
        log->error("SQLite store: {} settlements not recorded: {}", done.size(), errmsg());
      return true;
    }
    const std::int64_t now = wall_ms();
    std::uint64_t inserted = 0, dups = 0, failed = 0;
    bool lost = false;
    char id[37];
    char host[64];
    std::string first_error;
    for (Message* m : batch) {
      uuid_text(m->id, id);
      const auto name_len =
          static_cast<int>(strnlen(m->instance_name, sizeof m->instance_name - 1));
      const auto hn = fmt::format_to_n(host, sizeof host, "{}", Host{*m}).size;
      sqlite3_bind_text(insert, 1, id, 36, SQLITE_STATIC);
      sqlite3_bind_text(insert, 2, m->instance_name, name_len, SQLITE_STATIC);
      sqlite3_bind_text(insert, 3, host, static_cast<int>(std::min(hn, sizeof host)),
                        SQLITE_STATIC);
      sqlite3_bind_int64(insert, 4, (m->published_ns + wall_offset_ns) / 1'000'000);
      sqlite3_bind_int64(insert, 5, now);
      if (run(insert) == SQLITE_DONE) {
        if (sqlite3_changes(db) == 1)
          ++inserted;
        else
          ++dups;
        continue;
      }
      if (first_error.empty()) first_error = errmsg();
      m->save_failed = true;
      ++failed;
      if (sqlite3_get_autocommit(db)) {  // SQLite rolled the whole transaction back
        lost = true;
        break;
      }
    }
    std::uint64_t recorded = 0;
    for (const Settlement& s : done) {
      if (lost) break;
      uuid_text(s.id, id);
      sqlite3_bind_text(update, 1, id, 36, SQLITE_STATIC);
      sqlite3_bind_text(update, 2, s.acked ? "acked" : "nacked", -1, SQLITE_STATIC);
      sqlite3_bind_int(update, 3, s.restarted ? 1 : 0);
      sqlite3_bind_int64(update, 4, s.settled_ms);
      if (run(update) == SQLITE_DONE) {
        recorded += static_cast<std::uint64_t>(sqlite3_changes(db));
      } else {
        if (first_error.empty()) first_error = errmsg();
        if (sqlite3_get_autocommit(db)) lost = true;
      }
    }
    if (!lost && run(commit) != SQLITE_DONE) {
      if (first_error.empty()) first_error = errmsg();
      if (!sqlite3_get_autocommit(db)) run(rollback);
      lost = true;
    }
    if (lost) {
      if (gave_up_for_shutdown(batch, done)) return false;
      fail_all(batch, "a transaction was rolled back");
      if (!done.empty())
        log->error("SQLite store: {} settlements not recorded: {}", done.size(), first_error);
      return true;
    }
    if (failed != 0)
      log->error("SQLite store: {} of {} saves failed: {}", failed, batch.size(), first_error);
    rows.fetch_add(inserted, std::memory_order_relaxed);
    duplicates.fetch_add(dups, std::memory_order_relaxed);
    failures.fetch_add(failed, std::memory_order_relaxed);
    outcomes.fetch_add(recorded, std::memory_order_relaxed);
    transactions.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  void writer_loop() {
    std::vector<Message*> batch;
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
        writing_saves = !batch.empty();
      }
      const bool written = write(batch, done);
      deliver(batch, !written);
      batch.clear();
      done.clear();
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

SqliteStore::SqliteStore(std::string path, BatchPool& batches, const Clock& clock,
                         std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(std::move(path), batches, clock, std::move(log))) {
  impl_->open();
}

SqliteStore::~SqliteStore() {
  close();
  if (impl_->abandoned) (void)impl_.release();  // the writer left behind still uses it
}

const char* SqliteStore::schema() {
  return kSchema;
}

void SqliteStore::start(SaveSink sink) {
  Impl& s = *impl_;
  s.sink = std::move(sink);
  s.log->info("SQLite store: {} (WAL, one writer, group commit)", s.path);
  s.writer = std::thread([&s] {
    name_this_thread("mayhem-sqlite");
    s.writer_loop();
  });
}

Batch* SqliteStore::save(Message* const* msgs, std::size_t n) {
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

void SqliteStore::settled(Message* const* msgs, std::size_t n) {
  Impl& s = *impl_;
  const std::int64_t now = wall_ms();
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

bool SqliteStore::cancel_saves(Nanos give_up_at) {
  Impl& s = *impl_;
  std::vector<Message*> rest;
  bool finished;
  {
    std::unique_lock lock(s.mutex);
    s.cancelled = true;
    s.busy_give_up_now.store(true);  // a transaction waiting for a lock has written nothing
    finished = s.wait_until(lock, s.idle_cv, give_up_at, [&] { return !s.writing_saves; });
    s.busy_give_up_now.store(false);
    rest.swap(s.saves);
  }
  if (s.sink) s.deliver(rest, true);
  return finished;
}

bool SqliteStore::close(Nanos give_up_at) {
  Impl& s = *impl_;
  if (s.closed) return !s.abandoned;
  s.closed = true;
  s.busy_give_up_at.store(give_up_at);
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
  }
  s.work_cv.notify_all();
  if (s.writer.joinable()) {
    bool done;
    {
      std::unique_lock lock(s.mutex);
      // The busy handler gives up at give_up_at: leave the writer 20 ms more to notice and stop.
      const Nanos until = give_up_at == kNoDeadline ? kNoDeadline : give_up_at + 20'000'000;
      done = s.wait_until(lock, s.done_cv, until, [&] { return s.writer_done; });
    }
    if (!done) {
      s.log->error("SQLite store: the writer did not finish by the shutdown deadline; leaving it");
      s.abandoned = true;
      s.writer.detach();
      return false;
    }
    s.writer.join();
  }
  const StoreStats st = stats();
  if (s.sink)
    s.log->info(
        "SQLite store closed: {} rows inserted, {} duplicates, {} failed writes, {} settlements "
        "recorded, {} transactions",
        st.rows_inserted, st.duplicates, st.write_failures, st.outcomes, st.transactions);
  s.finalize();
  return true;
}

StoreStats SqliteStore::stats() const {
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
