#include "mayhem/summary.hpp"

namespace mayhem {

nlohmann::json to_json(const Summary& s) {
  return nlohmann::json{
      {"published", s.published},
      {"acked", s.acked},
      {"nacked", s.nacked},
      {"ack_unconfirmed", s.ack_unconfirmed},
      {"saved", s.saved},
      {"save_failed", s.save_failed},
      {"restarted", s.restarted},
      {"restart_failed", s.restart_failed},
      {"restart_retries", s.restart_retries},
      {"extensions", s.extensions},
      {"late_extensions", s.late_extensions},
      {"extension_failed", s.extension_failed},
      {"peak_in_flight", s.peak_in_flight},
      {"peak_backlog", s.peak_backlog},
      {"log_dropped", s.log_dropped},
      {"log_overflow", s.log_overflow},
      {"malformed", s.malformed},
      {"redelivered", s.redelivered},
      {"wall_s", s.wall_s},
      {"msgs_per_s", s.msgs_per_s},
      {"cpu_s", s.cpu_s},
      {"max_rss_kb", s.max_rss_kb},
      {"pool_messages", s.pool_messages},
      {"latency_ms",
       {{"p50", s.latency_p50_ms}, {"p99", s.latency_p99_ms}, {"max", s.latency_max_ms}}},
      {"io_model", s.io_model},
      {"threads", s.threads},
      {"exit_code", s.exit_code},
      {"impl", "mayhem"},
      {"store",
       {{"kind", s.store},
        {"rows_inserted", s.store_rows},
        {"duplicates", s.store_duplicates},
        {"write_failures", s.store_write_failures},
        {"transactions", s.store_transactions}}},
  };
}

}  // namespace mayhem
