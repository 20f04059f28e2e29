#include "mayhem/logging.hpp"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "mayhem/chunked_file_sink.hpp"

namespace mayhem {

namespace {

// The reference's line format, "%(asctime)s,%(msecs)03d %(levelname)s: %(message)s" with datefmt
// "%H:%M:%S", written by hand: the "HH:MM:SS," prefix is rebuilt once a second, the rest is three
// digits, a level name and the message (spdlog's pattern_formatter calls one virtual flag
// formatter per pattern element per line for the same output).
class ReferenceFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const auto since = msg.time.time_since_epoch();
    const auto secs = duration_cast<seconds>(since);
    if (secs.count() != cached_secs_) {
      cached_secs_ = secs.count();
      const std::time_t t = static_cast<std::time_t>(cached_secs_);
      std::tm tm{};
      localtime_r(&t, &tm);
      two(prefix_ + 0, tm.tm_hour);
      prefix_[2] = ':';
      two(prefix_ + 3, tm.tm_min);
      prefix_[5] = ':';
      two(prefix_ + 6, tm.tm_sec);
      prefix_[8] = ',';
    }
    const auto ms = static_cast<int>(duration_cast<milliseconds>(since - secs).count());
    char tail[4] = {static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                    static_cast<char>('0' + ms % 10), ' '};
    dest.append(prefix_, prefix_ + sizeof prefix_);
    dest.append(tail, tail + sizeof tail);
    static constexpr std::string_view kNames[] = {
        "TRACE: ", "DEBUG: ", "INFO: ", "WARNING: ", "ERROR: ", "CRITICAL: ", "OFF: "};
    const auto name = kNames[static_cast<int>(msg.level)];
    dest.append(name.data(), name.data() + name.size());
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<ReferenceFormatter>();
  }

 private:
  static void two(char* p, int v) {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
  }
  std::int64_t cached_secs_ = -1;
  char prefix_[9] = {};
};

std::unique_ptr<spdlog::formatter> reference_formatter() {
  return std::make_unique<ReferenceFormatter>();
}

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
      if (opts.log_buffer == 0)  // one shared stdio buffer under a lock: strict line order
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.log_file, true);
      else
        sink = std::make_shared<ChunkedFileSink>(opts.log_file, opts.log_buffer);
    } catch (const std::exception& e) {
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
  log->flush_on(spdlog::level::critical);
  return log;
}

}  // namespace mayhem
