// `mayhem top`'s stage table screen, its help screen and the layout of its columns by width.
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "format.hpp"
#include "mayhem/cli/top.hpp"

namespace mayhem::cli {

using namespace top_format;

const char* to_string(SortKey k) {
  switch (k) {
    case SortKey::kPipeline:
      return "pipeline";
    case SortKey::kCallsPerSec:
      return "calls/s";
    case SortKey::kOwnPct:
      return "%own";
    case SortKey::kTotalPct:
      return "%total";
    case SortKey::kOwnP99:
      return "own p99";
    case SortKey::kTotalP99:
      return "total p99";
    case SortKey::kErrors:
      return "errors";
    case SortKey::kCount:
      break;
  }
  return "?";
}

namespace top_format {

const StatsSnapshot* base_of(const TopView& v) {
  if (!v.baseline || !v.now || v.baseline->uptime_ns > v.now->uptime_ns) return nullptr;
  return &*v.baseline;
}

std::string title_line(const TopView& v) {
  std::string state = v.status;
  if (state.empty() && !v.now)
    state = v.problem.empty() ? "connecting" : "unreachable";
  else if (state.empty())
    state = !v.problem.empty() ? "GONE" : v.paused ? "PAUSED" : "running";
  const std::string prefix = "mayhem top  ";
  const std::string tail = fmt::format("  [{}]", state);
  std::string out = v.source;
  if (!v.now) return prefix + out + tail;
  const StatsSnapshot& now = *v.now;
  out += fmt::format("  up {}", clock_text(now.uptime_ns));
  if (now.process.ok) {
    if (v.prev && v.prev->process.ok && now.uptime_ns > v.prev->uptime_ns) {
      const double cpu = std::max(now.process.cpu_seconds - v.prev->process.cpu_seconds, 0.0);
      out +=
          fmt::format("  cpu {:.1f}%",
                      100.0 * cpu * 1e9 / static_cast<double>(now.uptime_ns - v.prev->uptime_ns));
    } else {
      out += "  cpu -";
    }
    out += fmt::format("  rss {}", bytes(now.process.resident_bytes));
  }
  // The state matters most: when the line is too long, the thread count goes, then the prefix.
  const auto fits = [&](std::size_t n) { return v.width == 0 || static_cast<int>(n) <= v.width; };
  const std::string threads = fmt::format("  threads {}", now.threads);
  if (fits(prefix.size() + out.size() + threads.size() + tail.size())) out += threads;
  if (fits(prefix.size() + out.size() + tail.size())) out = prefix + out;
  return out + tail;
}

}  // namespace top_format

namespace {

const StageSnapshot* find_stage(const StatsSnapshot& s, const std::string& name) {
  for (const auto& r : s.stages)
    if (r.name == name) return &r;
  return nullptr;
}

// Messages in: published into the in-process pub/sub, or received from a broker.
std::uint64_t intake(const StatsSnapshot& s) {
  return s.scope == NumberScope::kBroker ? s.received : s.published;
}

struct Row {
  std::size_t order;
  const StageSnapshot* live;  // gauges
  StageSnapshot counted;      // counters since the baseline
  std::optional<double> calls_per_s;
  double own_pct = 0, total_pct = 0;
};

double sort_value(const Row& r, SortKey k) {
  switch (k) {
    case SortKey::kCallsPerSec:
      return r.calls_per_s.value_or(0);
    case SortKey::kOwnPct:
      return r.own_pct;
    case SortKey::kTotalPct:
      return r.total_pct;
    case SortKey::kOwnP99:
      return static_cast<double>(r.counted.own.percentile(0.99));
    case SortKey::kTotalP99:
      return static_cast<double>(r.counted.total.percentile(0.99));
    case SortKey::kErrors:
      return static_cast<double>(r.counted.errors);
    default:
      return static_cast<double>(r.order);
  }
}

std::optional<double> seconds_between(const TopView& v) {
  if (v.now && v.prev && v.now->uptime_ns > v.prev->uptime_ns)
    return static_cast<double>(v.now->uptime_ns - v.prev->uptime_ns) / 1e9;
  return std::nullopt;
}

// The rows of the stage table, sorted as the view asks.
std::vector<Row> table_rows(const TopView& v, const StatsSnapshot& counted) {
  const StatsSnapshot& now = *v.now;
  const auto dt = seconds_between(v);
  std::vector<Row> rows;
  double own_sum = 0;
  for (std::size_t i = 0; i < now.stages.size(); ++i) {
    Row r{i, &now.stages[i], counted.stages[i], std::nullopt};
    if (dt) {
      const StageSnapshot* before = v.prev ? find_stage(*v.prev, now.stages[i].name) : nullptr;
      r.calls_per_s =
          static_cast<double>(minus(now.stages[i].calls, before ? before->calls : 0)) / *dt;
    }
    own_sum += static_cast<double>(r.counted.own.sum);
    rows.push_back(std::move(r));
  }
  for (auto& r : rows) {
    if (own_sum > 0) {
      r.own_pct = 100.0 * static_cast<double>(r.counted.own.sum) / own_sum;
      r.total_pct = 100.0 * static_cast<double>(r.counted.total.sum) / own_sum;
    }
  }
  // Pipeline order ascending; every other key largest first; S turns either round.
  const bool ascending = (v.sort == SortKey::kPipeline) != v.reversed;
  std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    return ascending ? sort_value(a, v.sort) < sort_value(b, v.sort)
                     : sort_value(a, v.sort) > sort_value(b, v.sort);
  });
  return rows;
}

struct Column {
  const char* name;
  int width;
  int priority;  // kept first when the width is short: 0 most important
  SortKey sort;  // kCount: not a sort key
};

// Display order.
constexpr std::array<Column, 13> kColumns = {{
    {"STAGE", 9, 0, SortKey::kPipeline},
    {"CONC", 7, 11, SortKey::kCount},
    {"IN-FLT", 7, 4, SortKey::kCount},
    {"QUEUED", 7, 6, SortKey::kCount},
    {"CALLS/S", 8, 1, SortKey::kCallsPerSec},
    {"OWN-MEAN", 9, 7, SortKey::kCount},
    {"OWN-P99", 9, 3, SortKey::kOwnP99},
    {"TOT-MEAN", 9, 12, SortKey::kCount},
    {"TOT-P99", 9, 9, SortKey::kTotalP99},
    {"%OWN", 6, 2, SortKey::kOwnPct},
    {"%TOT", 6, 8, SortKey::kTotalPct},
    {"ERRORS", 8, 5, SortKey::kErrors},
    {"RETRIES", 8, 10, SortKey::kCount},
}};

std::string cell(const std::string& text, const Column& c) {
  return std::string(c.name) == "STAGE" ? fmt::format("{:<{}}", text, c.width)
                                        : fmt::format("{:>{}}", text, c.width);
}

}  // namespace

std::vector<std::string> columns_for_width(int width, SortKey sort, bool cursor) {
  std::vector<std::size_t> by_priority(kColumns.size());
  for (std::size_t i = 0; i < kColumns.size(); ++i) by_priority[i] = i;
  std::stable_sort(by_priority.begin(), by_priority.end(), [&](std::size_t a, std::size_t b) {
    const auto rank = [&](std::size_t i) {
      return i == 0 ? -2 : kColumns[i].sort == sort ? -1 : kColumns[i].priority;
    };
    return rank(a) < rank(b);
  });
  std::vector<bool> keep(kColumns.size(), false);
  int used = cursor ? 2 : 0;
  for (std::size_t i : by_priority) {
    const int need = kColumns[i].width + (used > (cursor ? 2 : 0) ? 1 : 0);
    if (width > 0 && used + need > width && i != 0) continue;
    keep[i] = true;
    used += need;
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < kColumns.size(); ++i)
    if (keep[i]) out.emplace_back(kColumns[i].name);
  return out;
}

std::vector<std::string> row_order(const TopView& v) {
  std::vector<std::string> names;
  if (!v.now) return names;
  const StatsSnapshot* base = base_of(v);
  const StatsSnapshot counted = base ? since(*v.now, *base) : *v.now;
  for (const Row& r : table_rows(v, counted)) names.push_back(r.live->name);
  return names;
}

std::string render_zones(const TopView& v);  // render_zones.cpp
std::string render_help(const TopView& v);

std::string render_top(const TopView& v) {
  if (v.help) return render_help(v);
  if (!v.drill.empty() && v.now) return render_zones(v);
  std::vector<std::string> lines;
  const auto line = [&lines](std::string s) { lines.push_back(std::move(s)); };
  if (!v.now) {
    line(title_line(v));
    line("");
    line(v.problem.empty()
             ? fmt::format("connecting to {} ...", v.source)
             : fmt::format("cannot reach the service at {}: {}", v.source, v.problem));
    line(v.interactive ? "retrying every second; q quits" : "");
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
  const StatsSnapshot& now = *v.now;
  const StatsSnapshot* base = base_of(v);
  const StatsSnapshot counted = base ? since(now, *base) : now;
  const auto dt = seconds_between(v);
  const auto rate = [&](std::uint64_t cur, std::uint64_t before) -> std::string {
    return dt ? human(static_cast<double>(minus(cur, before)) / *dt) : "-";
  };
  const StatsSnapshot& p = v.prev ? *v.prev : now;
  // A total and, once there are two samples, what the last interval added.
  const auto total_and_step = [&](std::uint64_t total, std::uint64_t cur, std::uint64_t before) {
    return dt ? fmt::format("{} (+{})", total, minus(cur, before)) : std::to_string(total);
  };

  line(title_line(v));
  // The header: groups of "name value" parts, each group on its own line; a part that would
  // pass the width goes on the next line.
  const auto flow = [&](const std::vector<std::string>& parts) {
    std::string cur;
    for (const auto& part : parts) {
      if (part.empty()) continue;
      if (!cur.empty() && v.width > 0 && static_cast<int>(cur.size() + 2 + part.size()) > v.width) {
        line(cur);
        cur.clear();
      }
      cur += (cur.empty() ? "" : "  ") + part;
    }
    if (!cur.empty()) line(cur);
  };
  flow({fmt::format("msgs/s in {} out {}", rate(intake(now), intake(p)),
                    rate(now.acked + now.nacked, p.acked + p.nacked)),
        fmt::format("in flight {}/{}", human(static_cast<double>(now.in_flight)),
                    human(static_cast<double>(now.max_in_flight))),
        fmt::format("backlog {}", human(static_cast<double>(now.backlog))),
        fmt::format("leases {}", human(static_cast<double>(now.leased_lots))),
        fmt::format("ext/s {}", rate(now.extensions, p.extensions))});
  flow(
      {"acks " + total_and_step(counted.acked, now.acked, p.acked),
       "nacks " + total_and_step(counted.nacked, now.nacked, p.nacked),
       "failed saves " + total_and_step(counted.save_failed, now.save_failed, p.save_failed),
       "restarts " + total_and_step(counted.restart_failed, now.restart_failed, p.restart_failed)});
  flow(
      {"retries " + total_and_step(counted.restart_retries, now.restart_retries, p.restart_retries),
       fmt::format("log overruns {}", counted.log_dropped),
       fmt::format("end-to-end mean {} p99 {}",
                   counted.latency.count ? duration(counted.latency.mean()) : "-",
                   counted.latency.count
                       ? duration(static_cast<double>(counted.latency.percentile(0.99)))
                       : "-")});
  flow({fmt::format("sort: {}{}", to_string(v.sort), v.reversed ? " (reversed)" : ""),
        base ? "counts since reset " + clock_text(minus(now.uptime_ns, base->uptime_ns)) + " ago"
             : ""});
  if (!v.problem.empty())
    flow({"!! the service went away: " + v.problem,
          v.status.empty() ? "(last numbers shown; retrying)" : "(last numbers shown)"});
  line("");

  const bool cursor = v.interactive;
  const auto names = columns_for_width(v.width, v.sort, cursor);
  std::vector<const Column*> cols;
  for (const auto& c : kColumns)
    if (std::find(names.begin(), names.end(), c.name) != names.end()) cols.push_back(&c);
  const auto join = [&](const std::vector<std::string>& cells, bool selected) {
    std::string out = cursor ? (selected ? "> " : "  ") : "";
    for (std::size_t i = 0; i < cells.size(); ++i) out += (i ? " " : "") + cell(cells[i], *cols[i]);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
  };
  std::vector<std::string> head;
  for (const Column* c : cols)
    head.push_back(c->sort == v.sort ? std::string(v.reversed ? "^" : "v") + c->name : c->name);
  line(join(head, false));

  const std::vector<Row> rows = table_rows(v, counted);
  const std::string selected =
      v.selected.empty() && !rows.empty() ? rows.front().live->name : v.selected;
  for (const auto& r : rows) {
    const StageSnapshot& g = *r.live;
    const StageSnapshot& c = r.counted;
    const bool timed = c.own.count != 0;
    std::vector<std::string> cells;
    for (const Column* col : cols) {
      const std::string n = col->name;
      if (n == "STAGE") cells.push_back(g.name);
      if (n == "CONC")
        cells.push_back(
            fmt::format("{}/{}", g.active, g.limit == 0 ? "inf" : std::to_string(g.limit)));
      if (n == "IN-FLT") cells.push_back(human(static_cast<double>(g.in_flight)));
      if (n == "QUEUED")
        cells.push_back(g.queued < 0 ? std::string("-") : human(static_cast<double>(g.queued)));
      if (n == "CALLS/S") cells.push_back(r.calls_per_s ? human(*r.calls_per_s) : "-");
      if (n == "OWN-MEAN") cells.push_back(timed ? duration(c.own.mean()) : "-");
      if (n == "OWN-P99")
        cells.push_back(timed ? duration(static_cast<double>(c.own.percentile(0.99))) : "-");
      if (n == "TOT-MEAN") cells.push_back(timed ? duration(c.total.mean()) : "-");
      if (n == "TOT-P99")
        cells.push_back(timed ? duration(static_cast<double>(c.total.percentile(0.99))) : "-");
      if (n == "%OWN") cells.push_back(fmt::format("{:.1f}", r.own_pct));
      if (n == "%TOT") cells.push_back(fmt::format("{:.1f}", r.total_pct));
      if (n == "ERRORS") cells.push_back(std::to_string(c.errors));
      if (n == "RETRIES") cells.push_back(std::to_string(c.retries));
    }
    line(join(cells, cursor && g.name == selected));
  }
  line("");

  // Every number of the table (mayhem/observe/numbers.hpp) the service reports: counters since
  // the start (or the reset key), gauges as they are now. Cut to the rows left on the screen.
  std::vector<std::string> numbers;
  const int per_line = v.width > 0 ? std::clamp((v.width + 2) / 35, 1, 3) : 3;
  std::string row;
  int in_row = 0;
  for_each_number(counted, [&](const NumberDef& d, std::uint64_t value) {
    row += fmt::format("{}{:<20} {:>12}", in_row == 0 ? "" : "  ", d.name, value);
    if (++in_row == per_line) {
      numbers.push_back(row);
      row.clear();
      in_row = 0;
    }
  });
  if (in_row != 0) numbers.push_back(row);
  const int tail = v.interactive ? 2 : 0;  // a blank line and the key line
  const int room = v.height > 0 ? v.height - static_cast<int>(lines.size()) - 1 - tail
                                : static_cast<int>(numbers.size());
  if (room >= 1) {
    line(base ? "NUMBERS (counters since reset)" : "NUMBERS");
    if (static_cast<int>(numbers.size()) <= room) {
      for (auto& n : numbers) line(std::move(n));
    } else {
      for (int i = 0; i < room - 1; ++i) line(std::move(numbers[static_cast<std::size_t>(i)]));
      line(fmt::format("... {} more lines of numbers (a taller window, or --once, shows them)",
                       numbers.size() - static_cast<std::size_t>(room - 1)));
    }
  }
  if (v.interactive) {
    line("");
    line(v.keys.empty()
             ? "keys: j/k select  enter zones  space pause  s/S sort  r reset  ? help  q quit"
             : v.keys);
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string render_help(const TopView& v) {
  std::string out = title_line(v) + "\n\n";
  const bool replay = !v.keys.empty();
  const char* lines[] = {
      "KEYS",
      "  j, k, down, up   select a stage",
      "  enter            its zones, line_profiler-style (hits, time, per hit, % of the",
      "                   stage, file:line); the service times them while you look",
      "  esc, backspace   back to the stage table",
      replay ? "  space            play / pause the recording"
             : "  space            pause (stop fetching)",
      replay ? "  left, right      one sample back / forward (pauses)" : nullptr,
      replay ? "  + -              play faster / slower" : nullptr,
      "  s                sort by the next column (the marked one: v largest first)",
      "  S                reverse the order (^)",
      "  r                count from now on (subtracts the current numbers)",
      "  ?                this screen (any key closes it)",
      "  q, ctrl-c        quit",
      "",
      "COLUMNS (narrow windows drop the last ones first)",
      "  CALLS/S bodies a second  %OWN share of all stages' own time  OWN-P99 per body",
      "  IN-FLT messages inside  ERRORS failed saves/restarts, nacks  QUEUED waiting",
      "  The header's (+N) is what the last interval added to the total beside it.",
  };
  for (const char* l : lines)
    if (l) out += std::string(l) + "\n";
  return out;
}

}  // namespace mayhem::cli
