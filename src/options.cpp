#include "mayhem/options.hpp"

#include <fmt/format.h>

#include <cmath>
#include <thread>
#include <utility>

#include "mayhem/flags.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/store/store.hpp"

namespace mayhem {

std::uint32_t default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

namespace {
// JetStream stream and consumer names: no '.', '*', '>', path separators or whitespace.
bool valid_js_name(const std::string& s) {
  if (s.empty() || s.size() > 200) return false;
  for (const char c : s)
    if (c <= ' ' || c > '~' || c == '.' || c == '*' || c == '>' || c == '/' || c == '\\')
      return false;
  return true;
}
bool valid_subject(const std::string& s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != std::string::npos)
    return false;
  for (const char c : s)
    if (c <= ' ' || c > '~') return false;
  return true;
}
}  // namespace

bool valid_nats_urls(const std::string& list) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    std::string one = list.substr(start, comma == std::string::npos ? comma : comma - start);
    one.erase(0, one.find_first_not_of(' '));
    if (one.rfind("nats://", 0) != 0 || one.size() == 7) return false;
    if (comma == std::string::npos) return true;
    start = comma + 1;
  }
}

std::optional<std::string> validate(const Options& o) {
  // Every number against its range in the one table (src/flags.cpp), as the CLI checks them.
  const std::pair<const char*, double> numbers[] = {
      {"--messages", static_cast<double>(o.messages)},
      {"--publish-interval", o.publish_interval},
      {"--rate", o.rate},
      {"--latency-scale", o.latency_scale},
      {"--fail-rate", o.fail_rate},
      {"--restart-retries", o.restart_retries},
      {"--restart-backoff", o.restart_backoff},
      {"--io-threads", o.io_threads},
      {"--store-retry-for", o.store_retry_for},
      {"--extend-interval", o.extend_interval},
      {"--ack-deadline", o.ack_deadline},
      {"--max-in-flight", static_cast<double>(o.max_in_flight)},
      {"--queue-capacity", static_cast<double>(o.queue_capacity)},
      {"--batch-size", o.batch_size},
      {"--threads", o.threads},
      {"--save-concurrency", o.save_concurrency},
      {"--restart-concurrency", o.restart_concurrency},
      {"--log-queue", o.log_queue},
      {"--log-buffer", o.log_buffer},
      {"--shutdown-timeout", o.shutdown_timeout},
      {"--trace-sample", o.trace_sample},
      {"--slow-task-ms", o.slow_task_ms},
      {"--stream-replicas", o.stream_replicas},
      {"--nats-wait", o.nats_wait},
  };
  for (const auto& [flag, value] : numbers)
    if (auto why = check_value(flag_range(flag), value)) return fmt::format("{}: {}", flag, *why);
  if (std::string err; !o.stats_addr.empty() && !parse_stats_address(o.stats_addr, err)) return err;
  if (!o.source.empty() && !valid_nats_urls(o.source))
    return fmt::format(
        "--source must be nats://HOST:PORT or a comma-separated list of them (got '{}')", o.source);
  if (o.on_failure == OnFailure::kNack && o.source.empty())
    return std::string(
        "--on-failure nack needs a broker --source (the in-process pub/sub does not redeliver)");
  if (!valid_js_name(o.stream))
    return fmt::format("--stream must be a JetStream name without . * > / or spaces (got '{}')",
                       o.stream);
  if (!valid_js_name(o.durable))
    return fmt::format("--durable must be a JetStream name without . * > / or spaces (got '{}')",
                       o.durable);
  if (!valid_subject(o.subject))
    return fmt::format("--subject must be a NATS subject like a.b.c (got '{}')", o.subject);
  if (std::string err; !parse_store_spec(o.store, err)) return err;
  if (o.profile_sort != "tottime" && o.profile_sort != "cumtime" && o.profile_sort != "ncalls" &&
      o.profile_sort != "name")
    return fmt::format("--profile-sort must be tottime, cumtime, ncalls or name (got '{}')",
                       o.profile_sort);
  return std::nullopt;
}

const char* to_string(IoModel m) {
  return m == IoModel::kAsync ? "async" : "blocking";
}
const char* to_string(LogMode m) {
  return m == LogMode::kSync ? "sync" : "async";
}
const char* to_string(LogFormat f) {
  return f == LogFormat::kReference ? "reference" : f == LogFormat::kIso ? "iso" : "json";
}
const char* to_string(LogOverflow p) {
  return p == LogOverflow::kBlock ? "block" : "drop-oldest";
}
const char* to_string(OnFailure f) {
  return f == OnFailure::kAck ? "ack" : "nack";
}

}  // namespace mayhem
