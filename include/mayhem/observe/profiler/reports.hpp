// The profiler's report data and formats, apart from the collector that fills them: a
// ProfileSnapshot (rows for stages, zones and waits; caller/callee edges) and its three reports:
// the cProfile-style table (`--profile`), line_profiler-style zone timings, and a Callgrind file
// for KCacheGrind (`--profile-out`). Plain data: a snapshot can be built by hand (tests) or taken
// live from a running Profiler (mayhem/observe/profiler.hpp, which includes this header).
// Use: `std::cout << format_table(p.snapshot(), ProfileSort::kTottime) << format_lines(s);`
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mayhem/clock.hpp"

namespace mayhem {

enum class ProfileSort { kTottime, kCumtime, kNcalls, kName };
std::optional<ProfileSort> parse_profile_sort(const std::string& s);

// ---- plain snapshot structs (for reports and for a live stats endpoint) ------------------------

struct ProfileRow {
  enum class Kind { kStage, kZone, kWait };
  Kind kind = Kind::kStage;
  std::string name;  // stage name, zone name (its statement text), or wait name
  std::string file;  // source file (zones; stages: where the body is)
  std::uint32_t line = 0;
  std::uint64_t ncalls = 0;  // calls (waits: messages)
  std::uint64_t items = 0;   // messages handled by a stage's calls
  Nanos tottime = 0;         // excluding child stages/zones
  Nanos cumtime = 0;         // including them
};

struct ProfileEdge {
  int caller = -1;  // row index; -1 = the thread's root (nothing above)
  int callee = 0;   // row index
  std::uint64_t calls = 0;
  Nanos incl = 0;  // callee time inside this caller
};

struct ProfileSnapshot {
  std::vector<ProfileRow> rows;  // stages and zones that ran, then the wait rows
  std::vector<ProfileEdge> edges;
  Nanos wall = 0;  // since the profiler started
  std::size_t threads = 0;
  std::uint64_t slow_tasks = 0, stuck_reports = 0;
};

std::string format_table(const ProfileSnapshot& s, ProfileSort sort);
std::string format_lines(const ProfileSnapshot& s);  // line_profiler style, per stage with zones
void write_callgrind(const ProfileSnapshot& s, std::ostream& out, const std::string& cmd);

}  // namespace mayhem
