#include "mayhem/summary.hpp"

namespace mayhem {

nlohmann::json to_json(const Summary& s) {
  nlohmann::json j = {
      {"log_overflow", s.log_overflow},
      {"wall_s", s.wall_s},
      {"msgs_per_s", s.msgs_per_s},
      {"cpu_s", s.cpu_s},
      {"max_rss_kb", s.max_rss_kb},
      {"latency_ms",
       {{"p50", s.latency_p50_ms}, {"p99", s.latency_p99_ms}, {"max", s.latency_max_ms}}},
      {"io_model", s.io_model},
      {"threads", s.threads},
      {"exit_code", s.exit_code},
      {"impl", "mayhem"},
      {"source", to_string(s.scope)},
      {"store", {{"kind", s.store}}},
  };
  numbers_to_json(s, j);
  return j;
}

}  // namespace mayhem
