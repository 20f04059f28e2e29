// The service's logger: spdlog, with the reference's messages at its levels, in the format
// --log-format picks (log/format.hpp; by default the reference's line). Logs go to stderr or a
// file, never stdout (stdout carries the JSON summary). A file is appended to and kept in
// timestamp order (log/ordered_file_sink.hpp; log/locked_file_sink.hpp for --log-buffer 0), and
// reopen_log_file() opens it again after logrotate moved it (the service does on SIGUSR1). `--log-mode async` uses
// spdlog's async logger (the reference's aiologger point); its policy for a full queue is explicit
// (--log-overflow): `block` (the default: callers wait, no line is lost) or `drop-oldest` (callers
// never wait; every dropped line is counted by spdlog's thread pool and reported by log_dropped()).
// Use: `auto log = make_logger(opts);` then guard per-message lines with `log->should_log(lvl)`.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "mayhem/options.hpp"

namespace mayhem {

std::optional<spdlog::level::level_enum> parse_log_level(const std::string& name);
// Throws std::runtime_error with a clear message when the log file cannot be opened.
std::shared_ptr<spdlog::logger> make_logger(const Options& opts);
// Lines an async logger made by make_logger() dropped because its queue was full (drop-oldest);
// 0 for any other logger.
std::uint64_t log_dropped(const std::shared_ptr<spdlog::logger>& log);

// The async logger's queue, for the stats endpoint (all zero for a sync logger or one not made by
// make_logger). `overruns`: lines the queue dropped (only with --log-overflow drop-oldest).
struct LogQueueStats {
  bool async = false;
  std::uint64_t depth = 0, overruns = 0;
};
LogQueueStats log_queue_stats(const std::shared_ptr<spdlog::logger>& log);

// Opens the log file again (same path) for a logger made by make_logger(): false when it logs to
// stderr; true and the error (if any: the old file is kept) otherwise. Lines logged before the
// call are in the old file.
struct Reopened {
  bool file = false;
  std::optional<std::string> error;
};
Reopened reopen_log_file(const std::shared_ptr<spdlog::logger>& log);

}  // namespace mayhem
