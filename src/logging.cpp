#include "mayhem/logging.hpp"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <vector>

#include "mayhem/log/format.hpp"
#include "mayhem/log/locked_file_sink.hpp"
#include "mayhem/log/ordered_file_sink.hpp"

namespace mayhem {

namespace {

// The async logger and its thread pool. async_logger keeps only a weak reference to its pool: the
// logger make_logger() hands out is an aliasing pointer into this holder, which owns both. Members
// die in reverse order: the pool first (it drains its queue and joins its thread; queued lines keep
// the logger alive), then the logger and its sinks, which no thread can touch any more.
struct AsyncHolder {
  std::shared_ptr<spdlog::async_logger> logger;
  std::shared_ptr<spdlog::details::thread_pool> pool;
};
// The holder's deleter; log_queue_stats() finds it again with std::get_deleter (which sees through
// the aliasing pointer to the shared control block), and through it the pool's counters.
struct AsyncHolderDeleter {
  AsyncHolder* holder = nullptr;
  void operator()(AsyncHolder* h) const { delete h; }
};

}  // namespace

LogQueueStats log_queue_stats(const std::shared_ptr<spdlog::logger>& log) {
  LogQueueStats s;
  const auto* d = std::get_deleter<AsyncHolderDeleter>(log);
  if (d && d->holder->pool) {
    s.async = true;
    s.depth = d->holder->pool->queue_size();
    s.overruns = d->holder->pool->overrun_counter();
  }
  return s;
}

std::uint64_t log_dropped(const std::shared_ptr<spdlog::logger>& log) {
  return log_queue_stats(log).overruns;
}

std::optional<spdlog::level::level_enum> parse_log_level(const std::string& name) {
  if (name == "trace") return spdlog::level::trace;
  if (name == "debug") return spdlog::level::debug;
  if (name == "info") return spdlog::level::info;
  if (name == "warning" || name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  if (name == "critical") return spdlog::level::critical;
  if (name == "off") return spdlog::level::off;
  return std::nullopt;
}

std::shared_ptr<spdlog::logger> make_logger(const Options& opts) {
  auto level = parse_log_level(opts.log_level);
  if (!level) throw std::invalid_argument("unknown log level '" + opts.log_level + "'");
  spdlog::sink_ptr sink;
  if (opts.log_file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      if (opts.log_mode == LogMode::kAsync) {
        // One thread writes: the lines keep spdlog's stamps, in the queue's order.
        sink = std::make_shared<LockedFileSink>(opts.log_file, false);
      } else if (opts.log_buffer == 0) {
        sink = std::make_shared<LockedFileSink>(opts.log_file);
      } else {
        OrderedFileSink::Options o;
        o.block_bytes = opts.log_buffer;
        sink = std::make_shared<OrderedFileSink>(opts.log_file, o);
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot open log file '" + opts.log_file + "': " + e.what());
    }
  }
  sink->set_formatter(make_formatter(opts.log_format));
  std::shared_ptr<spdlog::logger> log;
  if (opts.log_mode == LogMode::kAsync) {
    auto* raw = new AsyncHolder;
    std::shared_ptr<AsyncHolder> holder(raw, AsyncHolderDeleter{raw});
    holder->pool = std::make_shared<spdlog::details::thread_pool>(opts.log_queue, 1);
    holder->logger = std::make_shared<spdlog::async_logger>(
        "mayhem", sink, holder->pool,
        opts.log_overflow == LogOverflow::kBlock ? spdlog::async_overflow_policy::block
                                                 : spdlog::async_overflow_policy::overrun_oldest);
    log = std::shared_ptr<spdlog::logger>(holder, holder->logger.get());
  } else {
    log = std::make_shared<spdlog::logger>("mayhem", sink);
  }
  log->set_level(*level);
  log->flush_on(spdlog::level::critical);
  return log;
}

Reopened reopen_log_file(const std::shared_ptr<spdlog::logger>& log) {
  for (const auto& sink : log->sinks()) {
    if (auto* o = dynamic_cast<OrderedFileSink*>(sink.get())) return {true, o->reopen()};
    if (auto* l = dynamic_cast<LockedFileSink*>(sink.get())) return {true, l->reopen()};
  }
  return {};
}

}  // namespace mayhem
