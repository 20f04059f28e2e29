#include "mayhem/logging.hpp"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

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

// The async logger and its thread pool. async_logger keeps only a weak reference to its pool: the
// logger make_logger() hands out is an aliasing pointer into this holder, which owns both. Members
// die in reverse order: the pool first (it drains its queue and joins its thread; queued lines keep
// the logger alive), then the logger and its sinks, which no thread can touch any more.
struct AsyncHolder {
  std::shared_ptr<spdlog::async_logger> logger;
  std::shared_ptr<spdlog::details::thread_pool> pool;
};
// The holder's deleter; log_dropped() finds it again with std::get_deleter (which sees through the
// aliasing pointer to the shared control block), and through it the pool's overrun counter.
struct AsyncHolderDeleter {
  AsyncHolder* holder = nullptr;
  void operator()(AsyncHolder* h) const { delete h; }
};

}  // namespace

std::uint64_t log_dropped(const std::shared_ptr<spdlog::logger>& log) {
  const auto* d = std::get_deleter<AsyncHolderDeleter>(log);
  return d && d->holder->pool ? d->holder->pool->overrun_counter() : 0;
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
  log->flush_on(spdlog::level::err);
  return log;
}

}  // namespace mayhem
