#include "mayhem/shutdown.hpp"

#include "mayhem/logging.hpp"
#include "mayhem/thread_name.hpp"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>

namespace mayhem {

namespace {
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);  // not a shutdown: reopen the log file (logrotate's postrotate)
  return set;
}
}  // namespace

const char* signal_name(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "signal";
  }
}

ShutdownManager::~ShutdownManager() {
  signal_thread_stop_.store(true);
  if (signal_thread_.joinable()) signal_thread_.join();
}

void ShutdownManager::block_signals() {
  sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void ShutdownManager::unblock_signals() {
  sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void ShutdownManager::start_signal_thread() {
  signal_thread_ = std::thread([this] {
    name_this_thread("mayhem-signal");
    signal_loop();
  });
}

void ShutdownManager::signal_loop() {
  const sigset_t set = shutdown_signals();
  const timespec timeout{0, 50'000'000};
  int received = 0;
  while (!signal_thread_stop_.load()) {
    siginfo_t info;
    const int signo = sigtimedwait(&set, &info, &timeout);
    if (signo < 0) continue;  // EAGAIN (timeout) or EINTR
    if (signo == SIGUSR1) {
      const auto r = reopen_log_file(log_);
      if (r.error)
        log_->error("SIGUSR1: could not reopen the log file: {}; still writing to the old one",
                    *r.error);
      else if (r.file)
        log_->info("SIGUSR1: reopened the log file");
      continue;
    }
    if (++received == 1) {
      request(StopReason::kSignal, signo);
    } else {
      // A normal thread, not a signal handler: logging here is safe.
      log_->critical("Received second exit signal {}: forcing exit", signal_name(signo));
      log_->flush();
      std::_Exit(128 + signo);
    }
  }
}

void ShutdownManager::request(StopReason why, int signo) {
  {
    std::lock_guard lock(mutex_);
    if (reason_ != StopReason::kNone) return;
    reason_ = why;
    if (why == StopReason::kSignal) signo_.store(signo);
    stopping_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

void ShutdownManager::fatal(const std::string& what) {
  bool first = false;
  {
    std::lock_guard lock(mutex_);
    if (!fatal_) {
      fatal_ = what;
      first = true;
    }
  }
  if (first) {
    log_->error("Caught exception: {}", what);
    log_->info("Shutting down...");
  }
  request(StopReason::kFatal);
}

void ShutdownManager::fatal(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    fatal(std::string(ex.what()));
  } catch (...) {
    fatal(std::string("unknown exception"));
  }
}

StopReason ShutdownManager::wait_for(std::chrono::nanoseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return reason_ != StopReason::kNone; });
  return reason_;
}

std::optional<std::string> ShutdownManager::fatal_message() const {
  std::lock_guard lock(mutex_);
  return fatal_;
}

}  // namespace mayhem
