// `mayhem top --record FILE` / `--replay FILE`: a recording is JSON lines, one per sample top
// fetched, each complete on its own (a recorder killed mid-write loses at most its last line):
//   {"v":1,"t_ms":1764754000123,"source":"127.0.0.1:9100","stats":{...the /stats answer...}}
//   {"v":1,"t_ms":1764754001124,"source":"127.0.0.1:9100","error":"connection refused ..."}
// `v` is the format's version (a newer one is refused with a clear message), `t_ms` the wall
// clock when the sample was fetched (replay keeps the recorded pace), `stats` the snapshot as
// /stats serves it (zones included when top was drilled in), `error` a fetch that failed.
// `Replay` is the player: a position, play/pause, steps, speed; it shows a sample on a TopModel.
// Use: `append_record(fd, record_line(src, now_ms, &snap, ""));`
//      `auto rec = parse_recording(text, err); Replay p(*rec); p.show(model);`
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mayhem/cli/top.hpp"
#include "mayhem/observe/stats.hpp"

namespace mayhem::cli {

inline constexpr int kRecordVersion = 1;

struct RecordedSample {
  std::int64_t t_ms = 0;  // wall clock, milliseconds since the Unix epoch
  std::optional<StatsSnapshot> stats;
  std::string error;  // set when the fetch failed (stats empty)
};

struct Recording {
  std::string source;  // the first sample's
  std::vector<RecordedSample> samples;
  std::string warning;  // e.g. a last line cut short, dropped
};

// One line (with its newline) for a sample: `s` fetched, or null and `error`.
std::string record_line(const std::string& source, std::int64_t t_ms, const StatsSnapshot* s,
                        const std::string& error);

// Parses a whole recording. nullopt and `err` ("line N: why") for a line that is not a sample of
// a known version; an empty recording is an error too. A last line without its newline that does
// not parse is dropped with a warning.
std::optional<Recording> parse_recording(std::string_view text, std::string& err);

class Replay {
 public:
  explicit Replay(const Recording& r) : r_(r) {}
  std::size_t index() const { return i_; }
  std::size_t size() const { return r_.samples.size(); }
  void seek(std::size_t i) { i_ = std::min(i, size() - 1); }
  void step(int delta);  // clamped to the recording
  double speed() const { return speed_; }
  void faster() { speed_ = std::min(speed_ * 2, 64.0); }
  void slower() { speed_ = std::max(speed_ / 2, 1.0 / 16); }
  bool at_end() const { return i_ + 1 >= size(); }
  // Milliseconds until the next sample at this speed (the recorded gap, at least 1 ms).
  std::int64_t gap_ms() const;
  // Shows the current sample: the last good snapshot up to it, the one before for rates, and its
  // error if the fetch failed. Sets the view's status ("replay 3/60 1x" and the state).
  void show(TopModel& m) const;

 private:
  const Recording& r_;
  std::size_t i_ = 0;
  double speed_ = 1.0;
};

// The replay in the terminal (same screens and keys as the live view, plus left/right steps and
// +/- speed); returns when the user quits or a signal arrives.
void run_replay_tui(const Recording& r, const std::string& file, const TuiOptions& opts);

}  // namespace mayhem::cli
