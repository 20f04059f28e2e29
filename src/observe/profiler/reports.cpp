// The profiler's reports, from a ProfileSnapshot: the cProfile-style table (`--profile`), the
// line_profiler-style zone timings, the Callgrind file (`--profile-out`), and the glue from the
// service options (make_profiler, write_profile_reports).
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <vector>

#include "mayhem/observe/profiler.hpp"

namespace mayhem {

std::optional<ProfileSort> parse_profile_sort(const std::string& s) {
  if (s == "tottime") return ProfileSort::kTottime;
  if (s == "cumtime") return ProfileSort::kCumtime;
  if (s == "ncalls") return ProfileSort::kNcalls;
  if (s == "name") return ProfileSort::kName;
  return std::nullopt;
}

namespace {

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string row_label(const ProfileRow& r) {
  switch (r.kind) {
    case ProfileRow::Kind::kStage:
      return fmt::format("stage:{} ({} msgs)", r.name, r.items);
    case ProfileRow::Kind::kZone: {
      std::string name = r.name;
      if (name.size() > 60) name = name.substr(0, 57) + "...";
      return fmt::format("{}:{}({})", base_name(r.file), r.line, name);
    }
    case ProfileRow::Kind::kWait:
      return fmt::format("wait:{} (per message)", r.name);
  }
  return r.name;
}

double per_call_us(Nanos t, std::uint64_t n) {
  return n == 0 ? 0.0 : static_cast<double>(t) / 1e3 / static_cast<double>(n);
}

}  // namespace

std::string format_table(const ProfileSnapshot& s, ProfileSort sort) {
  std::vector<const ProfileRow*> rows;
  std::uint64_t calls = 0;
  for (const auto& r : s.rows) {
    if (r.ncalls == 0) continue;
    rows.push_back(&r);
    if (r.kind != ProfileRow::Kind::kWait) calls += r.ncalls;
  }
  const char* order = "internal time";
  auto by = [&](auto key) {
    std::stable_sort(rows.begin(), rows.end(),
                     [&](const ProfileRow* a, const ProfileRow* b) { return key(*a) > key(*b); });
  };
  switch (sort) {
    case ProfileSort::kTottime:
      by([](const ProfileRow& r) { return r.tottime; });
      break;
    case ProfileSort::kCumtime:
      order = "cumulative time";
      by([](const ProfileRow& r) { return r.cumtime; });
      break;
    case ProfileSort::kNcalls:
      order = "call count";
      by([](const ProfileRow& r) { return r.ncalls; });
      break;
    case ProfileSort::kName:
      order = "name";
      std::stable_sort(rows.begin(), rows.end(), [](const ProfileRow* a, const ProfileRow* b) {
        return row_label(*a) < row_label(*b);
      });
      break;
  }
  std::string out = fmt::format(
      "         {} stage and zone calls on {} threads in {:.3f} seconds\n"
      "         (times in seconds, percall in microseconds; stages and zones: thread time, "
      "tottime excludes children;\n"
      "          waits: message time, summed over messages, so they overlap each other)\n\n"
      "   Ordered by: {}\n\n",
      calls, s.threads, nanos_to_seconds(s.wall), order);
  out += fmt::format("{:>10} {:>10} {:>10} {:>10} {:>10}  {}\n", "ncalls", "tottime", "percall",
                     "cumtime", "percall", "name");
  for (const ProfileRow* r : rows) {
    out += fmt::format("{:>10} {:>10.3f} {:>10.3f} {:>10.3f} {:>10.3f}  {}\n", r->ncalls,
                       nanos_to_seconds(r->tottime), per_call_us(r->tottime, r->ncalls),
                       nanos_to_seconds(r->cumtime), per_call_us(r->cumtime, r->ncalls),
                       row_label(*r));
  }
  return out;
}

std::string format_lines(const ProfileSnapshot& s) {
  std::string out;
  for (std::size_t p = 0; p < s.rows.size(); ++p) {
    const ProfileRow& parent = s.rows[p];
    if (parent.kind == ProfileRow::Kind::kWait) continue;
    std::vector<std::pair<const ProfileRow*, const ProfileEdge*>> lines;
    for (const auto& e : s.edges)
      if (e.caller == static_cast<int>(p) &&
          s.rows[static_cast<std::size_t>(e.callee)].kind == ProfileRow::Kind::kZone)
        lines.emplace_back(&s.rows[static_cast<std::size_t>(e.callee)], &e);
    if (lines.empty()) continue;
    std::sort(lines.begin(), lines.end(),
              [](const auto& a, const auto& b) { return a.first->line < b.first->line; });
    const double total_us = static_cast<double>(parent.cumtime) / 1e3;
    auto pct = [&](double us) { return total_us > 0 ? 100.0 * us / total_us : 0.0; };
    out += fmt::format("Timer unit: 1e-06 s\n\nTotal time: {:g} s\n",
                       nanos_to_seconds(parent.cumtime));
    if (parent.kind == ProfileRow::Kind::kStage)
      out += fmt::format("Function: stage {} ({} calls, {} messages) in {}\n\n", parent.name,
                         parent.ncalls, parent.items, parent.file);
    else
      out += fmt::format("Function: zone {} at {}:{}\n\n", parent.name, base_name(parent.file),
                         parent.line);
    out += fmt::format("{:>6} {:>10} {:>14} {:>10} {:>8}  {}\n", "Line #", "Hits", "Time",
                       "Per Hit", "% Time", "Line Contents");
    out += std::string(80, '=') + "\n";
    for (const auto& [row, edge] : lines) {
      const double us = static_cast<double>(edge->incl) / 1e3;
      out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10.1f} {:>8.1f}  {}\n", row->line, edge->calls,
                         us, edge->calls ? us / static_cast<double>(edge->calls) : 0.0, pct(us),
                         row->name);
    }
    const double rest = static_cast<double>(parent.tottime) / 1e3;
    out += fmt::format("{:>6} {:>10} {:>14.1f} {:>10} {:>8.1f}  {}\n\n", "", parent.ncalls, rest,
                       "", pct(rest), "(rest of the body: everything outside the zones above)");
  }
  return out;
}

void write_callgrind(const ProfileSnapshot& s, std::ostream& out, const std::string& cmd) {
  // Callgrind format (valgrind.org/docs/manual/cl-format.html). Event "ns" is thread time in stage
  // bodies and zones; "wait_ns" is message time spent waiting (queue, simulated I/O).
  Nanos total_self = 0, total_wait = 0;
  for (const auto& r : s.rows) {
    if (r.kind == ProfileRow::Kind::kWait)
      total_wait += r.cumtime;
    else
      total_self += r.tottime;
  }
  out << "# callgrind format\nversion: 1\ncreator: mayhem --profile-out\n";
  out << "cmd: " << cmd << "\npart: 1\npositions: line\n";
  out << "event: ns : Thread time (ns)\nevent: wait_ns : Message wait time (ns)\n";
  out << "events: ns wait_ns\n";
  out << "summary: " << total_self << " " << total_wait << "\n\n";
  std::map<std::string, int> files;
  auto fl = [&](const std::string& key, const std::string& f) {
    auto [it, fresh] = files.emplace(f, static_cast<int>(files.size()) + 1);
    return fresh ? fmt::format("{}=({}) {}\n", key, it->second, f)
                 : fmt::format("{}=({})\n", key, it->second);
  };
  auto fn_name = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    switch (r.kind) {
      case ProfileRow::Kind::kStage:
        return fmt::format("stage {}", r.name);
      case ProfileRow::Kind::kZone:
        return fmt::format("zone {}:{} {}", base_name(r.file), r.line, r.name);
      case ProfileRow::Kind::kWait:
        return fmt::format("wait {}", r.name);
    }
    return r.name;
  };
  std::vector<bool> named(s.rows.size() + 1, false);
  auto fn = [&](const std::string& key, int id, const std::string& name) {
    // Function ids: 1 = the root, row r = r + 2. Names are compressed after first use.
    const auto slot = static_cast<std::size_t>(id);
    if (named[slot]) return fmt::format("{}=({})\n", key, id + 1);
    named[slot] = true;
    return fmt::format("{}=({}) {}\n", key, id + 1, name);
  };
  auto file_of = [&](int row) {
    const ProfileRow& r = s.rows[static_cast<std::size_t>(row)];
    return r.kind == ProfileRow::Kind::kWait ? std::string("(message waits)") : r.file;
  };
  auto id_of = [](int row) { return row + 1; };  // root is 0
  auto line_of = [&](int row) { return s.rows[static_cast<std::size_t>(row)].line; };

  // The root: every outermost stage, and the waits.
  out << fl("fl", "(mayhem)") << fn("fn", 0, "mayhem (all threads)") << "0 0 0\n";
  for (const auto& e : s.edges) {
    if (e.caller != -1) continue;
    out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
    out << "calls=" << e.calls << " " << line_of(e.callee) << "\n0 " << e.incl << " 0\n";
  }
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    if (s.rows[r].kind != ProfileRow::Kind::kWait || s.rows[r].ncalls == 0) continue;
    const int row = static_cast<int>(r);
    out << fl("cfl", file_of(row)) << fn("cfn", id_of(row), fn_name(row));
    out << "calls=" << s.rows[r].ncalls << " 0\n0 0 " << s.rows[r].cumtime << "\n";
  }
  out << "\n";
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    const ProfileRow& row = s.rows[r];
    if (row.ncalls == 0) continue;
    const int ri = static_cast<int>(r);
    out << fl("fl", file_of(ri)) << fn("fn", id_of(ri), fn_name(ri));
    if (row.kind == ProfileRow::Kind::kWait) {
      out << "0 0 " << row.cumtime << "\n\n";
      continue;
    }
    out << row.line << " " << row.tottime << " 0\n";
    for (const auto& e : s.edges) {
      if (e.caller != ri) continue;
      out << fl("cfl", file_of(e.callee)) << fn("cfn", id_of(e.callee), fn_name(e.callee));
      out << "calls=" << e.calls << " " << line_of(e.callee) << "\n";
      out << line_of(e.callee) << " " << e.incl << " 0\n";
    }
    out << "\n";
  }
  out << "totals: " << total_self << " " << total_wait << "\n";
}

// ---- from the service options ------------------------------------------------------------------

namespace {
void check_writable(const std::string& path, const char* flag) {
  if (path.empty()) return;
  std::ofstream f(path, std::ios::trunc);
  if (!f)
    throw std::runtime_error(
        fmt::format("{}: cannot write '{}': {}", flag, path, std::strerror(errno)));
}
}  // namespace

std::unique_ptr<Profiler> make_profiler(const Options& o, const Clock& clock,
                                        std::shared_ptr<spdlog::logger> log) {
  if (!o.profile && o.profile_out.empty() && o.trace_out.empty() && o.slow_task_ms <= 0)
    return nullptr;
  check_writable(o.profile_out, "--profile-out");
  check_writable(o.trace_out, "--trace-out");
  ProfilerConfig cfg;
  cfg.profile = o.profile || !o.profile_out.empty();
  cfg.trace = !o.trace_out.empty();
  cfg.trace_sample = o.trace_sample;
  cfg.slow_task = static_cast<Nanos>(o.slow_task_ms * 1e6);
  return std::make_unique<Profiler>(cfg, clock, std::move(log));
}

bool write_profile_reports(const Profiler& p, const Options& o, std::ostream& table_out,
                           const std::string& cmd, std::string& err) {
  if (o.profile || !o.profile_out.empty()) {
    const ProfileSnapshot s = p.snapshot();
    if (o.profile) {
      table_out << format_table(s,
                                parse_profile_sort(o.profile_sort).value_or(ProfileSort::kTottime))
                << "\n"
                << format_lines(s);
      table_out.flush();
    }
    if (!o.profile_out.empty()) {
      std::ofstream f(o.profile_out, std::ios::trunc);
      write_callgrind(s, f, cmd);
      f.close();
      if (!f) {
        err = fmt::format("--profile-out: cannot write '{}'", o.profile_out);
        return false;
      }
    }
  }
  if (!o.trace_out.empty() && !p.write_trace(o.trace_out, err)) return false;
  return true;
}

}  // namespace mayhem
