// What a run did, as numbers: the run contract's JSON summary (one object on one stdout line) and
// the human-readable lines logged at the end of a run.
// Use: `Summary s = service.summary(); std::cout << to_json(s).dump() << '\n';`
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

namespace mayhem {

struct Summary {
  std::uint64_t published = 0, acked = 0, nacked = 0;
  // Broker source: acks sent that the server never confirmed (no successful flush after them;
  // e.g. it went away before the end). Not in `acked`: published == acked + nacked +
  // ack_unconfirmed. Always 0 with the in-process pub/sub.
  std::uint64_t ack_unconfirmed = 0;
  std::uint64_t saved = 0, save_failed = 0;
  std::uint64_t restarted = 0, restart_failed = 0, restart_retries = 0;
  std::uint64_t extensions = 0, late_extensions = 0, extension_failed = 0;
  std::uint64_t peak_in_flight = 0;
  std::uint64_t peak_backlog = 0;  // most messages waiting in the in-process pub/sub at once
  std::uint64_t log_dropped = 0;   // async log lines dropped on a full queue (--log-overflow)
  const char* log_overflow = "";
  std::uint64_t malformed = 0, redelivered = 0;  // broker source: terminated, delivered again
  double wall_s = 0, msgs_per_s = 0, cpu_s = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0, latency_max_ms = 0;
  std::uint64_t max_rss_kb = 0;
  std::uint64_t pool_messages = 0;  // messages the pool ever allocated (memory high-water mark)
  int exit_code = 0;
  const char* io_model = "";
  std::uint32_t threads = 0;
  const char* store = "memory";  // --store kind; the counters below are the sqlite store's
  std::uint64_t store_rows = 0, store_duplicates = 0, store_write_failures = 0;
  std::uint64_t store_transactions = 0;
};

nlohmann::json to_json(const Summary& s);

}  // namespace mayhem
