// SqliteStore: a GroupCommitStore (group_commit.hpp) over one SQLite connection. Each group
// commit is one BEGIN IMMEDIATE ... COMMIT of prepared INSERTs and UPDATEs; another connection's
// lock is waited for by the busy handler (1 ms tries, up to 5 s; at shutdown no later than the
// deadline). A lock still held after that, a full disk or an I/O error is transient (retried).
#include "mayhem/store/sqlite_store.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "mayhem/store/group_commit.hpp"

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
    "  outcome       TEXT NOT NULL,     -- saved | acked | nacked (last; acked is final)\n"
    "  restarted     INTEGER            -- 1 restarted, 0 restart failed or cancelled\n"
    ") WITHOUT ROWID";

constexpr const char* kInsert =
    "INSERT INTO saves (message_id, instance_name, hostname, published_at, saved_at, outcome) "
    "VALUES (?1, ?2, ?3, ?4, ?5, 'saved') ON CONFLICT (message_id) DO NOTHING";
constexpr const char* kUpdate =
    "UPDATE saves SET outcome = ?2, restarted = ?3, settled_at = ?4 "
    "WHERE message_id = ?1 AND outcome <> 'acked'";

// Worth another try: another connection's lock outlasted the busy handler, a full disk, an I/O
// error.
bool transient(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_FULL ||
         primary == SQLITE_IOERR;
}

class SqliteBackend final : public StoreBackend {
 public:
  SqliteBackend(std::string path, const Clock& clock, std::shared_ptr<spdlog::logger> log)
      : path_(std::move(path)), clock_(clock), log_(std::move(log)) {
    wall_offset_ns_ = unix_ms() * 1'000'000 - clock_.now();
  }
  ~SqliteBackend() override { finalize(); }

  void open();
  Result write(const std::vector<Message*>& batch, const std::vector<Settlement>& done,
               WriteCounts& counts) override;
  std::string error() const override { return error_; }
  void close() override { finalize(); }
  const char* label() const override { return "SQLite store"; }
  const char* thread_name() const override { return "mayhem-sqlite"; }
  std::string describe() const override {
    return fmt::format("{} (WAL, one writer, group commit)", path_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const std::string msg = fmt::format("--store sqlite:{}: {}", path_, what);
    finalize();
    throw StoreError(msg);
  }
  std::string errmsg() const { return db_ ? sqlite3_errmsg(db_) : "out of memory"; }

  void exec(const char* sql, const char* what) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string e = err ? err : errmsg();
      sqlite3_free(err);
      fail(fmt::format("{}: {}", what, e));
    }
  }
  sqlite3_stmt* prepare(const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      fail(fmt::format("cannot prepare '{}': {}", sql, errmsg()));
    return s;
  }

  // SQLite's busy handler: non-zero to try again. Sleeps 1 ms a try (SQLite's own busy_timeout
  // sleeps up to 100 ms, too coarse for a shutdown deadline).
  static int on_busy(void* self, int tries) {
    auto& s = *static_cast<SqliteBackend*>(self);
    if (s.give_up_now.load() || s.clock_.now() >= s.give_up_at.load()) {
      s.gave_up.store(true);
      return 0;
    }
    if (tries >= kBusyLimitMs) return 0;  // 5 s of 1 ms tries: as busy_timeout 5000 did
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 1;
  }

  void finalize() {
    for (sqlite3_stmt** s : {&insert_, &update_, &begin_, &commit_, &rollback_}) {
      sqlite3_finalize(*s);
      *s = nullptr;
    }
    if (db_) sqlite3_close(db_);
    db_ = nullptr;
  }

  // Runs a statement with no result rows; returns the SQLite result code (SQLITE_DONE is OK).
  static int run(sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
  }

  // A transaction that did not commit (`rc` said why): given up on a lock for the shutdown, a
  // transient failure (retried), or a lasting one: every save in it failed.
  Result lost(const std::vector<Message*>& batch, const std::vector<Settlement>& done, int rc,
              const std::string& what, WriteCounts& counts) {
    if (gave_up.exchange(false)) {
      error_ = "the database is locked by another connection";
      return Result::kGaveUp;
    }
    error_ = what;
    if (transient(rc)) return Result::kTransient;
    for (Message* m : batch) m->save_failed = true;
    counts.failed = batch.size();
    counts.settlements_lost = !done.empty();
    log_->error("SQLite store: {} ({} saves failed, {} settlements not recorded)", what,
                batch.size(), done.size());
    return Result::kDone;
  }

  static constexpr int kBusyLimitMs = 5000;
  std::string path_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Nanos wall_offset_ns_ = 0;  // wall clock minus the service clock, to date published_ns
  std::string error_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* update_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
};

void SqliteBackend::open() {
  const int rc =
      sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) fail(fmt::format("cannot open the database: {}", errmsg()));
  sqlite3_busy_handler(db_, &SqliteBackend::on_busy, this);
  if (sqlite3_db_readonly(db_, "main") == 1) fail("the database is read-only");
  // journal_mode answers with the mode in force: anything but "wal" is refused.
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &s, nullptr) != SQLITE_OK)
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
  insert_ = prepare(kInsert);
  update_ = prepare(kUpdate);
  begin_ = prepare("BEGIN IMMEDIATE");
  commit_ = prepare("COMMIT");
  rollback_ = prepare("ROLLBACK");
}

// One group commit: every queued save and settlement in one transaction. A save whose INSERT fails
// is marked save_failed (the statement is undone, the transaction goes on); if the transaction
// itself is lost (BEGIN or COMMIT fails, or SQLite rolled it back), see lost().
StoreBackend::Result SqliteBackend::write(const std::vector<Message*>& batch,
                                          const std::vector<Settlement>& done,
                                          WriteCounts& counts) {
  if (const int rc = run(begin_); rc != SQLITE_DONE)
    return lost(batch, done, rc, "cannot begin a transaction: " + errmsg(), counts);
  const std::int64_t now = unix_ms();
  std::uint64_t inserted = 0, dups = 0, failed = 0;
  int lost_rc = SQLITE_OK;
  char id[37];
  char host[64];
  std::string first_error;
  for (Message* m : batch) {
    uuid_text(m->id, id);
    const auto name_len = static_cast<int>(strnlen(m->instance_name, sizeof m->instance_name - 1));
    const auto hn = fmt::format_to_n(host, sizeof host, "{}", Host{*m}).size;
    sqlite3_bind_text(insert_, 1, id, 36, SQLITE_STATIC);
    sqlite3_bind_text(insert_, 2, m->instance_name, name_len, SQLITE_STATIC);
    sqlite3_bind_text(insert_, 3, host, static_cast<int>(std::min(hn, sizeof host)), SQLITE_STATIC);
    sqlite3_bind_int64(insert_, 4, (m->published_ns + wall_offset_ns_) / 1'000'000);
    sqlite3_bind_int64(insert_, 5, now);
    const int rc = run(insert_);
    if (rc == SQLITE_DONE) {
      if (sqlite3_changes(db_) == 1)
        ++inserted;
      else
        ++dups;
      continue;
    }
    if (first_error.empty()) first_error = errmsg();
    m->save_failed = true;
    ++failed;
    if (sqlite3_get_autocommit(db_)) {  // SQLite rolled the whole transaction back
      lost_rc = rc;
      break;
    }
  }
  std::uint64_t recorded = 0;
  for (const Settlement& s : done) {
    if (lost_rc != SQLITE_OK) break;
    uuid_text(s.id, id);
    sqlite3_bind_text(update_, 1, id, 36, SQLITE_STATIC);
    sqlite3_bind_text(update_, 2, s.acked ? "acked" : "nacked", -1, SQLITE_STATIC);
    sqlite3_bind_int(update_, 3, s.restarted ? 1 : 0);
    sqlite3_bind_int64(update_, 4, s.settled_ms);
    const int rc = run(update_);
    if (rc == SQLITE_DONE) {
      recorded += static_cast<std::uint64_t>(sqlite3_changes(db_));
    } else {
      if (first_error.empty()) first_error = errmsg();
      if (sqlite3_get_autocommit(db_)) lost_rc = rc;
      counts.settlements_lost = true;
    }
  }
  if (lost_rc == SQLITE_OK) {
    if (const int rc = run(commit_); rc != SQLITE_DONE) {
      if (first_error.empty()) first_error = errmsg();
      if (!sqlite3_get_autocommit(db_)) run(rollback_);
      lost_rc = rc;
    }
  }
  if (lost_rc != SQLITE_OK)
    return lost(batch, done, lost_rc, "a transaction was rolled back: " + first_error, counts);
  if (failed != 0)
    log_->error("SQLite store: {} of {} saves failed: {}", failed, batch.size(), first_error);
  counts.inserted = inserted;
  counts.duplicates = dups;
  counts.failed = failed;
  counts.recorded = recorded;
  counts.transactions = 1;
  return Result::kDone;
}

std::unique_ptr<StoreBackend> open_sqlite(std::string path, const Clock& clock,
                                          std::shared_ptr<spdlog::logger> log) {
  auto db = std::make_unique<SqliteBackend>(std::move(path), clock, std::move(log));
  db->open();
  return db;
}

}  // namespace

SqliteStore::SqliteStore(std::string path, BatchPool& batches, const Clock& clock,
                         std::shared_ptr<spdlog::logger> log, Nanos retry_for, bool group_commit)
    : GroupCommitStore(open_sqlite(std::move(path), clock, log), batches, clock, log, retry_for,
                       group_commit) {}

const char* SqliteStore::schema() {
  return kSchema;
}

}  // namespace mayhem
