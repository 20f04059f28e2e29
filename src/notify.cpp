#include "mayhem/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "mayhem/thread_name.hpp"

namespace mayhem {

std::chrono::microseconds Notifier::parse_watchdog(const char* usec, const char* watchdog_pid,
                                                   long pid) {
  const auto number = [](const char* s, unsigned long long& out) {
    if (s == nullptr || *s < '0' || *s > '9') return false;
    char* end = nullptr;
    errno = 0;
    out = std::strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
  };
  unsigned long long us = 0, for_pid = 0;
  if (!number(usec, us) || us == 0) return std::chrono::microseconds(0);
  if (watchdog_pid != nullptr &&
      (!number(watchdog_pid, for_pid) || for_pid != static_cast<unsigned long long>(pid)))
    return std::chrono::microseconds(0);
  return std::chrono::microseconds(static_cast<std::int64_t>(us));
}

Notifier::Target Notifier::from_environment() {
  Target t;
  if (const char* s = std::getenv("NOTIFY_SOCKET")) t.socket = s;
  if (!t.socket.empty())
    t.watchdog = parse_watchdog(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"),
                                static_cast<long>(getpid()));
  return t;
}

Notifier::Notifier(Target target) : socket_(std::move(target.socket)), watchdog_(target.watchdog) {
  // Only a path or an abstract name fits sockaddr_un (with the abstract name's leading NUL).
  if (socket_.size() < 2 || socket_.size() >= sizeof(sockaddr_un::sun_path) ||
      (socket_.front() != '/' && socket_.front() != '@'))
    socket_.clear();
  if (!socket_.empty()) fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

Notifier::Notifier() : Notifier(Target{}) {}

Notifier::~Notifier() {
  stop_watchdog();
  if (fd_ >= 0) ::close(fd_);
}

bool Notifier::send(std::string_view state) const {
  if (fd_ < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size());
  // MSG_NOSIGNAL: a peer gone never raises SIGPIPE; MSG_DONTWAIT: a full queue never blocks us.
  return ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                  reinterpret_cast<const sockaddr*>(&addr),
                  len) == static_cast<ssize_t>(state.size());
}

void Notifier::ready(std::function<std::uint64_t()> progress,
                     std::function<std::uint64_t()> in_flight) {
  send("READY=1");
  if (fd_ < 0 || watchdog_.count() <= 0 || thread_.joinable()) return;
  thread_ = std::thread([this, p = std::move(progress), f = std::move(in_flight)]() mutable {
    name_this_thread("mayhem-watchdog");
    watch(std::move(p), std::move(f));
  });
}

void Notifier::watch(std::function<std::uint64_t()> progress,
                     std::function<std::uint64_t()> in_flight) {
  using Clock = std::chrono::steady_clock;
  const auto period = watchdog_ / 2;
  std::uint64_t last = progress();
  auto last_progress = Clock::now();
  std::unique_lock lock(mutex_);
  while (!cv_.wait_for(lock, period, [&] { return stop_; })) {
    const auto now = Clock::now();
    const std::uint64_t p = progress();
    if (p != last) {
      last = p;
      last_progress = now;
    }
    // Alive: messages completed within the last WATCHDOG_USEC, or none is waiting to (an idle
    // service is healthy). A stage stuck with messages in it stops the pings.
    if (now - last_progress < watchdog_ || in_flight() == 0) send("WATCHDOG=1");
  }
}

void Notifier::stop_watchdog() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Notifier::stopping() {
  stop_watchdog();
  send("STOPPING=1");
}

}  // namespace mayhem
