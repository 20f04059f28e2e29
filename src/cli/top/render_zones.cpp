// `mayhem top`'s drill-down screen: one stage's zones, line_profiler-style (hits, time, per hit,
// % of the stage's time, file:line), nested zones indented under the zone they ran in.
#include <fmt/format.h>

#include <algorithm>
#include <functional>

#include "format.hpp"
#include "mayhem/cli/top.hpp"

namespace mayhem::cli {

using namespace top_format;

namespace {

std::string key_of(const ZoneRow& z) {
  return fmt::format("{}:{}", z.file, z.line);
}

}  // namespace

std::string render_zones(const TopView& v) {
  std::vector<std::string> lines;
  const auto line = [&lines](std::string s) { lines.push_back(std::move(s)); };
  const StatsSnapshot& now = *v.now;
  const StatsSnapshot* base = base_of(v);
  const StatsSnapshot counted = base ? since(now, *base) : now;
  const StageSnapshot* stage = nullptr;
  for (const auto& s : counted.stages)
    if (s.name == v.drill) stage = &s;

  line(title_line(v));
  if (!v.problem.empty()) line(fmt::format("!! the service went away: {}", v.problem));
  if (!stage) {
    line(fmt::format("no stage named {} in this snapshot", v.drill));
  } else {
    const StageZones& z = stage->zones;
    line(fmt::format(
        "zones of stage {}: {} bodies timed, {} in them{}", stage->name, z.calls,
        duration(static_cast<double>(z.total)),
        base ? "  since reset " + clock_text(minus(now.uptime_ns, base->uptime_ns)) : ""));
    line(v.status.empty() ? "timed by the service while this view is open; % of the stage's time"
                          : "as recorded; % of the stage's time");
    line("");
    if (z.calls == 0) {
      line(v.status.empty()
               ? fmt::format("waiting for {}'s zone timings (they start with this view)",
                             stage->name)
               : fmt::format("no zone timings of {} in this sample (record while drilled in)",
                             stage->name));
    } else {
      line(fmt::format("{:<20} {:>8} {:>8} {:>8} {:>6}  {}", "FILE:LINE", "HITS", "TIME", "PER HIT",
                       "%STAGE", "ZONE"));
      const double total = static_cast<double>(z.total);
      const auto pct = [&](double t) { return total > 0 ? 100.0 * t / total : 0.0; };
      // Zones in a tree: those directly in the body by line, each followed by the zones it ran.
      std::vector<const ZoneRow*> rows;
      for (const auto& r : z.rows) rows.push_back(&r);
      std::sort(rows.begin(), rows.end(), [](const ZoneRow* a, const ZoneRow* b) {
        return a->file != b->file ? a->file < b->file : a->line < b->line;
      });
      const auto known = [&](const std::string& key) {
        return std::any_of(rows.begin(), rows.end(),
                           [&](const ZoneRow* r) { return key_of(*r) == key; });
      };
      std::uint64_t direct = 0;
      std::vector<std::string> seen;
      std::function<void(const std::string&, int)> emit = [&](const std::string& parent,
                                                              int depth) {
        for (const ZoneRow* r : rows) {
          const bool top = parent.empty() && (r->parent.empty() || !known(r->parent));
          if (!(parent.empty() ? top : r->parent == parent)) continue;
          if (std::find(seen.begin(), seen.end(), key_of(*r)) != seen.end()) continue;
          seen.push_back(key_of(*r));
          if (depth == 0) direct += r->time;
          const double t = static_cast<double>(r->time);
          const std::string numbers =
              fmt::format("{:<20} {:>8} {:>8} {:>8} {:>6.1f}",
                          fmt::format("{}:{}", base_name(r->file), r->line), human(double(r->hits)),
                          duration(t), r->hits ? duration(t / double(r->hits)) : "-", pct(t));
          const std::string text = std::string(static_cast<std::size_t>(2 * depth), ' ') + r->name;
          // The zone's text after its numbers, or on a line of its own when it would be cut.
          if (v.width == 0 || static_cast<int>(numbers.size() + 2 + text.size()) <= v.width) {
            line(numbers + "  " + text);
          } else {
            line(numbers);
            line("    " + text);
          }
          if (depth < 8) emit(key_of(*r), depth + 1);
        }
      };
      emit("", 0);
      if (z.rows.empty()) line(fmt::format("(no zone ran inside {})", stage->name));
      const double rest = static_cast<double>(minus(z.total, direct));
      line(fmt::format("{:<20} {:>8} {:>8} {:>8} {:>6.1f}  {}", "", human(double(z.calls)),
                       duration(rest), "", pct(rest), "(outside the zones)"));
    }
  }
  if (v.height > 0) {
    const std::size_t room =
        static_cast<std::size_t>(std::max(v.height - (v.interactive ? 2 : 0), 1));
    if (lines.size() > room) lines.resize(room);
  }
  if (v.interactive) {
    line("");
    line(v.keys.empty() ? "keys: esc back  space pause  r reset  ? help  q quit" : v.keys);
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace mayhem::cli
