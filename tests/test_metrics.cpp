#include <catch2/catch.hpp>

#include <thread>

#include "mayhem/metrics.hpp"

using namespace mayhem;

TEST_CASE("Histogram buckets cover every value with bounded relative error", "[metrics]") {
  for (std::uint64_t v :
       {0ULL, 1ULL, 31ULL, 32ULL, 33ULL, 1000ULL, 123456789ULL, 1ULL << 40, (1ULL << 62) + 12345}) {
    const int i = Histogram::index_of(v);
    REQUIRE(i >= 0);
    REQUIRE(i < Histogram::kBuckets);
    CHECK(Histogram::lower_bound_of(i) <= v);
    CHECK(Histogram::upper_bound_of(i) >= v);
    const double width =
        static_cast<double>(Histogram::upper_bound_of(i) - Histogram::lower_bound_of(i));
    CHECK(width <= static_cast<double>(v) / 32.0 + 1);
  }
  // Consecutive buckets tile the number line.
  for (int i = 0; i + 1 < 400; ++i)
    REQUIRE(Histogram::upper_bound_of(i) + 1 == Histogram::lower_bound_of(i + 1));
}

TEST_CASE("Histogram percentiles are nearest-rank within one bucket", "[metrics]") {
  Histogram h;
  for (std::uint64_t v = 1; v <= 1000; ++v) h.record(v * 1000);  // 1us .. 1ms
  CHECK(h.count() == 1000);
  CHECK(h.max() == 1'000'000);
  const auto p50 = h.percentile(0.5);
  CHECK(p50 >= 500'000);
  CHECK(p50 <= 500'000 * 1.04);
  const auto p99 = h.percentile(0.99);
  CHECK(p99 >= 990'000);
  CHECK(p99 <= 1'000'000);
  CHECK(h.percentile(1.0) == 1'000'000);
  Histogram empty;
  CHECK(empty.percentile(0.5) == 0);
}

TEST_CASE("Metrics merge the per-thread latency histograms", "[metrics]") {
  Metrics m;
  std::thread a([&] {
    for (int i = 0; i < 1000; ++i) m.latency.local().record(10);
  });
  std::thread b([&] {
    for (int i = 0; i < 3000; ++i) m.latency.local().record(20);
  });
  a.join();
  b.join();
  const Histogram h = m.latency_merged();
  CHECK(h.count() == 4000);
  CHECK(h.sum() == 1000 * 10 + 3000 * 20);
  CHECK(h.percentile(0.25) == 10);
  CHECK(h.percentile(0.26) == 20);
}
