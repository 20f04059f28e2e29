// libFuzzer target for the stats endpoint (observe/stats_server.hpp): arbitrary bytes arrive as
// what a client sent on one connection. cpp-httplib's server parses them (request line, headers,
// body, up to four pipelined requests) and our pre-routing checks, routes and error pages answer,
// with the production limits (StatsServer::install); an in-memory stream stands in for the socket.
// Properties: never crashes, leaks or reads out of bounds; every parsed request gets exactly one
// response that starts with a status line; 2xx only for GET or HEAD of /metrics or /stats; never a
// 5xx (that would be a handler that threw).
#include <httplib.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "mayhem/observe/stats_server.hpp"

namespace {

// A connection whose peer sent `in` and then closed its side; what the server writes is kept.
class MemoryStream final : public httplib::Stream {
 public:
  explicit MemoryStream(std::string_view in) : in_(in) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, std::size_t size) override {
    const std::size_t n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    out.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 40000;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 9100;
  }
  socket_t socket() const override { return INVALID_SOCKET; }
  bool exhausted() const { return pos_ == in_.size(); }

  std::string out;

 private:
  std::string_view in_;
  std::size_t pos_ = 0;
};

// process_request is protected: it is what the accept loop runs for each request on a connection.
class FuzzServer final : public httplib::Server {
 public:
  bool serve_one(httplib::Stream& strm, bool last, bool& closed, std::string& method,
                 std::string& path) {
    return process_request(strm, last, closed, [&](httplib::Request& req) {
      method = req.method;
      path = req.path;
    });
  }
};

// The status code of a response, or -1 unless it starts with "HTTP/1.1 NNN ".
int status_of(const std::string& out) {
  if (out.size() < 13 || out.compare(0, 9, "HTTP/1.1 ") != 0 || out[12] != ' ') return -1;
  int code = 0;
  for (int k = 9; k < 12; ++k) {
    if (out[k] < '0' || out[k] > '9') return -1;
    code = code * 10 + (out[k] - '0');
  }
  return code;
}

struct Endpoint {
  mayhem::StatsServer stats{{"127.0.0.1", 0},
                            [] {
                              mayhem::StatsSnapshot s;
                              s.published = 3;
                              s.acked = 2;
                              s.nacked = 1;
                              return s;
                            },
                            std::make_shared<spdlog::logger>("fuzz_http")};
  FuzzServer server;
  Endpoint() { stats.install(server); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Endpoint* endpoint = new Endpoint();  // the routes once; requests share the cache
  MemoryStream strm({reinterpret_cast<const char*>(data), size});
  bool closed = false;
  for (int n = 0; n < 4 && !closed && !strm.exhausted(); ++n) {
    std::string method, path;
    const bool last = n == 3;
    strm.out.clear();
    const bool ok = endpoint->server.serve_one(strm, last, closed, method, path);
    if (strm.out.empty()) {
      if (ok) std::abort();  // served, but answered nothing
      break;                 // the peer closed before a whole request line: no answer is due
    }
    int status = status_of(strm.out);
    if (status == 100) {  // "Expect: 100-continue" is answered first; the response follows
      const auto end = strm.out.find("\r\n\r\n");
      if (end == std::string::npos) std::abort();
      status = status_of(strm.out.substr(end + 4));
    }
    if (status < 100 || status >= 500) std::abort();
    if (status < 300 &&
        !((method == "GET" || method == "HEAD") && (path == "/metrics" || path == "/stats")))
      std::abort();
    if (!ok) break;
  }
  return 0;
}
