#include "mayhem/observe/stats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace mayhem {

// ---- HistogramData ------------------------------------------------------------------------------

HistogramData HistogramData::of(const Histogram& h) {
  HistogramData d;
  d.count = h.count();
  d.sum = h.sum();
  d.max = h.max();
  for (int i = 0; i < Histogram::kBuckets; ++i)
    if (const auto n = h.bucket(i)) d.buckets.emplace_back(static_cast<std::uint16_t>(i), n);
  // Buckets and count are read one after the other while writers run: make them agree.
  std::uint64_t in_buckets = 0;
  for (const auto& b : d.buckets) in_buckets += b.second;
  d.count = in_buckets;
  return d;
}

std::uint64_t HistogramData::percentile(double q) const {
  if (count == 0) return 0;
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count)));
  rank = std::max<std::uint64_t>(rank, 1);
  std::uint64_t seen = 0;
  for (const auto& [index, n] : buckets) {
    seen += n;
    if (seen >= rank) return std::min(Histogram::upper_bound_of(index), max);
  }
  return max;
}

std::uint64_t HistogramData::count_le(std::uint64_t le) const {
  std::uint64_t n = 0;
  for (const auto& [index, c] : buckets) {
    if (Histogram::upper_bound_of(index) > le) break;
    n += c;
  }
  return n;
}

HistogramData HistogramData::since(const HistogramData& earlier) const {
  HistogramData d;
  d.max = max;
  std::size_t j = 0;
  for (const auto& [index, n] : buckets) {
    while (j < earlier.buckets.size() && earlier.buckets[j].first < index) ++j;
    std::uint64_t before = 0;
    if (j < earlier.buckets.size() && earlier.buckets[j].first == index)
      before = earlier.buckets[j].second;
    if (n > before) {
      d.buckets.emplace_back(index, n - before);
      d.count += n - before;
    }
  }
  d.sum = sum > earlier.sum ? sum - earlier.sum : 0;
  return d;
}

namespace {
std::uint64_t minus(std::uint64_t a, std::uint64_t b) {
  return a > b ? a - b : 0;
}
}  // namespace

StatsSnapshot since(const StatsSnapshot& now, const StatsSnapshot& earlier) {
  StatsSnapshot d = now;
  for (const NumberDef& def : kNumberDefs)
    if (def.kind == NumberKind::kCounter)
      d.*def.member = minus(now.*def.member, earlier.*def.member);
  d.latency = now.latency.since(earlier.latency);
  for (auto& row : d.stages) {
    auto it = std::find_if(earlier.stages.begin(), earlier.stages.end(),
                           [&](const StageSnapshot& e) { return e.name == row.name; });
    if (it == earlier.stages.end()) continue;
    row.calls = minus(row.calls, it->calls);
    row.items = minus(row.items, it->items);
    row.errors = minus(row.errors, it->errors);
    row.retries = minus(row.retries, it->retries);
    row.own = row.own.since(it->own);
    row.total = row.total.since(it->total);
    row.zones.calls = minus(row.zones.calls, it->zones.calls);
    row.zones.total = minus(row.zones.total, it->zones.total);
    for (auto& z : row.zones.rows) {
      for (const auto& e : it->zones.rows) {
        if (e.line != z.line || e.file != z.file) continue;
        z.hits = minus(z.hits, e.hits);
        z.time = minus(z.time, e.time);
        break;
      }
    }
  }
  return d;
}

// ---- JSON ---------------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const HistogramData& h) {
  // `buckets` stays (index, count) pairs (mayhem top and tools/lib/soak_sampler.py read them);
  // `bucket_bounds_ns` gives each listed bucket's value range, inclusive, in the same order.
  auto buckets = nlohmann::json::array(), bounds = nlohmann::json::array();
  for (const auto& [index, n] : h.buckets) {
    buckets.push_back({index, n});
    bounds.push_back({Histogram::lower_bound_of(index), Histogram::upper_bound_of(index)});
  }
  j = {{"unit", "ns"},
       {"count", h.count},
       {"sum_ns", h.sum},
       {"max_ns", h.max},
       {"mean_ns", h.mean()},
       {"p50_ns", h.percentile(0.5)},
       {"p99_ns", h.percentile(0.99)},
       {"buckets", std::move(buckets)},
       {"bucket_bounds_ns", std::move(bounds)}};
}

void from_json(const nlohmann::json& j, HistogramData& h) {
  h = HistogramData{};
  h.count = j.at("count").get<std::uint64_t>();
  h.sum = j.at("sum_ns").get<std::uint64_t>();
  h.max = j.at("max_ns").get<std::uint64_t>();
  for (const auto& b : j.at("buckets")) {
    const auto index = b.at(0).get<int>();
    if (index < 0 || index >= Histogram::kBuckets) throw std::out_of_range("bucket index");
    h.buckets.emplace_back(static_cast<std::uint16_t>(index), b.at(1).get<std::uint64_t>());
  }
  std::sort(h.buckets.begin(), h.buckets.end());
}

void to_json(nlohmann::json& j, const StageSnapshot& s) {
  j = {{"stage", s.name},      {"limit", s.limit}, {"active", s.active}, {"in_flight", s.in_flight},
       {"queued", s.queued},   {"calls", s.calls}, {"items", s.items},   {"errors", s.errors},
       {"retries", s.retries}, {"own", s.own},     {"total", s.total}};
  if (s.zones.calls == 0 && s.zones.rows.empty()) return;
  auto rows = nlohmann::json::array();
  for (const auto& z : s.zones.rows)
    rows.push_back({{"zone", z.name},
                    {"file", z.file},
                    {"line", z.line},
                    {"parent", z.parent},
                    {"hits", z.hits},
                    {"time_ns", z.time}});
  j["zones"] = {{"calls", s.zones.calls}, {"total_ns", s.zones.total}, {"rows", std::move(rows)}};
}

void from_json(const nlohmann::json& j, StageSnapshot& s) {
  s.name = j.at("stage").get<std::string>();
  s.limit = j.at("limit").get<std::uint32_t>();
  s.active = j.at("active").get<std::int64_t>();
  s.in_flight = j.at("in_flight").get<std::int64_t>();
  s.queued = j.at("queued").get<std::int64_t>();
  s.calls = j.at("calls").get<std::uint64_t>();
  s.items = j.at("items").get<std::uint64_t>();
  s.errors = j.at("errors").get<std::uint64_t>();
  s.retries = j.at("retries").get<std::uint64_t>();
  s.own = j.at("own").get<HistogramData>();
  s.total = j.at("total").get<HistogramData>();
  s.zones = StageZones{};
  if (const auto z = j.find("zones"); z != j.end()) {
    s.zones.calls = z->at("calls").get<std::uint64_t>();
    s.zones.total = z->at("total_ns").get<std::uint64_t>();
    for (const auto& r : z->at("rows")) {
      s.zones.rows.push_back(
          ZoneRow{r.at("zone").get<std::string>(), r.at("file").get<std::string>(),
                  r.at("line").get<std::uint32_t>(), r.value("parent", std::string()),
                  r.at("hits").get<std::uint64_t>(), r.at("time_ns").get<std::uint64_t>()});
    }
  }
}

void to_json(nlohmann::json& j, const StatsSnapshot& s) {
  nlohmann::json counters = nlohmann::json::object(), gauges = nlohmann::json::object();
  numbers_to_json(s, counters, KindFilter::kCounters);
  numbers_to_json(s, gauges, KindFilter::kGauges);
  j = {{"uptime_s", static_cast<double>(s.uptime_ns) / 1e9},
       {"uptime_ns", s.uptime_ns},
       {"threads", s.threads},
       {"source", to_string(s.scope)},
       {"counters", std::move(counters)},
       {"gauges", std::move(gauges)},
       {"log", {{"async", s.log_async}}},
       {"latency", s.latency},
       {"stages", s.stages}};
  if (s.process.ok)
    j["process"] = {{"cpu_seconds", s.process.cpu_seconds},
                    {"resident_bytes", s.process.resident_bytes},
                    {"virtual_bytes", s.process.virtual_bytes},
                    {"open_fds", s.process.open_fds},
                    {"max_fds", s.process.max_fds},
                    {"start_time_seconds", s.process.start_time_seconds},
                    {"threads", s.process.threads}};
}

void from_json(const nlohmann::json& j, StatsSnapshot& s) {
  s = StatsSnapshot{};
  s.uptime_ns = j.at("uptime_ns").get<std::uint64_t>();
  s.threads = j.at("threads").get<std::uint32_t>();
  s.scope = j.value("source", std::string()) == to_string(NumberScope::kBroker)
                ? NumberScope::kBroker
                : NumberScope::kInProcess;
  numbers_from_json(j.at("counters"), s, KindFilter::kCounters);
  numbers_from_json(j.at("gauges"), s, KindFilter::kGauges);
  s.log_async = j.at("log").at("async").get<bool>();
  s.latency = j.at("latency").get<HistogramData>();
  s.stages = j.at("stages").get<std::vector<StageSnapshot>>();
  if (const auto p = j.find("process"); p != j.end()) {
    s.process.ok = true;
    s.process.cpu_seconds = p->at("cpu_seconds").get<double>();
    s.process.resident_bytes = p->at("resident_bytes").get<std::uint64_t>();
    s.process.virtual_bytes = p->value("virtual_bytes", std::uint64_t{0});
    s.process.open_fds = p->value("open_fds", std::uint64_t{0});
    s.process.max_fds = p->value("max_fds", std::uint64_t{0});
    s.process.start_time_seconds = p->value("start_time_seconds", 0.0);
    s.process.threads = p->value("threads", std::uint64_t{0});
  }
}

// ---- Prometheus ---------------------------------------------------------------------------------

namespace {

// Bucket bounds in seconds: 1 us .. 10 s, 1-2.5-5 steps.
constexpr double kBounds[] = {1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5, 5e-5,   1e-4, 2.5e-4,
                              5e-4, 1e-3,   2.5e-3, 5e-3, 1e-2,   2.5e-2, 5e-2, 0.1,
                              0.25, 0.5,    1.0,    2.5,  5.0,    10.0};

class Writer {
 public:
  void header(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(const std::string& name, const std::string& labels, std::uint64_t v) {
    out_ += labels.empty() ? fmt::format("{} {}\n", name, v)
                           : fmt::format("{}{{{}}} {}\n", name, labels, v);
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    out_ += labels.empty() ? fmt::format("{} {}\n", name, v)
                           : fmt::format("{}{{{}}} {}\n", name, labels, v);
  }
  // One histogram series (nanosecond data, exported in seconds).
  void histogram(const std::string& name, const std::string& labels, const HistogramData& h) {
    const std::string sep = labels.empty() ? "" : ",";
    for (double le : kBounds) {
      const auto le_ns = static_cast<std::uint64_t>(std::llround(le * 1e9));
      sample(name + "_bucket", fmt::format("{}{}le=\"{}\"", labels, sep, le), h.count_le(le_ns));
    }
    sample(name + "_bucket", fmt::format("{}{}le=\"+Inf\"", labels, sep), h.count);
    sample(name + "_sum", labels, static_cast<double>(h.sum) / 1e9);
    sample(name + "_count", labels, h.count);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string stage_label(const std::string& stage) {
  return fmt::format("stage=\"{}\"", stage);
}

}  // namespace

std::string render_prometheus(const StatsSnapshot& s) {
  Writer w;
  // The numbers table, family by family (a family's samples must be written together).
  for (std::size_t f = 0; f < static_cast<std::size_t>(NumberFamily::kCount); ++f) {
    const FamilyDef& fam = kFamilies[f];
    bool header = false;
    for_each_number(s, [&](const NumberDef& d, std::uint64_t v) {
      if (static_cast<std::size_t>(d.family) != f) return;
      if (!header) w.header(fam.name, fam.type, fam.help);
      header = true;
      w.sample(fam.name, d.labels, v);
    });
    // The stages' own queues are depths too.
    if (static_cast<NumberFamily>(f) == NumberFamily::kQueueDepth)
      for (const auto& r : s.stages)
        if (r.queued >= 0)
          w.sample(fam.name, fmt::format("queue=\"{}\"", r.name),
                   static_cast<std::uint64_t>(r.queued));
  }
  w.header("mayhem_stage_calls_total", "counter", "Stage bodies run (one per batch)");
  for (const auto& r : s.stages) w.sample("mayhem_stage_calls_total", stage_label(r.name), r.calls);
  w.header("mayhem_stage_items_total", "counter", "Messages through each stage body");
  for (const auto& r : s.stages) w.sample("mayhem_stage_items_total", stage_label(r.name), r.items);
  w.header("mayhem_stage_active", "gauge", "Stage bodies running now");
  for (const auto& r : s.stages)
    w.sample("mayhem_stage_active", stage_label(r.name), static_cast<std::uint64_t>(r.active));
  w.header("mayhem_stage_in_flight_messages", "gauge",
           "Messages inside a stage, or submitted to its I/O and not yet completed");
  for (const auto& r : s.stages)
    w.sample("mayhem_stage_in_flight_messages", stage_label(r.name),
             static_cast<std::uint64_t>(r.in_flight));
  w.header("mayhem_uptime_seconds", "gauge", "Seconds since the service started");
  w.sample("mayhem_uptime_seconds", "", static_cast<double>(s.uptime_ns) / 1e9);

  w.header("mayhem_stage_own_seconds", "histogram",
           "Time per stage call in its own body (nested stage bodies excluded)");
  for (const auto& r : s.stages)
    w.histogram("mayhem_stage_own_seconds", stage_label(r.name), r.own);
  w.header("mayhem_stage_total_seconds", "histogram",
           "Time per stage call, nested bodies included");
  for (const auto& r : s.stages)
    w.histogram("mayhem_stage_total_seconds", stage_label(r.name), r.total);
  w.header("mayhem_end_to_end_latency_seconds", "histogram", "Published to acked, per message");
  w.histogram("mayhem_end_to_end_latency_seconds", "", s.latency);
  return w.take();
}

}  // namespace mayhem
