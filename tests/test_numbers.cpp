// The numbers table (mayhem/observe/numbers.hpp) against every output generated from it: one line
// per number (unique member, series and JSON path; help and unit; the family's Prometheus type
// matches the kind), and, for one run to completion (in-process, then from a NATS broker), each
// number the run's source reports shows the same value in the JSON summary, `/stats`, `/metrics`
// and `mayhem top`'s NUMBERS block, while the numbers of the other source are in none of them.
#include <httplib.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mayhem/cli/top.hpp"
#include "mayhem/observe/numbers.hpp"
#include "mayhem/observe/stats.hpp"
#include "mayhem/service.hpp"
#include "mayhem/summary.hpp"
#include "support/nats_server.hpp"
#include "support/prometheus_check.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// The Prometheus series a number is written as: `family` or `family{labels}`.
std::string numbers_series_of(const NumberDef& d) {
  const std::string family = kFamilies[static_cast<std::size_t>(d.family)].name;
  return d.labels[0] == '\0' ? family : family + "{" + d.labels + "}";
}

// Every sample line of a /metrics text: series (name and label set as written) -> value text.
std::map<std::string, std::string> numbers_prom_samples(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    REQUIRE(space != std::string::npos);
    const std::string series = line.substr(0, space);
    INFO(line);
    REQUIRE(out.emplace(series, line.substr(space + 1)).second);  // each series once
  }
  return out;
}

// `mayhem top`'s NUMBERS block, rendered the way `mayhem top` does it (one /stats answer, no
// reset: counters since the start): shown name -> shown value.
std::map<std::string, std::string> numbers_top_block(const json& stats) {
  cli::TopModel model("127.0.0.1:test");
  model.update(stats.get<StatsSnapshot>());
  const std::string screen = cli::render_top(model.view());
  INFO(screen);
  std::istringstream in(screen);
  std::string line;
  bool inside = false, seen = false;
  std::map<std::string, std::string> out;
  while (std::getline(in, line)) {
    if (!inside) {
      inside = line == "NUMBERS";
      seen = seen || inside;
      continue;
    }
    if (line.empty()) break;
    std::istringstream words(line);
    std::string name, value;
    while (words >> name) {
      REQUIRE(words >> value);
      REQUIRE(out.emplace(name, value).second);
    }
  }
  REQUIRE(seen);
  return out;
}

// Only the table's numbers of a summary, as JSON.
json numbers_json_of(const Summary& s) {
  json j = json::object();
  numbers_to_json(s, j);
  return j;
}

// The JSON object of /stats that holds a number of this kind.
const json& numbers_stats_group(const json& stats, const NumberDef& d) {
  return stats.at(d.kind == NumberKind::kCounter ? "counters" : "gauges");
}

// What the stats endpoint serves now: /stats as JSON and /metrics as text.
std::pair<json, std::string> numbers_fetch(std::uint16_t port) {
  httplib::Client client("127.0.0.1", port);
  auto stats = client.Get("/stats");
  REQUIRE(stats);
  REQUIRE(stats->status == 200);
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  REQUIRE(metrics->status == 200);
  return {json::parse(stats->body), metrics->body};
}

// Every number `scope` reports is in the summary S, /stats T, /metrics P and top's block with the
// same value; every number it does not report is in none of them. Returns the values (by name).
std::map<std::string, std::uint64_t> numbers_agree(NumberScope scope, const json& summary,
                                                   const json& stats, const std::string& metrics) {
  {
    INFO(metrics.substr(0, 4000));
    REQUIRE(test::check_prometheus(metrics).empty());
  }
  const auto prom = numbers_prom_samples(metrics);
  const auto top = numbers_top_block(stats);
  CHECK(summary.at("source") == to_string(scope));
  CHECK(stats.at("source") == to_string(scope));
  std::map<std::string, std::uint64_t> values;
  std::size_t reported = 0;
  for (const NumberDef& d : kNumberDefs) {
    INFO("number " << d.name << " (" << d.json_path << ", " << numbers_series_of(d) << ")");
    const json* in_summary = find_number(summary, d);
    const json* in_stats = find_number(numbers_stats_group(stats, d), d);
    const json* in_other_group =
        find_number(stats.at(d.kind == NumberKind::kCounter ? "gauges" : "counters"), d);
    const auto in_prom = prom.find(numbers_series_of(d));
    const auto in_top = top.find(d.name);
    CHECK(in_other_group == nullptr);
    if (!d.reported_in(scope)) {
      CHECK(in_summary == nullptr);
      CHECK(in_stats == nullptr);
      CHECK(in_prom == prom.end());
      CHECK(in_top == top.end());
      continue;
    }
    ++reported;
    REQUIRE(in_summary != nullptr);
    REQUIRE(in_summary->is_number_unsigned());
    const auto v = in_summary->get<std::uint64_t>();
    values[d.name] = v;
    REQUIRE(in_stats != nullptr);
    CHECK(*in_stats == *in_summary);
    REQUIRE(in_prom != prom.end());
    CHECK(in_prom->second == std::to_string(v));
    REQUIRE(in_top != top.end());
    CHECK(in_top->second == std::to_string(v));
  }
  // Top shows the reported numbers and nothing else.
  CHECK(top.size() == reported);
  return values;
}

// Runs `svc` to completion, then reads its numbers at exit from the summary, /stats and /metrics
// (the endpoint keeps serving the run's final numbers after run()) and checks they agree.
// The service's own families of a /metrics text: without the process_* ones (CPU seconds,
// resident memory, open fds), which are live facts of the process and move between two requests.
std::string numbers_own_families(const std::string& metrics) {
  std::string out;
  std::size_t at = 0;
  while (at < metrics.size()) {
    std::size_t end = metrics.find('\n', at);
    end = end == std::string::npos ? metrics.size() : end + 1;
    const std::string_view line(metrics.data() + at, end - at);
    if (line.rfind("process_", 0) != 0 && line.rfind("# HELP process_", 0) != 0 &&
        line.rfind("# TYPE process_", 0) != 0)
      out.append(line);
    at = end;
  }
  return out;
}

struct NumbersAtExit {
  std::uint16_t port;
  json summary_numbers;
  std::string metrics;
  std::map<std::string, std::uint64_t> values;
};
NumbersAtExit numbers_run_to_exit(Service& svc, NumberScope scope) {
  REQUIRE(svc.run() == 0);
  NumbersAtExit r;
  r.port = svc.stats_port();
  REQUIRE(r.port != 0);
  const Summary first = svc.summary();
  r.summary_numbers = numbers_json_of(first);
  auto [stats, metrics] = numbers_fetch(r.port);
  r.values = numbers_agree(scope, to_json(first), stats, metrics);
  r.metrics = std::move(metrics);
  return r;
}

}  // namespace

TEST_CASE("Numbers: one line per number, each series and JSON path once, typed by its kind",
          "[numbers]") {
  std::set<std::string> members, series, paths;
  for (const NumberDef& d : kNumberDefs) {
    INFO(d.name);
    CHECK(members.insert(d.name).second);
    CHECK(series.insert(numbers_series_of(d)).second);
    CHECK(paths.insert(d.json_path).second);
    CHECK(std::string(d.help).size() > 0);
    CHECK(std::string(d.unit).size() > 0);
    CHECK(std::string(d.writer).size() > 0);
    const auto family = static_cast<std::size_t>(d.family);
    REQUIRE(family < static_cast<std::size_t>(NumberFamily::kCount));
    CHECK(std::string(kFamilies[family].type) ==
          (d.kind == NumberKind::kCounter ? "counter" : "gauge"));
  }
  std::set<std::string> families;
  for (const FamilyDef& f : kFamilies) {
    INFO(f.name);
    CHECK(families.insert(f.name).second);
    CHECK(std::string(f.help).size() > 0);
  }
  CHECK(members.size() == kNumberCount);
}

TEST_CASE("Numbers: each number lands at its own place in every output, for either source",
          "[numbers]") {
  // A distinct value per number: two numbers written to one place, or one read from another's
  // member, would show a wrong value somewhere.
  for (const NumberScope scope : {NumberScope::kInProcess, NumberScope::kBroker}) {
    INFO(to_string(scope));
    Summary s;
    s.scope = scope;
    StatsSnapshot t;
    t.scope = scope;
    std::uint64_t next = 1001;
    for (const NumberDef& d : kNumberDefs) {
      s.*d.member = next;
      t.*d.member = next;
      next += 1000;
    }
    const json summary = to_json(s);
    const json stats = t;
    const auto values = numbers_agree(scope, summary, stats, render_prometheus(t));
    next = 1001;
    for (const NumberDef& d : kNumberDefs) {
      if (d.reported_in(scope)) CHECK(values.at(d.name) == next);
      next += 1000;
    }
    // And /stats reads back into the same numbers.
    const StatsSnapshot back = stats.get<StatsSnapshot>();
    CHECK(back.scope == scope);
    for (const NumberDef& d : kNumberDefs)
      CHECK(back.*d.member == (d.reported_in(scope) ? t.*d.member : 0));
  }
}

TEST_CASE("Numbers: an in-process run's summary, /stats, /metrics and top agree at exit",
          "[numbers]") {
  // mayhem --messages 20000 --publish-interval 0 --latency-scale 0.01 --summary-json
  //        --stats-addr 127.0.0.1:PORT
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Options o;
  o.messages = 20000;
  o.publish_interval = 0;
  o.latency_scale = 0.01;
  o.stats_addr = "127.0.0.1:0";
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  const NumbersAtExit r = numbers_run_to_exit(svc, NumberScope::kInProcess);
  const auto& v = r.values;
  // Not all zeros: the run's own numbers.
  CHECK(v.at("published") == 20000);
  CHECK(v.at("consumed") == 20000);
  CHECK(v.at("acked") == 20000);
  CHECK(v.at("acked") + v.at("nacked") == v.at("consumed"));
  CHECK(v.at("saved") + v.at("save_failed") == 20000);
  CHECK(v.at("saved") > 0);
  CHECK(v.at("extensions") >= 1);
  CHECK(v.at("in_flight") == 0);
  CHECK(v.at("backlog") == 0);
  CHECK(v.at("peak_backlog") > 0);
  CHECK(v.at("queue_capacity") == o.queue_capacity);
  CHECK(v.at("max_in_flight") == o.max_in_flight);
  CHECK(v.at("pool_messages") > 0);
  // A second look at exit sees the same numbers (the summary's other keys, such as the process's
  // peak memory, may move).
  CHECK(numbers_json_of(svc.summary()) == r.summary_numbers);
  CHECK(numbers_own_families(numbers_fetch(r.port).second) == numbers_own_families(r.metrics));
}

TEST_CASE(
    "Numbers: a broker run reports its own numbers, the same everywhere, and no in-process "
    "one",
    "[numbers][nats]") {
  test::NatsServer srv;
  constexpr std::uint64_t kMessages = 500;
  {
    test::Subprocess pub({"publish", "--nats", srv.url(), "--messages", std::to_string(kMessages),
                          "--log-level", "warning"});
    const test::Result r = pub.wait(30s);
    INFO(r.err);
    REQUIRE_FALSE(r.timed_out);
    REQUIRE(r.exit_code == 0);
  }
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Options o;
  o.source = srv.url();
  o.messages = kMessages;
  o.latency_scale = 0.001;
  o.stats_addr = "127.0.0.1:0";
  Service svc(o, Service::Deps{log, nullptr, false, {}});
  const NumbersAtExit r = numbers_run_to_exit(svc, NumberScope::kBroker);
  const auto& v = r.values;
  CHECK(v.at("received") == kMessages);
  CHECK(v.at("consumed") == kMessages);
  CHECK(v.at("acked") + v.at("ack_unconfirmed") + v.at("nacked") == kMessages);
  CHECK(v.at("acked") > 0);
  CHECK(v.at("malformed") == 0);
  CHECK(v.count("published") == 0);
  CHECK(v.count("peak_backlog") == 0);
  CHECK(v.count("queue_capacity") == 0);
  CHECK(numbers_json_of(svc.summary()) == r.summary_numbers);
  CHECK(numbers_own_families(numbers_fetch(r.port).second) == numbers_own_families(r.metrics));
}
