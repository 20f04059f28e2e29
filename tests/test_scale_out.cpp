// The scale-out story under faults, end to end (issue 15's fault test): a three-node JetStream
// cluster (support/nats_cluster.hpp) holding an R3 stream of 50,000 messages published with their
// message_id as de-duplication id, three `mayhem` workers bound to one durable consumer and
// writing one PostgreSQL (support/postgres_server.hpp). While they work: the server leading the
// consumer is SIGKILLed (found from the servers' own consumer info) and restarted later with its
// store; one worker is SIGKILLed and a fresh one started; PostgreSQL is restarted once (fast
// shutdown, start). At the end the servers (not Mayhem) must say the stream is empty and the
// consumer has nothing pending and nothing unacknowledged, the database must hold exactly one row
// per published message, every row `acked`, every worker must have done a share, and the
// redeliveries the faults caused are counted (by the servers and by the workers).
// Registered RUN_SERIAL with its own timeout (tests/CMakeLists.txt, tag [scaleout]).
#include <httplib.h>
#include <signal.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <memory>
#include <sstream>

#include "support/json_line.hpp"
#include "support/nats_cluster.hpp"
#include "support/postgres_server.hpp"
#include "support/scale.hpp"
#include "support/server_process.hpp"
#include "support/subprocess.hpp"

using namespace mayhem::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// One worker: its own stats port (so the test can see its share before it is killed).
struct ScaleWorker {
  int stats_port = 0;
  std::unique_ptr<Subprocess> proc;
};

ScaleWorker scale_start_worker(const NatsCluster& c, const PostgresServer& pg, int in_flight) {
  ScaleWorker w;
  w.stats_port = free_loopback_port();
  // About in_flight / 0.15 s messages a second each: long enough for three faults mid-run.
  w.proc = std::make_unique<Subprocess>(std::vector<std::string>{
      "--source", c.urls(), "--stream-replicas", "3", "--store", pg.url(), "--messages", "0",
      "--latency-scale", "0.1", "--max-in-flight", std::to_string(in_flight), "--stats-addr",
      "127.0.0.1:" + std::to_string(w.stats_port), "--summary-json", "--log-level", "warning"});
  return w;
}

// The worker's acked count from its stats endpoint (0 while it is not answering yet).
std::uint64_t scale_worker_acked(const ScaleWorker& w) {
  httplib::Client client("127.0.0.1", w.stats_port);
  client.set_connection_timeout(1);
  client.set_read_timeout(2);
  auto r = client.Get("/stats");
  if (!r || r->status != 200) return 0;
  return json::parse(r->body)["counters"]["acked"].get<std::uint64_t>();
}

// The servers' ack floor (stream sequence up to which everything is acked); 0 while no server
// can answer for the consumer (e.g. during an election).
std::uint64_t scale_ack_floor(const NatsCluster& c) {
  const ConsumerState s = c.consumer_state("MAYHEM", "mayhem");
  return s.found ? s.ack_floor_stream : 0;
}

// "a b c" from one SQL row (the fixture's query() returns the first column).
std::array<std::uint64_t, 3> scale_three(const std::string& text) {
  std::array<std::uint64_t, 3> v{};
  std::istringstream in(text);
  in >> v[0] >> v[1] >> v[2];
  return v;
}

}  // namespace

TEST_CASE("Scale-out under faults: R3 cluster, workers on one durable, one PostgreSQL",
          "[scaleout][cluster][postgres]") {
  const std::uint64_t kN = scaled(50000, 10);
  const int kInFlight = kSanitized ? 100 : 500;
  NatsCluster c;
  PostgresServer pg;

  {
    Subprocess pub({"publish", "--nats", c.urls(), "--stream-replicas", "3", "--messages",
                    std::to_string(kN), "--seed", "11", "--log-level", "warning"});
    const Result r = pub.wait(120s);
    INFO(r.err.substr(0, 4000));
    REQUIRE_FALSE(r.timed_out);
    REQUIRE(r.exit_code == 0);
    const json j = last_json_line(r);
    REQUIRE(j["confirmed"].get<std::uint64_t>() + j["duplicates"].get<std::uint64_t>() == kN);
    REQUIRE(c.stream_info("MAYHEM").msgs == kN);
  }

  // When each phase ended, seconds from the workers' start (reported at the end).
  const auto t0 = std::chrono::steady_clock::now();
  std::ostringstream phases;
  const auto phase = [&](const char* what) {
    phases << what << " "
           << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
           << " s; ";
  };
  std::vector<ScaleWorker> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(scale_start_worker(c, pg, kInFlight));
  const auto progress = [&](std::uint64_t part) {
    return eventually([&] { return scale_ack_floor(c) >= kN * part / 100; }, 120s, 50ms);
  };

  // 1. The server leading the consumer dies (SIGKILL); it comes back once the others have
  //    elected a new leader and the work has moved on.
  REQUIRE(progress(15));
  std::string leader;
  REQUIRE(eventually([&] { return !(leader = c.consumer_leader("MAYHEM", "mayhem")).empty(); }, 30s,
                     50ms));
  const int victim = NatsCluster::index_of(leader);
  REQUIRE(victim >= 0);
  const std::uint64_t floor_at_kill = scale_ack_floor(c);
  phase("leader killed");
  c.kill(victim);
  REQUIRE(eventually([&] { return scale_ack_floor(c) > floor_at_kill + kN / 20; }, 120s, 50ms));
  const std::string new_leader = c.consumer_leader("MAYHEM", "mayhem");
  CHECK(new_leader != leader);
  phase("new leader serving");
  c.restart(victim);
  c.wait_ready();
  phase("old leader back");

  // 2. A worker dies (SIGKILL, its in-flight messages unacked) after doing a share; a fresh one
  //    joins.
  REQUIRE(progress(40));
  const std::uint64_t killed_share = scale_worker_acked(workers[1]);
  CHECK(killed_share > 0);
  phase("worker killed");
  workers[1].proc->signal(SIGKILL);
  workers[1].proc->wait(10s);
  workers.push_back(scale_start_worker(c, pg, kInFlight));

  // 3. PostgreSQL restarts (fast shutdown: every connection is cut, then it starts again).
  REQUIRE(progress(55));
  phase("PostgreSQL restarting");
  pg.restart();
  phase("PostgreSQL back");

  // The servers' own accounting: every message acked, nothing pending, the stream empty. Waited
  // for as long as the ack floor keeps moving (a loaded machine is slow, not stuck): the test
  // fails when it stands still for 60 s short of the end.
  std::uint64_t last_floor = 0;
  bool stalled = false;
  auto last_move = std::chrono::steady_clock::now();
  const auto done_or_stalled = [&] {
    const ConsumerState s = c.consumer_state("MAYHEM", "mayhem");
    if (s.found && s.ack_floor_stream != last_floor) {
      last_floor = s.ack_floor_stream;
      last_move = std::chrono::steady_clock::now();
    }
    if (std::chrono::steady_clock::now() - last_move > 60s) return stalled = true;
    return s.found && s.pending == 0 && s.ack_pending == 0 && s.ack_floor_stream == kN &&
           s.stream_msgs == 0;
  };
  const bool all_acked = eventually(done_or_stalled, 300s, 50ms) && !stalled;
  phase("all acked");
  std::uint64_t worker_redelivered = 0;
  std::vector<std::uint64_t> shares;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (i == 1) continue;
    workers[i].proc->signal(SIGINT);
    const Result r = workers[i].proc->wait(60s);
    INFO("worker " << i << ": " << r.err.substr(0, 4000));
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.exit_code == 0);
    const json s = last_json_line(r);
    shares.push_back(s["acked"].get<std::uint64_t>());
    worker_redelivered += s["redelivered"].get<std::uint64_t>();
    CHECK(s["acked"].get<std::uint64_t>() > 0);
  }
  INFO("ack floor " << last_floor << " of " << kN << (stalled ? ", stood still for 60 s" : ""));
  REQUIRE(all_acked);
  const ConsumerState end = c.consumer_state("MAYHEM", "mayhem");
  REQUIRE(end.found);
  CHECK(end.stream_msgs == 0);
  CHECK(end.pending == 0);
  CHECK(end.ack_pending == 0);
  CHECK(end.ack_floor_stream == kN);

  // The database: one row per published message, every one settled `acked`.
  const auto rows =
      scale_three(pg.query("SELECT count(*) || ' ' || count(DISTINCT message_id) || ' ' || "
                           "count(*) FILTER (WHERE outcome = 'acked') FROM saves",
                           "mayhem"));
  INFO("rows by outcome: " << pg.query("SELECT string_agg(outcome || ' ' || n, ', ') FROM "
                                       "(SELECT outcome, count(*) AS n FROM saves GROUP BY 1) t",
                                       "mayhem"));
  INFO("rows not acked: " << pg.query("SELECT string_agg(message_id || ' ' || outcome || ' ' || "
                                      "coalesce(restarted::text, '-') || ' ' || saved_at || ' ' || "
                                      "coalesce(settled_at::text, '-'), '; ') FROM saves WHERE "
                                      "outcome <> 'acked'",
                                      "mayhem"));
  CHECK(rows[0] == kN);
  CHECK(rows[1] == kN);
  CHECK(rows[2] == kN);

  // Redeliveries: the killed worker's in-flight messages at least come again; by the servers'
  // count (deliveries beyond one per message) and by the workers' (deliveries marked as
  // redelivered). Each fault can redeliver at most what was in flight or prefetched then.
  const std::uint64_t server_redelivered = end.delivered_consumer - end.delivered_stream;
  WARN("scale-out: shares " << killed_share << " (killed) + " << shares[0] << " / " << shares[1]
                            << " / " << shares[2] << "; redeliveries: servers "
                            << server_redelivered << ", workers " << worker_redelivered
                            << "; consumer leader " << leader << " -> " << new_leader
                            << "; phases: " << phases.str());
  CHECK(server_redelivered > 0);
  CHECK(worker_redelivered > 0);
  CHECK(server_redelivered <= 3 * 4 * 2 * static_cast<std::uint64_t>(kInFlight));
}
