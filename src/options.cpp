#include "mayhem/options.hpp"

#include <fmt/format.h>

#include <cmath>
#include <thread>

#include "mayhem/store/store.hpp"

namespace mayhem {

std::uint32_t default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

namespace {
bool finite_non_negative(double v) {
  return std::isfinite(v) && v >= 0;
}
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
  if (!finite_non_negative(o.publish_interval))
    return fmt::format("--publish-interval must be >= 0 seconds (got {})", o.publish_interval);
  if (!finite_non_negative(o.rate)) return fmt::format("--rate must be >= 0 (got {})", o.rate);
  if (!finite_non_negative(o.latency_scale))
    return fmt::format("--latency-scale must be >= 0 (got {})", o.latency_scale);
  if (!(o.fail_rate >= 0 && o.fail_rate <= 1))
    return fmt::format("--fail-rate must be within [0, 1] (got {})", o.fail_rate);
  if (o.restart_retries > 16)
    return fmt::format("--restart-retries must be <= 16 (got {})", o.restart_retries);
  if (!finite_non_negative(o.restart_backoff))
    return fmt::format("--restart-backoff must be >= 0 seconds (got {})", o.restart_backoff);
  if (!(std::isfinite(o.extend_interval) && o.extend_interval > 0))
    return fmt::format("--extend-interval must be > 0 seconds (got {})", o.extend_interval);
  if (!(std::isfinite(o.ack_deadline) && o.ack_deadline > 0))
    return fmt::format("--ack-deadline must be > 0 seconds (got {})", o.ack_deadline);
  if (o.max_in_flight == 0) return std::string("--max-in-flight must be at least 1");
  if (o.queue_capacity == 0) return std::string("--queue-capacity must be at least 1");
  if (o.batch_size == 0 || o.batch_size > 128)
    return fmt::format("--batch-size must be within [1, 128] (got {})", o.batch_size);
  if (o.threads == 0 || o.threads > 1024)
    return fmt::format("--threads must be within [1, 1024] (got {})", o.threads);
  if (o.io_threads == 0 || o.io_threads > 4096)
    return fmt::format("--io-threads must be within [1, 4096] (got {})", o.io_threads);
  if (o.save_concurrency > 4096 || o.restart_concurrency > 4096)
    return std::string("--save-concurrency and --restart-concurrency must be <= 4096");
  if (o.log_queue == 0) return std::string("--log-queue must be at least 1");
  if (o.log_buffer > 64u * 1024 * 1024) return std::string("--log-buffer must be at most 67108864");
  if (!(std::isfinite(o.shutdown_timeout) && o.shutdown_timeout > 0))
    return fmt::format("--shutdown-timeout must be > 0 seconds (got {})", o.shutdown_timeout);
  if (!o.source.empty() && !valid_nats_urls(o.source))
    return fmt::format(
        "--source must be nats://HOST:PORT or a comma-separated list of them (got '{}')", o.source);
  if (o.on_failure == OnFailure::kNack && o.source.empty())
    return std::string(
        "--on-failure nack needs a broker --source (the in-process pub/sub does not redeliver)");
  if (!valid_js_name(o.stream))
    return fmt::format("--stream must be a JetStream name without . * > / or spaces (got '{}')",
                       o.stream);
  if (o.stream_replicas == 0 || o.stream_replicas > 5)
    return fmt::format(
        "--stream-replicas must be within [1, 5] (JetStream keeps at most 5 copies; got {})",
        o.stream_replicas);
  if (!(std::isfinite(o.nats_wait) && o.nats_wait >= 0 && o.nats_wait <= 3600))
    return fmt::format("--nats-wait must be within [0, 3600] seconds (got {})", o.nats_wait);
  if (!valid_js_name(o.durable))
    return fmt::format("--durable must be a JetStream name without . * > / or spaces (got '{}')",
                       o.durable);
  if (!valid_subject(o.subject))
    return fmt::format("--subject must be a NATS subject like a.b.c (got '{}')", o.subject);
  if (std::string err; !parse_store_spec(o.store, err)) return err;
  if (!finite_non_negative(o.store_retry_for) || o.store_retry_for > 86400)
    return fmt::format("--store-retry-for must be within [0, 86400] seconds (got {})",
                       o.store_retry_for);
  if (o.profile_sort != "tottime" && o.profile_sort != "cumtime" && o.profile_sort != "ncalls" &&
      o.profile_sort != "name")
    return fmt::format("--profile-sort must be tottime, cumtime, ncalls or name (got '{}')",
                       o.profile_sort);
  if (!(std::isfinite(o.trace_sample) && o.trace_sample > 0 && o.trace_sample <= 1))
    return fmt::format("--trace-sample must be within (0, 1] (got {})", o.trace_sample);
  if (!finite_non_negative(o.slow_task_ms))
    return fmt::format("--slow-task-ms must be >= 0 (got {})", o.slow_task_ms);
  return std::nullopt;
}

const char* to_string(IoModel m) {
  return m == IoModel::kAsync ? "async" : "blocking";
}
const char* to_string(LogMode m) {
  return m == LogMode::kSync ? "sync" : "async";
}
const char* to_string(LogOverflow p) {
  return p == LogOverflow::kBlock ? "block" : "drop-oldest";
}
const char* to_string(OnFailure f) {
  return f == OnFailure::kAck ? "ack" : "nack";
}

}  // namespace mayhem
