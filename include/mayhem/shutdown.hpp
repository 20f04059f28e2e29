// Why and when the service stops: signals, the global exception handler, and "all N messages
// settled" all funnel into one ShutdownManager. The first reason wins; the main thread wakes and
// runs the shutdown sequence (Service::run). Signals are never handled in a signal handler: the
// process blocks SIGINT/SIGTERM/SIGHUP (and SIGUSR1) before starting any thread and one thread
// `sigtimedwait`s for them, so no async-signal-unsafe code (spdlog, allocation) ever runs in
// signal context. A second signal forces a prompt exit. SIGUSR1 is no shutdown: it reopens the
// log file (logrotate's postrotate). Use: `ShutdownManager sm(log);
// ShutdownManager::block_signals(); sm.start_signal_thread();
// ... auto why = sm.wait_for(1s); ...`. Stages read `sm.stopping()` and report `sm.fatal(e)`.
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace mayhem {

enum class StopReason { kNone, kCompleted, kSignal, kFatal };

class ShutdownManager {
 public:
  explicit ShutdownManager(std::shared_ptr<spdlog::logger> log) : log_(std::move(log)) {}
  ~ShutdownManager();

  // Blocks the shutdown signals in the calling thread; threads started afterwards inherit it.
  static void block_signals();
  // Undoes block_signals (a subcommand that does not run the service); a pending one arrives now.
  static void unblock_signals();
  void start_signal_thread();

  // Requests that the service stop. The first call decides the reason; later calls are ignored.
  void request(StopReason why, int signo = 0);
  // The global exception handler: logs "Caught exception: ..." and "Shutting down..." once and
  // requests a graceful stop with a failing exit status.
  void fatal(const std::string& what);
  void fatal(std::exception_ptr e);

  // Hot path: has a stop been requested?
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  // Blocks until a stop is requested or `timeout` passes; returns the reason (kNone on timeout).
  StopReason wait_for(std::chrono::nanoseconds timeout);
  int signal_number() const { return signo_.load(); }
  std::optional<std::string> fatal_message() const;

 private:
  void signal_loop();

  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> signo_{0};
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  StopReason reason_ = StopReason::kNone;
  std::optional<std::string> fatal_;
  std::thread signal_thread_;
  std::atomic<bool> signal_thread_stop_{false};
};

const char* signal_name(int signo);

}  // namespace mayhem
