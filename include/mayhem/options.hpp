// Every knob of the service in one struct, with its default in one place and one validation
// function. The CLI (src/cli/run.cpp) binds flags straight to these fields; tests build an
// `Options` directly. Use: `Options o; o.messages = 100; if (auto err = validate(o)) ...`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace mayhem {

enum class IoModel { kAsync, kBlocking };
enum class LogMode { kSync, kAsync };
// Async logger with a full queue: callers wait (no line lost) or the oldest queued line is dropped
// (callers never wait; drops are counted: Summary::log_dropped).
enum class LogOverflow { kBlock, kDropOldest };
// The log line's format (log/format.hpp): the reference's, ISO 8601 time with date and zone, or
// one JSON object a line.
enum class LogFormat { kReference, kIso, kJson };
enum class OnFailure { kAck, kNack };

std::uint32_t default_threads();  // the machine's core count (at least 1)

struct Options {
  // --- run contract -------------------------------------------------------------------------
  std::uint64_t messages = 0;  // publish N then finish when all are settled; 0 = until signal
  double publish_interval =
      1.0;                    // random pause of uniform(0,1) x this between messages; 0 = flat out
  double rate = 0.0;          // fixed msgs/s open loop (overrides publish_interval); 0 = off
  std::uint64_t seed = 0;     // random choices; 0 = pick one (logged)
  bool summary_json = false;  // print one JSON object on stdout at exit

  // --- simulated I/O (the reference's mocks) -----------------------------------------------
  double latency_scale = 1.0;         // each I/O call takes uniform(0,1) x this seconds
  double fail_rate = 0.25;            // probability that a save or a restart attempt fails
  std::uint32_t restart_retries = 3;  // retries after a failed restart (attempts = 1 + this)
  double restart_backoff = 0.1;       // backoff before retry k: this x 2^(k-1) x latency_scale s

  // --- leases ---------------------------------------------------------------------------------
  double extend_interval = 2.0;  // the lease thread extends every in-flight message this often
  double ack_deadline = 3.0;     // ... by this much

  // --- flow control -------------------------------------------------------------------------
  std::uint64_t max_in_flight = 100'000;  // messages being worked on; consume waits beyond it
  // In-process pub/sub backlog; publish waits beyond it. Small on purpose: every message waiting
  // here is one more in the pool's working set (the measurements behind the default:
  // docs/ARCHITECTURE.md, the pub/sub). Open-loop runs at a high --rate and real latency raise it.
  std::uint64_t queue_capacity = 2'048;
  std::uint32_t batch_size = 128;  // messages per hand-off between nodes (1..128)

  // --- threads --------------------------------------------------------------------------------
  std::uint32_t threads = default_threads();  // TBB worker threads (default: one per core)
  std::uint32_t save_concurrency = 0;     // TBB tasks running the save stage at once; 0 = unlimited
  std::uint32_t restart_concurrency = 0;  // same for restart
  IoModel io_model = IoModel::kAsync;     // async: timer-completed I/O; blocking: a thread pool
  std::uint32_t io_threads = 64;          // blocking model: threads that really block

  // --- logging and shutdown -----------------------------------------------------------------
  std::string log_level = "info";  // trace|debug|info|warning|error|critical|off
  std::string log_file;            // empty = stderr
  LogMode log_mode = LogMode::kSync;
  std::uint32_t log_queue = 8192;  // async logger queue (lines)
  // Async logger, queue full: wait, or drop the oldest line and count it.
  LogOverflow log_overflow = LogOverflow::kBlock;
  LogFormat log_format = LogFormat::kReference;
  // --log-file: each logging thread's block of formatted lines, merged in timestamp order into the
  // file by one writer thread (log/ordered_file_sink.hpp); 0 = one shared stdio buffer under a
  // lock per line (log/locked_file_sink.hpp).
  std::uint32_t log_buffer = 64 * 1024;
  double shutdown_timeout = 10.0;  // graceful shutdown gives up waiting after this long

  // --- broker source (docs/NATS.md) -----------------------------------------------------------
  std::string source;             // empty: the in-process pub/sub; "nats://HOST:PORT"
  std::string stream = "MAYHEM";  // JetStream stream (created when missing)
  std::string subject = "mayhem.restart";
  std::string durable = "mayhem";  // durable pull consumer every process binds to
  // Copies of the stream a new stream gets (1..5; at most the servers in the cluster). The
  // consumer follows the stream. An existing stream is used as it is.
  std::uint32_t stream_replicas = 1;
  // Seconds start-up keeps retrying JetStream look-ups that time out or find no leader (a cluster
  // electing one) before it gives up (exit 2).
  double nats_wait = 30.0;
  // A message whose restart failed after every retry: ack (the reference's behaviour: the failure
  // is logged and counted) or nack (redelivered for another try).
  OnFailure on_failure = OnFailure::kAck;
  // --- store ------------------------------------------------------------------------------------
  // memory: the reference's simulated save; sqlite:PATH, postgres://...: a real database
  // (store/store.hpp)
  std::string store = "memory";
  // A real database's transient failures (lost connection, server restarting, lock timeout,
  // deadlock) are retried this long, with backoff and reconnects; then those saves fail (nacked).
  double store_retry_for = 30.0;
  // A real database writes everything queued in one transaction (group commit); false: one
  // transaction per save, to measure group commit against (bench).
  bool store_group_commit = true;

  // --- profiling (include/mayhem/observe/profiler.hpp; all off = no observer, no cost) --------
  bool profile = false;                  // print the cProfile-style table + line timings at exit
  std::string profile_sort = "tottime";  // tottime|cumtime|ncalls|name
  std::string profile_out;               // write the profile as a Callgrind file
  std::string trace_out;                 // write a Chrome trace-event JSON (Perfetto)
  double trace_sample = 1.0;             // fraction of messages traced, (0, 1]
  double slow_task_ms = 0;  // warn about stage bodies longer than this (and stuck ones); 0 = off
  // --- watching (include/mayhem/observe/) --------------------------------------------------
  std::string stats_addr;  // HOST:PORT of the read-only stats endpoint; empty = off
  bool live = false;       // the CLI shows the `mayhem top` view in-process
};

// Whether `list` is nats://HOST:PORT or a comma-separated list of them (a cluster's servers).
bool valid_nats_urls(const std::string& list);

// The first problem found, as one human-readable line; nullopt when the options are usable.
std::optional<std::string> validate(const Options& o);

const char* to_string(IoModel m);
const char* to_string(LogMode m);
const char* to_string(LogOverflow p);
const char* to_string(LogFormat f);
const char* to_string(OnFailure f);

}  // namespace mayhem
