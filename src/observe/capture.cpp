#include "mayhem/observe/capture.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "mayhem/observe/profiler.hpp"

namespace mayhem {

namespace {

// "seconds=N": a whole number of seconds in 1..kMaxCaptureSeconds.
std::optional<int> parse_seconds(const std::string& v) {
  if (v.empty() || v.size() > 3 || v.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int n = std::stoi(v);
  if (n < 1 || n > kMaxCaptureSeconds) return std::nullopt;
  return n;
}

std::optional<double> parse_sample(const std::string& v) {
  if (v.empty() || v.size() > 32) return std::nullopt;
  char* end = nullptr;
  const double p = std::strtod(v.c_str(), &end);
  if (end != v.c_str() + v.size() || !std::isfinite(p) || p <= 0 || p > 1) return std::nullopt;
  return p;
}

long long unix_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* format_name(CaptureRequest::Format f) {
  switch (f) {
    case CaptureRequest::Format::kTable:
      return "table";
    case CaptureRequest::Format::kCallgrind:
      return "callgrind";
    case CaptureRequest::Format::kTrace:
      return "trace";
  }
  return "?";
}

}  // namespace

std::optional<CaptureRequest> parse_capture_request(
    const std::string& path, const std::vector<std::pair<std::string, std::string>>& params,
    std::string& err) {
  const bool trace = path == "/trace";
  CaptureRequest r;
  r.format = trace ? CaptureRequest::Format::kTrace : CaptureRequest::Format::kTable;
  std::vector<std::string> seen;
  const auto fail = [&](const std::string& why) {
    err = why;
    return std::nullopt;
  };
  for (const auto& [name, value] : params) {
    for (const auto& s : seen)
      if (s == name) return fail(fmt::format("{} is given twice", name));
    seen.push_back(name);
    if (name == "seconds") {
      const auto n = parse_seconds(value);
      if (!n)
        return fail(fmt::format("seconds: a whole number from 1 to {} (got '{}')",
                                kMaxCaptureSeconds, value.substr(0, 40)));
      r.seconds = *n;
    } else if (name == "format" && !trace) {
      if (value == "table")
        r.format = CaptureRequest::Format::kTable;
      else if (value == "callgrind")
        r.format = CaptureRequest::Format::kCallgrind;
      else
        return fail(fmt::format("format: table or callgrind (got '{}'; the timeline is /trace)",
                                value.substr(0, 40)));
    } else if (name == "sort" && !trace) {
      const auto s = parse_profile_sort(value);
      if (!s)
        return fail(
            fmt::format("sort: tottime, cumtime, ncalls or name (got '{}')", value.substr(0, 40)));
      r.sort = *s;
    } else if (name == "sample" && trace) {
      const auto p = parse_sample(value);
      if (!p)
        return fail(fmt::format("sample: a fraction of messages in (0, 1] (got '{}')",
                                value.substr(0, 40)));
      r.sample = *p;
    } else {
      return fail(fmt::format("unknown parameter '{}': {} takes {}", name.substr(0, 40), path,
                              trace ? "seconds and sample" : "seconds, format and sort"));
    }
  }
  return r;
}

ProfileCapture::ProfileCapture(LiveObserver& target, const Clock& clock,
                               std::shared_ptr<spdlog::logger> log)
    : target_(target), clock_(clock), log_(std::move(log)) {}

ProfileCapture::~ProfileCapture() {
  stop();
}

void ProfileCapture::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
}

CaptureResponse ProfileCapture::run(const CaptureRequest& r,
                                    const std::function<bool()>& client_gone) {
  CaptureResponse res;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      res.status = 503;
      res.body = "503 the service is stopping: no new captures\n";
      return res;
    }
  }
  if (busy_.exchange(true, std::memory_order_acq_rel)) {
    res.status = 409;
    res.body = "409 a capture is already running: one at a time; try again when it ends (at most " +
               std::to_string(kMaxCaptureSeconds) + " s)\n";
    return res;
  }
  ProfilerConfig cfg;
  cfg.profile = r.format != CaptureRequest::Format::kTrace;
  cfg.trace = !cfg.profile;
  cfg.trace_sample = r.sample;
  cfg.trace_max_events = kMaxTraceEvents;
  auto prof = std::make_unique<Profiler>(cfg, clock_, log_);
  const long long start_us = unix_us();
  const Nanos start = steady_now();
  target_.attach(prof.get());  // busy_ makes this the only capture: it attaches
  // The I/O pending now: their waits count from here (read after attaching: an operation
  // submitted in between is counted twice, one completed in between not at all; a handful).
  prof->seed_in_flight(target_.io_in_flight());
  if (log_)
    log_->info("Capture started: {} s, {}{}", r.seconds, format_name(r.format),
               cfg.trace ? fmt::format(" (sample {:g})", r.sample) : "");
  res.ended = "complete";
  const Nanos deadline = start + static_cast<Nanos>(r.seconds) * kNanosPerSecond;
  {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (stopping_) {
        res.ended = "service stopping";
        break;
      }
      const Nanos left = deadline - steady_now();
      if (left <= 0) break;
      cv_.wait_for(lock, std::chrono::nanoseconds(std::min<Nanos>(left, 100'000'000)));
      if (stopping_ || steady_now() >= deadline) continue;
      lock.unlock();
      const bool gone = client_gone && client_gone();
      lock.lock();
      if (gone) {
        res.ended = "client gone";
        break;
      }
    }
  }
  target_.detach();
  prof->freeze();
  const long long end_us = unix_us();
  res.window_s = nanos_to_seconds(steady_now() - start);
  const ProfileSnapshot snap = cfg.profile ? prof->snapshot() : ProfileSnapshot{};
  const std::string what = fmt::format("mayhem (live capture: {:.3f} s window, {})",
                                       nanos_to_seconds(snap.wall), res.ended);
  switch (r.format) {
    case CaptureRequest::Format::kTable:
      res.body = fmt::format("Live capture of a running mayhem: {:.3f} s window ({})\n\n",
                             nanos_to_seconds(snap.wall), res.ended) +
                 format_table(snap, r.sort) + "\n" + format_lines(snap);
      break;
    case CaptureRequest::Format::kCallgrind: {
      std::ostringstream out;
      write_callgrind(snap, out, what);
      res.body = out.str();
      res.content_type = "application/octet-stream";
      break;
    }
    case CaptureRequest::Format::kTrace: {
      TraceWriteOptions o;
      o.max_events = kMaxTraceEvents;
      o.other_data = fmt::format(
          R"j("capture_start_unix_us":{},"capture_end_unix_us":{},"seconds":{},"sample":{},"ended":"{}")j",
          start_us, end_us, r.seconds, r.sample, res.ended);
      const TraceWriteResult w = prof->write_trace(res.body, o);
      res.content_type = "application/json";
      if (w.truncated() && log_)
        log_->warn("Capture trace truncated: {} events written, {} left out (limit {})", w.events,
                   w.dropped, kMaxTraceEvents);
      break;
    }
  }
  prof.reset();
  busy_.store(false, std::memory_order_release);
  if (log_)
    log_->info("Capture ended ({}) after {:.3f} s: {} bytes of {}", res.ended, res.window_s,
               res.body.size(), format_name(r.format));
  return res;
}

}  // namespace mayhem
