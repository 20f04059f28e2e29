// On-demand profiling of a running service, as Go's net/http/pprof does it: the stats endpoint's
// `GET /profile?seconds=N` (the cProfile-style table and line timings, text), `&format=callgrind`
// (a Callgrind file for callgrind_annotate and KCacheGrind) and `GET /trace?seconds=N&sample=P`
// (Chrome trace-event JSON for Perfetto) each run one capture: a fresh Profiler is attached to the
// running pipeline (LiveObserver::attach), left for N seconds, detached (which waits until no
// thread is inside it) and frozen, so every count and every trace event lies in that window.
// Nothing is attached between captures. One capture runs at a time; N is 1..300 seconds. A
// capture ends early when its client hangs up or the service stops. Sizes: the table has one row
// per stage, zone and wait (under 100 rows); the Callgrind file one function per stage, zone and
// wait and one call per caller/callee pair (under 1 MB); the trace holds at most
// kMaxTraceEvents events (about 150 bytes each: at most ~15 MB), and its "otherData" says whether
// some were left out (`truncated`, `dropped_events`) with the window's bounds.
// Use: `ProfileCapture cap(live, clock, log); stats_server.set_capture(&cap);` (the endpoint
//      parses requests with parse_capture_request and calls `cap.run(req, client_gone)`).
#pragma once

#include <spdlog/logger.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/observe/live_observer.hpp"
#include "mayhem/observe/profiler/reports.hpp"

namespace mayhem {

inline constexpr int kMaxCaptureSeconds = 300;
inline constexpr std::size_t kMaxTraceEvents = 100'000;

struct CaptureRequest {
  enum class Format { kTable, kCallgrind, kTrace };
  Format format = Format::kTable;
  int seconds = 30;
  double sample = 1.0;  // trace: the fraction of messages traced, (0, 1] (as --trace-sample)
  ProfileSort sort = ProfileSort::kTottime;  // table
};

// A request for `path` ("/profile" or "/trace") with these query parameters (name, value):
// nullopt and a one-line reason (for a 400) when a parameter is missing, unknown or out of range.
std::optional<CaptureRequest> parse_capture_request(
    const std::string& path, const std::vector<std::pair<std::string, std::string>>& params,
    std::string& err);

struct CaptureResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  double window_s = 0;  // how long the profiler was attached
  std::string ended;    // "complete", "client gone" or "service stopping"
};

class ProfileCapture {
 public:
  ProfileCapture(LiveObserver& target, const Clock& clock, std::shared_ptr<spdlog::logger> log);
  ~ProfileCapture();
  ProfileCapture(const ProfileCapture&) = delete;
  ProfileCapture& operator=(const ProfileCapture&) = delete;

  // Runs one capture and returns its report; 409 at once when another one is running, 503 once
  // stop() was called. `client_gone` (may be empty) is asked every 100 ms: true ends the capture.
  CaptureResponse run(const CaptureRequest& r, const std::function<bool()>& client_gone);
  // Ends a running capture now and refuses new ones (the service is stopping).
  void stop();
  bool running() const { return busy_.load(std::memory_order_relaxed); }

 private:
  LiveObserver& target_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> busy_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace mayhem
