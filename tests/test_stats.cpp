// The stats snapshot: histogram data (percentiles, buckets, differences), the JSON form and
// `since`, and the Prometheus text (checked by a small format checker, tests/support).
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "mayhem/observe/stats.hpp"
#include "support/known_snapshot.hpp"
#include "support/prometheus_check.hpp"

using namespace mayhem;
using nlohmann::json;
using test::known_snapshot;

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
