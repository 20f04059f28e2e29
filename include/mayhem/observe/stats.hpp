// Plain snapshot structs for watching a running service: service-wide counters and gauges, the
// end-to-end latency histogram, and one row per pipeline stage (calls, messages, own and total
// time). Its counters and gauges are generated from the numbers table (observe/numbers.hpp). A
// snapshot is a value: the stats endpoint serves it (`to_json`, `render_prometheus`),
// `mayhem top` parses it back (`from_json`) and subtracts two of them (`since`) for rates and for
// its reset key. Other observers (e.g. a profiler) can add their own tables next to `stages`.
// A stage's `zones` (line-level timings of its MAYHEM_ZONE sites, mayhem/observe/zone.hpp) are
// filled only while someone watches them (`StageCollector::watch_zones`, `/stats?zones=STAGE`).
// Use: `StatsSnapshot s = service.stats_snapshot(); std::string text = render_prometheus(s);`
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mayhem/metrics.hpp"
#include "mayhem/observe/numbers.hpp"
#include "mayhem/observe/process_stats.hpp"

namespace mayhem {

// A histogram as data: the non-zero buckets of a `Histogram` (log-linear, see metrics.hpp) with
// its count, sum and max, in nanoseconds.
struct HistogramData {
  std::uint64_t count = 0, sum = 0, max = 0;
  std::vector<std::pair<std::uint16_t, std::uint64_t>> buckets;  // (bucket index, count), sorted

  static HistogramData of(const Histogram& h);
  double mean() const { return count == 0 ? 0.0 : static_cast<double>(sum) / double(count); }
  // Nearest-rank percentile (0 < q <= 1): the bucket's upper bound, capped at max; 0 when empty.
  std::uint64_t percentile(double q) const;
  // Messages with a value <= `le` (only buckets whose whole range is <= le count).
  std::uint64_t count_le(std::uint64_t le) const;
  // This minus an earlier snapshot of the same histogram (max stays this one's).
  HistogramData since(const HistogramData& earlier) const;
};

// One zone site as seen inside one stage's bodies: hits and time (the zone's whole duration, zones
// and stage bodies nested in it included, as line_profiler counts a line), in nanoseconds.
struct ZoneRow {
  std::string name;  // the zone's name (MAYHEM_ZONED: the statement's source text)
  std::string file;  // its source file
  std::uint32_t line = 0;
  std::string parent;  // "file:line" of the zone it ran inside; empty: directly in the stage body
  std::uint64_t hits = 0, time = 0;
};

// A stage's zones, counted only over the bodies that ran while its zones were watched: `calls`
// such bodies, `total` their time (nested stage bodies included), and one row per zone seen.
struct StageZones {
  std::uint64_t calls = 0, total = 0;
  std::vector<ZoneRow> rows;  // in the order the sites were first seen
};

struct StageSnapshot {
  std::string name;
  std::uint32_t limit = 0;     // configured concurrency; 0 = unlimited
  std::int64_t active = 0;     // bodies running now
  std::int64_t in_flight = 0;  // messages in the body now, or submitted and not yet completed
  std::int64_t queued = -1;    // messages waiting for the stage; -1 = not observable
  std::uint64_t calls = 0;     // bodies run (batches)
  std::uint64_t items = 0;     // messages through the stage
  std::uint64_t errors = 0;    // failed saves/restarts, nacks (per stage, see stats.cpp)
  std::uint64_t retries = 0;   // restart attempts retried
  HistogramData own;           // per call: time in the body minus nested stage bodies
  HistogramData total;         // per call: time in the body
  StageZones zones;            // empty until someone watches this stage's zones
};

// A moment of a running service: its numbers (the table in mayhem/observe/numbers.hpp, as the
// summary reports them), the end-to-end latency and one row per stage.
struct StatsSnapshot : Numbers {
  std::uint64_t uptime_ns = 0;  // since the service started (monotonic; rates divide by it)
  std::uint32_t threads = 0;
  bool log_async = false;  // the logger writes from a background thread (--log-async)
  HistogramData latency;   // end to end, published -> acked
  std::vector<StageSnapshot> stages;
  ProcessStats process;  // the process's CPU time, memory, ... (process.ok: read)
};

// Counters and histograms of `now` minus those of `earlier` (every counter of the numbers table,
// the stages' zone counts); gauges, names and `process` stay `now`'s.
StatsSnapshot since(const StatsSnapshot& now, const StatsSnapshot& earlier);

// A histogram as JSON: unit ("ns"), count, sum_ns, max_ns, mean_ns, p50_ns, p99_ns, buckets
// ([index, count] for each non-empty bucket) and bucket_bounds_ns ([from, to], inclusive, per
// listed bucket). Reading it back needs only count, sum_ns, max_ns and buckets.
void to_json(nlohmann::json& j, const HistogramData& h);
void from_json(const nlohmann::json& j, HistogramData& h);
void to_json(nlohmann::json& j, const StageSnapshot& s);
void from_json(const nlohmann::json& j, StageSnapshot& s);
// A stage's `zones` and the snapshot's `process` are written only when present (zones.calls != 0,
// process.ok) and read back when present.
void to_json(nlohmann::json& j, const StatsSnapshot& s);
void from_json(const nlohmann::json& j, StatsSnapshot& s);

// The Prometheus text exposition format (version 0.0.4) of a snapshot: every number of the table
// (its family and labels), the per-stage counters and gauges, the uptime, and the stage and
// end-to-end latency histograms in seconds.
std::string render_prometheus(const StatsSnapshot& s);

}  // namespace mayhem
