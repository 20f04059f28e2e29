// Number and time formats shared by `mayhem top`'s screens (src/cli/top/render*.cpp): compact
// counts (1.2k), durations (3.4us), clock times (0:01:02), percentages and byte sizes.
// Use: `human(12345.0) == "12.3k"`, `duration(1500.0) == "1.5us"`.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>

#include "mayhem/cli/top.hpp"

namespace mayhem::cli::top_format {

inline std::string human(double v) {
  if (v < 10'000) return fmt::format("{:.0f}", v);
  if (v < 1e6) return fmt::format("{:.1f}k", v / 1e3);
  if (v < 1e9) return fmt::format("{:.2f}M", v / 1e6);
  return fmt::format("{:.2f}G", v / 1e9);
}

inline std::string duration(double ns) {
  if (ns < 1e3) return fmt::format("{:.0f}ns", ns);
  if (ns < 1e6) return fmt::format("{:.1f}us", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.2f}ms", ns / 1e6);
  return fmt::format("{:.2f}s", ns / 1e9);
}

inline std::string bytes(std::uint64_t b) {
  const auto d = static_cast<double>(b);
  if (d < 1024.0 * 1024) return fmt::format("{:.0f}K", d / 1024);
  if (d < 1024.0 * 1024 * 1024) return fmt::format("{:.1f}M", d / 1024 / 1024);
  return fmt::format("{:.2f}G", d / 1024 / 1024 / 1024);
}

inline std::string clock_text(std::uint64_t ns) {
  const std::uint64_t s = ns / 1'000'000'000;
  return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
}

inline std::uint64_t minus(std::uint64_t a, std::uint64_t b) {
  return a > b ? a - b : 0;
}

// "file.cpp" of "src/pipeline/file.cpp".
inline std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The first header line, shared by every screen: source, uptime, the process's CPU% (over the
// last interval) and RSS, the state.
std::string title_line(const TopView& v);
// The snapshot the counts of `v` start from: the reset's, unless it is newer than `now` (a replay
// stepped back past it).
const StatsSnapshot* base_of(const TopView& v);

}  // namespace mayhem::cli::top_format
