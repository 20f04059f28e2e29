// Watching a running service: the stage collector's own/total times, the snapshot's JSON and
// Prometheus forms (checked by a small format checker), the stats endpoint over HTTP and raw
// sockets (404, 405, 4xx for malformed or oversized requests, loopback by default), and the
// `mayhem top` rendering of a known snapshot.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "mayhem/cli/top.hpp"
#include "mayhem/observe/stage_collector.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/service.hpp"
#include "support/prometheus_check.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const StageSnapshot& row(const StatsSnapshot& s, const std::string& name) {
  for (const auto& r : s.stages)
    if (r.name == name) return r;
  FAIL("no stage " << name);
  throw std::logic_error("unreachable");
}

HistogramData hist(std::initializer_list<std::uint64_t> values) {
  Histogram h;
  for (auto v : values) h.record(v);
  return HistogramData::of(h);
}

// A snapshot with round numbers, as a service 10 s into a run would report it.
StatsSnapshot known_snapshot() {
  StatsSnapshot s;
  s.uptime_ns = 10'000'000'000;
  s.threads = 2;
  s.published = 5000;
  s.consumed = 4900;
  s.acked = 4000;
  s.nacked = 10;
  s.saved = 3000;
  s.save_failed = 1000;
  s.restarted = 3500;
  s.restart_failed = 20;
  s.retries = 300;
  s.extensions = 6000;
  s.in_flight = 890;
  s.max_in_flight = 100000;
  s.backlog = 100;
  s.queue_capacity = 16384;
  s.leased_lots = 7;
  s.log = LogStats{true, 3, 0};
  s.latency = hist({500'000'000, 600'000'000, 700'000'000});
  const char* names[] = {"publish",   "consume", "save",   "saved", "restart",
                         "restarted", "cleanup", "settle", "lease"};
  for (const char* n : names) {
    StageSnapshot r;
    r.name = n;
    s.stages.push_back(r);
  }
  auto& pub = s.stages[0];
  pub.limit = 1;
  pub.calls = 50;
  pub.items = 5000;
  pub.own = hist({20, 20});  // exact buckets below 32 ns
  pub.total = pub.own;
  auto& save = s.stages[2];
  save.active = 1;
  save.in_flight = 600;
  save.queued = 0;
  save.calls = 40;
  save.items = 4900;
  save.own = hist({10, 10});
  save.total = hist({30, 30});
  auto& saved = s.stages[3];
  saved.calls = 30;
  saved.errors = 1000;
  saved.own = hist({20});
  saved.total = saved.own;
  return s;
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

TEST_CASE("Stage collector: own time excludes nested stage bodies, total includes them",
          "[observe]") {
  ManualClock clock(1000);
  StageCollector c(clock);
  (void)c.collect();  // someone looks: bodies are timed from now on
  REQUIRE(c.timing());
  c.on_entry(Stage::kSave, 10);
  clock.advance(100);
  c.on_entry(Stage::kSaved, 4);  // an inline completion inside the submit
  clock.advance(30);
  c.on_exit(Stage::kSaved, 4);
  clock.advance(20);
  c.on_exit(Stage::kSave, 10);

  std::thread other([&] {  // another thread: its own slot, summed when read
    c.on_entry(Stage::kSaved, 6);
    c.on_exit(Stage::kSaved, 6);
  });
  other.join();

  const auto rows = c.collect();
  REQUIRE(rows.size() == static_cast<std::size_t>(kStageCount));
  const auto& save = rows[static_cast<int>(Stage::kSave)];
  const auto& saved = rows[static_cast<int>(Stage::kSaved)];
  CHECK(save.name == "save");
  CHECK(save.calls == 1);
  CHECK(save.items == 10);
  CHECK(save.total.sum == 150);
  CHECK(save.own.sum == 120);
  CHECK(saved.calls == 2);
  CHECK(saved.items == 10);
  CHECK(saved.total.sum == 30);  // the other thread's call took no (manual) time
  CHECK(saved.own.sum == 30);
  CHECK(save.active == 0);
  CHECK(c.items_entered(Stage::kSaved) == 10);

  c.on_entry(Stage::kRestart, 3);  // still running when read
  const auto mid = c.collect();
  CHECK(mid[static_cast<int>(Stage::kRestart)].active == 1);
  CHECK(mid[static_cast<int>(Stage::kRestart)].in_flight == 3);
  c.on_exit(Stage::kRestart, 3);
}

TEST_CASE("Stage collector: untimed while nobody looks, counted always", "[observe]") {
  ManualClock clock(1000);
  StageCollector c(clock, 1'000'000);  // a 1 ms watch window
  c.on_entry(Stage::kSettle, 5);       // nobody has looked yet
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);
  auto rows = c.collect();  // arms timing
  const auto& settle = rows[static_cast<int>(Stage::kSettle)];
  CHECK(settle.calls == 1);
  CHECK(settle.items == 5);
  CHECK(settle.own.count == 0);

  c.on_entry(Stage::kSettle, 5);
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);
  CHECK(c.collect()[static_cast<int>(Stage::kSettle)].own.count == 1);

  clock.advance(2'000'000);       // the window passes with nobody looking
  c.on_entry(Stage::kSettle, 5);  // this body notices and stops timing (it is still timed)
  c.on_exit(Stage::kSettle, 5);
  CHECK_FALSE(c.timing());
  c.on_entry(Stage::kSettle, 5);
  c.on_exit(Stage::kSettle, 5);
  rows = c.collect();
  CHECK(rows[static_cast<int>(Stage::kSettle)].calls == 4);
  CHECK(rows[static_cast<int>(Stage::kSettle)].own.count == 2);
}

TEST_CASE("Histogram data: percentiles, buckets at or below a bound, differences", "[observe]") {
  Histogram h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.record(v * 1000);
  const HistogramData d = HistogramData::of(h);
  CHECK(d.count == 100);
  CHECK(d.percentile(0.99) == h.percentile(0.99));
  CHECK(d.percentile(1.0) == 100'000);
  CHECK(d.count_le(~0ULL) == 100);
  CHECK(d.count_le(0) == 0);
  const auto half = d.count_le(50'000);
  CHECK(half >= 48);
  CHECK(half <= 50);
  for (std::uint64_t v = 1; v <= 10; ++v) h.record(1'000'000);
  const HistogramData later = HistogramData::of(h).since(d);
  CHECK(later.count == 10);
  CHECK(later.sum == 10'000'000);
  CHECK(later.percentile(0.5) <= 1'000'000);
  CHECK(later.percentile(0.5) >= 970'000);
}

TEST_CASE("Snapshots survive JSON, and `since` subtracts counters but keeps gauges", "[observe]") {
  const StatsSnapshot s = known_snapshot();
  const json j = s;
  const StatsSnapshot back = json::parse(j.dump()).get<StatsSnapshot>();
  CHECK(json(back) == j);
  CHECK(j["stages"][2]["stage"] == "save");
  CHECK(j["counters"]["acked"] == 4000);
  CHECK(j["gauges"]["in_flight"] == 890);

  StatsSnapshot later = s;
  later.acked += 500;
  later.in_flight = 3;
  later.stages[2].calls += 7;
  const StatsSnapshot d = since(later, s);
  CHECK(d.acked == 500);
  CHECK(d.in_flight == 3);
  CHECK(d.stages[2].calls == 7);
  CHECK(d.stages[2].own.count == 0);

  CHECK_THROWS(json::parse(R"({"uptime_ns": 1})").get<StatsSnapshot>());
}

TEST_CASE("Prometheus text of a snapshot passes the format check", "[observe]") {
  const std::string text = render_prometheus(known_snapshot());
  int histograms = 0;
  const auto problems = test::check_prometheus(text, &histograms);
  INFO(text);
  for (const auto& p : problems) FAIL_CHECK(p);
  CHECK(histograms == 2 * 9 + 1);  // own and total per stage, end to end
  const auto parsed = test::parse_prometheus(text);
  CHECK(parsed.types.at("mayhem_messages_total") == "counter");
  CHECK(parsed.types.at("mayhem_in_flight_messages") == "gauge");
  CHECK(parsed.value("mayhem_messages_total", {{"stage", "settle"}, {"outcome", "acked"}}) == 4000);
  CHECK(parsed.value("mayhem_messages_total", {{"stage", "saved"}, {"outcome", "failed"}}) == 1000);
  CHECK(parsed.value("mayhem_in_flight_messages", {}) == 890);
  CHECK(parsed.value("mayhem_queue_depth_messages", {{"queue", "pubsub"}}) == 100);
  CHECK(parsed.value("mayhem_end_to_end_latency_seconds_count", {}) == 3);
  CHECK(parsed.value("mayhem_end_to_end_latency_seconds_bucket", {{"le", "0.25"}}) == 0);
  CHECK(parsed.value("mayhem_end_to_end_latency_seconds_bucket", {{"le", "1"}}) == 3);
  CHECK(parsed.value("mayhem_stage_own_seconds_bucket", {{"stage", "save"}, {"le", "1e-06"}}) == 2);
  // The checker itself catches what it is there for.
  CHECK_FALSE(test::check_prometheus("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} "
                                     "1\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 4\n")
                  .empty());
}

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
  for (const char* bad : {"", "host:", "host:99999", "host:port", "[::1]80", "1:2:x"}) {
    INFO(bad);
    CHECK_FALSE(parse_stats_address(bad, err));
    CHECK_FALSE(err.empty());
  }
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
    // The first request arms timing; later ones see timed bodies.
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

TEST_CASE("mayhem top renders a known snapshot", "[observe][top]") {
  cli::TopModel model("127.0.0.1:9100");
  StatsSnapshot first = known_snapshot();
  first.uptime_ns = 9'000'000'000;
  first.published = 4000;
  first.acked = 3000;
  first.nacked = 10;
  first.extensions = 5000;
  first.stages[0].calls = 40;
  first.stages[2].calls = 20;
  model.update(first);
  model.update(known_snapshot());
  const std::string expected =
      "mayhem top  127.0.0.1:9100  up 0:00:10  threads 2  sort: pipeline  [running]\n"
      "msgs/s in 1000  out 1000  in flight 890/100000  backlog 100  leases 7  extensions/s 1000\n"
      "acks 4000  nacks 10  retries 300  log overruns 0  end-to-end mean 600.00ms p99 700.00ms\n"
      "\n"
      "STAGE         CONC  IN-FLT  QUEUED  CALLS/S  OWN-MEAN   OWN-P99  TOT-MEAN   TOT-P99   %OWN  "
      " %TOT  ERRORS RETRIES\n"
      "publish        0/1       0       -       10      20ns      20ns      20ns      20ns   50.0  "
      " 50.0       0       0\n"
      "consume      0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "save         1/inf     600       0       20      10ns      10ns      30ns      30ns   25.0  "
      " 75.0       0       0\n"
      "saved        0/inf       0       -        0      20ns      20ns      20ns      20ns   25.0  "
      " 25.0    1000       0\n"
      "restart      0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "restarted    0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "cleanup      0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "settle       0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "lease        0/inf       0       -        0         -         -         -         -    0.0  "
      "  0.0       0       0\n"
      "\n"
      "keys: space pause  s sort  r reset  q quit\n";
  CHECK(cli::render_top(model.view()) == expected);

  model.cycle_sort();  // calls/s: save (20/s) before publish (10/s)
  const std::string by_calls = cli::render_top(model.view());
  CHECK(by_calls.find("sort: calls/s") != std::string::npos);
  CHECK(by_calls.find("save ") < by_calls.find("publish "));

  model.reset();  // from now on: nothing happened yet
  const std::string after_reset = cli::render_top(model.view());
  CHECK(after_reset.find("since reset 0:00:00") != std::string::npos);
  CHECK(after_reset.find("acks 0  nacks 0  retries 0") != std::string::npos);

  model.toggle_pause();
  StatsSnapshot newer = known_snapshot();
  newer.uptime_ns += 1'000'000'000;
  newer.acked += 777;
  model.update(newer);  // ignored while paused
  CHECK(cli::render_top(model.view()).find("[PAUSED]") != std::string::npos);
  CHECK(cli::render_top(model.view()).find("acks 0 ") != std::string::npos);
  model.toggle_pause();
  model.update(newer);
  CHECK(cli::render_top(model.view()).find("acks 777 ") != std::string::npos);

  model.failed("connection refused or unreachable");
  CHECK(cli::render_top(model.view()).find("went away: connection refused") != std::string::npos);
  cli::TopModel never("127.0.0.1:1");
  never.failed("connection refused or unreachable");
  CHECK(cli::render_top(never.view()) ==
        "mayhem top  127.0.0.1:1\n\ncannot reach the service at 127.0.0.1:1: connection refused "
        "or unreachable\nretrying every second; q quits\n");
}

TEST_CASE("mayhem top and --stats-addr refuse bad input, and top says when nothing listens",
          "[observe][cli]") {
  using test::Subprocess;
  auto r = Subprocess({"--stats-addr", "nowhere", "--messages", "1"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--stats-addr") != std::string::npos);
  r = Subprocess({"top"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--addr") != std::string::npos);
  r = Subprocess({"--live", "--messages", "1"}).wait(20s);  // stdin is /dev/null
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("terminal") != std::string::npos);
  // A port nothing listens on: bind one (no listen), close it, ask there.
  std::uint16_t port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
    ::close(fd);
  }
  r = Subprocess({"top", "--addr", "127.0.0.1:" + std::to_string(port), "--once"}).wait(20s);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot reach the service") != std::string::npos);
}
