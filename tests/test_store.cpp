// The SQLite store (--store sqlite:PATH): rows equal acked messages after a run, a redelivered
// message never adds a row, the writer group-commits, a failed write is a save failure through the
// pipeline's normal per-message path, and a database that cannot be used is refused at start.
// Every test works in its own temporary directory; waits are on conditions with deadlines.
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "mayhem/service.hpp"
#include "mayhem/store/sqlite_store.hpp"
#include "support/store_saves.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

using mayhem::test::TempDir;

// A second connection, as `sqlite3 mayhem.db ...` would use.
class Db {
 public:
  explicit Db(const std::string& path) {
    REQUIRE(sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~Db() { sqlite3_close(db_); }
  std::int64_t count(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const std::int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
  }
  void exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    INFO((err ? err : ""));
    sqlite3_free(err);
    REQUIRE(rc == SQLITE_OK);
  }

 private:
  sqlite3* db_ = nullptr;
};

Options quick(std::uint64_t messages, const std::string& store) {
  Options o;
  o.messages = messages;
  o.publish_interval = 0;
  o.latency_scale = 0.002;
  o.seed = 4242;
  o.store = store;
  return o;
}

}  // namespace

TEST_CASE("SQLite store: after a run, rows equal acked messages, each with its outcome",
          "[store]") {
  TempDir dir;
  const std::string db = dir.file("mayhem.db");
  Options o = quick(3000, "sqlite:" + db);
  o.fail_rate = 0.25;  // restarts still fail (simulated); saves are real, so they do not
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  REQUIRE(svc.run() == 0);
  const Summary s = svc.summary();
  REQUIRE(s.acked == 3000);
  CHECK(s.save_failed == 0);
  CHECK(s.saved == 3000);
  CHECK(std::string(s.store) == "sqlite");
  CHECK(s.store_rows == 3000);
  CHECK(s.store_write_failures == 0);
  // Group commit at the service level: far fewer transactions than rows.
  CHECK(s.store_transactions >= 1);
  CHECK(s.store_transactions < s.store_rows);

  Db q(db);
  CHECK(q.count("SELECT count(*) FROM saves") == static_cast<std::int64_t>(s.acked));
  CHECK(q.count("SELECT count(*) FROM saves WHERE outcome = 'acked'") == 3000);
  CHECK(q.count("SELECT count(DISTINCT message_id) FROM saves") == 3000);
  CHECK(q.count("SELECT count(*) FROM saves WHERE restarted = 0") ==
        static_cast<std::int64_t>(s.restart_failed));
  CHECK(q.count("SELECT count(*) FROM saves WHERE hostname = instance_name || '.example.net' "
                "AND settled_at >= saved_at AND saved_at >= published_at") == 3000);
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "wal");
  sqlite3_finalize(st);
  sqlite3_close(raw);
}

TEST_CASE("SQLite store: a redelivered message does not add a row, its last outcome wins",
          "[store]") {
  TempDir dir;
  const std::string db = dir.file("redeliver.db");
  BatchPool batches{64};
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  SqliteStore store(db, batches, SteadyClock::instance(), log);
  test::SaveCompletions c(batches);
  store.start(c.sink());
  test::SaveMessages m(300, 7);

  // First delivery: saved, then nacked (say, a shutdown cancelled its restart).
  m.save(store);
  REQUIRE(c.wait_for(300));
  m.settle(store, false);

  // Redelivery: the same message ids are saved again, then acked.
  m.redeliver(store);
  REQUIRE(c.wait_for(600));
  m.settle(store, true);
  store.close();

  CHECK(c.failed == 0);  // a duplicate is a successful save
  CHECK(c.cancelled == 0);
  const StoreStats st = store.stats();
  CHECK(st.rows_inserted == 300);
  CHECK(st.duplicates == 300);
  CHECK(st.outcomes == 600);
  Db q(db);
  CHECK(q.count("SELECT count(*) FROM saves") == 300);
  CHECK(q.count("SELECT count(*) FROM saves WHERE outcome = 'acked' AND restarted = 1") == 300);
}

TEST_CASE("SQLite store: the writer group-commits everything queued in one transaction",
          "[store]") {
  TempDir dir;
  const std::string db = dir.file("group.db");
  BatchPool batches{64};
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  SqliteStore store(db, batches, SteadyClock::instance(), log);
  test::SaveCompletions c(batches);
  test::SaveMessages m(1000, 7);
  m.save(store);  // 8 submissions queued before the writer runs: its first commit takes them all
  store.start(c.sink());
  REQUIRE(c.wait_for(1000));
  CHECK(store.stats().transactions == 1);
  CHECK(store.stats().rows_inserted == 1000);

  test::SaveMessages more(
      500, 8);  // while the writer is idle, more submissions: at most one commit each
  more.save(store);
  REQUIRE(c.wait_for(1500));
  store.close();
  const StoreStats st = store.stats();
  CHECK(st.transactions >= 2);
  CHECK(st.transactions <= 1 + 4);  // 500 messages came in 4 submissions
  CHECK(st.transactions < st.rows_inserted);
  CHECK(Db(db).count("SELECT count(*) FROM saves") == 1500);
}

TEST_CASE("SQLite store: a failed write is a save failure through the pipeline's path, nacked",
          "[store]") {
  TempDir dir;
  const std::string db = dir.file("fail.db");
  Options o = quick(1000, "sqlite:" + db);
  o.fail_rate = 0;
  auto [log, sink] = test::make_test_logger(spdlog::level::info);
  Service svc(o, Service::Deps{log, nullptr, false, {}});  // opens the database, creates the table
  // A real write failure for some rows: a trigger aborts their INSERT.
  Db q(db);
  q.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON saves WHEN NEW.instance_name GLOB 'cattle-[a-f]*' "
      "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END");
  // Which messages the trigger refuses, from the same seed the service publishes with.
  MessageFactory f(o.seed);
  Message tmp;
  std::uint64_t refused = 0;
  for (std::uint64_t i = 0; i < o.messages; ++i) {
    f.fill(tmp, i, 0);
    refused += tmp.instance_name[7] >= 'a' && tmp.instance_name[7] <= 'f';
  }
  REQUIRE(refused > 0);

  REQUIRE(svc.run() == 0);
  const Summary s = svc.summary();
  CHECK(s.save_failed == refused);
  CHECK(s.saved == o.messages - refused);
  // No ack without its row (a real database): a failed save is logged, then nacked. (The
  // reference, and --store memory, ack it.)
  CHECK(s.acked == o.messages - refused);
  CHECK(s.nacked == refused);
  CHECK(s.store_write_failures == refused);
  CHECK(sink->count("Could not save") == refused);
  CHECK(sink->count("refused by test trigger") >= 1);
  CHECK(q.count("SELECT count(*) FROM saves") == static_cast<std::int64_t>(o.messages - refused));
  CHECK(q.count("SELECT count(*) FROM saves WHERE outcome = 'acked'") ==
        static_cast<std::int64_t>(s.acked));
  CHECK(q.count("SELECT count(*) FROM saves WHERE instance_name GLOB 'cattle-[a-f]*'") == 0);
}

TEST_CASE("SQLite store: a lock held past the busy wait is retried or fails the saves", "[store]") {
  // Another connection holds the write lock for longer than the busy handler waits (5 s): the
  // failure is transient. With retries the saves are written once the lock goes; without, they
  // fail (and the pipeline nacks them: "a failed write ... nacked" above).
  TempDir dir;
  const std::string db = dir.file("busy.db");
  const bool retry = GENERATE(true, false);
  BatchPool batches{64};
  auto [log, sink] = test::make_test_logger(spdlog::level::info);
  SqliteStore store(db, batches, SteadyClock::instance(), log, retry ? 30'000'000'000 : 0);
  test::SaveCompletions c(batches);
  store.start(c.sink());
  Db locker(db);
  locker.exec("BEGIN IMMEDIATE");
  test::SaveMessages m(200, 7);
  m.save(store);
  // The busy handler gives up after 5 s; the lock goes 0.5 s later.
  REQUIRE(
      test::eventually([&, sink = sink] { return sink->count("database is locked") >= 1; }, 10s));
  if (retry) {
    std::this_thread::sleep_for(500ms);  // holding the lock past the give-up, on purpose
    locker.exec("ROLLBACK");
    REQUIRE(c.wait_for(200));
  } else {
    // The lock stays until every save has given up: the writer may have split the 200 into
    // several transactions (a slow build starts one before all are queued), each of which must
    // meet the lock, not a lock released after the first one gave up (5 s each).
    REQUIRE(c.wait_for(200, 60s));
    locker.exec("ROLLBACK");
  }
  store.close();
  if (retry) {
    CHECK(c.failed == 0);
    CHECK(store.stats().rows_inserted == 200);
    CHECK(sink->count("retrying with backoff") >= 1);
    CHECK(sink->count("written after") >= 1);
    CHECK(Db(db).count("SELECT count(*) FROM saves") == 200);
  } else {
    CHECK(c.failed == 200);
    CHECK(store.stats().write_failures == 200);
    CHECK(sink->count("gave up after 0 retries") >= 1);
    CHECK(Db(db).count("SELECT count(*) FROM saves") == 0);
  }
  CHECK(c.cancelled == 0);
}

TEST_CASE("SQLite store: a shutdown mid-run leaves every row settled and nothing lost", "[store]") {
  TempDir dir;
  const std::string db = dir.file("stop.db");
  Options o = quick(0, "sqlite:" + db);
  o.rate = 20000;
  o.latency_scale = 0.05;
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  std::thread t([&] { (void)svc.run(); });
  svc.wait_started();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (svc.metrics().acked.get() < 500 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  svc.request_stop(SIGINT);
  t.join();
  const Summary s = svc.summary();
  REQUIRE(s.acked >= 500);
  CHECK(s.nacked > 0);
  CHECK(s.published == s.acked + s.nacked);
  Db q(db);
  CHECK(q.count("SELECT count(*) FROM saves") == static_cast<std::int64_t>(s.store_rows));
  CHECK(q.count("SELECT count(*) FROM saves WHERE outcome = 'acked'") ==
        static_cast<std::int64_t>(s.acked));
  CHECK(q.count("SELECT count(*) FROM saves WHERE outcome = 'saved'") == 0);  // all settled
}

TEST_CASE("SQLite store: a database that cannot be used is refused at start", "[store]") {
  TempDir dir;
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  SECTION("a directory that does not exist") {
    Options o = quick(1, "sqlite:" + dir.file("missing/dir/x.db"));
    CHECK_THROWS_WITH(
        Service(o, Service::Deps{log, nullptr, false, {}}),
        Catch::Contains("cannot open the database") && Catch::Contains("missing/dir/x.db"));
  }
  SECTION("a file that is not a database") {
    const std::string bad = dir.file("not-a.db");
    std::ofstream(bad) << std::string(4096, 'x');
    Options o = quick(1, "sqlite:" + bad);
    CHECK_THROWS_WITH(Service(o, Service::Deps{log, nullptr, false, {}}),
                      Catch::Contains("not a database"));
  }
  SECTION("a path that is a directory") {
    Options o = quick(1, "sqlite:" + dir.file(""));
    CHECK_THROWS_AS(Service(o, Service::Deps{log, nullptr, false, {}}), StoreError);
  }
  SECTION("a malformed --store") {
    Options o = quick(1, "sqlite:");
    CHECK(validate(o).value_or("").find("--store must be memory, sqlite:PATH or postgres://") == 0);
    o.store = "mysql://x";
    CHECK(validate(o).has_value());
    o.store = "postgres://x";
    CHECK_FALSE(validate(o).has_value());
    o.store_retry_for = -1;
    CHECK(validate(o).value_or("").find(
              "--store-retry-for: must be a finite number within [0, 86400]") == 0);
  }
  SECTION("the binary: one line on stderr, exit 2") {
    test::Subprocess p({"--messages", "1", "--store", "sqlite:" + dir.file("missing/x.db")});
    const test::Result r = p.wait(30s);
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("mayhem: error: --store sqlite:", 0) == 0);
    CHECK(r.err.find("cannot open the database") != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("SQLite store: the binary leaves a queryable record", "[store][cli]") {
  TempDir dir;
  const std::string db = dir.file("cli.db");
  test::Subprocess p({"--messages", "400", "--publish-interval", "0", "--latency-scale", "0.002",
                      "--store", "sqlite:" + db, "--summary-json", "--log-level", "warning"});
  const test::Result r = p.wait(60s);
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  const auto s = nlohmann::json::parse(r.out);
  CHECK(s["store"]["kind"] == "sqlite");
  CHECK(s["store"]["rows_inserted"] == 400);
  CHECK(Db(db).count("SELECT count(*) FROM saves WHERE outcome = 'acked'") == s["acked"]);
}

TEST_CASE(
    "SQLite store: a database locked by another process cannot hold shutdown past its timeout",
    "[store][shutdown]") {
  // Another connection (as another process would) holds the write lock while the service shuts
  // down: the writer waits for it (busy), and --shutdown-timeout must still bound the shutdown.
  TempDir dir;
  const std::string db = dir.file("locked.db");
  Options o = quick(0, "sqlite:" + db);
  o.rate = 4000;
  o.latency_scale = 0.05;
  o.shutdown_timeout = 0.5;
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  int rc = -1;
  std::thread t([&] { rc = svc.run(); });
  svc.wait_started();
  REQUIRE(test::eventually([&] { return svc.metrics().acked.get() >= 200; }, 10s));
  Db locker(db);
  locker.exec("BEGIN IMMEDIATE");  // waits for the writer's commit, then holds the lock
  // The writer is now stuck behind the lock with the next group of saves.
  REQUIRE(test::eventually([&] { return svc.metrics().in_flight.load() >= 100; }, 10s));
  const auto start = std::chrono::steady_clock::now();
  svc.request_stop(SIGINT);
  t.join();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  locker.exec("ROLLBACK");
  const Summary s = svc.summary();
  INFO("shutdown took " << took << " s against a 0.5 s timeout; rc " << rc);
  CHECK(took < 0.5 + 0.4);
  CHECK(sink->count("Shutdown timed out") == 0);
  // The writer gives up on the lock at once for the saves (they are cancelled: nacked), for the
  // acks the drain records (they come back cancelled: nacked) and for the last settlements; it
  // stops, so nothing is left behind: exit 0, well within the timeout.
  CHECK(rc == 0);
  CHECK(sink->count("the database is locked by another connection") >= 1);
  CHECK(s.published == s.acked + s.nacked);
  CHECK(s.nacked > 0);
  CHECK(sink->count("Accounting mismatch") == 0);
}

TEST_CASE("SQLite store: acks come back only once their rows say acked, and acked stays acked",
          "[store]") {
  TempDir dir;
  const std::string db = dir.file("record.db");
  BatchPool batches{64};
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  SqliteStore store(db, batches, SteadyClock::instance(), log);
  test::SaveCompletions c(batches);
  // Each batch handed back: its size, whether it was cancelled, and how many rows said `acked`
  // at that moment (read by a second connection, as another process would).
  std::mutex mutex;
  std::vector<std::uint32_t> sizes;
  std::vector<bool> cancelled;
  std::vector<std::int64_t> acked_rows;
  Db reader(db);
  store.start(c.sink(), [&](Batch* b) {
    const std::int64_t rows = reader.count("SELECT count(*) FROM saves WHERE outcome = 'acked'");
    std::lock_guard lock(mutex);
    sizes.push_back(b->size);
    cancelled.push_back(b->cancelled);
    acked_rows.push_back(rows);
    batches.release_one(b);
  });
  test::SaveMessages m(300, 9);
  m.save(store);
  REQUIRE(c.wait_for(300));
  for (Message& msg : m.msgs) {
    msg.saved = true;
    msg.acked = true;
    msg.restarted = true;
  }
  for (std::size_t i = 0; i < 300; i += 100) store.record_acks(m.ptrs.data() + i, 100);
  const auto all_back = [&] {
    std::lock_guard lock(mutex);
    return sizes.size() == 3;
  };
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!all_back() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  {
    std::lock_guard lock(mutex);
    REQUIRE(sizes.size() == 3);  // one batch per call
    std::int64_t handed_back = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      handed_back += sizes[i];
      CHECK(sizes[i] == 100);
      CHECK_FALSE(cancelled[i]);
      // Every ack handed back so far has its row committed as `acked` already.
      CHECK(acked_rows[i] >= handed_back);
    }
  }
  // A late nack of an earlier delivery of the same messages does not undo their acks.
  for (Message& msg : m.msgs) {
    msg.acked = false;
    msg.nacked = true;
  }
  store.settled(m.ptrs.data(), m.ptrs.size());
  store.close();  // writes the settlements still queued
  CHECK(Db(db).count("SELECT count(*) FROM saves WHERE outcome = 'acked'") == 300);
  // After close, acks cannot be recorded: they come back at once, cancelled (to be nacked).
  store.record_acks(m.ptrs.data(), 10);
  std::lock_guard lock(mutex);
  REQUIRE(sizes.size() == 4);
  CHECK(sizes[3] == 10);
  CHECK(cancelled[3]);
}
