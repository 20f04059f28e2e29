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

// The canonical 8-4-4-4-12 text of a uuid, as Message::id_string, without allocating.
void uuid_text(const std::array<std::uint8_t, 16>& id, char (&out)[37]) {
  static constexpr char kHex[] = "0123456789abcdef";
  int o = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = kHex[id[i] >> 4];
    out[o++] = kHex[id[i] & 15];
  }
  out[o] = '\0';
}

}  // namespace

struct SqliteStore::Impl {
  std::string path;
  BatchPool& batches;
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
  std::thread writer;
  bool closed = false;  // close() has run (caller thread only)

  std::atomic<std::uint64_t> rows{0}, duplicates{0}, failures{0}, transactions{0}, outcomes{0};

  Impl(std::string p, BatchPool& b, const Clock& clock, std::shared_ptr<spdlog::logger> l)
      : path(std::move(p)), batches(b), log(std::move(l)) {
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
    sqlite3_busy_timeout(db, 5000);
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
      Batch* b = batches.acquire_one();
      b->size = 0;
      b->cancelled = cancel;
      b->owner = nullptr;
      while (i < msgs.size() && !b->full()) b->push(msgs[i++]);
      sink(b);
    }
  }

  void fail_all(const std::vector<Message*>& msgs, const char* what) {
    for (Message* m : msgs) m->save_failed = true;
    failures.fetch_add(msgs.size(), std::memory_order_relaxed);
    log->error("SQLite store: {} ({} saves failed): {}", what, msgs.size(), errmsg());
  }

  // One group commit: every queued save and settlement in one transaction. A save whose INSERT
  // fails is marked save_failed (the statement is undone, the transaction goes on); if the
  // transaction itself is lost (BEGIN or COMMIT fails, or SQLite rolled it back), every save in it
  // is marked failed.
  void write(const std::vector<Message*>& batch, const std::vector<Settlement>& done) {
    if (run(begin) != SQLITE_DONE) {
      if (!batch.empty()) fail_all(batch, "cannot begin a transaction");
      if (!done.empty())
        log->error("SQLite store: {} settlements not recorded: {}", done.size(), errmsg());
      return;
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
      const int hn =
          std::snprintf(host, sizeof host, "%.*s.example.net", name_len, m->instance_name);
      sqlite3_bind_text(insert, 1, id, 36, SQLITE_STATIC);
      sqlite3_bind_text(insert, 2, m->instance_name, name_len, SQLITE_STATIC);
      sqlite3_bind_text(insert, 3, host, std::min<int>(hn, sizeof host - 1), SQLITE_STATIC);
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
      fail_all(batch, "a transaction was rolled back");
      if (!done.empty())
        log->error("SQLite store: {} settlements not recorded: {}", done.size(), first_error);
      return;
    }
    if (failed != 0)
      log->error("SQLite store: {} of {} saves failed: {}", failed, batch.size(), first_error);
    rows.fetch_add(inserted, std::memory_order_relaxed);
    duplicates.fetch_add(dups, std::memory_order_relaxed);
    failures.fetch_add(failed, std::memory_order_relaxed);
    outcomes.fetch_add(recorded, std::memory_order_relaxed);
    transactions.fetch_add(1, std::memory_order_relaxed);
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
        if (saves.empty() && settlements.empty()) return;  // stopping, and nothing left
        batch.swap(saves);
        done.swap(settlements);
        writing_saves = !batch.empty();
      }
      write(batch, done);
      deliver(batch, false);
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

void SqliteStore::save(Message* const* msgs, std::size_t n) {
  if (n == 0) return;
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

void SqliteStore::cancel_saves() {
  Impl& s = *impl_;
  std::vector<Message*> rest;
  {
    std::unique_lock lock(s.mutex);
    s.cancelled = true;
    s.idle_cv.wait(lock, [&] { return !s.writing_saves; });
    rest.swap(s.saves);
  }
  if (s.sink) s.deliver(rest, true);
}

void SqliteStore::close() {
  Impl& s = *impl_;
  if (s.closed) return;
  s.closed = true;
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
  }
  s.work_cv.notify_all();
  if (s.writer.joinable()) s.writer.join();
  const StoreStats st = stats();
  if (s.sink)
    s.log->info(
        "SQLite store closed: {} rows inserted, {} duplicates, {} failed writes, {} settlements "
        "recorded, {} transactions",
        st.rows_inserted, st.duplicates, st.write_failures, st.outcomes, st.transactions);
  s.finalize();
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
