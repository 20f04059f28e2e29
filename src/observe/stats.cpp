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
  d.published = minus(now.published, earlier.published);
  d.consumed = minus(now.consumed, earlier.consumed);
  d.acked = minus(now.acked, earlier.acked);
  d.nacked = minus(now.nacked, earlier.nacked);
  d.saved = minus(now.saved, earlier.saved);
  d.save_failed = minus(now.save_failed, earlier.save_failed);
  d.restarted = minus(now.restarted, earlier.restarted);
  d.restart_failed = minus(now.restart_failed, earlier.restart_failed);
  d.retries = minus(now.retries, earlier.retries);
  d.extensions = minus(now.extensions, earlier.extensions);
  d.late_extensions = minus(now.late_extensions, earlier.late_extensions);
  d.log.overruns = minus(now.log.overruns, earlier.log.overruns);
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
  }
  return d;
}

// ---- JSON ---------------------------------------------------------------------------------------

void to_json(nlohmann::json& j, const HistogramData& h) {
  auto buckets = nlohmann::json::array();
  for (const auto& [index, n] : h.buckets) buckets.push_back({index, n});
  j = {{"count", h.count},
       {"sum_ns", h.sum},
       {"max_ns", h.max},
       {"mean_ns", h.mean()},
       {"p50_ns", h.percentile(0.5)},
       {"p99_ns", h.percentile(0.99)},
       {"buckets", std::move(buckets)}};
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
}

void to_json(nlohmann::json& j, const StatsSnapshot& s) {
  j = {{"uptime_s", static_cast<double>(s.uptime_ns) / 1e9},
       {"uptime_ns", s.uptime_ns},
       {"threads", s.threads},
       {"counters",
        {{"published", s.published},
         {"consumed", s.consumed},
         {"acked", s.acked},
         {"nacked", s.nacked},
         {"saved", s.saved},
         {"save_failed", s.save_failed},
         {"restarted", s.restarted},
         {"restart_failed", s.restart_failed},
         {"restart_retries", s.retries},
         {"extensions", s.extensions},
         {"late_extensions", s.late_extensions}}},
       {"gauges",
        {{"in_flight", s.in_flight},
         {"peak_in_flight", s.peak_in_flight},
         {"max_in_flight", s.max_in_flight},
         {"backlog", s.backlog},
         {"queue_capacity", s.queue_capacity},
         {"leased_lots", s.leased_lots}}},
       {"log",
        {{"async", s.log.async}, {"queue_depth", s.log.queue_depth}, {"overruns", s.log.overruns}}},
       {"latency", s.latency},
       {"stages", s.stages}};
}

void from_json(const nlohmann::json& j, StatsSnapshot& s) {
  s = StatsSnapshot{};
  s.uptime_ns = j.at("uptime_ns").get<std::uint64_t>();
  s.threads = j.at("threads").get<std::uint32_t>();
  const auto& c = j.at("counters");
  s.published = c.at("published").get<std::uint64_t>();
  s.consumed = c.at("consumed").get<std::uint64_t>();
  s.acked = c.at("acked").get<std::uint64_t>();
  s.nacked = c.at("nacked").get<std::uint64_t>();
  s.saved = c.at("saved").get<std::uint64_t>();
  s.save_failed = c.at("save_failed").get<std::uint64_t>();
  s.restarted = c.at("restarted").get<std::uint64_t>();
  s.restart_failed = c.at("restart_failed").get<std::uint64_t>();
  s.retries = c.at("restart_retries").get<std::uint64_t>();
  s.extensions = c.at("extensions").get<std::uint64_t>();
  s.late_extensions = c.at("late_extensions").get<std::uint64_t>();
  const auto& g = j.at("gauges");
  s.in_flight = g.at("in_flight").get<std::uint64_t>();
  s.peak_in_flight = g.at("peak_in_flight").get<std::uint64_t>();
  s.max_in_flight = g.at("max_in_flight").get<std::uint64_t>();
  s.backlog = g.at("backlog").get<std::uint64_t>();
  s.queue_capacity = g.at("queue_capacity").get<std::uint64_t>();
  s.leased_lots = g.at("leased_lots").get<std::uint64_t>();
  const auto& l = j.at("log");
  s.log.async = l.at("async").get<bool>();
  s.log.queue_depth = l.at("queue_depth").get<std::uint64_t>();
  s.log.overruns = l.at("overruns").get<std::uint64_t>();
  s.latency = j.at("latency").get<HistogramData>();
  s.stages = j.at("stages").get<std::vector<StageSnapshot>>();
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
  w.header("mayhem_messages_total", "counter",
           "Messages per stage and outcome (publish, pull, save, restart, settle)");
  const std::pair<const char*, std::pair<const char*, std::uint64_t>> outcomes[] = {
      {"publish", {"published", s.published}},
      {"consume", {"pulled", s.consumed}},
      {"saved", {"ok", s.saved}},
      {"saved", {"failed", s.save_failed}},
      {"restarted", {"ok", s.restarted}},
      {"restarted", {"failed", s.restart_failed}},
      {"restarted", {"retried", s.retries}},
      {"settle", {"acked", s.acked}},
      {"settle", {"nacked", s.nacked}},
  };
  for (const auto& [stage, o] : outcomes)
    w.sample("mayhem_messages_total", fmt::format("stage=\"{}\",outcome=\"{}\"", stage, o.first),
             o.second);
  w.header("mayhem_lease_extensions_total", "counter", "Ack-deadline extensions");
  w.sample("mayhem_lease_extensions_total", "", s.extensions);
  w.header("mayhem_lease_late_extensions_total", "counter",
           "Extensions that happened after the deadline had passed");
  w.sample("mayhem_lease_late_extensions_total", "", s.late_extensions);
  w.header("mayhem_stage_calls_total", "counter", "Stage bodies run (one per batch)");
  for (const auto& r : s.stages) w.sample("mayhem_stage_calls_total", stage_label(r.name), r.calls);
  w.header("mayhem_stage_items_total", "counter", "Messages through each stage body");
  for (const auto& r : s.stages) w.sample("mayhem_stage_items_total", stage_label(r.name), r.items);

  w.header("mayhem_in_flight_messages", "gauge", "Messages pulled and not yet acked or nacked");
  w.sample("mayhem_in_flight_messages", "", s.in_flight);
  w.header("mayhem_max_in_flight_messages", "gauge", "The --max-in-flight bound");
  w.sample("mayhem_max_in_flight_messages", "", s.max_in_flight);
  w.header("mayhem_queue_depth_messages", "gauge", "Messages waiting, per queue");
  w.sample("mayhem_queue_depth_messages", "queue=\"pubsub\"", s.backlog);
  w.sample("mayhem_queue_depth_messages", "queue=\"log\"", s.log.queue_depth);
  for (const auto& r : s.stages)
    if (r.queued >= 0)
      w.sample("mayhem_queue_depth_messages", fmt::format("queue=\"{}\"", r.name),
               static_cast<std::uint64_t>(r.queued));
  w.header("mayhem_leased_lots", "gauge", "Lots (pulled batches) whose deadlines are extended");
  w.sample("mayhem_leased_lots", "", s.leased_lots);
  w.header("mayhem_stage_active", "gauge", "Stage bodies running now");
  for (const auto& r : s.stages)
    w.sample("mayhem_stage_active", stage_label(r.name), static_cast<std::uint64_t>(r.active));
  w.header("mayhem_stage_in_flight_messages", "gauge",
           "Messages inside a stage, or submitted to its I/O and not yet completed");
  for (const auto& r : s.stages)
    w.sample("mayhem_stage_in_flight_messages", stage_label(r.name),
             static_cast<std::uint64_t>(r.in_flight));
  w.header("mayhem_log_overruns_total", "counter", "Log lines the async logger queue dropped");
  w.sample("mayhem_log_overruns_total", "", s.log.overruns);
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
