// The terminal side of `mayhem top` (src/cli/top/): raw mode on the controlling terminal, the
// alternate screen, frames drawn without flicker, and one key loop shared by the live view
// (run_tui) and the replay (run_replay_tui).
// Use: `tui_loop(model, hooks, stop, on_quit);`
#pragma once

#include <atomic>
#include <chrono>
#include <functional>

#include "mayhem/cli/top.hpp"

namespace mayhem::cli {

// What the loop asks of its caller.
struct LoopHooks {
  // Called when due, or at once after a key asked for it: updates the model; returns how long
  // until it is due again.
  std::function<std::chrono::steady_clock::duration(TopModel&)> tick;
  // A key, before the model sees it: true when taken (redraw). Set `tick_now` to call tick at once.
  std::function<bool(int key, TopModel&, bool& tick_now)> key;
};

// Owns the terminal until it returns: when the user quits (then `on_quit`), `stop` is set, the
// terminal closes, or SIGTERM/SIGHUP arrives (installed here; SIGINT arrives as Ctrl-C).
void tui_loop(TopModel& model, const LoopHooks& hooks, const std::atomic<bool>* stop,
              const std::function<void()>& on_quit);

// SIGINT/SIGTERM/SIGHUP set a flag (headless recording's stop); the signal's number, 0 if none.
void install_stop_signals(bool include_sigint);
int stop_signal();

}  // namespace mayhem::cli
