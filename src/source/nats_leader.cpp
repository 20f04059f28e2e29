// Attaching to the consumer's leader in a cluster: which server of the pool is which (each server
// names itself in the INFO line it sends first to any TCP connection), and NatsSource's move of
// its connection to the server that leads its durable consumer, so deliveries and acks do not
// cross a route between servers on their way.
#include "mayhem/source/nats.hpp"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

namespace mayhem {

namespace {
// The consumer-info request made for it, and each server's INFO line, wait at most this long: the
// move is an optimisation, never a reason to wait at start.
constexpr std::int64_t kLeaderInfoWaitMs = 1000;
constexpr int kServerInfoWaitMs = 300;
constexpr auto kOldConnectionWait = std::chrono::seconds(1);

// host and port of `url` (nats://user:pass@host:port, host:port, [v6]:port; port 4222 by default).
bool split_url(std::string_view url, std::string& host, std::string& port) {
  if (const auto scheme = url.find("://"); scheme != std::string_view::npos)
    url.remove_prefix(scheme + 3);
  if (const auto at = url.rfind('@'); at != std::string_view::npos) url.remove_prefix(at + 1);
  if (const auto slash = url.find('/'); slash != std::string_view::npos) url = url.substr(0, slash);
  port = "4222";
  if (!url.empty() && url.front() == '[') {
    const auto close = url.find(']');
    if (close == std::string_view::npos) return false;
    host = std::string(url.substr(1, close - 1));
    if (close + 1 < url.size() && url[close + 1] == ':') port = std::string(url.substr(close + 2));
  } else if (const auto colon = url.rfind(':'); colon != std::string_view::npos) {
    host = std::string(url.substr(0, colon));
    port = std::string(url.substr(colon + 1));
  } else {
    host = std::string(url);
  }
  return !host.empty() && !port.empty();
}

// Waits for `fd` to be ready for `events` until `until_ms` (a CLOCK_MONOTONIC time in ms).
bool wait_fd(int fd, short events, std::int64_t until_ms) {
  for (;;) {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    if (now >= until_ms) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(until_ms - now));
    if (r > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}
}  // namespace

std::string nats_server_name(const std::string& url, int timeout_ms) {
  std::string host, port;
  if (!split_url(url, host, port)) return {};
  const std::int64_t until = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count() +
                             timeout_ms;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return {};
  std::string line;
  for (addrinfo* a = res; a != nullptr && line.empty(); a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
        (errno == EINPROGRESS && wait_fd(fd, POLLOUT, until))) {
      // The server speaks first: "INFO {...}\r\n".
      char buf[4096];
      std::string got;
      while (got.find('\n') == std::string::npos && got.size() < 64 * 1024 &&
             wait_fd(fd, POLLIN, until)) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      if (const auto nl = got.find('\n'); nl != std::string::npos) line = got.substr(0, nl);
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (line.rfind("INFO ", 0) != 0) return {};
  const auto j = nlohmann::json::parse(line.begin() + 5, line.end(), nullptr, false);
  if (!j.is_object()) return {};
  const auto it = j.find("server_name");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

ServerLookup nats_find_server(natsConnection* nc, const std::string& configured,
                              const std::string& name, int timeout_ms) {
  ServerLookup found;
  if (name.empty()) return found;
  char connected[512] = {0};
  if (natsConnection_GetConnectedUrl(nc, connected, sizeof(connected)) == NATS_OK &&
      nats_server_name(connected, timeout_ms) == name) {
    found.connected_to_it = true;
    return found;
  }
  // The configured URLs first (they carry any credentials), then the ones the cluster told of.
  std::vector<std::string> pool = split_server_list(configured);
  char** servers = nullptr;
  int count = 0;
  if (natsConnection_GetServers(nc, &servers, &count) == NATS_OK) {
    for (int i = 0; i < count; ++i) {
      pool.emplace_back(servers[i]);
      std::free(servers[i]);
    }
    std::free(servers);
  }
  for (const std::string& url : pool) {
    if (nats_server_name(url, timeout_ms) == name) {
      found.url = url;
      break;
    }
  }
  return found;
}

void NatsSource::attach_to_consumer_leader() {
  char** servers = nullptr;
  int count = 0;
  if (natsConnection_GetServers(client_->connection(), &servers, &count) != NATS_OK) return;
  for (int i = 0; i < count; ++i) std::free(servers[i]);
  std::free(servers);
  if (count < 2) return;  // one server: it leads everything
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  jsOptions o;
  jsOptions_Init(&o);
  o.Wait = kLeaderInfoWaitMs;
  std::string leader;
  if (js_GetConsumerInfo(&ci, client_->js(), cfg_.stream.c_str(), cfg_.durable.c_str(), &o,
                         &jerr) == NATS_OK &&
      ci->Cluster != nullptr && ci->Cluster->Leader != nullptr)
    leader = ci->Cluster->Leader;
  jsConsumerInfo_Destroy(ci);
  if (leader.empty()) return;  // no leader right now (an election): stay where we are
  const ServerLookup where =
      nats_find_server(client_->connection(), cfg_.url, leader, kServerInfoWaitMs);
  if (where.connected_to_it) {
    log_->info("NATS: attached to {}, the leader of consumer {}", leader, cfg_.durable);
    return;
  }
  if (where.url.empty()) {
    log_->info(
        "NATS: the leader of consumer {} ({}) is not among the servers reachable from here; "
        "staying on this one (deliveries and acks go through it)",
        cfg_.durable, leader);
    return;
  }
  try {
    // Its URL first, in order; the configured ones (but it) after it for reconnects.
    std::string urls = where.url;
    for (std::size_t start = 0; start <= cfg_.url.size();) {
      std::size_t comma = cfg_.url.find(',', start);
      if (comma == std::string::npos) comma = cfg_.url.size();
      std::string one = cfg_.url.substr(start, comma - start);
      one.erase(0, one.find_first_not_of(' '));
      if (!one.empty() && one != where.url) urls += "," + one;
      start = comma + 1;
    }
    auto moved = std::make_unique<NatsClient>(urls, log_, nullptr, /*in_order=*/true);
    moved->set_patience(cfg_.nats_wait, cfg_.give_up);
    client_.swap(moved);
    moved->close(kOldConnectionWait);
    log_->info("NATS: moved to {} ({}), the leader of consumer {}: deliveries and acks skip a hop",
               leader, where.url, cfg_.durable);
  } catch (const NatsError& e) {
    log_->info("NATS: could not connect to {} ({}), the leader of consumer {}: {}; staying", leader,
               where.url, cfg_.durable, e.what());
  }
}

}  // namespace mayhem
