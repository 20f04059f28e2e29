// The process's own facts for `/metrics`, under the names and types the Prometheus client libraries
// use for them (process_cpu_seconds_total, process_resident_memory_bytes, ...), plus
// `mayhem_build_info{version,revision} 1`. They describe the process, not the pipeline, so they are
// not in the numbers table (observe/numbers.hpp): the stats endpoint reads them from /proc/self
// (stat, fd) and getrlimit once per snapshot it renders (at most every 100 ms) and appends them to
// `render_prometheus`'s text.
// Use: `text += render_process_metrics(read_process_stats());`
#pragma once

#include <cstdint>
#include <string>

namespace mayhem {

struct ProcessStats {
  bool ok = false;         // /proc/self/stat was read (false elsewhere than Linux)
  double cpu_seconds = 0;  // user + system CPU time
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;     // entries of /proc/self/fd
  std::uint64_t max_fds = 0;      // RLIMIT_NOFILE, the soft limit
  double start_time_seconds = 0;  // since the Unix epoch
  std::uint64_t threads = 0;
};

// Reads the running process's facts now (a few small reads of /proc/self; no allocation beyond
// the read buffers).
ProcessStats read_process_stats();

// getrusage(RUSAGE_SELF): user + system CPU seconds (microsecond resolution) and the peak resident
// set in KiB (the run summary's cpu_s and max_rss_kb).
double rusage_cpu_seconds();
std::uint64_t rusage_max_rss_kb();

// The Prometheus text (format 0.0.4) of `p` (the process_* families; none when !p.ok) and of
// mayhem_build_info.
std::string render_process_metrics(const ProcessStats& p);

}  // namespace mayhem
