// Issue 16, item 3: `mayhem --version` (one line per fact, exit 0), the process metrics and
// mayhem_build_info on /metrics (Prometheus client library names and types, sane values, a valid
// exposition, and `promtool check metrics` when promtool is installed), the stage histograms
// filled before anyone first looks, and /stats histograms carrying their unit and bucket bounds.
#include <httplib.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "mayhem/observe/build_info.hpp"
#include "mayhem/observe/process_stats.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/service.hpp"
#include "support/known_snapshot.hpp"
#include "support/prometheus_check.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<std::string> build_info_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

double build_info_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// `promtool check metrics` on `text`: its output and exit status, or nullopt without promtool.
std::optional<test::Result> build_info_promtool(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) return std::nullopt;
  char path[] = "/tmp/mayhem-metrics-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  test::Subprocess p({"-c", std::string("promtool check metrics < ") + path}, "/bin/sh");
  auto r = p.wait(30s);
  std::remove(path);
  return r;
}

}  // namespace

TEST_CASE("mayhem --version prints one line per fact and exits 0", "[cli][version]") {
  test::Subprocess p({"--version"});
  const auto r = p.wait(30s);
  REQUIRE(r.exit_code == 0);
  INFO(r.out << r.err);
  CHECK(r.err.empty());
  const auto lines = build_info_lines(r.out);
  const std::vector<std::string> names = {"mayhem", "revision", "compiler", "oneTBB",
                                          "spdlog", "nats.c",   "SQLite",   "libpq"};
  REQUIRE(lines.size() == names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO(lines[i]);
    REQUIRE(lines[i].rfind(names[i] + ": ", 0) == 0);
    CHECK(lines[i].size() > names[i].size() + 2);  // a value follows
  }
  CHECK(lines[0] == std::string("mayhem: ") + build_version());
  CHECK(lines[1] == std::string("revision: ") + build_revision());
  // The version is the project's (CMakeLists.txt), MAJOR.MINOR.PATCH.
  CHECK(std::count(lines[0].begin(), lines[0].end(), '.') == 2);
  CHECK(r.out == version_text());
}

TEST_CASE("/metrics carries the process metrics and mayhem_build_info, with sane values",
          "[observe][process]") {
  const double before = build_info_now_s();
  auto [log, sink] = test::make_test_logger();
  StatsServer server(
      {"127.0.0.1", 0}, [] { return test::known_snapshot(); }, log);
  REQUIRE_FALSE(server.start());
  // Burn a little CPU so the CPU time is visibly above zero (ticks are 10 ms).
  volatile std::uint64_t spin = 0;
  const auto until = std::chrono::steady_clock::now() + 50ms;
  while (std::chrono::steady_clock::now() < until) spin = spin + 1;
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::string& text = res->body;
  INFO(text.substr(text.find("# HELP process_")));
  REQUIRE(test::check_prometheus(text).empty());
  const test::PromParse prom = test::parse_prometheus(text);
  const std::vector<std::pair<std::string, std::string>> families = {
      {"process_cpu_seconds_total", "counter"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_virtual_memory_bytes", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_start_time_seconds", "gauge"},
      {"process_threads", "gauge"},
      {"mayhem_build_info", "gauge"}};
  for (const auto& [name, type] : families) {
    INFO(name);
    REQUIRE(prom.types.count(name) == 1);
    CHECK(prom.types.at(name) == type);
  }
  const auto v = [&](const char* name) { return prom.value(name, {}); };
  CHECK(v("process_cpu_seconds_total") > 0);
  CHECK(v("process_resident_memory_bytes") > 1e6);
  CHECK(v("process_virtual_memory_bytes") >= v("process_resident_memory_bytes"));
  CHECK(v("process_open_fds") > 0);
  CHECK(v("process_max_fds") >= v("process_open_fds"));
  // This test process started within the last hour, and before this test began.
  CHECK(v("process_start_time_seconds") <= before + 1);
  CHECK(v("process_start_time_seconds") > build_info_now_s() - 3600);
  CHECK(v("process_threads") >= 3);  // this thread and the endpoint's (accept + 2 workers)
  CHECK(prom.value("mayhem_build_info",
                   {{"version", build_version()}, {"revision", build_revision()}}) == 1);

  // The direct reading agrees with /proc's view of this process.
  const ProcessStats p = read_process_stats();
  REQUIRE(p.ok);
  CHECK(p.open_fds > 0);
  CHECK(p.max_fds > 0);
  CHECK(p.threads >= 3);

  if (const auto r = build_info_promtool(text)) {
    INFO("promtool: " << r->out << r->err);
    CHECK(r->exit_code == 0);
    CHECK(r->out + r->err == "");
  } else {
    WARN("promtool is not installed: `promtool check metrics` skipped");
  }
  server.stop();
}

TEST_CASE("Stage histograms fill before the first scrape and /stats histograms carry bounds",
          "[observe][process]") {
  // mayhem --messages 3000 --publish-interval 0 --latency-scale 0.01 --stats-addr 127.0.0.1:0,
  // run to completion with nobody looking, then looked at for the first time.
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Options o;
  o.messages = 3000;
  o.publish_interval = 0;
  o.latency_scale = 0.01;
  o.stats_addr = "127.0.0.1:0";
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  REQUIRE(svc.run() == 0);
  httplib::Client client("127.0.0.1", svc.stats_port());
  auto res = client.Get("/stats");  // the first look
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json j = json::parse(res->body);
  const auto check_hist = [](const json& h) {
    CHECK(h.at("unit") == "ns");
    const auto& buckets = h.at("buckets");
    const auto& bounds = h.at("bucket_bounds_ns");
    REQUIRE(bounds.size() == buckets.size());
    std::uint64_t in_buckets = 0, last_to = 0;
    for (std::size_t k = 0; k < buckets.size(); ++k) {
      const int index = buckets[k].at(0).get<int>();
      in_buckets += buckets[k].at(1).get<std::uint64_t>();
      const auto from = bounds[k].at(0).get<std::uint64_t>();
      const auto to = bounds[k].at(1).get<std::uint64_t>();
      CHECK(from == Histogram::lower_bound_of(index));
      CHECK(to == Histogram::upper_bound_of(index));
      CHECK(from <= to);
      if (k > 0) CHECK(from > last_to);
      last_to = to;
    }
    CHECK(in_buckets == h.at("count").get<std::uint64_t>());
    if (!buckets.empty()) CHECK(h.at("max_ns").get<std::uint64_t>() <= last_to);
  };
  INFO(j.dump(1).substr(0, 3000));
  CHECK(j.at("latency").at("count") == 3000);
  check_hist(j.at("latency"));
  std::uint64_t timed = 0;
  for (const auto& row : j.at("stages")) {
    INFO(row.at("stage"));
    check_hist(row.at("own"));
    check_hist(row.at("total"));
    // Nobody had looked: only the bodies in the collector's time slices were timed.
    CHECK(row.at("own").at("count").get<std::uint64_t>() <= row.at("calls").get<std::uint64_t>());
    timed += row.at("own").at("count").get<std::uint64_t>();
  }
  CHECK(timed > 0);
  // What mayhem top reads back is unchanged by the added fields.
  const StatsSnapshot s = j.get<StatsSnapshot>();
  CHECK(s.latency.count == 3000);
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(test::check_prometheus(metrics->body).empty());
  // The first slice starts with the first body, publish's: its histogram is never empty.
  CHECK(metrics->body.find("mayhem_stage_own_seconds_count{stage=\"publish\"} 0\n") ==
        std::string::npos);
  CHECK(metrics->body.find("mayhem_stage_own_seconds_count{stage=\"publish\"}") !=
        std::string::npos);
}
