// Issue 16, item 4: the monitoring, checked by the real tools. A running `mayhem --rate 2000` is
// scraped every 500 ms by Debian's `prometheus` (started here on a free loopback port, with its own
// configuration and data in a temporary folder, stopped by its PID), which also evaluates
// deploy/prometheus/alerts.yml. Its HTTP API's rate() of the acked counter and
// histogram_quantile(0.99, ...) of the end-to-end latency are compared with what the service's
// own /stats says over the same window; `promtool check metrics` reads the exposition;
// `promtool check rules` and `promtool test rules` check the alerts; and every PromQL expression of
// deploy/grafana/mayhem-dashboard.json is evaluated by that Prometheus. Skipped (a warning) only
// where prometheus or promtool is not installed (tools/install-deps.sh installs both).
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/observe/stats.hpp"
#include "support/prometheus_check.hpp"
#include "support/scale.hpp"
#include "support/server_process.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const std::string kPromSourceDir = MAYHEM_SOURCE_DIR;

double prom_wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A `prometheus` server of the test's own: its configuration, data and log in a temporary folder,
// its web API on a free loopback port (never the package's 9090 or /etc/prometheus), stopped by
// its PID when this goes out of scope (and killed with the test process if that dies first).
class PromServer {
 public:
  PromServer(const std::string& binary, const std::string& config) {
    {
      std::ofstream out(dir_.file("prometheus.yml"));
      out << config;
    }
    // free_loopback_port() closes its probe before prometheus binds: another process may take the
    // port in between, and prometheus then exits at once. Try another one.
    for (int attempt = 0; attempt < 3 && pid_ <= 0; ++attempt) {
      port_ = test::free_loopback_port();
      const pid_t pid = test::spawn_server(
          {binary, "--config.file=" + dir_.file("prometheus.yml"),
           "--storage.tsdb.path=" + dir_.file("data"),
           "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
          dir_.file("prometheus.log"));
      bool exited = false;
      const bool ready = test::eventually(
          [&] {
            int st = 0;
            if (waitpid(pid, &st, WNOHANG) == pid) return exited = true;
            httplib::Client c("127.0.0.1", port_);
            c.set_connection_timeout(1);
            auto r = c.Get("/-/ready");
            return r && r->status == 200;
          },
          20s, 50ms);
      if (ready && !exited) {
        pid_ = pid;
      } else if (!exited) {
        test::stop_server(pid, SIGKILL, 5s);
        break;
      }
    }
  }
  ~PromServer() { test::stop_server(pid_, SIGTERM, 10s); }
  PromServer(const PromServer&) = delete;
  PromServer& operator=(const PromServer&) = delete;

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string log_tail() const { return test::file_tail(dir_.file("prometheus.log"), 2000); }

  // GET /api/v1/query (form-encoded POST, same answer): the API's JSON answer, or
  // {"status": "http error"} when there is none. `at`: evaluation time (unix seconds).
  json query(const std::string& promql, std::optional<double> at = std::nullopt) const {
    httplib::Params params{{"query", promql}};
    if (at) params.emplace("time", fmt_time(*at));
    return call("/api/v1/query", params);
  }
  json call(const std::string& path, const httplib::Params& params = {}) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(2);
    c.set_read_timeout(10);
    auto r = params.empty() ? c.Get(path.c_str()) : c.Post(path.c_str(), params);
    if (!r) return json{{"status", "http error"}};
    try {
      return json::parse(r->body);
    } catch (const json::exception&) {
      return json{{"status", "http error"}, {"body", r->body}};
    }
  }
  // The one sample of an instant query's answer, or NaN when it has none (or several).
  double scalar(const std::string& promql, std::optional<double> at = std::nullopt) const {
    const json j = query(promql, at);
    if (j.value("status", "") != "success") return std::nan("");
    const auto& result = j["data"]["result"];
    if (result.size() != 1) return std::nan("");
    return std::stod(result[0]["value"][1].get<std::string>());
  }

 private:
  static std::string fmt_time(double t) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.3f", t);
    return buf;
  }

  test::TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// `mayhem --rate 2000 --messages 0` (until a signal) with its stats endpoint on a free port.
struct PromMayhem {
  std::unique_ptr<test::Subprocess> proc;
  int port = 0;
};

bool prom_stats_answers(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1);
  auto r = c.Get("/stats");
  return r && r->status == 200;
}

PromMayhem prom_start_mayhem() {
  PromMayhem m;
  for (int attempt = 0; attempt < 3; ++attempt) {
    m.port = test::free_loopback_port();
    m.proc = std::make_unique<test::Subprocess>(std::vector<std::string>{
        "--rate", "2000", "--messages", "0", "--latency-scale", "0.01", "--stats-addr",
        "127.0.0.1:" + std::to_string(m.port), "--log-level", "warning"});
    // Until it answers, or says it cannot listen (the port was taken after the probe).
    bool refused = false;
    if (test::eventually(
            [&] {
              if (m.proc->err_so_far().find("cannot listen") != std::string::npos)
                return refused = true;
              return prom_stats_answers(m.port);
            },
            20s, 20ms) &&
        !refused)
      return m;
    INFO(m.proc->err_so_far());
    REQUIRE(refused);
  }
  FAIL("mayhem could not listen on three free ports in a row");
  return m;
}

// One look at /stats, and the wall-clock time it was taken (the middle of the request).
struct PromStatsLook {
  StatsSnapshot snap;
  double wall = 0;
};

PromStatsLook prom_look(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);  // a sanitizer build on a loaded machine can be slow to accept
  c.set_read_timeout(10);
  const double before = prom_wall_now();
  auto r = c.Get("/stats");
  const double after = prom_wall_now();
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return {json::parse(r->body).get<StatsSnapshot>(), (before + after) / 2};
}

// What histogram_quantile(q, ...) computes from cumulative bucket counts: the bucket the rank falls
// in, interpolated linearly between its bounds (the first bucket starts at 0; a rank beyond the
// last finite bound gives that bound).
double prom_bucket_quantile(double q, const std::vector<double>& bounds,
                            const std::vector<double>& cumulative, double count) {
  if (count <= 0) return std::nan("");
  const double rank = q * count;
  for (std::size_t b = 0; b < bounds.size(); ++b) {
    if (cumulative[b] >= rank) {
      const double lo = b == 0 ? 0.0 : bounds[b - 1];
      const double below = b == 0 ? 0.0 : cumulative[b - 1];
      const double in = cumulative[b] - below;
      return in <= 0 ? bounds[b] : lo + (bounds[b] - lo) * (rank - below) / in;
    }
  }
  return bounds.back();
}

// Every "expr" string anywhere in a Grafana dashboard, with the panel title it belongs to.
void prom_collect_exprs(const json& j, const std::string& title,
                        std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    const std::string here =
        j.contains("title") && j["title"].is_string() ? j["title"].get<std::string>() : title;
    for (const auto& [key, value] : j.items()) {
      if (key == "expr" && value.is_string())
        out.emplace_back(here, value.get<std::string>());
      else
        prom_collect_exprs(value, here, out);
    }
  } else if (j.is_array()) {
    for (const auto& v : j) prom_collect_exprs(v, title, out);
  }
}

std::string prom_replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

test::Result prom_run_promtool(const std::string& promtool, std::vector<std::string> args) {
  test::Subprocess p(std::move(args), promtool);
  return p.wait(60s);
}

}  // namespace

TEST_CASE("deploy/prometheus/alerts.yml passes promtool check rules and promtool test rules",
          "[prometheus]") {
  const std::string promtool = test::find_program("promtool");
  if (promtool.empty()) {
    WARN("promtool is not installed (tools/install-deps.sh installs prometheus): skipped");
    return;
  }
  const std::string dir = kPromSourceDir + "/deploy/prometheus/";
  const test::Result check = prom_run_promtool(promtool, {"check", "rules", dir + "alerts.yml"});
  INFO(check.out << check.err);
  CHECK(check.exit_code == 0);
  CHECK(check.out.find("SUCCESS: 4 rules found") != std::string::npos);
  // Each alert is shown firing and not firing there (the file's own comments say which case).
  const test::Result unit = prom_run_promtool(promtool, {"test", "rules", dir + "alerts_test.yml"});
  INFO(unit.out << unit.err);
  CHECK(unit.exit_code == 0);
  CHECK(unit.out.find("SUCCESS") != std::string::npos);
  CHECK(unit.out.find("FAILED") == std::string::npos);
}

// (No ';' or ',' in the name: ctest would split it, and run a name that matches nothing.)
TEST_CASE(
    "A real Prometheus scraping mayhem agrees with its stats and evaluates every dashboard "
    "expression",
    "[prometheus]") {
  const std::string prometheus = test::find_program("prometheus");
  const std::string promtool = test::find_program("promtool");
  if (prometheus.empty() || promtool.empty()) {
    WARN("prometheus is not installed (tools/install-deps.sh installs it): skipped");
    return;
  }
  PromMayhem mayhem = prom_start_mayhem();
  const std::string target = "127.0.0.1:" + std::to_string(mayhem.port);
  // Scraped every 500 ms (2 s in a sanitizer build, whose /metrics can take longer than 400 ms to
  // answer on a loaded machine); the alert rules evaluated as often.
  const std::string every = test::kSanitized ? "2s" : "500ms";
  const std::string timeout = test::kSanitized ? "1900ms" : "400ms";
  const double window = test::kSanitized ? 10.0 : 4.0;  // about 8 scrapes (5 when sanitized)
  // Grafana's $__rate_interval: four scrape intervals (a rate() needs two samples in its range).
  const std::string rate_interval = test::kSanitized ? "8s" : "2s";
  const PromServer prom(prometheus,
                        "global:\n"
                        "  scrape_interval: " +
                            every + "\n  scrape_timeout: " + timeout +
                            "\n  evaluation_interval: " + every +
                            "\n"
                            "rule_files:\n"
                            "  - " +
                            kPromSourceDir +
                            "/deploy/prometheus/alerts.yml\n"
                            "scrape_configs:\n"
                            "  - job_name: mayhem\n"
                            "    static_configs:\n"
                            "      - targets: ['" +
                            target + "']\n");
  INFO("prometheus log: " << prom.log_tail());
  REQUIRE(prom.running());

  // Two scrapes at least (Prometheus 2.42 applies a new target list only every 5 s: the first
  // scrape comes 5-6 s after the start).
  const std::string sel = "job=\"mayhem\"";
  REQUIRE(test::eventually([&] { return prom.scalar("count_over_time(up{" + sel + "}[1m])") >= 2; },
                           test::kSanitized ? 60s : 25s, 100ms));
  CHECK(prom.scalar("up{" + sel + "}") == 1);
  {
    const json targets = prom.call("/api/v1/targets");
    REQUIRE(targets["data"]["activeTargets"].size() == 1);
    const json& t = targets["data"]["activeTargets"][0];
    CHECK(t["health"] == "up");
    CHECK(t["lastError"] == "");
    CHECK(t["labels"]["instance"] == target);
  }

  // A 4-second window (10 s when sanitized), looked at by both: the service's own /stats at its
  // two ends, and Prometheus's samples in it (about 8 scrapes; 5 when sanitized).
  const PromStatsLook first = prom_look(mayhem.port);
  std::this_thread::sleep_until(std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::duration<double>(first.wall + window))));
  const PromStatsLook last = prom_look(mayhem.port);
  // Until Prometheus holds a scrape taken after the window's end (so the window's samples are all
  // in: a scrape is stored when it completes).
  REQUIRE(test::eventually([&] { return prom.scalar("timestamp(up{" + sel + "})") >= last.wall; },
                           30s, 50ms));
  const double window_s = last.wall - first.wall;
  const std::string range = "[" + std::to_string(std::lround(window_s * 1000)) + "ms]";
  const StatsSnapshot win = since(last.snap, first.snap);
  const double own_seconds = static_cast<double>(last.snap.uptime_ns - first.snap.uptime_ns) / 1e9;
  INFO("window " << window_s << " s (service clock " << own_seconds << " s), acked " << win.acked
                 << ", latency count " << win.latency.count);
  CHECK(prom.scalar("count_over_time(up{" + sel + "}" + range + ")", last.wall) >= 4);

  // Throughput: Prometheus's rate() of the acked counter against the service's own count over
  // its own clock. 10% allows for: the stats endpoint's 100 ms snapshot cache (a stored sample can
  // be up to 100 ms older than its timestamp: up to 100 ms / 4 s = 2.5% between the window's
  // ends), acks counted a batch at a time (about 1%), and rate()'s extrapolation from the first and
  // last scrapes in the window to its edges (exact for a steady rate; a few ms of scrape jitter).
  const double own_rate = static_cast<double>(win.acked) / own_seconds;
  const double prom_rate = prom.scalar(
      "rate(mayhem_messages_total{" + sel + ",stage=\"settle\",outcome=\"acked\"}" + range + ")",
      last.wall);
  INFO("acked/s: prometheus " << prom_rate << ", service " << own_rate << " (--rate 2000)");
  REQUIRE(std::isfinite(prom_rate));
  CHECK(own_rate > 0);
  CHECK(std::abs(prom_rate - own_rate) <= 0.10 * own_rate);

  // p99 of the end-to-end latency. The exposition's buckets are coarse (1-2.5-5 steps), so
  // histogram_quantile interpolates inside one of them. (1) The same computation on the service's
  // own window (its fine histogram counted at the exported bounds) gives the same value within 10%
  // (the windows' edges differ by up to a scrape interval; a 4 s window holds ~8,000 messages, the
  // ~80 above the p99 move it by a few per cent). (2) Prometheus's p99 lies in the exported
  // bucket holding the service's own p99 (its fine histogram's, within 3%), or, when that p99 is
  // within 10% of a bound, in the neighbouring bucket.
  httplib::Client stats("127.0.0.1", mayhem.port);
  stats.set_connection_timeout(5);
  stats.set_read_timeout(10);
  auto metrics = stats.Get("/metrics");
  REQUIRE(metrics);
  REQUIRE(metrics->status == 200);
  const test::PromParse exposition = test::parse_prometheus(metrics->body);
  std::vector<double> bounds;
  for (const auto& s : exposition.samples)
    if (s.name == "mayhem_end_to_end_latency_seconds_bucket" && s.labels.at("le") != "+Inf")
      bounds.push_back(std::stod(s.labels.at("le")));
  std::sort(bounds.begin(), bounds.end());
  REQUIRE(bounds.size() >= 10);
  std::vector<double> cumulative;
  for (double le : bounds)
    cumulative.push_back(static_cast<double>(
        win.latency.count_le(static_cast<std::uint64_t>(std::llround(le * 1e9)))));
  const double own_interp =
      prom_bucket_quantile(0.99, bounds, cumulative, static_cast<double>(win.latency.count));
  const double own_p99 = static_cast<double>(win.latency.percentile(0.99)) / 1e9;
  const double prom_p99 =
      prom.scalar("histogram_quantile(0.99, rate(mayhem_end_to_end_latency_seconds_bucket{" + sel +
                      "}" + range + "))",
                  last.wall);
  double lo = 0, hi = std::numeric_limits<double>::infinity();
  for (double b : bounds) {
    if (b < own_p99 * 0.9) lo = b;
    if (b >= own_p99 * 1.1 && b < hi) hi = b;
  }
  INFO("p99 latency: prometheus " << prom_p99 << " s, the same from the service's window "
                                  << own_interp << " s, the service's own p99 " << own_p99
                                  << " s (bucket " << lo << ".." << hi << ")");
  REQUIRE(std::isfinite(prom_p99));
  CHECK(win.latency.count > 1000);
  CHECK(std::abs(prom_p99 - own_interp) <= 0.10 * own_interp);
  CHECK(prom_p99 > lo);
  CHECK(prom_p99 <= hi);
  WARN("acked/s: prometheus " << prom_rate << ", service " << own_rate << "; p99: prometheus "
                              << prom_p99 * 1e3 << " ms, service's window at the same bounds "
                              << own_interp * 1e3 << " ms, service's own " << own_p99 * 1e3
                              << " ms");

  // The exposition, as scraped, passes promtool (stdin) with nothing to say.
  {
    test::TempDir dir;
    const std::string file = dir.file("metrics.txt");
    {
      std::ofstream out(file);
      out << metrics->body;
    }
    test::Subprocess p({"-c", "'" + promtool + "' check metrics < '" + file + "'"}, "/bin/sh");
    const test::Result r = p.wait(30s);
    INFO("promtool check metrics: " << r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out + r.err == "");
  }

  // The alert rules, evaluated every 500 ms on the live series: no evaluation error.
  {
    const json rules = prom.call("/api/v1/rules");
    REQUIRE(rules["status"] == "success");
    std::size_t n = 0;
    for (const auto& group : rules["data"]["groups"])
      for (const auto& rule : group["rules"]) {
        INFO(rule.dump());
        CHECK(rule["health"] == "ok");
        CHECK(rule.value("lastError", "") == "");
        ++n;
      }
    CHECK(n == 4);
  }

  // Every PromQL expression of the dashboard, with Grafana's variables given concrete values
  // ($__rate_interval: 4 scrape intervals, Grafana's own rule), evaluated now: success, no
  // warning, and a result, except on the broker panel (a broker run's series; this run is
  // in-process). The template variables' label_values() queries return the label they list.
  json dashboard;
  {
    std::ifstream in(kPromSourceDir + "/deploy/grafana/mayhem-dashboard.json");
    REQUIRE(in);
    dashboard = json::parse(in);
  }
  std::vector<std::pair<std::string, std::string>> exprs;
  prom_collect_exprs(dashboard["panels"], "", exprs);
  CHECK(exprs.size() >= 20);
  std::set<std::string> titles;
  for (const auto& [title, expr] : exprs) {
    std::string q = expr;
    for (const auto& [var, value] :
         std::vector<std::pair<std::string, std::string>>{{"$__rate_interval", rate_interval},
                                                          {"$__interval", every},
                                                          {"$__range", "1m"},
                                                          {"$job", "mayhem"},
                                                          {"$instance", target}})
      q = prom_replace_all(q, var, value);
    INFO("panel '" << title << "': " << q);
    REQUIRE(q.find('$') == std::string::npos);
    const json r = prom.query(q);
    INFO(r.dump().substr(0, 600));
    CHECK(r["status"] == "success");
    CHECK_FALSE(r.contains("error"));
    CHECK_FALSE(r.contains("warnings"));
    if (title != "Broker") CHECK_FALSE(r["data"]["result"].empty());
    titles.insert(title);
  }
  for (const char* main :
       {"Throughput", "End-to-end latency p50 / p99", "Stage latency p50", "Stage latency p99",
        "In flight", "Lease extensions", "Errors and retries", "CPU", "Memory"})
    CHECK(titles.count(main) == 1);
  std::size_t variables = 0;
  const std::regex label_values(R"(^label_values\((.*),\s*(\w+)\)$)");
  for (const auto& var : dashboard["templating"]["list"]) {
    if (var["type"] != "query") continue;
    const std::string text = prom_replace_all(var["query"].get<std::string>(), "$job", "mayhem");
    std::smatch m;
    INFO("variable " << var["name"] << ": " << text);
    REQUIRE(std::regex_match(text, m, label_values));
    const json r = prom.query(m[1].str());
    CHECK(r["status"] == "success");
    REQUIRE_FALSE(r["data"]["result"].empty());
    for (const auto& series : r["data"]["result"]) CHECK(series["metric"].contains(m[2].str()));
    ++variables;
  }
  CHECK(variables == 2);

  // And the service, looked at all along, shuts down cleanly.
  mayhem.proc->signal(SIGINT);
  const test::Result r = mayhem.proc->wait(30s);
  INFO(r.err);
  CHECK(r.exit_code == 0);
}
