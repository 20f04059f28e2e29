// `mayhem top` and `mayhem --live`: a top-like terminal view of a running service, refreshed every
// second: a header (uptime, the process's CPU% and RSS, msgs/s in and out, in flight, leases,
// acks, nacks, failures and retries per interval beside their totals) and one row per pipeline
// stage (in flight, queued, calls/s, own and total time mean and p99, % own, % total, errors,
// retries; columns are dropped by priority to fit the width). Keys: j/k or arrows select a stage,
// Enter drills into its zones (line_profiler-style: hits, time, per hit, % of the stage,
// file:line; timed by the service only while someone looks), Esc/Backspace back, space pause,
// s sort column, S reverse, r reset (numbers since now), ? help, q quit. Rendering is a pure
// function of a `TopView`, so tests compare a known snapshot with the expected text; `run_tui`
// owns the terminal (termios + ANSI). Recording and replay: mayhem/cli/top_record.hpp.
// Use: `mayhem top --addr 127.0.0.1:9100` (top_main), or `run_tui(source, fetch, opts)` in-process.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// What one screen shows. `now`/`prev` are the last two snapshots (rates and the "+N" per interval
// use their difference); `baseline` is the snapshot at the last reset (times, % and totals count
// from it; none: since the service started). `problem` is set while the service cannot be reached.
struct TopView {
  std::string source;  // "127.0.0.1:9100", "in-process" or "replay FILE"
  std::optional<StatsSnapshot> now, prev, baseline;
  SortKey sort = SortKey::kPipeline;
  bool reversed = false;  // the sort order turned round (S)
  bool paused = false;
  std::string problem;
  // The screen to fit: columns (0: every column) and rows (0: no limit).
  int width = 0, height = 0;
  // A terminal view (a cursor and a key line); false for --once dumps.
  bool interactive = true;
  std::string selected;  // the stage under the cursor (empty: the first row)
  std::string drill;     // the stage whose zones are shown; empty: the stage table
  bool help = false;     // the keys screen
  std::string status;    // replaces the state word ([running]) when set, e.g. "replay 3/60 1x"
  std::string keys;      // the key line; empty: the live view's
};

std::string render_top(const TopView& v);

// The stage names in the order the table shows them (sorted by the view's key and direction).
std::vector<std::string> row_order(const TopView& v);

// The stage table's columns that fit in `width` (0: all), in display order, by name ("STAGE",
// "CALLS/S", ...). Lower-priority columns go first; the sort column always stays.
std::vector<std::string> columns_for_width(int width, SortKey sort, bool cursor);

// Keys, decoded from the bytes a terminal sends: printable characters stand for themselves.
enum Key : int {
  kKeyUp = 256,
  kKeyDown,
  kKeyLeft,
  kKeyRight,
  kKeyEnter,
  kKeyEsc,
  kKeyBackspace,
  kKeyCtrlC,
};
std::vector<int> decode_keys(std::string_view bytes);

// The view's state machine, driven by the loop in run_tui (and by tests).
class TopModel {
 public:
  explicit TopModel(std::string source) { view_.source = std::move(source); }
  void update(StatsSnapshot s);      // a fresh snapshot (ignored while paused)
  void failed(std::string problem);  // fetching failed
  // Shows `now` after `prev` (replay: any sample, either direction); `problem` as failed().
  void show(const StatsSnapshot* prev, const StatsSnapshot* now, std::string problem);
  void toggle_pause() { view_.paused = !view_.paused; }
  void cycle_sort();
  void reverse_sort() { view_.reversed = !view_.reversed; }
  void reset();  // counts start again from the latest snapshot
  void move_selection(int delta);
  void drill_in();   // into the selected stage's zones
  void drill_out();  // back to the stage table
  void toggle_help() { view_.help = !view_.help; }
  // A key (decode_keys) for the common keys; false when the key means nothing here.
  enum class Action { kNone, kRedraw, kQuit };
  Action key(int k);
  bool paused() const { return view_.paused; }
  const TopView& view() const { return view_; }
  TopView& view() { return view_; }

 private:
  TopView view_;
};

// Fetches one snapshot, asking the service to time the zones of `zones` (a stage name; empty:
// none); on failure returns nullopt and says why in `err`.
using FetchFn =
    std::function<std::optional<StatsSnapshot>(const std::string& zones, std::string& err)>;
// Called with every fetch's outcome (a snapshot, or null and the error): --record.
using SampleFn = std::function<void(const StatsSnapshot* s, const std::string& err)>;

struct TuiOptions {
  double interval_s = 1.0;
  const std::atomic<bool>* stop = nullptr;  // set from outside to end the view (in-process)
  std::function<void()> on_quit;            // called when the user presses q
  SampleFn on_sample;                       // every fetched sample (--record)
  std::string zones;                        // start drilled into this stage (--zones)
};

// Interactive loop on the controlling terminal (stdin/stdout must be a TTY); restores the terminal
// on every exit path. Returns when the user quits, `stop` is set, or SIGTERM/SIGHUP arrives.
void run_tui(const std::string& source, const FetchFn& fetch, const TuiOptions& opts);

// `mayhem top ...` (argv[0] is "top"): returns the exit status.
int top_main(int argc, char** argv);

}  // namespace mayhem::cli
