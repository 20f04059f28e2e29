// Mayhem against a real `nats-server -js` (started and stopped by the tests, see
// support/nats_server.hpp): `mayhem publish` then `mayhem --source nats://...`, checked against
// the server's own accounting (consumer info), through signals, a killed worker, a broker that
// goes away, two workers on one durable, and malformed payloads.
#include <signal.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <sstream>

#include "support/json_line.hpp"
#include "support/nats_server.hpp"
#include "support/scale.hpp"
#include "support/subprocess.hpp"

using namespace mayhem::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

json publish(const NatsServer& srv, std::uint64_t n, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"publish",         "--nats",      srv.url(), "--messages",
                                   std::to_string(n), "--log-level", "warning"};
  args.insert(args.end(), extra.begin(), extra.end());
  Subprocess p(args);
  const Result r = p.wait(30s);
  INFO(r.err);
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  return last_json_line(r);
}

std::vector<std::string> consumer(const NatsServer& srv, std::vector<std::string> extra) {
  std::vector<std::string> args = {"--source", srv.url(), "--summary-json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// The server's accounting says every one of `n` messages is acked (or terminated): none pending,
// none waiting for an ack, the ack floor at the last one, and the work queue empty.
bool all_settled(const NatsServer& srv, std::uint64_t n) {
  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  return c.found && c.pending == 0 && c.ack_pending == 0 && c.ack_floor_stream == n &&
         c.stream_msgs == 0;
}

// Lets a `--messages 0` consumer run until the server counts all `n` settled (at most 40 s), then
// stops it with SIGINT: whether they all settled, the consumer's output and its summary.
struct Stopped {
  bool done;
  Result r;
  json s;
};
Stopped settle_then_stop(const NatsServer& srv, Subprocess& p, std::uint64_t n) {
  const bool done = eventually([&] { return all_settled(srv, n); }, 40s);
  p.signal(SIGINT);
  const Result r = p.wait(30s);
  INFO(r.err.substr(0, 4000));
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  json s = last_json_line(r);
  return {done, r, std::move(s)};
}

}  // namespace

TEST_CASE("NATS: publish N then consume N and the server counts every one acked", "[nats]") {
  NatsServer srv;
  const json pub = publish(srv, 2000, {"--seed", "11"});
  CHECK(pub["confirmed"] == 2000);
  CHECK(pub["duplicates"] == 0);
  // The message_id is the de-duplication id: publishing the same ids again stores nothing.
  const json again = publish(srv, 2000, {"--seed", "11"});
  CHECK(again["confirmed"] == 0);
  CHECK(again["duplicates"] == 2000);

  Subprocess p(
      consumer(srv, {"--messages", "2000", "--latency-scale", "0.001", "--log-level", "warning"}));
  const Result r = p.wait(60s);
  INFO(r.err.substr(0, 4000));
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  const json s = last_json_line(r);
  CHECK(s["acked"] == 2000);
  CHECK(s["nacked"] == 0);
  CHECK(s["received"] == 2000);
  CHECK(s["malformed"] == 0);
  CHECK(s["redelivered"] == 0);

  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  REQUIRE(c.found);  // the durable outlives the process that bound to it
  CHECK(c.stream_last_seq == 2000);
  CHECK(c.delivered_stream == 2000);
  CHECK(c.delivered_consumer == 2000);
  CHECK(c.ack_floor_stream == 2000);
  CHECK(c.ack_pending == 0);
  CHECK(c.pending == 0);
  CHECK(c.redelivered == 0);
  CHECK(c.stream_msgs == 0);              // work queue: acked messages are gone
  CHECK(c.ack_wait_ns == 3'000'000'000);  // --ack-deadline's default became AckWait
}

TEST_CASE(
    "NATS: lease extension keeps slow messages from redelivery (and without it they come back)",
    "[nats]") {
  // AckWait is 1.2 s. Restarts fail half the time and back off (0.4 s, then 0.8 s), so many
  // messages spend well over 1.2 s in save || restart, then up to 0.8 s in cleanup (extended too:
  // the lease holds until the ack). The consumer keeps fetching (--messages 0), so an expired
  // message would be redelivered to it.
  const auto run = [](const char* extend_interval) {
    NatsServer srv;
    publish(srv, 20);
    Subprocess p(
        consumer(srv, {"--messages", "0", "--latency-scale", "0.8", "--fail-rate", "0.5",
                       "--restart-retries", "2", "--restart-backoff", "0.5", "--ack-deadline",
                       "1.2", "--extend-interval", extend_interval, "--log-level", "error"}));
    const bool done = eventually([&] { return all_settled(srv, 20); }, 20s);
    p.signal(SIGINT);
    const Result r = p.wait(20s);
    INFO(r.err.substr(0, 4000));
    REQUIRE(done);
    REQUIRE(r.exit_code == 0);
    const json s = last_json_line(r);
    CHECK(s["latency_ms"]["max"].get<double>() > 1200);  // some took longer than AckWait
    return std::make_pair(s, srv.consumer_state("MAYHEM", "mayhem"));
  };
  SECTION("extending every 0.2 s") {
    const auto [s, c] = run("0.2");
    CHECK(s["acked"] == 20);
    CHECK(s["redelivered"] == 0);
    CHECK(c.delivered_consumer == 20);  // each message delivered exactly once
    CHECK(s["extensions"].get<std::uint64_t>() > 20);
  }
  SECTION("control: extending every 5 s (after AckWait) lets the server redeliver") {
    const auto [s, c] = run("5");
    CHECK(s["redelivered"].get<std::uint64_t>() > 0);
    CHECK(c.delivered_consumer > 20);
  }
}

TEST_CASE("NATS: SIGINT nacks what is outstanding and a second run finishes it", "[nats]") {
  NatsServer srv;
  publish(srv, 300);
  // AckWait 10 s: a message whose nack got lost would hold the second run up for 10 s.
  // SIGINT must find messages in flight: at --latency-scale 1.5 each message takes about 2 s
  // (three stages of up to 1.5 s), so 50 at a time need about 12 s for the 300, while the first
  // ack comes within a second. (At 0.4 the whole lot took about 3 s: on a loaded machine the
  // signal sometimes came after the last ack, and nothing was left to nack.)
  Subprocess a(consumer(srv, {"--messages", "0", "--latency-scale", "1.5", "--max-in-flight", "50",
                              "--fail-rate", "0", "--ack-deadline", "10"}));
  REQUIRE(eventually([&] { return a.err_so_far().find("Done. Acked") != std::string::npos; }, 20s));
  a.signal(SIGINT);
  const Result ra = a.wait(20s);
  INFO(ra.err.substr(ra.err.size() > 4000 ? ra.err.size() - 4000 : 0));
  REQUIRE(ra.exit_code == 0);
  const json sa = last_json_line(ra);
  const auto acked_a = sa["acked"].get<std::uint64_t>();
  const auto nacked_a = sa["nacked"].get<std::uint64_t>();
  CHECK(acked_a > 0);
  REQUIRE(acked_a < 300);  // else the signal came after the last ack: nothing left to test
  CHECK(nacked_a > 0);
  CHECK(acked_a + nacked_a == sa["received"].get<std::uint64_t>());
  CHECK(ra.err.find("Nacking outstanding messages") != std::string::npos);
  // Nacked messages wait in the consumer's redelivery queue (counted as ack-pending) until a
  // process pulls again; nothing was acked twice, nothing lost.
  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  CHECK(c.stream_msgs == 300 - acked_a);
  CHECK(c.pending + static_cast<std::uint64_t>(c.ack_pending) == 300 - acked_a);
  CHECK(c.ack_pending > 0);

  Subprocess b(consumer(srv, {"--messages", std::to_string(300 - acked_a), "--latency-scale",
                              "0.001", "--ack-deadline", "10", "--log-level", "warning"}));
  const Result rb = b.wait(30s);
  INFO(rb.err.substr(0, 4000));
  REQUIRE(rb.exit_code == 0);
  const json sb = last_json_line(rb);
  CHECK(sb["acked"] == 300 - acked_a);
  // Exactly the nacked ones came back, at once (not after the 10 s AckWait).
  CHECK(sb["redelivered"] == c.ack_pending);
  CHECK(sb["wall_s"].get<double>() < 5);
  CHECK(all_settled(srv, 300));
}

TEST_CASE("NATS: a worker killed with SIGKILL loses nothing: a restart acks everything", "[nats]") {
  NatsServer srv;
  publish(srv, 300);
  Subprocess a(consumer(srv, {"--messages", "0", "--latency-scale", "0.3", "--max-in-flight", "50",
                              "--ack-deadline", "1", "--extend-interval", "0.3"}));
  REQUIRE(eventually([&] { return a.err_so_far().find("Done. Acked") != std::string::npos; }, 20s));
  a.signal(SIGKILL);
  const Result ra = a.wait(10s);
  REQUIRE(ra.exit_code == 128 + SIGKILL);
  CHECK_FALSE(all_settled(srv, 300));

  Subprocess b(consumer(srv, {"--messages", "0", "--latency-scale", "0.001", "--ack-deadline", "1",
                              "--extend-interval", "0.3", "--log-level", "warning"}));
  const bool done = eventually([&] { return all_settled(srv, 300); }, 20s);
  b.signal(SIGINT);
  const Result rb = b.wait(20s);
  INFO(rb.err.substr(0, 4000));
  REQUIRE(done);
  REQUIRE(rb.exit_code == 0);
  const json sb = last_json_line(rb);
  CHECK(sb["redelivered"].get<std::uint64_t>() > 0);  // the killed worker's messages came back
  CHECK(sb["nacked"] == 0);
}

TEST_CASE("NATS: two processes on one durable split the work", "[nats]") {
  NatsServer srv;
  publish(srv, 600);
  const std::vector<std::string> flags = {"--messages",      "0",      "--latency-scale", "0.05",
                                          "--max-in-flight", "20",     "--fail-rate",     "0",
                                          "--log-level",     "warning"};
  Subprocess a(consumer(srv, flags));
  Subprocess b(consumer(srv, flags));
  const bool done = eventually([&] { return all_settled(srv, 600); }, 30s);
  a.signal(SIGINT);
  b.signal(SIGINT);
  const Result ra = a.wait(20s);
  const Result rb = b.wait(20s);
  REQUIRE(done);
  REQUIRE(ra.exit_code == 0);
  REQUIRE(rb.exit_code == 0);
  const json sa = last_json_line(ra);
  const json sb = last_json_line(rb);
  const auto acked_a = sa["acked"].get<std::uint64_t>();
  const auto acked_b = sb["acked"].get<std::uint64_t>();
  CHECK(acked_a > 100);  // both did a real share
  CHECK(acked_b > 100);
  CHECK(acked_a + acked_b == 600);  // and no message was done twice
  CHECK(sa["redelivered"] == 0);
  CHECK(sb["redelivered"] == 0);
}

TEST_CASE("NATS: malformed payloads are logged, counted and terminated", "[nats]") {
  NatsServer srv;
  const json pub = publish(srv, 50, {"--malformed", "10"});
  CHECK(pub["confirmed"] == 60);
  // --source may list several servers (a cluster's nodes); a dead one is skipped.
  Subprocess p({"--source", "nats://127.0.0.1:1," + srv.url(), "--summary-json", "--messages", "50",
                "--latency-scale", "0.001", "--log-level", "warning"});
  const Result r = p.wait(30s);
  INFO(r.err.substr(0, 4000));
  REQUIRE(r.exit_code == 0);
  const json s = last_json_line(r);
  CHECK(s["acked"] == 50);
  CHECK(s["malformed"] == 10);
  CHECK(r.err.find("Malformed message") != std::string::npos);
  CHECK(r.err.find("not valid JSON") != std::string::npos);
  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  CHECK(c.ack_pending == 0);  // terminated: nothing waits for redelivery
  CHECK(c.redelivered == 0);
  CHECK(c.delivered_consumer == 60);
  CHECK(all_settled(srv, 60));
}

TEST_CASE("NATS: the server going away and coming back is survived without loss", "[nats]") {
  NatsServer srv;
  publish(srv, 400);
  Subprocess p(consumer(srv, {"--messages", "0", "--latency-scale", "0.05", "--max-in-flight", "40",
                              "--ack-deadline", "2", "--extend-interval", "0.5"}));
  REQUIRE(eventually([&] { return p.err_so_far().find("Done. Acked") != std::string::npos; }, 20s));
  srv.kill(SIGTERM);
  REQUIRE(eventually([&] { return p.err_so_far().find("NATS: disconnected") != std::string::npos; },
                     10s));
  srv.restart();
  const bool done = eventually([&] { return all_settled(srv, 400); }, 30s);
  p.signal(SIGINT);
  const Result r = p.wait(20s);
  INFO(r.err.substr(r.err.size() > 4000 ? r.err.size() - 4000 : 0));
  REQUIRE(done);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("NATS: reconnected") != std::string::npos);
  const json s = last_json_line(r);
  CHECK(s["acked"].get<std::uint64_t>() >= 400);  // redeliveries may add duplicates, never loss
  // The reconnect is where nats.c 3.4.1 can over-fill a fetch (NatsSource::fetch_loop): when it
  // did, say so, so a run shows the defence was exercised.
  if (r.err.find("the client library returned") != std::string::npos)
    WARN("nats.c over-filled a fetch after the reconnect; fetch_loop took the batch it asked for");
}

TEST_CASE("NATS: a server that is not there is a clear error, not a hang", "[nats]") {
  int port = 0;
  {
    NatsServer srv;  // find a port, then stop the server on it
    port = srv.port();
  }
  Subprocess p({"--source", "nats://127.0.0.1:" + std::to_string(port), "--messages", "1"});
  const Result r = p.wait(20s);
  REQUIRE_FALSE(r.timed_out);
  CHECK(r.exit_code == 2);  // a start-up error: nothing consumed
  CHECK(r.err.find("cannot connect to nats://127.0.0.1:") != std::string::npos);
  Subprocess bad({"--source", "http://x", "--messages", "1"});
  const Result rb = bad.wait(10s);
  CHECK(rb.exit_code == 2);
  CHECK(rb.err.find("--source must be nats://HOST:PORT") != std::string::npos);
  Subprocess nack({"--on-failure", "nack", "--messages", "1"});
  CHECK(nack.wait(10s).exit_code == 2);
}

TEST_CASE("NATS + blocking I/O: cleanup does not starve behind saves, the lease holds to settle",
          "[nats]") {
  // 5,000 messages pulled at once into a pool of 64 blocking threads: about 10,000 saves and
  // restarts queue up. Cleanup must not wait behind them (it finishes messages), and a message's
  // lease must hold until its ack: otherwise AckWait (3 s) passes and the server redelivers. The
  // consumer keeps fetching (--messages 0), so a redelivery reaches it and is counted.
  NatsServer srv;
  publish(srv, 5000);
  Subprocess p(consumer(srv, {"--io-model", "blocking", "--latency-scale", "0.1", "--messages", "0",
                              "--log-level", "warning"}));
  const auto [done, r, s] = settle_then_stop(srv, p, 5000);
  CHECK(done);
  CHECK(s["acked"] == 5000);
  CHECK(s["nacked"] == 0);
  CHECK(s["redelivered"] == 0);
  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  CHECK(c.redelivered == 0);
  CHECK(c.delivered_consumer == 5000);
}

TEST_CASE("NATS: the lease holds from delivery to settle with the default lease settings",
          "[nats]") {
  // Default lease settings (extend every 2 s, AckWait 3 s), 50 in flight, restarts that do not
  // fail, I/O of up to 2 s per stage: many messages reach their results before their first
  // extension is due and then spend up to 2 s in cleanup. Extensions must run from delivery until
  // the ack, or the server redelivers (33 of 150 before the fix).
  NatsServer srv;
  publish(srv, 150);
  Subprocess p(consumer(srv, {"--max-in-flight", "50", "--latency-scale", "2", "--fail-rate", "0",
                              "--messages", "0", "--log-level", "warning"}));
  const auto [done, r, s] = settle_then_stop(srv, p, 150);
  CHECK(done);
  CHECK(s["acked"] == 150);
  CHECK(s["redelivered"] == 0);
  const ConsumerState c = srv.consumer_state("MAYHEM", "mayhem");
  CHECK(c.redelivered == 0);
  CHECK(c.delivered_consumer == 150);
  CHECK(r.err.find("--ack-deadline") == std::string::npos);  // the defaults leave a safe margin
}

TEST_CASE("NATS: start-up warns when the lease leaves less than a safe margin before AckWait",
          "[nats]") {
  // The lease holds to settle, so the margin is --ack-deadline - --extend-interval; safe: at
  // least 0.5 s and at least 20% of the deadline. 3 - 2.5 = 0.5 s is under 20% of 3 s.
  NatsServer srv;
  publish(srv, 2);
  const auto run = [&](const char* interval) {
    Subprocess p(consumer(srv, {"--messages", "1", "--latency-scale", "0.001", "--ack-deadline",
                                "3", "--extend-interval", interval, "--log-level", "warning"}));
    const Result r = p.wait(30s);
    INFO(r.err.substr(0, 4000));
    REQUIRE(r.exit_code == 0);
    return r.err.find("less than the safe margin") != std::string::npos;
  };
  CHECK(run("2.5"));
  CHECK_FALSE(run("2"));  // the defaults: 1 s, a third of the deadline
}

namespace {

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::uint64_t u64(const json& s, const char* key) {
  INFO("the summary has no " << key << ": " << s.dump());
  REQUIRE(s.contains(key));
  return s[key].get<std::uint64_t>();
}

}  // namespace

TEST_CASE("NATS: acks the server never got are ack_unconfirmed and --shutdown-timeout holds",
          "[nats][shutdown]") {
  // The server stops answering while acks are being sent (SIGSTOP: the connection stays open,
  // nothing is read; SIGKILL: the connection is gone, acks wait in the reconnect buffer). Then
  // SIGINT: the final flush cannot succeed, so the shutdown must end within --shutdown-timeout,
  // and the acks sent since the server stopped must not be reported as acked. The server never
  // read more acks than were logged ("Done. Acked" comes before the ack is written) when it
  // stopped, so that count bounds the summary's acked. (The server's own count after a restart is
  // no bound: killed with SIGKILL, nats-server 2.x loses acks it had not yet persisted.)
  for (int how : {SIGSTOP, SIGKILL}) {
    DYNAMIC_SECTION("server " << (how == SIGSTOP ? "SIGSTOP" : "SIGKILL")) {
      NatsServer srv;
      publish(srv, 3000);
      Subprocess p(consumer(srv, {"--messages", "0", "--latency-scale", "0.05", "--fail-rate", "0",
                                  "--max-in-flight", "200", "--shutdown-timeout", "1"}));
      REQUIRE(eventually([&] { return count_of(p.err_so_far(), "Done. Acked") >= 300; }, 20s));
      if (how == SIGSTOP)
        ::kill(srv.pid(), SIGSTOP);
      else
        srv.kill(SIGKILL);
      const std::size_t at_stop = count_of(p.err_so_far(), "Done. Acked");
      // Acks go on being written (messages in flight finish) while nobody reads them.
      REQUIRE(
          eventually([&] { return count_of(p.err_so_far(), "Done. Acked") >= at_stop + 50; }, 20s));
      p.signal(SIGINT);
      const auto start = std::chrono::steady_clock::now();
      const Result r = p.wait(30s);
      const double took =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      INFO(r.err.substr(r.err.size() > 3000 ? r.err.size() - 3000 : 0));
      REQUIRE_FALSE(r.timed_out);
      const json s = last_json_line(r);
      INFO("shutdown took " << took << " s (timeout 1 s); summary " << s.dump() << "; " << at_stop
                            << " acks logged when the server stopped");
      // The margin: the fetcher's last fetch (up to 200 ms) is joined before the timed part, and
      // the process has to exit; a sanitizer's exit alone took most of a second.
      CHECK(took < 1.0 + (kSanitized ? 2.0 : 0.7));
      CHECK(u64(s, "ack_unconfirmed") >= 50);
      CHECK(u64(s, "acked") <= at_stop);
      CHECK(u64(s, "received") == u64(s, "acked") + u64(s, "nacked") + u64(s, "ack_unconfirmed"));
      CHECK(r.err.find("Accounting mismatch") == std::string::npos);
    }
  }
}

TEST_CASE("NATS: mayhem publish stops on a signal", "[nats][shutdown]") {
  // The service blocks SIGINT/SIGTERM/SIGHUP first thing; a subcommand that does not run the
  // service must not inherit that and ignore them.
  NatsServer srv;
  Subprocess p({"publish", "--nats", srv.url(), "--messages", "5000000", "--log-level", "warning"});
  REQUIRE(eventually([&] { return srv.consumer_state("MAYHEM", "mayhem").stream_msgs > 0; }, 20s));
  p.signal(SIGTERM);
  const Result r = p.wait(10s);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code != 0);  // stopped before it published them all
}
