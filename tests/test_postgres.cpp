// The PostgreSQL store (--store postgres://...) against a throwaway cluster that each test starts
// (support/postgres_server.hpp): one row per message_id and duplicates counted, group commit, a
// message's ack (else its last settlement) kept of several in one commit, processes racing to
// create the table, a service run acking everything with one row each and its settlement
// recorded, PostgreSQL restarted in the middle of a run (no ack without its row), an outage longer
// than --store-retry-for (those messages nacked, never acked), and bad URLs and roles refused at
// start by the binary with one line and exit 2.
#include <signal.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/service.hpp"
#include "mayhem/store/postgres_store.hpp"
#include "support/postgres_server.hpp"
#include "support/store_saves.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;

namespace {

using mayhem::test::PostgresServer;

Options pg_options(std::uint64_t messages, const std::string& url) {
  Options o;
  o.messages = messages;
  o.publish_interval = 0;
  o.latency_scale = 0.002;
  o.seed = 5151;
  o.store = url;
  return o;
}

// The message ids the in-process pub/sub was told to ack, collected by the service's audit hook.
struct AckedIds {
  std::mutex mutex;
  std::vector<std::string> ids;
  std::uint64_t acks = 0, nacks = 0;
  std::function<void(bool, Message* const*, std::size_t)> hook() {
    return [this](bool ack, Message* const* msgs, std::size_t n) {
      std::lock_guard lock(mutex);
      if (!ack) {
        nacks += n;
        return;
      }
      acks += n;
      char id[37];
      for (std::size_t i = 0; i < n; ++i) {
        uuid_text(msgs[i]->id, id);
        ids.emplace_back(id, 36);
      }
    };
  }
  // An SQL array literal of the ids.
  std::string array() {
    std::lock_guard lock(mutex);
    std::string a = "'{";
    for (const auto& id : ids) a += id + ",";
    if (!ids.empty()) a.pop_back();
    return a + "}'";
  }
};

// A service run against `pg` in a thread (`messages` at `rate` a second, its acks audited, its log
// kept): the set-up the fault tests share. wait_acked() waits until that many are acked (the
// fault comes then); finish() joins the run and checks what holds whatever the fault: it ended
// well, every message was settled, every acked one has its row, no accounting mismatch.
struct PgFaultRun {
  PgFaultRun(PostgresServer& pg, std::uint64_t messages, double rate, double store_retry_for)
      : pg(pg), options(pg_options(messages, pg.url())) {
    options.rate = rate;
    options.store_retry_for = store_retry_for;
    auto [l, s] = test::make_test_logger(spdlog::level::info);
    sink = s;
    Service::Deps d;
    d.log = l;
    d.audit = acked.hook();
    svc = std::make_unique<Service>(options, std::move(d));
    thread = std::thread([this] { rc = svc->run(); });
    svc->wait_started();
  }
  ~PgFaultRun() {
    if (thread.joinable()) thread.join();
  }
  bool wait_acked(std::uint64_t n) {
    return test::eventually([&] { return svc->metrics().acked.get() >= n; }, 30s);
  }
  Summary finish() {
    thread.join();
    REQUIRE(rc == 0);
    const Summary s = svc->summary();
    INFO("acked " << s.acked << ", nacked " << s.nacked);
    CHECK(s.acked + s.nacked == s.published);
    CHECK(acked.acks == s.acked);
    CHECK(pg.count("SELECT count(*) FROM saves WHERE message_id = ANY(" + acked.array() + ")") ==
          static_cast<long long>(s.acked));
    CHECK(sink->count("Accounting mismatch") == 0);
    return s;
  }

  PostgresServer& pg;
  Options options;
  std::shared_ptr<test::TestSink> sink;
  AckedIds acked;
  std::unique_ptr<Service> svc;
  int rc = -1;
  std::thread thread;
};

// A server and a store whose writer has committed `n` made-up messages (saved before it
// started, as the save stage may): what the store tests start from.
struct PgSaved {
  PostgresServer pg;
  BatchPool batches{64};
  std::shared_ptr<spdlog::logger> log = test::make_test_logger(spdlog::level::warn).first;
  PostgresStore store{pg.url(), batches, SteadyClock::instance(), log};
  test::SaveCompletions c{batches};
  test::SaveMessages m;
  PgSaved(std::size_t n, std::uint64_t seed) : m(n, seed) {
    m.save(store);
    store.start(c.sink());
    REQUIRE(c.wait_for(n));
  }
};

// One server for every section of a test case: Catch2 runs the case again from the top for
// each section, and a fresh initdb would cost each of them seconds. Stopped at exit.
PostgresServer& shared_pg() {
  static PostgresServer pg;
  return pg;
}

}  // namespace

TEST_CASE("PostgreSQL store: one row per message_id with duplicates counted and group commit",
          "[postgres]") {
  // 8 submissions queued before the writer runs: its first commit takes them all.
  PgSaved f(1000, 11);
  auto& [pg, batches, log, store, c, m] = f;
  CHECK(store.stats().transactions == 1);
  CHECK(store.stats().rows_inserted == 1000);
  m.settle(store, false);

  // The same message ids again (a redelivery): no new row, counted as duplicates, then acked.
  m.redeliver(store);
  REQUIRE(c.wait_for(2000));
  m.settle(store, true);
  REQUIRE(store.close());

  CHECK(c.failed == 0);
  CHECK(c.cancelled == 0);
  const StoreStats st = store.stats();
  CHECK(st.rows_inserted == 1000);
  CHECK(st.duplicates == 1000);
  CHECK(st.outcomes == 2000);
  CHECK(st.write_failures == 0);
  CHECK(st.transactions < st.rows_inserted);
  CHECK(pg.count("SELECT count(*) FROM saves") == 1000);
  CHECK(pg.count("SELECT count(DISTINCT message_id) FROM saves") == 1000);
  CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked' AND restarted = 1 AND "
                 "hostname = instance_name || '.example.net' AND settled_at >= saved_at") == 1000);
}

TEST_CASE("PostgreSQL store: a message settled twice in one commit keeps its ack, else its last",
          "[postgres]") {
  PgSaved f(300, 21);
  auto& [pg, batches, log, store, c, m] = f;
  // Two settlements of each message in one call, so in one group commit: the first 100 nacked
  // then acked, the next 100 acked then nacked (a late nack of an earlier delivery: acked is
  // final), the last 100 nacked twice.
  std::vector<Message> first(m.msgs.size()), second(m.msgs.size());
  std::vector<Message*> both;
  std::string acked_ids = "'{";
  for (std::size_t i = 0; i < m.msgs.size(); ++i) {
    for (Message* x : {&first[i], &second[i]}) {
      x->id = m.msgs[i].id;
      x->saved = true;
      x->nacked = true;
    }
    if (i < 200) {
      Message& ack = i < 100 ? second[i] : first[i];
      ack.nacked = false;
      ack.acked = ack.restarted = true;
      acked_ids += m.msgs[i].id_string() + (i < 199 ? "," : "}'");
    }
  }
  for (Message& x : first) both.push_back(&x);
  for (Message& x : second) both.push_back(&x);
  store.settled(both.data(), both.size());
  REQUIRE(store.close());

  CHECK(store.stats().outcomes == 300);
  CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked' AND restarted = 1 AND "
                 "message_id = ANY(" +
                 acked_ids + ")") == 200);
  CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'nacked' AND restarted = 0") == 100);
}

TEST_CASE("PostgreSQL store: processes racing to create the table all start", "[postgres]") {
  PostgresServer pg;
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  for (int i = 0; i < 4; ++i) {
    // A copy of the logger: clang 14 (the asan tree) cannot capture a structured binding.
    threads.emplace_back([&, log = log] {
      try {
        BatchPool batches{8};
        PostgresStore store(pg.url(), batches, SteadyClock::instance(), log);
        ++opened;
      } catch (const std::exception& e) {
        std::lock_guard lock(errors_mutex);
        errors.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  INFO((errors.empty() ? "" : errors.front()));
  CHECK(opened == 4);
  CHECK(pg.count("SELECT count(*) FROM saves") == 0);
}

TEST_CASE("PostgreSQL store: a run acks everything with one row each and its settlement",
          "[postgres]") {
  PostgresServer& pg = shared_pg();
  const std::string db = pg.create_database();
  SECTION("in-process service") {
    Options o = pg_options(3000, pg.url("mayhem", "mayhem", db));
    auto [log, sink] = test::make_test_logger(spdlog::level::warn);
    AckedIds acked;
    Service::Deps d;
    d.log = log;
    d.audit = acked.hook();
    Service svc(o, std::move(d));
    REQUIRE(svc.run() == 0);
    const Summary s = svc.summary();
    CHECK(s.acked == 3000);
    CHECK(s.nacked == 0);
    CHECK(std::string(s.store) == "postgres");
    CHECK(s.store_rows == 3000);
    CHECK(s.store_write_failures == 0);
    CHECK(s.store_transactions >= 1);
    CHECK(s.store_transactions < s.store_rows);  // group commit
    CHECK(pg.count("SELECT count(*) FROM saves", db) == 3000);
    CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked'", db) == 3000);
    CHECK(pg.count("SELECT count(*) FROM saves WHERE restarted = 0", db) ==
          static_cast<long long>(s.restart_failed));
    CHECK(pg.count("SELECT count(*) FROM saves WHERE message_id = ANY(" + acked.array() + ")",
                   db) == 3000);
  }
  SECTION("the binary, with the postgresql:// alias") {
    std::string url = pg.url("mayhem", "mayhem", db);
    url.replace(0, std::string("postgres").size(), "postgresql");
    test::Subprocess p({"--messages", "400", "--publish-interval", "0", "--latency-scale", "0.002",
                        "--store", url, "--summary-json", "--log-level", "warning"});
    const test::Result r = p.wait(60s);
    REQUIRE_FALSE(r.timed_out);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto s = nlohmann::json::parse(r.out);
    CHECK(s["store"]["kind"] == "postgres");
    CHECK(s["store"]["rows_inserted"] == 400);
    CHECK(s["acked"] == 400);
    CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked'", db) == 400);
  }
  SECTION("the binary, one transaction per save (--store-group-commit 0)") {
    test::Subprocess p({"--messages", "300", "--publish-interval", "0", "--latency-scale", "0.002",
                        "--store", pg.url("mayhem", "mayhem", db), "--store-group-commit", "0",
                        "--summary-json", "--log-level", "warning"});
    const test::Result r = p.wait(60s);
    REQUIRE_FALSE(r.timed_out);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto s = nlohmann::json::parse(r.out);
    CHECK(s["store"]["rows_inserted"] == 300);
    CHECK(s["store"]["transactions"] >= 300);  // one per save, and the settlements'
    CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked'", db) == 300);
  }
}

TEST_CASE("PostgreSQL store: restarted in the middle of a run and nothing is acked without its row",
          "[postgres]") {
  PostgresServer pg;
  PgFaultRun run(pg, 8000, 4000, 30);
  REQUIRE(run.wait_acked(1500));
  pg.restart();  // fast shutdown (SIGINT), then start on the same port with the same data
  const std::uint64_t acked_at_restart = run.svc->metrics().acked.get();
  const Summary s = run.finish();
  INFO("acked " << s.acked << ", nacked " << s.nacked << ", at the restart " << acked_at_restart);
  CHECK(acked_at_restart < 8000);  // the restart happened mid-run
  CHECK(s.published == 8000);
  // The store retried across the restart (reconnecting), so every save got its row.
  CHECK(run.sink->count("retrying with backoff and reconnects") >= 1);
  CHECK(s.acked == 8000);
  // Rows are unique per message_id; settlements recorded.
  CHECK(pg.count("SELECT count(*) FROM saves") == static_cast<long long>(s.acked));
  CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked'") ==
        static_cast<long long>(s.acked));
}

TEST_CASE("PostgreSQL store: an outage longer than --store-retry-for nacks and never acks",
          "[postgres]") {
  PostgresServer pg;
  PgFaultRun run(pg, 6000, 3000, 0.3);
  REQUIRE(run.wait_acked(1000));
  pg.stop(SIGINT);
  // Down long enough for the retries to run out: saves fail and their messages are nacked.
  const bool nacked = test::eventually([&] { return run.svc->metrics().nacked.get() >= 100; }, 30s);
  pg.start();
  // Every acked message has its row (finish() checks it; the outcomes of settlements made while
  // the database was down may be missing, so the rows' outcome is not checked here).
  const Summary s = run.finish();
  REQUIRE(nacked);
  CHECK(s.nacked >= 100);
  CHECK(s.store_write_failures >= 100);
  CHECK(run.sink->count("gave up after") >= 1);
  CHECK(run.sink->count("Could not save") >= 100);
}

TEST_CASE("PostgreSQL store: a database that cannot be used is refused at start with exit 2",
          "[postgres][cli]") {
  PostgresServer& pg = shared_pg();
  const std::string db = pg.create_database();
  const auto refused = [&](const std::string& url, const std::string& reason) {
    test::Subprocess p({"--messages", "10", "--publish-interval", "0", "--store", url});
    const test::Result r = p.wait(60s);
    REQUIRE_FALSE(r.timed_out);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("mayhem: error: --store postgres://", 0) == 0);
    CHECK(r.err.find(reason) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(":mayhem@") == std::string::npos);  // the password is not shown
  };
  SECTION("unreachable: nothing listens on the port") {
    // The cluster's own port, once it is stopped: nothing listens there now.
    const std::string url = pg.url();
    pg.stop();
    refused(url + "?connect_timeout=3", "cannot connect: ");
    pg.start();
  }
  SECTION("a wrong database name") {
    refused(pg.url("mayhem", "mayhem", "nosuchdb"), "database \"nosuchdb\" does not exist");
  }
  SECTION("a wrong password") {
    refused(pg.url("mayhem", "wrong", db), "password authentication failed");
  }
  SECTION("a role that may not create the table") {
    pg.query("CREATE ROLE reader_c LOGIN PASSWORD 'reader'");
    refused(pg.url("reader_c", "reader", db), "cannot create table saves: permission denied");
  }
  SECTION("a role that may read the table, not write it") {
    pg.query("CREATE ROLE reader_w LOGIN PASSWORD 'reader'");
    pg.query(PostgresStore::schema(), db);
    pg.query("GRANT SELECT ON saves TO reader_w", db);
    refused(pg.url("reader_w", "reader", db), "cannot write to table saves: permission denied");
  }
  CHECK(pg.count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mayhem'",
                 "postgres") == 0);
}

TEST_CASE("PostgreSQL store: URLs are parsed and validated and redacted", "[postgres]") {
  std::string err;
  auto spec = parse_store_spec("postgresql://u@h/db", err);
  REQUIRE(spec);
  CHECK(spec->kind == StoreSpec::Kind::kPostgres);
  CHECK(spec->path == "postgresql://u@h/db");
  CHECK(parse_store_spec("postgres://h:5432/db", err)->path == "postgres://h:5432/db");
  CHECK_FALSE(parse_store_spec("postgres:/h", err));
  CHECK(err.find("postgres://") != std::string::npos);
  CHECK(PostgresStore::redact("postgres://u:secret@h:5/db") == "postgres://u:***@h:5/db");
  CHECK(PostgresStore::redact("postgres://u@h/db?password=secret&sslmode=disable") ==
        "postgres://u@h/db?password=***&sslmode=disable");
  CHECK(PostgresStore::redact("postgres://h/db") == "postgres://h/db");
  Options o;
  o.store = "postgres://h/db";
  o.store_retry_for = 1e9;
  CHECK(validate(o).value_or("").find(
            "--store-retry-for: must be a finite number within [0, 86400]") == 0);
  o.store_retry_for = 0;
  CHECK_FALSE(validate(o));
}

TEST_CASE("PostgreSQL store: a worker started while the database restarts waits for it",
          "[postgres][cli]") {
  PostgresServer pg;
  // A smart shutdown (SIGTERM) waits for the open sessions to end; meanwhile the server answers
  // every new connection with "the database system is shutting down" (SQLSTATE 57P03), as a
  // restarting server does. One held session keeps it in that state for as long as the test wants.
  PGconn* held = PQconnectdb(pg.url().c_str());
  REQUIRE(PQstatus(held) == CONNECTION_OK);
  REQUIRE(::kill(pg.pid(), SIGTERM) == 0);
  REQUIRE(test::eventually(
      [&] {
        PGconn* c = PQconnectdb(pg.url().c_str());
        const bool shutting =
            std::string(PQerrorMessage(c)).find("shutting down") != std::string::npos;
        PQfinish(c);
        return shutting;
      },
      10s));
  test::Subprocess p({"--messages", "200", "--publish-interval", "0", "--latency-scale", "0.002",
                      "--store", pg.url(), "--summary-json", "--log-level", "info"});
  // The worker waits (and says so) rather than exiting at start.
  const bool waiting = test::eventually(
      [&] { return p.err_so_far().find("PostgreSQL is restarting") != std::string::npos; }, 20s);
  // The restart completes: the last session ends, the server exits, and it starts again.
  PQfinish(held);
  pg.stop();
  pg.start();
  const test::Result r = p.wait(60s);
  REQUIRE_FALSE(r.timed_out);
  INFO(r.err);
  REQUIRE(waiting);
  REQUIRE(r.exit_code == 0);
  const auto s = nlohmann::json::parse(r.out);
  CHECK(s["acked"] == 200);
  CHECK(pg.count("SELECT count(*) FROM saves WHERE outcome = 'acked'") == 200);
  CHECK(r.err.find("PostgreSQL accepted the connection after") != std::string::npos);
}
