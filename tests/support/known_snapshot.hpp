// A StatsSnapshot with round numbers, as a service 10 s into a run would report it: the fixed
// input of the snapshot, endpoint and `mayhem top` tests (test_stats.cpp, test_stats_server.cpp,
// test_top.cpp).
// Use: `const StatsSnapshot s = test::known_snapshot();`
#pragma once

#include <cstdint>
#include <initializer_list>

#include "mayhem/observe/stats.hpp"

namespace mayhem::test {

inline HistogramData known_hist(std::initializer_list<std::uint64_t> values) {
  Histogram h;
  for (auto v : values) h.record(v);
  return HistogramData::of(h);
}

// A snapshot with round numbers, as a service 10 s into a run would report it.
inline StatsSnapshot known_snapshot() {
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
  s.restart_retries = 300;
  s.extensions = 6000;
  s.in_flight = 890;
  s.max_in_flight = 100000;
  s.backlog = 100;
  s.queue_capacity = 16384;
  s.leased_lots = 7;
  s.log_async = true;
  s.log_queue_depth = 3;
  s.latency = known_hist({500'000'000, 600'000'000, 700'000'000});
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
  pub.own = known_hist({20, 20});  // exact buckets below 32 ns
  pub.total = pub.own;
  auto& save = s.stages[2];
  save.active = 1;
  save.in_flight = 600;
  save.queued = 0;
  save.calls = 40;
  save.items = 4900;
  save.own = known_hist({10, 10});
  save.total = known_hist({30, 30});
  auto& saved = s.stages[3];
  saved.calls = 30;
  saved.errors = 1000;
  saved.own = known_hist({20});
  saved.total = saved.own;
  return s;
}

}  // namespace mayhem::test
