// systemd notifications (mayhem/notify.hpp): the datagram protocol against a path and an abstract
// socket, the watchdog's liveness rule, and the binary's READY=1 / WATCHDOG=1 / STOPPING=1 under a
// NOTIFY_SOCKET of the test's own.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mayhem/notify.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;

namespace {

using NotifyClock = std::chrono::steady_clock;

// A bound AF_UNIX datagram socket: `name` is a path or '@' + an abstract name (as NOTIFY_SOCKET).
class NotifyListener {
 public:
  explicit NotifyListener(std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(name_.size() < sizeof(addr.sun_path));
    std::memcpy(addr.sun_path, name_.data(), name_.size());
    if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), len) == 0);
  }
  ~NotifyListener() { ::close(fd_); }
  NotifyListener(const NotifyListener&) = delete;
  NotifyListener& operator=(const NotifyListener&) = delete;

  // The next datagram, or nullopt after `timeout`.
  std::optional<std::string> next(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
  }
  // Waits for `text`; the datagrams before it are dropped. False after `timeout`.
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = NotifyClock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - NotifyClock::now());
      if (left.count() <= 0) return false;
      if (auto m = next(left); m && *m == text) return true;
    }
  }
  // The arrival times of `text` over `span` (others dropped).
  std::vector<NotifyClock::time_point> times_of(const std::string& text,
                                                std::chrono::milliseconds span) {
    std::vector<NotifyClock::time_point> out;
    const auto until = NotifyClock::now() + span;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(until - NotifyClock::now());
      if (left.count() <= 0) return out;
      if (auto m = next(left); m && *m == text) out.push_back(NotifyClock::now());
    }
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int fd_ = -1;
};

// Sets environment variables ("NAME=VALUE") for a child spawned in its scope (posix_spawn copies
// the environment), then unsets them. The test runner is single-threaded: nothing reads the
// environment meanwhile.
class NotifyEnv {
 public:
  explicit NotifyEnv(const std::vector<std::string>& vars) {
    for (const auto& v : vars) {
      const auto eq = v.find('=');
      names_.push_back(v.substr(0, eq));
      ::setenv(names_.back().c_str(), v.substr(eq + 1).c_str(), 1);
    }
  }
  ~NotifyEnv() {
    for (const auto& n : names_) ::unsetenv(n.c_str());
  }
  NotifyEnv(const NotifyEnv&) = delete;
  NotifyEnv& operator=(const NotifyEnv&) = delete;

 private:
  std::vector<std::string> names_;
};

// Runs the binary with `args` and the extra environment `env`.
std::unique_ptr<mayhem::test::Subprocess> spawn_with_env(std::vector<std::string> args,
                                                         const std::vector<std::string>& env) {
  NotifyEnv scoped(env);
  return std::make_unique<mayhem::test::Subprocess>(std::move(args));
}

std::string abstract_notify_name() {
  return "@mayhem-test-notify-" + std::to_string(::getpid()) + "-" +
         std::to_string(NotifyClock::now().time_since_epoch().count());
}

}  // namespace

TEST_CASE("Notifier sends datagrams to an abstract-namespace socket", "[notify]") {
  NotifyListener l(abstract_notify_name());
  mayhem::Notifier n({l.name(), 0us});
  REQUIRE(n.enabled());
  REQUIRE(n.send("READY=1"));
  REQUIRE(l.next(2s) == "READY=1");
  n.ready([] { return std::uint64_t{0}; }, [] { return std::uint64_t{0}; });  // no watchdog
  REQUIRE(l.next(2s) == "READY=1");
  n.stopping();
  REQUIRE(l.next(2s) == "STOPPING=1");
  REQUIRE_FALSE(l.next(300ms));  // no WATCHDOG=1 without WATCHDOG_USEC
}

TEST_CASE("Notifier is a no-op when NOTIFY_SOCKET is unset, malformed or points nowhere",
          "[notify]") {
  mayhem::Notifier off;
  REQUIRE_FALSE(off.enabled());
  REQUIRE_FALSE(off.send("READY=1"));
  off.ready([] { return std::uint64_t{0}; }, [] { return std::uint64_t{0}; });
  off.stopping();
  mayhem::Notifier relative({"relative/path", 200ms});
  REQUIRE_FALSE(relative.enabled());
  mayhem::test::TempDir dir;
  mayhem::Notifier nowhere({dir.file("no-such-socket"), 200ms});
  REQUIRE(nowhere.enabled());
  REQUIRE_FALSE(nowhere.send("READY=1"));
  nowhere.ready([] { return std::uint64_t{0}; }, [] { return std::uint64_t{0}; });
  nowhere.stopping();  // stops the watchdog thread that had nowhere to send
}

TEST_CASE("WATCHDOG_USEC and WATCHDOG_PID are read as sd_watchdog_enabled does", "[notify]") {
  using mayhem::Notifier;
  REQUIRE(Notifier::parse_watchdog("200000", nullptr, 42) == 200000us);
  REQUIRE(Notifier::parse_watchdog("200000", "42", 42) == 200000us);
  REQUIRE(Notifier::parse_watchdog("200000", "41", 42) == 0us);
  REQUIRE(Notifier::parse_watchdog("200000", "x", 42) == 0us);
  REQUIRE(Notifier::parse_watchdog(nullptr, nullptr, 42) == 0us);
  REQUIRE(Notifier::parse_watchdog("0", nullptr, 42) == 0us);
  REQUIRE(Notifier::parse_watchdog("-5", nullptr, 42) == 0us);
  REQUIRE(Notifier::parse_watchdog("12abc", nullptr, 42) == 0us);
  REQUIRE(Notifier::parse_watchdog("99999999999999999999999", nullptr, 42) == 0us);
}

TEST_CASE("The watchdog pings while progress moves or nothing is in flight, not when stuck",
          "[notify]") {
  NotifyListener l(abstract_notify_name());
  std::atomic<std::uint64_t> progress{0}, in_flight{0};
  mayhem::Notifier n({l.name(), 200ms});
  n.ready([&] { return progress.load(); }, [&] { return in_flight.load(); });
  REQUIRE(l.next(2s) == "READY=1");
  // Idle (nothing in flight): a ping every 100 ms.
  const auto idle = l.times_of("WATCHDOG=1", 650ms);
  CHECK(idle.size() >= 4);
  CHECK(idle.size() <= 7);
  for (std::size_t i = 1; i < idle.size(); ++i) CHECK(idle[i] - idle[i - 1] >= 60ms);
  // Messages in flight, the counter still: pings stop within WATCHDOG_USEC.
  in_flight = 5;
  l.times_of("WATCHDOG=1", 300ms);
  REQUIRE(l.times_of("WATCHDOG=1", 500ms).empty());
  // The counter moves again: pings resume.
  progress = 1;
  REQUIRE(l.wait_for("WATCHDOG=1", 1s));
  n.stopping();
  REQUIRE(l.wait_for("STOPPING=1", 1s));
}

TEST_CASE("The binary notifies READY=1, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 on SIGTERM",
          "[notify][cli]") {
  mayhem::test::TempDir dir;
  NotifyListener l(dir.file("notify.sock"));
  auto p = spawn_with_env({"--messages", "0", "--rate", "200", "--latency-scale", "0.01"},
                          {"NOTIFY_SOCKET=" + l.name(), "WATCHDOG_USEC=200000"});
  REQUIRE(l.wait_for("READY=1", 20s));
  const auto pings = l.times_of("WATCHDOG=1", 1000ms);
  CHECK(pings.size() >= 6);
  CHECK(pings.size() <= 12);
  for (std::size_t i = 1; i < pings.size(); ++i) CHECK(pings[i] - pings[i - 1] >= 60ms);
  p->signal(SIGTERM);
  REQUIRE(l.wait_for("STOPPING=1", 10s));
  const auto r = p->wait(30s);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

TEST_CASE("The binary's watchdog stops pinging while a stage hangs", "[notify][cli]") {
  mayhem::test::TempDir dir;
  NotifyListener l(dir.file("notify.sock"));
  auto p = spawn_with_env({"--messages", "0", "--rate", "200", "--latency-scale", "0.01",
                           "--inject", "save:hang:1", "--shutdown-timeout", "0.5"},
                          {"NOTIFY_SOCKET=" + l.name(), "WATCHDOG_USEC=200000"});
  REQUIRE(l.wait_for("READY=1", 20s));
  l.times_of("WATCHDOG=1", 400ms);  // pings from before the first save hung
  REQUIRE(l.times_of("WATCHDOG=1", 600ms).empty());
  p->signal(SIGTERM);
  REQUIRE(l.wait_for("STOPPING=1", 10s));
  const auto r = p->wait(30s);
  INFO(r.err);
  REQUIRE(r.exit_code == 1);  // the shutdown timed out on the hung stage
}

TEST_CASE(
    "The binary runs as before when NOTIFY_SOCKET is empty or points nowhere, and without "
    "WATCHDOG for another pid",
    "[notify][cli]") {
  mayhem::test::TempDir dir;
  for (const std::string& socket : {std::string(), dir.file("nobody-listens.sock")}) {
    auto r =
        spawn_with_env({"--messages", "20", "--publish-interval", "0", "--latency-scale", "0.01"},
                       {"NOTIFY_SOCKET=" + socket, "WATCHDOG_USEC=200000"})
            ->wait(30s);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  NotifyListener l(dir.file("notify.sock"));
  auto p = spawn_with_env({"--messages", "0", "--rate", "200", "--latency-scale", "0.01"},
                          {"NOTIFY_SOCKET=" + l.name(), "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"});
  REQUIRE(l.wait_for("READY=1", 20s));
  REQUIRE(l.times_of("WATCHDOG=1", 500ms).empty());  // the watchdog is another process's
  p->signal(SIGTERM);
  REQUIRE(l.wait_for("STOPPING=1", 10s));
  REQUIRE(p->wait(30s).exit_code == 0);
}
