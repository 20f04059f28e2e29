// The profiler's trace writer: the per-thread event logs (slices, I/O begin/end, queue spans,
// counter samples) as Chrome trace-event JSON for Perfetto or chrome://tracing, with each wait
// (queue, save/restart/cleanup I/O) laid out on non-overlapping lanes.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>
#include <tuple>
#include <vector>

#include "mayhem/observe/profiler.hpp"
#include "thread_data.hpp"

namespace mayhem {

using namespace profiler_detail;

namespace {

std::string us(Nanos ns) {  // exact: microseconds with three decimals
  if (ns < 0) ns = 0;
  return fmt::format("{}.{:03}", ns / 1000, ns % 1000);
}

struct Interval {
  Nanos start, end;
  std::uint64_t seq;
};

// Greedy interval partitioning: each interval gets the lowest free lane, so slices on one lane
// never overlap.
std::vector<int> assign_lanes(std::vector<Interval>& v) {
  std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) {
    return std::tie(a.start, a.end) < std::tie(b.start, b.end);
  });
  std::vector<int> lane(v.size());
  using Busy = std::pair<Nanos, int>;  // (end, lane)
  std::priority_queue<Busy, std::vector<Busy>, std::greater<>> busy;
  std::priority_queue<int, std::vector<int>, std::greater<>> free_lanes;
  int lanes = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    while (!busy.empty() && busy.top().first <= v[i].start) {
      free_lanes.push(busy.top().second);
      busy.pop();
    }
    int l;
    if (!free_lanes.empty()) {
      l = free_lanes.top();
      free_lanes.pop();
    } else {
      l = lanes++;
    }
    lane[i] = l;
    busy.emplace(v[i].end, l);
  }
  return lane;
}

}  // namespace

bool Profiler::write_trace(const std::string& path, std::string& err) const {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  std::string buf;
  buf.reserve(1 << 20);
  write_trace_json(buf, TraceWriteOptions{}, [&] {
    std::fwrite(buf.data(), 1, buf.size(), f);
    buf.clear();
  });
  std::fwrite(buf.data(), 1, buf.size(), f);
  if (std::fclose(f) != 0) {
    err = fmt::format("cannot write trace file '{}': {}", path, std::strerror(errno));
    return false;
  }
  return true;
}

TraceWriteResult Profiler::write_trace(std::string& out, const TraceWriteOptions& o) const {
  return write_trace_json(out, o, [] {});
}

// Appends the JSON to `buf`, calling `flush` whenever it holds more than 1 MiB (the file writer
// empties it there; the string writer keeps it).
TraceWriteResult Profiler::write_trace_json(std::string& buf, const TraceWriteOptions& o,
                                            const std::function<void()>& flush) const {
  TraceWriteResult result;
  bool first = true;
  std::size_t flushed_at = buf.size();
  auto emit = [&](const std::string& ev) {
    if (o.max_events != 0 && result.events == o.max_events) {
      ++result.dropped;
      return;
    }
    ++result.events;
    if (!first) buf += ",\n";
    first = false;
    buf += ev;
    if (buf.size() - flushed_at > (1 << 20)) {
      flush();
      flushed_at = buf.size();
    }
  };
  buf += "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  constexpr int kPidStages = 1, kPidWaits = 2;
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: stage bodies per thread"}}}})j",
      kPidStages));
  emit(fmt::format(
      R"j({{"ph":"M","pid":{},"name":"process_name","args":{{"name":"mayhem: sampled messages waiting (queue, I/O)"}}}})j",
      kPidWaits));
  // Slices, I/O and counters were recorded in ticks; queue spans in nanoseconds.
  const double ratio = report_ns_per_tick();
  auto ns = [&](std::int64_t ticks) {
    return tsc_ ? static_cast<Nanos>(std::llround(static_cast<double>(ticks) * ratio)) : ticks;
  };
  std::vector<Interval> spans[kWaits];
  // Open I/O per (op, seq), in time order: begin/end pairs (retries give several).
  std::vector<std::tuple<int, std::uint64_t, Nanos, int>> io;  // op, seq, ts, 0 begin / 1 end
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next) {
    const int tid = t->index + 1;
    const bool lease = t->saw_lease.load(std::memory_order_relaxed);
    emit(fmt::format(
        R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{}"}}}})j",
        kPidStages, tid,
        lease ? std::string("lease thread") : fmt::format("pipeline thread {}", tid)));
    t->trace.each([&](const TraceEvent& e) {
      switch (e.kind) {
        case TraceEvent::kSlice: {
          const auto stage = static_cast<Stage>(e.node);
          std::string seqs;
          for (int i = 0; i < std::min<int>(e.nseq, 3); ++i)
            seqs += fmt::format("{}{}", i ? "," : "", e.seqs[i]);
          emit(fmt::format(
              R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"stage","args":{{"messages":{},"sampled":{},"sampled_seqs":[{}]}}}})j",
              kPidStages, tid, us(ns(e.ts)), us(ns(e.ts + e.dur) - ns(e.ts)),
              stage == Stage::kLease ? "lease tick" : to_string(stage), e.items, e.nseq, seqs));
          break;
        }
        case TraceEvent::kCounter:
          emit(fmt::format(
              R"j({{"ph":"C","pid":{},"ts":{},"name":"{}","args":{{"messages":{}}}}})j", kPidStages,
              us(ns(e.ts)), e.node == 0 ? "in flight" : "queue depth", e.dur));
          break;
        case TraceEvent::kQueueSpan:
          spans[0].push_back({e.ts, e.ts + e.dur, e.seqs[0]});
          break;
        case TraceEvent::kIoBegin:
        case TraceEvent::kIoEnd:
          io.emplace_back(e.node, e.seqs[0], ns(e.ts), e.kind == TraceEvent::kIoBegin ? 0 : 1);
          break;
      }
    });
  }
  std::sort(io.begin(), io.end());
  for (std::size_t i = 0; i + 1 < io.size(); ++i) {
    const auto& [op, seq, ts, kind] = io[i];
    const auto& [op2, seq2, ts2, kind2] = io[i + 1];
    if (kind == 0 && kind2 == 1 && op == op2 && seq == seq2) {
      spans[op + 1].push_back({ts, ts2, seq});
      ++i;
    }
  }
  for (int w = 0; w < kWaits; ++w) {
    const std::vector<int> lane = assign_lanes(spans[w]);
    int lanes = 0;
    for (std::size_t i = 0; i < spans[w].size(); ++i) {
      const int tid = (w + 1) * 100000 + lane[i];
      lanes = std::max(lanes, lane[i] + 1);
      emit(fmt::format(
          R"j({{"ph":"X","pid":{},"tid":{},"ts":{},"dur":{},"name":"{}","cat":"wait","args":{{"seq":{}}}}})j",
          kPidWaits, tid, us(spans[w][i].start), us(spans[w][i].end - spans[w][i].start),
          kWaitNames[w], spans[w][i].seq));
    }
    for (int l = 0; l < lanes; ++l)
      emit(fmt::format(
          R"j({{"ph":"M","pid":{},"tid":{},"name":"thread_name","args":{{"name":"{} lane {}"}}}})j",
          kPidWaits, (w + 1) * 100000 + l, kWaitNames[w], l));
  }
  for (const ThreadData* t = threads_.load(std::memory_order_acquire); t; t = t->next)
    result.dropped += t->trace.dropped();
  // The window: from the start to the freeze (or now), on the time base of every event above.
  const Ticks end = end_ticks_.load(std::memory_order_acquire);
  const Nanos window = ns((end != 0 ? end : ticks()) - start_ticks_);
  buf += fmt::format(
      "\n],\"otherData\":{{\"window_us\":{},\"events\":{},\"max_events\":{},\"truncated\":{},"
      "\"dropped_events\":{}{}{}}}}}\n",
      us(window), result.events, o.max_events, result.truncated(), result.dropped,
      o.other_data.empty() ? "" : ",", o.other_data);
  return result;
}

}  // namespace mayhem
