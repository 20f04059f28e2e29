#include "mayhem/observe/process_stats.hpp"

#include <dirent.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "mayhem/observe/build_info.hpp"

namespace mayhem {

namespace {

std::string process_slurp(const char* path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The system's boot time (seconds since the epoch): /proc/stat's btime, read once.
double process_boot_time_seconds() {
  static const double btime = [] {
    std::istringstream in(process_slurp("/proc/stat"));
    std::string key;
    double v = 0;
    while (in >> key) {
      if (key == "btime") {
        in >> v;
        break;
      }
      in.ignore(1 << 20, '\n');
    }
    return v;
  }();
  return btime;
}

std::uint64_t process_count_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  std::uint64_t n = 0;
  while (const dirent* e = readdir(dir))
    if (e->d_name[0] != '.') ++n;
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // not the directory's own descriptor
}

}  // namespace

ProcessStats read_process_stats() {
  ProcessStats p;
  // /proc/self/stat: "pid (comm) state ppid ...": fields counted from state (field 3), after the
  // last ')' (comm may hold spaces and parentheses). proc(5).
  const std::string stat = process_slurp("/proc/self/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return p;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0, threads = 0, start = 0, vsize = 0, rss = 0;
  for (int i = 3; i <= 24 && in >> field; ++i) {
    const unsigned long long v = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 14) utime = v;
    if (i == 15) stime = v;
    if (i == 20) threads = v;
    if (i == 22) start = v;
    if (i == 23) vsize = v;
    if (i == 24) rss = v;
  }
  if (!in) return p;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  p.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  p.threads = threads;
  p.start_time_seconds = process_boot_time_seconds() + static_cast<double>(start) / ticks;
  p.virtual_bytes = vsize;
  p.resident_bytes = rss * page;
  p.open_fds = process_count_fds();
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) p.max_fds = lim.rlim_cur;
  p.ok = true;
  return p;
}

std::string render_process_metrics(const ProcessStats& p) {
  std::string out;
  const auto family = [&out](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, value);
  };
  if (p.ok) {
    family("process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.", p.cpu_seconds);
    family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           p.resident_bytes);
    family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
           p.virtual_bytes);
    family("process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds);
    family("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds);
    family("process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.", p.start_time_seconds);
    family("process_threads", "gauge", "Number of OS threads in the process.", p.threads);
  }
  out += fmt::format(
      "# HELP mayhem_build_info Mayhem's version and git revision (the value is always 1)\n"
      "# TYPE mayhem_build_info gauge\n"
      "mayhem_build_info{{version=\"{}\",revision=\"{}\"}} 1\n",
      build_version(), build_revision());
  return out;
}

double rusage_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::uint64_t rusage_max_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::uint64_t>(ru.ru_maxrss);
}

}  // namespace mayhem
