// `mayhem top` and `mayhem --live`: a top-like terminal view of a running service, refreshed every
// second: a header (msgs/s in and out, in flight, leases, extensions/s, acks, nacks, retries, log
// queue overruns) and one row per pipeline stage (concurrency, in flight, queued, calls/s, own and
// total time mean and p99, % own, % total, errors, retries). Keys: space pause, s sort column,
// r reset (numbers since now), q quit. Rendering is a pure function of a `TopView`, so tests
// compare a known snapshot with the expected text; `run_tui` owns the terminal (termios + ANSI).
// Use: `mayhem top --addr 127.0.0.1:9100` (top_main), or `run_tui(source, opts)` in-process.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "mayhem/observe/stats.hpp"

namespace mayhem::cli {

enum class SortKey {
  kPipeline,
  kCallsPerSec,
  kOwnPct,
  kTotalPct,
  kOwnP99,
  kTotalP99,
  kErrors,
  kCount
};
const char* to_string(SortKey k);

// What one screen shows. `now`/`prev` are the last two snapshots (rates use their difference);
// `baseline` is the snapshot at the last reset (times, % and totals count from it; none: since the
// service started). `problem` is set while the service cannot be reached.
struct TopView {
  std::string source;  // "127.0.0.1:9100" or "in-process"
  std::optional<StatsSnapshot> now, prev, baseline;
  SortKey sort = SortKey::kPipeline;
  bool paused = false;
  std::string problem;
};

std::string render_top(const TopView& v);

// The view's state machine, driven by the loop in run_tui (and by tests).
class TopModel {
 public:
  explicit TopModel(std::string source) { view_.source = std::move(source); }
  void update(StatsSnapshot s);      // a fresh snapshot (ignored while paused)
  void failed(std::string problem);  // fetching failed
  void toggle_pause() { view_.paused = !view_.paused; }
  void cycle_sort();
  void reset();  // counts start again from the latest snapshot
  bool paused() const { return view_.paused; }
  const TopView& view() const { return view_; }

 private:
  TopView view_;
};

// Fetches one snapshot; on failure returns nullopt and says why in `err`.
using FetchFn = std::function<std::optional<StatsSnapshot>(std::string& err)>;

struct TuiOptions {
  double interval_s = 1.0;
  const std::atomic<bool>* stop = nullptr;  // set from outside to end the view (in-process)
  std::function<void()> on_quit;            // called when the user presses q
};

// Interactive loop on the controlling terminal (stdin/stdout must be a TTY); restores the terminal
// on every exit path. Returns when the user quits, `stop` is set, or SIGTERM/SIGHUP arrives.
void run_tui(const std::string& source, const FetchFn& fetch, const TuiOptions& opts);

// `mayhem top ...` (argv[0] is "top"): returns the exit status.
int top_main(int argc, char** argv);

}  // namespace mayhem::cli
