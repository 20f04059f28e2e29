#include "mayhem/logging.hpp"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <stdexcept>
#include <vector>

namespace mayhem {

namespace {

// Python logging's level names (the reference's `%(levelname)s`).
class PythonLevelFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr std::string_view kNames[] = {"TRACE", "DEBUG",    "INFO", "WARNING",
                                                  "ERROR", "CRITICAL", "OFF"};
    auto name = kNames[static_cast<int>(msg.level)];
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<PythonLevelFlag>();
  }
};

std::unique_ptr<spdlog::formatter> reference_formatter() {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<PythonLevelFlag>('*').set_pattern("%H:%M:%S,%e %*: %v");
  return f;
}

// Async loggers made here and their queues (spdlog keeps the pool private to the logger).
struct PoolEntry {
  std::weak_ptr<spdlog::logger> logger;
  std::weak_ptr<spdlog::details::thread_pool> pool;
};
std::mutex g_pools_mutex;
std::vector<PoolEntry> g_pools;

}  // namespace

LogQueueStats log_queue_stats(const spdlog::logger* log) {
  LogQueueStats s;
  std::lock_guard lock(g_pools_mutex);
  for (const auto& e : g_pools) {
    auto logger = e.logger.lock();
    if (logger.get() != log || log == nullptr) continue;
    if (auto pool = e.pool.lock()) {
      s.async = true;
      s.depth = pool->queue_size();
      s.overruns = pool->overrun_counter();
    }
  }
  return s;
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
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.log_file, true);
    } catch (const spdlog::spdlog_ex& e) {
      throw std::runtime_error("cannot open log file '" + opts.log_file + "': " + e.what());
    }
  }
  sink->set_formatter(reference_formatter());
  std::shared_ptr<spdlog::logger> log;
  if (opts.log_mode == LogMode::kAsync) {
    // async_logger keeps only a weak reference to its thread pool: tie the pool's life to the
    // logger's by handing out an aliasing pointer into a holder that owns both. Members die in
    // reverse order: the pool first (it drains its queue and joins its thread; queued lines keep
    // the logger alive), then the logger and its sinks, which no thread can touch any more.
    struct Holder {
      std::shared_ptr<spdlog::async_logger> logger;
      std::shared_ptr<spdlog::details::thread_pool> pool;
    };
    auto holder = std::make_shared<Holder>();
    holder->pool = std::make_shared<spdlog::details::thread_pool>(opts.log_queue, 1);
    holder->logger = std::make_shared<spdlog::async_logger>("mayhem", sink, holder->pool,
                                                            spdlog::async_overflow_policy::block);
    log = std::shared_ptr<spdlog::logger>(holder, holder->logger.get());
    std::lock_guard lock(g_pools_mutex);
    std::erase_if(g_pools, [](const PoolEntry& e) { return e.logger.expired(); });
    g_pools.push_back({log, holder->pool});
  } else {
    log = std::make_shared<spdlog::logger>("mayhem", sink);
  }
  log->set_level(*level);
  log->flush_on(spdlog::level::err);
  return log;
}

}  // namespace mayhem
