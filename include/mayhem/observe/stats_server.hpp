// The read-only stats endpoint (cpp-httplib): `GET /metrics` (Prometheus text format: the
// snapshot, then the process's own metrics and build info, observe/process_stats.hpp),
// `GET /stats` (the JSON snapshot; `/stats?zones=STAGE[,STAGE]` also asks the service to time
// those stages' zones for a while, see `set_zones_hook`), and, given a ProfileCapture,
// `GET /profile?seconds=N` and `GET /trace?seconds=N` (an on-demand capture of that window:
// observe/capture.hpp; a bad parameter gets 400, a second capture 409; a client that hangs up
// ends its capture), nothing else. It runs on its own few threads, never on the
// pipeline's: snapshots are built at most every `min_interval` and shared between requests, at most
// `threads` requests are served at once, a handful more connections wait, and every read, write
// and keep-alive is bounded by short timeouts. Unknown paths get 404, other methods 405, oversized
// or malformed requests a 4xx.
// Use: `StatsServer s({"127.0.0.1", 9100}, [&] { return svc.stats_snapshot(); }, log);
//       if (auto err = s.start()) ...; s.stop();`
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mayhem/observe/stats.hpp"

namespace httplib {
class Server;
}

namespace mayhem {

class ProfileCapture;

struct StatsAddress {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port (see StatsServer::port())
};

// "HOST:PORT", "[v6]:PORT", ":PORT" or "PORT" (host defaults to 127.0.0.1); nullopt and `err` set
// when unusable ("FLAG: why (got 'TEXT')", FLAG the flag that gave it). The host must be an IP
// address or a name this machine resolves.
std::optional<StatsAddress> parse_stats_address(const std::string& text, std::string& err,
                                                const char* flag = "--stats-addr");
// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const std::string& host);

class StatsServer {
 public:
  using SnapshotFn = std::function<StatsSnapshot()>;
  struct Limits {
    int threads = 2;                 // requests served at once
    int max_waiting = 8;             // accepted connections waiting for a thread (beyond: the
                                     // accept thread serves one itself, so the kernel queue holds)
    std::size_t max_payload = 1024;  // request bodies (none expected) beyond this get 413
    int timeout_s = 2;               // read / write / keep-alive timeouts
    int keep_alive_max = 20;         // requests per connection
    std::int64_t min_interval_ns = 100'000'000;  // snapshots at most this often
  };

  StatsServer(StatsAddress addr, SnapshotFn snapshot, std::shared_ptr<spdlog::logger> log);
  StatsServer(StatsAddress addr, SnapshotFn snapshot, std::shared_ptr<spdlog::logger> log,
              Limits limits);
  ~StatsServer();
  StatsServer(const StatsServer&) = delete;
  StatsServer& operator=(const StatsServer&) = delete;

  // `GET /stats?zones=LIST` calls `hook(LIST)` before answering (`mayhem top`'s drill-down: the
  // service times those stages' zones while someone looks); false (an unknown stage) or no hook
  // answers 400. Set it before start().
  using ZonesFn = std::function<bool(const std::string& stages)>;
  void set_zones_hook(ZonesFn hook);

  // Serves /profile and /trace with `capture` (it must outlive this object; null: 404). Call
  // before start() or install().
  void set_capture(ProfileCapture* capture);
  // Binds and starts serving; an error message when the address cannot be bound.
  std::optional<std::string> start();
  // Puts this endpoint's limits, request checks, routes and error pages on `svr`: what start()
  // does to its own server before binding. For the tests and the HTTP fuzz target
  // (fuzz/fuzz_http.cpp), which drive a server of their own. The handlers use this object's
  // snapshot function and cache, so it must outlive `svr`'s requests.
  void install(httplib::Server& svr);
  // Ends a running capture (its client gets the window so far), then stops serving.
  void stop();
  std::uint16_t port() const;  // the bound port

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mayhem
