// What a run did, as numbers: the run contract's JSON summary (one object on one stdout line) and
// the human-readable lines logged at the end of a run. Its counters and gauges are the service's
// numbers table (mayhem/observe/numbers.hpp: every entry the run's source reports); the rest are
// the run's own results (wall and CPU time, rate, latency percentiles, memory, settings).
// Use: `Summary s = service.summary(); std::cout << to_json(s).dump() << '\n';`
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

#include "mayhem/observe/numbers.hpp"

namespace mayhem {

struct Summary : Numbers {
  const char* log_overflow = "";
  double wall_s = 0, msgs_per_s = 0, cpu_s = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0, latency_max_ms = 0;
  std::uint64_t max_rss_kb = 0;  // the process's peak resident memory at the end of the run
  int exit_code = 0;
  const char* io_model = "";
  std::uint32_t threads = 0;
  const char* store = "memory";  // --store kind (its counters are the numbers' store.*)
};

nlohmann::json to_json(const Summary& s);

}  // namespace mayhem
