// Mayhem against a real three-node JetStream cluster (support/nats_cluster.hpp): replicated
// streams from --stream-replicas (and the refusals: 0, more than the cluster has), a worker
// started while the consumer's leader was just killed (it must wait for the election, then join),
// a worker that loses the majority of the cluster mid-run (it must wait, saying so, and carry on,
// losing nothing), and `mayhem publish` riding out a new stream and a lost majority (counting
// each message once), and a worker moving to its consumer's leader. Every outcome is checked
// against the servers' own accounting.
#include <signal.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>
#include <sstream>
#include <utility>

#include "mayhem/source/nats.hpp"
#include "support/json_line.hpp"
#include "support/nats_cluster.hpp"
#include "support/nats_server.hpp"
#include "support/subprocess.hpp"

using namespace mayhem::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// Polls `pred` every 50 ms (each poll of the servers opens a connection) until it holds or
// `timeout` passes.
template <typename Pred>
bool cluster_eventually(Pred pred, std::chrono::milliseconds timeout) {
  return eventually(pred, timeout, 50ms);
}

// Publishes `n` messages (a fixed seed, so the same message ids each time), once: publish itself
// rides out a stream whose interest has not reached every server yet.
void cluster_publish(const std::string& urls, std::uint64_t n,
                     std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"publish",    "--nats",          urls,
                                   "--messages", std::to_string(n), "--log-level",
                                   "warning",    "--seed",          "7"};
  args.insert(args.end(), extra.begin(), extra.end());
  Subprocess p(args);
  const Result r = p.wait(60s);
  INFO(r.err.substr(0, 4000));
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  const json j = last_json_line(r);
  CHECK(j["confirmed"].get<std::uint64_t>() + j["duplicates"].get<std::uint64_t>() == n);
}

// The servers say every one of `n` published messages is acked: nothing pending, nothing waiting
// for an ack, the ack floor at the last one, the work queue empty.
bool cluster_all_acked(const NatsCluster& c, std::uint64_t n) {
  const ConsumerState s = c.consumer_state("MAYHEM", "mayhem");
  return s.found && s.pending == 0 && s.ack_pending == 0 && s.ack_floor_stream == n &&
         s.stream_msgs == 0;
}

// Runs until the servers count all `n` acked (or `within` passes), then SIGINT: the summary.
json cluster_stop_when_acked(const NatsCluster& c, Subprocess& p, std::uint64_t n,
                             std::chrono::milliseconds within) {
  const bool done = cluster_eventually([&] { return cluster_all_acked(c, n); }, within);
  p.signal(SIGINT);
  const Result r = p.wait(30s);
  INFO(r.err.substr(0, 6000));
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(done);
  REQUIRE(r.exit_code == 0);
  return last_json_line(r);
}

// Down to a minority: SIGKILLs the server named `leader` (the first one when none is named) and
// the next one; returns their indexes, to restart them.
std::pair<int, int> cluster_lose_majority(NatsCluster& c, const std::string& leader) {
  const int a = std::max(NatsCluster::index_of(leader), 0);
  const int b = (a + 1) % NatsCluster::kNodes;
  c.kill(a);
  c.kill(b);
  return {a, b};
}

// A start-up refusal: exit 2, the one error line, nothing consumed.
void cluster_refused(const Result& r, const std::string& says) {
  INFO(r.err);
  REQUIRE_FALSE(r.timed_out);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(says) != std::string::npos);
  if (!r.out.empty()) CHECK(last_json_line(r)["acked"] == 0);
}

// Publishes n to an R3 stream, lets a first worker create the consumer (R3, following the stream)
// and take 100, and returns the index of the server that leads the consumer.
int cluster_r3_consumer_leader(NatsCluster& c, std::uint64_t n) {
  cluster_publish(c.urls(), n, {"--stream-replicas", "3"});
  {
    Subprocess first({"--source", c.urls(), "--messages", "100", "--latency-scale", "0",
                      "--summary-json", "--log-level", "warning"});
    const Result r = first.wait(60s);
    INFO(r.err.substr(0, 4000));
    REQUIRE(r.exit_code == 0);
  }
  std::string leader;
  REQUIRE(cluster_eventually(
      [&] { return !(leader = c.consumer_leader("MAYHEM", "mayhem")).empty(); }, 30s));
  const int at = NatsCluster::index_of(leader);
  REQUIRE(at >= 0);
  return at;
}

}  // namespace

TEST_CASE(
    "NATS cluster: --stream-replicas creates a replicated stream and refuses what cannot be placed",
    "[nats][cluster]") {
  NatsCluster c;
  // A worker asked for 3 replicas creates the stream with 3 (the server's answer says so).
  Subprocess w({"--source", c.urls(), "--stream-replicas", "3", "--messages", "300",
                "--latency-scale", "0", "--summary-json", "--log-level", "warning"});
  REQUIRE(cluster_eventually([&] { return c.stream_info("MAYHEM").found; }, 30s));
  const StreamFacts f = c.stream_info("MAYHEM");
  CHECK(f.replicas == 3);
  CHECK(f.peers == 3);
  cluster_publish(c.urls(), 300);
  const Result r = w.wait(60s);
  INFO(r.err.substr(0, 4000));
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r)["acked"] == 300);
  CHECK(cluster_all_acked(c, 300));

  // The default (1 replica) on the R3 stream: more copies than asked is no warning.
  Subprocess p3({"publish", "--nats", c.urls(), "--messages", "5", "--log-level", "warning"});
  const Result r3 = p3.wait(60s);
  INFO(r3.err.substr(0, 4000));
  REQUIRE(r3.exit_code == 0);
  CHECK(r3.err.find("replica") == std::string::npos);

  // An existing R1 stream is used as it is, with one warning.
  cluster_publish(c.urls(), 50, {"--stream", "ONE", "--subject", "one.x"});
  REQUIRE(c.stream_info("ONE").replicas == 1);
  Subprocess w1({"--source", c.urls(), "--stream", "ONE", "--subject", "one.x", "--durable", "one",
                 "--stream-replicas", "3", "--messages", "50", "--latency-scale", "0",
                 "--summary-json", "--log-level", "warning"});
  const Result r1 = w1.wait(60s);
  INFO(r1.err.substr(0, 4000));
  REQUIRE(r1.exit_code == 0);
  CHECK(r1.err.find("stream ONE exists with 1 replica(s), fewer than the 3 asked for") !=
        std::string::npos);
  CHECK(last_json_line(r1)["acked"] == 50);
  CHECK(c.stream_info("ONE").replicas == 1);

  // 0 replicas: bad input. 5 on a 3-server cluster: JetStream cannot place them.
  Subprocess zero({"--source", c.urls(), "--stream-replicas", "0", "--messages", "1"});
  cluster_refused(zero.wait(10s), "--stream-replicas: must be a whole number within [1, 5]");
  Subprocess five({"--source", c.urls(), "--stream", "FIVE", "--subject", "five.x",
                   "--stream-replicas", "5", "--messages", "1", "--summary-json"});
  cluster_refused(five.wait(30s), "stream FIVE: cannot be created with 5 replicas");
  CHECK_FALSE(c.stream_info("FIVE").found);
}

TEST_CASE("NATS cluster: publish right after it created an R3 stream counts every message once",
          "[nats][cluster]") {
  // A stream created a moment ago may not have its subject's interest on every server yet: the
  // first publishes can find no responders. `mayhem publish` re-sends those (same message id, so
  // the de-duplication window keeps one copy) and counts each message once. (The race is rare
  // here: this is the plain case, one call; the next test forces the wait.)
  NatsCluster c;
  constexpr std::uint64_t kN = 2000;
  for (int round = 0; round < 3; ++round) {
    const std::string stream = "FRESH" + std::to_string(round);
    Subprocess p({"publish", "--nats", c.urls(), "--messages", std::to_string(kN), "--stream",
                  stream, "--subject", "fresh" + std::to_string(round) + ".x", "--stream-replicas",
                  "3", "--log-level", "warning", "--seed", "11"});
    const Result r = p.wait(60s);
    INFO("round " << round << ": " << r.err.substr(0, 4000));
    REQUIRE_FALSE(r.timed_out);
    REQUIRE(r.exit_code == 0);
    const json j = last_json_line(r);
    CHECK(j["confirmed"].get<std::uint64_t>() + j["duplicates"].get<std::uint64_t>() == kN);
    CHECK(j["failed"] == 0);
    CHECK(c.stream_info(stream).msgs == kN);
  }
}

TEST_CASE("NATS cluster: publish rides out losing the majority and counts every message once",
          "[nats][cluster]") {
  NatsCluster c;
  constexpr std::uint64_t kN = 3000;
  // About 6 s of publishing; two of the three servers go away after the first 600.
  Subprocess p({"publish", "--nats", c.urls(), "--messages", std::to_string(kN), "--rate", "500",
                "--stream-replicas", "3", "--nats-wait", "60", "--log-level", "warning", "--seed",
                "13"});
  const bool started = cluster_eventually([&] { return c.stream_info("MAYHEM").msgs >= 600; }, 30s);
  INFO(p.err_so_far().substr(0, 4000));
  REQUIRE(started);
  const auto [a, b] = cluster_lose_majority(c, c.stream_info("MAYHEM").leader);
  // The publisher notices (its publishes are not answered), says so, and keeps them.
  const bool noticed = cluster_eventually(
      [&] { return p.err_so_far().find("re-sending them") != std::string::npos; }, 30s);
  c.restart(a);
  c.restart(b);
  const Result r = p.wait(120s);
  INFO(r.err.substr(0, 6000));
  REQUIRE_FALSE(r.timed_out);
  CHECK(noticed);
  REQUIRE(r.exit_code == 0);
  const json j = last_json_line(r);
  CHECK(j["confirmed"].get<std::uint64_t>() + j["duplicates"].get<std::uint64_t>() == kN);
  CHECK(j["failed"] == 0);
  CHECK(j["resent"].get<std::uint64_t>() > 0);
  CHECK(r.err.find("Publish: JetStream confirmed again after") != std::string::npos);
  // One copy of each in the stream, by the servers' count.
  c.wait_ready();
  REQUIRE(cluster_eventually([&] { return c.stream_info("MAYHEM").msgs == kN; }, 30s));
}

TEST_CASE("NATS cluster: more replicas than a single server has is refused at start",
          "[nats][cluster]") {
  NatsServer srv;
  Subprocess p(
      {"--source", srv.url(), "--stream-replicas", "3", "--messages", "1", "--summary-json"});
  cluster_refused(p.wait(30s), "stream MAYHEM: cannot be created with 3 replicas");
  CHECK_FALSE(srv.consumer_state("MAYHEM", "mayhem").found);
}

TEST_CASE("NATS cluster: a worker started while the consumer's leader was just killed joins",
          "[nats][cluster]") {
  NatsCluster c;
  constexpr std::uint64_t kN = 3000;
  const int victim = cluster_r3_consumer_leader(c, kN);
  c.kill(victim);
  // At once: the consumer (and maybe the stream) has no leader until the others elect one.
  Subprocess w({"--source", c.urls(), "--stream-replicas", "3", "--messages", "0",
                "--latency-scale", "0", "--fail-rate", "0", "--summary-json", "--log-level",
                "warning"});
  const json s = cluster_stop_when_acked(c, w, kN, 60s);
  CHECK(s["acked"].get<std::uint64_t>() >= kN - 100);
  const Result log{0, false, "", w.err_so_far()};
  // How long it waited for the election, from its own log (when it had to wait at all).
  std::smatch m;
  const std::regex waited("JetStream answered after ([0-9.]+) s");
  if (std::regex_search(log.err, m, waited))
    WARN("the worker started mid-election waited " << m[1] << " s before JetStream answered");
  c.restart(victim);
  c.wait_ready();
}

TEST_CASE("NATS cluster: a worker that loses the majority waits and finishes without loss",
          "[nats][cluster]") {
  NatsCluster c;
  constexpr std::uint64_t kN = 3000;
  constexpr int kInFlight = 64;
  cluster_publish(c.urls(), kN, {"--stream-replicas", "3"});
  // About 400 messages a second (64 in flight, each 0.15 s of simulated I/O on average).
  Subprocess w({"--source", c.urls(), "--stream-replicas", "3", "--messages", "0",
                "--latency-scale", "0.1", "--fail-rate", "0", "--max-in-flight",
                std::to_string(kInFlight), "--summary-json", "--log-level", "warning"});
  REQUIRE(cluster_eventually(
      [&] {
        const ConsumerState s = c.consumer_state("MAYHEM", "mayhem");
        return s.found && s.ack_floor_stream >= kN / 6;
      },
      30s));
  // Down to a minority: the consumer's leader and one more server.
  const auto [a, b] = cluster_lose_majority(c, c.consumer_leader("MAYHEM", "mayhem"));
  // No leader for the consumer now: the last server cannot answer for it. Meanwhile (the outage
  // lasts this long) a worker that may wait only 1 s for a leader gives up at start: exit 2.
  CHECK_FALSE(c.consumer_state("MAYHEM", "mayhem").found);
  Subprocess late({"--source", c.urls(), "--stream-replicas", "3", "--nats-wait", "1", "--messages",
                   "1", "--summary-json"});
  cluster_refused(late.wait(30s), "no answer from JetStream within 1 s");
  // The running worker is not silent meanwhile: it says it waits, and again every 5 s.
  const bool repeated = cluster_eventually(
      [&] { return w.err_so_far().find("NATS: still waiting after") != std::string::npos; }, 30s);
  c.restart(a);
  c.restart(b);
  c.wait_ready();
  const json s = cluster_stop_when_acked(c, w, kN, 90s);
  const std::string log = w.err_so_far();
  INFO(log.substr(0, 8000));
  CHECK(log.find("NATS: consumer mayhem has no leader to answer") != std::string::npos);
  CHECK(repeated);
  CHECK(log.find("NATS: fetching again after") != std::string::npos);
  const ConsumerState end = c.consumer_state("MAYHEM", "mayhem");
  // Every message acked by the servers' count (above). Deliveries beyond one per message are
  // redeliveries of what was in flight when the leader went (at most the in-flight limit plus the
  // prefetch), by the servers' count and by the worker's: a delivery the old leader had not
  // replicated yet comes again as a first delivery, so the worker's acks beyond N are bounded the
  // same way, not by either redelivery count.
  const std::uint64_t redelivered = end.delivered_consumer - end.delivered_stream;
  const auto acked = s["acked"].get<std::uint64_t>();
  INFO("server redeliveries " << redelivered << ", worker acked " << acked
                              << ", worker redelivered " << s["redelivered"]);
  CHECK(redelivered <= 2 * kInFlight);
  CHECK(acked >= kN);
  CHECK(acked - kN <= 2 * kInFlight);
}

TEST_CASE(
    "NATS cluster: each server's name is read from it, and a worker moves to its consumer's "
    "leader",
    "[nats][cluster]") {
  NatsCluster c;
  for (int i = 0; i < NatsCluster::kNodes; ++i)
    CHECK(mayhem::nats_server_name(c.url(i), 2000) == NatsCluster::name(i));
  CHECK(mayhem::nats_server_name("nats://127.0.0.1:1", 500).empty());
  CHECK(mayhem::nats_server_name("nats://", 500).empty());

  constexpr std::uint64_t kN = 2000;
  const int at = cluster_r3_consumer_leader(c, kN);
  // Given only another server, the worker learns the rest from it and moves to the leader.
  const int other = (at + 1) % NatsCluster::kNodes;
  Subprocess w({"--source", c.url(other), "--messages", std::to_string(kN - 100), "--latency-scale",
                "0", "--fail-rate", "0", "--summary-json", "--log-level", "info"});
  const Result r = w.wait(60s);
  INFO(r.err.substr(0, 6000));
  REQUIRE(r.exit_code == 0);
  CHECK(last_json_line(r)["acked"] == kN - 100);
  CHECK(r.err.find("NATS: moved to " + NatsCluster::name(at) + " (") != std::string::npos);
  CHECK(cluster_all_acked(c, kN));
}
