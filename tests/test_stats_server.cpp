// The stats endpoint: the address parser (loopback by default), /metrics and /stats over HTTP
// and raw sockets (404, 405, 4xx for malformed or oversized requests), the routes installed on a
// server of one's own, the warning on a non-loopback address, and a running service's live
// per-stage numbers.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "mayhem/observe/stats_server.hpp"
#include "mayhem/service.hpp"
#include "support/known_snapshot.hpp"
#include "support/prometheus_check.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;
using test::known_snapshot;

namespace {

const StageSnapshot& row(const StatsSnapshot& s, const std::string& name) {
  for (const auto& r : s.stages)
    if (r.name == name) return r;
  FAIL("no stage " << name);
  throw std::logic_error("unreachable");
}

// One request on a fresh connection; returns the status line (empty if none came back).
std::string raw_request(std::uint16_t port, const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
    if (got.find("\r\n") != std::string::npos) break;
  }
  ::close(fd);
  return got.substr(0, got.find("\r\n"));
}

}  // namespace

TEST_CASE("Stats address: loopback unless a host is given, bad text refused", "[observe]") {
  std::string err;
  auto a = parse_stats_address("9100", err);
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 9100);
  a = parse_stats_address(":0", err);
  REQUIRE(a);
  CHECK(a->host == "127.0.0.1");
  a = parse_stats_address("0.0.0.0:9100", err);
  REQUIRE(a);
  CHECK(a->host == "0.0.0.0");
  a = parse_stats_address("[::1]:80", err);
  REQUIRE(a);
  CHECK(a->host == "::1");
  a = parse_stats_address("localhost:0", err);
  REQUIRE(a);
  CHECK(a->host == "localhost");
  for (const char* bad : {"", "host:", "host:99999", "host:port", "[::1]80", "1:2:x",
                          "999.1.1.1:80", "1.2.3:80", "[::g]:80", "no-such-host.invalid:80"}) {
    INFO(bad);
    CHECK_FALSE(parse_stats_address(bad, err));
    CHECK(err.rfind("--stats-addr: ", 0) == 0);
  }
  CHECK_FALSE(parse_stats_address("nonsense", err, "--addr"));
  CHECK(err.rfind("--addr: ", 0) == 0);
  CHECK(is_loopback("127.0.0.1"));
  CHECK(is_loopback("127.1.2.3"));
  CHECK(is_loopback("localhost"));
  CHECK(is_loopback("::1"));
  CHECK_FALSE(is_loopback("0.0.0.0"));
  CHECK_FALSE(is_loopback("10.0.0.1"));
}

TEST_CASE("Stats endpoint: /metrics, /stats, 404, 405 and 4xx, snapshots shared", "[observe]") {
  auto [log, sink] = test::make_test_logger();
  std::atomic<int> snapshots{0};
  StatsServer::Limits limits;
  limits.min_interval_ns = 60'000'000'000;  // one snapshot for the whole test
  StatsServer server(
      {"127.0.0.1", 0},
      [&] {
        ++snapshots;
        return known_snapshot();
      },
      log, limits);
  REQUIRE_FALSE(server.start());
  const std::uint16_t port = server.port();
  REQUIRE(port != 0);
  CHECK(sink->count("not authenticated") == 0);  // loopback: no warning

  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
  CHECK(test::check_prometheus(res->body).empty());
  res = client.Get("/stats");
  REQUIRE(res);
  CHECK(res->status == 200);
  const json j = json::parse(res->body);
  CHECK(j["counters"]["acked"] == 4000);
  CHECK(j["stages"].size() == 9);
  CHECK(snapshots.load() == 1);

  res = client.Get("/nope");
  REQUIRE(res);
  CHECK(res->status == 404);
  CHECK(res->body.find("/metrics") != std::string::npos);
  res = client.Post("/metrics", "x", "text/plain");
  REQUIRE(res);
  CHECK(res->status == 405);

  CHECK(raw_request(port, "GARBAGE\r\n\r\n").find(" 400 ") != std::string::npos);
  CHECK(raw_request(port, "GET /" + std::string(10000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n")
            .find(" 414 ") != std::string::npos);
  CHECK(raw_request(port, "GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            .find(" 413 ") != std::string::npos);
  CHECK(raw_request(
            port, "GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'b') + "\r\n\r\n")
            .rfind("HTTP/1.1 4", 0) == 0);

  // Still serving after all that.
  res = client.Get("/stats");
  REQUIRE(res);
  CHECK(res->status == 200);
  server.stop();
  httplib::Client late("127.0.0.1", port);
  late.set_connection_timeout(1, 0);
  CHECK_FALSE(late.Get("/stats"));
}

TEST_CASE("StatsServer::install gives a server of one's own the endpoint's routes and limits",
          "[observe]") {
  // The seam the HTTP fuzz target (fuzz/fuzz_http.cpp) drives; here over a real socket.
  auto [log, sink] = test::make_test_logger();
  StatsServer stats(
      {"127.0.0.1", 0}, [] { return known_snapshot(); }, log);
  httplib::Server other;
  stats.install(other);
  const int port = other.bind_to_any_port("127.0.0.1");
  REQUIRE(port > 0);
  std::thread serving([&] { other.listen_after_bind(); });
  struct Stop {
    httplib::Server& s;
    std::thread& t;
    ~Stop() {
      while (!s.is_running()) std::this_thread::yield();  // stop() before the loop runs is lost
      s.stop();
      t.join();
    }
  } stop{other, serving};
  CHECK(stats.port() == 0);  // never started: only `other` listens

  httplib::Client client("127.0.0.1", static_cast<std::uint16_t>(port));
  auto res = client.Get("/stats");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(json::parse(res->body)["counters"]["acked"] == 4000);
  res = client.Get("/nope");
  REQUIRE(res);
  CHECK(res->status == 404);
  CHECK(res->body.find("/metrics") != std::string::npos);
  res = client.Post("/stats", "x", "text/plain");
  REQUIRE(res);
  CHECK(res->status == 405);
  CHECK(res->get_header_value("Allow") == "GET, HEAD");
  CHECK(raw_request(static_cast<std::uint16_t>(port),
                    "GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            .find(" 413 ") != std::string::npos);
}

TEST_CASE("Stats endpoint on a non-loopback address logs that it is unauthenticated", "[observe]") {
  auto [log, sink] = test::make_test_logger();
  StatsServer server(
      {"0.0.0.0", 0}, [] { return StatsSnapshot{}; }, log);
  REQUIRE_FALSE(server.start());
  CHECK(sink->count("not authenticated") == 1);
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/stats");
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("A running service serves live per-stage numbers", "[observe]") {
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Options o;
  o.messages = 0;
  o.rate = 20000;
  o.latency_scale = 0.005;
  o.seed = 7;
  o.stats_addr = "127.0.0.1:0";
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  int rc = -1;
  std::thread runner([&] { rc = svc.run(); });
  svc.wait_started();
  const std::uint16_t port = svc.stats_port();
  REQUIRE(port != 0);
  httplib::Client client("127.0.0.1", port);
  json j;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  do {  // until messages are acked and save bodies timed
    auto res = client.Get("/stats");
    REQUIRE(res);
    j = json::parse(res->body);
    // Bodies are timed from the start (and each request keeps timing on).
    if (j["counters"]["acked"].get<std::uint64_t>() > 0 && j["stages"][2]["own"]["count"] > 0)
      break;
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < deadline);
  const StatsSnapshot s = j.get<StatsSnapshot>();
  CHECK(s.acked > 0);
  CHECK(s.stages.size() == 9);
  CHECK(row(s, "publish").calls > 0);
  CHECK(row(s, "save").items > 0);
  CHECK(row(s, "save").own.count > 0);
  CHECK(row(s, "consume").items == s.consumed);
  CHECK(row(s, "settle").calls > 0);
  CHECK(row(s, "lease").calls > 0);
  auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(test::check_prometheus(res->body).empty());
  svc.request_stop(SIGINT);
  runner.join();
  CHECK(rc == 0);
  CHECK(svc.summary().published == svc.summary().acked + svc.summary().nacked);
}
