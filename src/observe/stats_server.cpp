#include "mayhem/observe/stats_server.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/observe/capture.hpp"
#include "mayhem/observe/process_stats.hpp"

namespace mayhem {

std::optional<StatsAddress> parse_stats_address(const std::string& text, std::string& err,
                                                const char* flag) {
  StatsAddress a;
  std::string port_text = text;
  const auto fail = [&](const char* why) {
    err = fmt::format("{}: {} (got '{}')", flag, why, text);
    return std::nullopt;
  };
  if (!text.empty() && text[0] == '[') {  // [v6]:port
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return fail("expected [IPV6]:PORT");
    a.host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    if (colon != 0) a.host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (a.host.empty() || port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port_text) > 65535)
    return fail("expected HOST:PORT with a port in 0..65535");
  a.port = static_cast<std::uint16_t>(std::stoul(port_text));
  // The host, now rather than at bind time (where a bad one looks like "address in use"): an
  // IPv4 or IPv6 address, or a name this machine resolves.
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, a.host.c_str(), &v4) == 1 || inet_pton(AF_INET6, a.host.c_str(), &v6) == 1)
    return a;
  if (a.host.find_first_not_of("0123456789.") == std::string::npos ||
      a.host.find(':') != std::string::npos)
    return fail("the host is not an IP address");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (a.host.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
          std::string::npos ||
      getaddrinfo(a.host.c_str(), nullptr, &hints, &found) != 0)
    return fail("the host is not an IP address or a name this machine resolves");
  freeaddrinfo(found);
  return a;
}

bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return false;
}

namespace {

// httplib's ThreadPool queues every accepted connection without bound. This one keeps at most
// `max_waiting`; beyond that the accept thread serves the connection itself, so it stops
// accepting and further clients wait in the kernel's listen queue instead of in this process.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, int max_waiting) : max_waiting_(static_cast<std::size_t>(max_waiting)) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mutex_);
      if (!stopping_ && jobs_.size() < max_waiting_) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
    }
    fn();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and every accepted connection was served
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      fn();
    }
  }

  const std::size_t max_waiting_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// The numeric address and port of a socket name, as httplib writes them into a Request.
std::pair<std::string, int> name_of(const sockaddr_storage& a, socklen_t len) {
  char host[NI_MAXHOST] = {}, port[NI_MAXSERV] = {};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return {"", -1};
  return {host, std::atoi(port)};
}

// The request's connection (httplib 0.11 does not hand handlers their socket): the one socket of
// this process whose peer is the request's remote address and whose own name is its local one.
// -1 when not found.
int connection_fd(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    sockaddr_storage peer{}, self{};
    socklen_t peer_len = sizeof peer, self_len = sizeof self;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len) != 0)
      continue;
    if (name_of(peer, peer_len) == std::pair(req.remote_addr, req.remote_port) &&
        name_of(self, self_len) == std::pair(req.local_addr, req.local_port)) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// Has the client on `fd` hung up? (Without reading: a pipelined request stays in the socket.)
bool hung_up(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

}  // namespace

struct StatsServer::Impl {
  StatsAddress addr;
  SnapshotFn snapshot;
  ZonesFn zones;
  std::shared_ptr<spdlog::logger> log;
  Limits limits;
  httplib::Server server;
  std::thread thread;
  int port = 0;
  ProfileCapture* capture = nullptr;

  void serve_capture(const httplib::Request& req, httplib::Response& res) {
    if (!capture) {
      res.status = 404;
      res.set_content("404 not found: this service takes no captures\n", "text/plain");
      return;
    }
    std::string err;
    const auto r = parse_capture_request(
        req.path,
        std::vector<std::pair<std::string, std::string>>(req.params.begin(), req.params.end()),
        err);
    if (!r) {
      res.status = 400;
      res.set_content("400 bad request: " + err + "\n", "text/plain");
      return;
    }
    const int fd = connection_fd(req);
    CaptureResponse c = capture->run(*r, [fd] { return fd >= 0 && hung_up(fd); });
    res.status = c.status;
    // A capture holds its connection for seconds: not one to keep alive for the next request.
    res.set_header("Connection", "close");
    if (c.status == 200) {
      res.set_header("X-Mayhem-Capture-Seconds", fmt::format("{:.3f}", c.window_s));
      res.set_header("X-Mayhem-Capture-Ended", c.ended);
    }
    // Moved, not copied (set_content copies): a trace is up to ~15 MB.
    res.body = std::move(c.body);
    res.set_header("Content-Type", c.content_type);
  }

  // The last snapshot's renderings, shared by the requests that arrive within min_interval.
  std::mutex cache_mutex;
  Nanos cached_at = 0;
  bool have_cache = false;
  std::string json_text, prom_text;

  void refresh() {  // under cache_mutex
    const Nanos now = steady_now();
    if (have_cache && now - cached_at < limits.min_interval_ns) return;
    StatsSnapshot s = snapshot();
    // The process's own facts (not pipeline numbers: observe/process_stats.hpp), read here, once
    // per snapshot: /stats's `process` (mayhem top's CPU% and RSS) and /metrics's process_*.
    s.process = read_process_stats();
    json_text = nlohmann::json(s).dump();
    json_text += '\n';
    prom_text = render_prometheus(s) + render_process_metrics(s.process);
    cached_at = now;
    have_cache = true;
  }
};

StatsServer::StatsServer(StatsAddress addr, SnapshotFn snapshot,
                         std::shared_ptr<spdlog::logger> log)
    : StatsServer(std::move(addr), std::move(snapshot), std::move(log), Limits{}) {}

StatsServer::StatsServer(StatsAddress addr, SnapshotFn snapshot,
                         std::shared_ptr<spdlog::logger> log, Limits limits)
    : impl_(std::make_unique<Impl>()) {
  impl_->addr = std::move(addr);
  impl_->snapshot = std::move(snapshot);
  impl_->log = std::move(log);
  impl_->limits = limits;
}

void StatsServer::set_zones_hook(ZonesFn hook) {
  impl_->zones = std::move(hook);
}

StatsServer::~StatsServer() {
  stop();
}

void StatsServer::install(httplib::Server& svr) {
  Impl& i = *impl_;
  const Limits lim = i.limits;
  svr.new_task_queue = [lim] { return new BoundedPool(lim.threads, lim.max_waiting); };
  // httplib's default sets SO_REUSEPORT: a second service given the same --stats-addr would then
  // listen too, and the kernel would split the connections between the two. SO_REUSEADDR alone
  // still rebinds a port whose old connections linger in TIME_WAIT.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  svr.set_payload_max_length(lim.max_payload);
  svr.set_read_timeout(lim.timeout_s, 0);
  svr.set_write_timeout(lim.timeout_s, 0);
  svr.set_keep_alive_timeout(lim.timeout_s);
  svr.set_keep_alive_max_count(static_cast<std::size_t>(lim.keep_alive_max));
  svr.set_pre_routing_handler([lim](const httplib::Request& req, httplib::Response& res) {
    // httplib reads (and bounds) a body only for methods that carry one; refuse any big one here.
    if (req.get_header_value<std::uint64_t>("Content-Length") > lim.max_payload) {
      res.status = 413;
      res.set_content("413 payload too large: this endpoint takes no request body\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool capture = req.path == "/profile" || req.path == "/trace";
    if (req.method == "GET" || (req.method == "HEAD" && !capture))
      return httplib::Server::HandlerResponse::Unhandled;
    if (capture) {  // HEAD would run a capture to send nothing
      res.status = 405;
      res.set_header("Allow", "GET");
      res.set_content("405 method not allowed: a capture is a GET\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    }
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("405 method not allowed: this endpoint is read-only\n", "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.Get("/metrics", [&i](const httplib::Request&, httplib::Response& res) {
    std::lock_guard lock(i.cache_mutex);
    i.refresh();
    res.set_content(i.prom_text, "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/stats", [&i](const httplib::Request& req, httplib::Response& res) {
    if (req.has_param("zones") && !(i.zones && i.zones(req.get_param_value("zones")))) {
      res.status = 400;
      res.set_content("400 bad zones=: expected stage names separated by commas\n", "text/plain");
      return;
    }
    std::lock_guard lock(i.cache_mutex);
    i.refresh();
    res.set_content(i.json_text, "application/json");
  });
  svr.Get("/profile",
          [&i](const httplib::Request& req, httplib::Response& res) { i.serve_capture(req, res); });
  svr.Get("/trace",
          [&i](const httplib::Request& req, httplib::Response& res) { i.serve_capture(req, res); });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(
          std::to_string(res.status) +
              (res.status == 404 ? " not found: try /metrics, /stats, /profile?seconds=N or "
                                   "/trace?seconds=N\n"
                                 : " error\n"),
          "text/plain");
  });
}

std::optional<std::string> StatsServer::start() {
  Impl& i = *impl_;
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-response must not kill the service
  auto& svr = i.server;
  install(svr);
  // For port 0, bind_to_any_port reports the port the kernel picked.
  const int port = i.addr.port == 0
                       ? svr.bind_to_any_port(i.addr.host)
                       : (svr.bind_to_port(i.addr.host, i.addr.port) ? i.addr.port : -1);
  if (port <= 0) {
    return "cannot listen on " + i.addr.host + ":" + std::to_string(i.addr.port) +
           " (address in use, or not an address of this machine)";
  }
  i.port = port;
  i.thread = std::thread([&svr] { svr.listen_after_bind(); });
  // stop() is a no-op until the accept loop runs: wait for it (it starts at once).
  while (!svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!is_loopback(i.addr.host))
    i.log->warn(
        "Stats endpoint listens on {}:{}, reachable from other machines: its data is not "
        "authenticated",
        i.addr.host, i.port);
  i.log->info("Stats endpoint on http://{}:{}/metrics and /stats{}", i.addr.host, i.port,
              i.capture ? ", captures on /profile and /trace" : "");
  return std::nullopt;
}

void StatsServer::set_capture(ProfileCapture* capture) {
  impl_->capture = capture;
}

void StatsServer::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  if (impl_->capture) impl_->capture->stop();
  impl_->server.stop();
  impl_->thread.join();
}

std::uint16_t StatsServer::port() const {
  return static_cast<std::uint16_t>(impl_->port);
}

}  // namespace mayhem
