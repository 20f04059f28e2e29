// Service manager notifications (systemd's sd_notify protocol, implemented here without
// libsystemd): one datagram per state ("READY=1", "STOPPING=1", "WATCHDOG=1") sent over an AF_UNIX
// SOCK_DGRAM socket to $NOTIFY_SOCKET (a path, or an abstract name when it starts with '@'). With
// NOTIFY_SOCKET unset, or a socket nobody listens on, every call does nothing (a send that fails
// is ignored: notifications never stop the service).
// The watchdog: when $WATCHDOG_USEC is set (and $WATCHDOG_PID is absent or this process's pid),
// ready() starts a thread that sends "WATCHDOG=1" every WATCHDOG_USEC/2, but only while the
// pipeline proves alive: its progress counter (settled messages) moved within the last
// WATCHDOG_USEC, or nothing is in flight. A stage that hangs with messages in it stops the pings,
// and systemd (WatchdogSec=) kills and restarts the service.
// Use: `Notifier n(Notifier::from_environment());` then, once consuming,
// `n.ready([&] { return m.settled(); }, [&] { return m.in_flight.load(); });`, and `n.stopping()`
// when the shutdown begins (it also stops the watchdog thread; so does the destructor).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace mayhem {

class Notifier {
 public:
  struct Target {
    // A path, or '@' + an abstract name; empty: notifications off.
    std::string socket;
    // WATCHDOG_USEC: the pings come every half of it; zero: no watchdog.
    std::chrono::microseconds watchdog{0};
  };
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.
  static Target from_environment();
  Notifier();  // off
  explicit Notifier(Target target);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  bool enabled() const { return !socket_.empty(); }
  std::chrono::microseconds watchdog() const { return watchdog_; }
  // Sends one datagram (e.g. "READY=1"); false when off or the send failed.
  bool send(std::string_view state) const;
  // READY=1, then starts the watchdog thread (if WATCHDOG_USEC asked for one). `progress` returns
  // a counter that moves while messages complete; `in_flight` how many are in the pipeline.
  void ready(std::function<std::uint64_t()> progress, std::function<std::uint64_t()> in_flight);
  // Stops the watchdog thread, then STOPPING=1.
  void stopping();

  // A WATCHDOG_USEC value (decimal microseconds, > 0) with WATCHDOG_PID absent or equal to `pid`;
  // else zero.
  static std::chrono::microseconds parse_watchdog(const char* usec, const char* watchdog_pid,
                                                  long pid);

 private:
  void stop_watchdog();
  void watch(std::function<std::uint64_t()> progress, std::function<std::uint64_t()> in_flight);

  std::string socket_;
  std::chrono::microseconds watchdog_;
  int fd_ = -1;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mayhem
