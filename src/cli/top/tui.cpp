// The terminal: raw mode, the alternate screen, frames cut to the window, the key loop; and the
// live view's loop (run_tui).
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "terminal.hpp"

namespace mayhem::cli {

namespace {

volatile sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int signo) {
  g_stop_signal = signo;
}

class RawTerminal {
 public:
  RawTerminal() {
    if (tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO | ISIG));  // Ctrl-C arrives as a key
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      have_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    write_all("\x1b[?1049h\x1b[?25l");  // alternate screen, hide the cursor
  }
  ~RawTerminal() {
    write_all("\x1b[?25h\x1b[?1049l");
    if (have_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

  static void write_all(const std::string& s) {
    std::size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(STDOUT_FILENO, s.data() + done, s.size() - done);
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }
  // Columns and rows (80x24 when the terminal does not say).
  static std::pair<int, int> size() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0)
      return {ws.ws_col, ws.ws_row};
    return {80, 24};
  }

 private:
  termios saved_{};
  bool have_ = false;
};

// Home, each line cut to the window's width and cleared to its end, at most `rows` lines (the
// last one without a newline, so the screen never scrolls), then clear below.
std::string frame_of(const std::string& text, int cols, int rows) {
  std::string out = "\x1b[H";
  std::istringstream in(text);
  std::string l;
  int n = 0;
  while (n < rows && std::getline(in, l)) {
    if (static_cast<int>(l.size()) > cols) l.resize(static_cast<std::size_t>(cols));
    if (n++ > 0) out += "\r\n";
    out += l;
    out += "\x1b[K";
  }
  out += "\x1b[J";
  return out;
}

}  // namespace

void install_stop_signals(bool include_sigint) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  if (include_sigint) sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() {
  return g_stop_signal;
}

void tui_loop(TopModel& model, const LoopHooks& hooks, const std::atomic<bool>* stop,
              const std::function<void()>& on_quit) {
  RawTerminal term;
  using clock = std::chrono::steady_clock;
  auto next = clock::now();
  bool dirty = true, tick_now = true;
  for (;;) {
    if (g_stop_signal != 0 || (stop && stop->load())) return;
    if (tick_now || clock::now() >= next) {
      next = clock::now() + hooks.tick(model);
      tick_now = false;
      dirty = true;
    }
    if (dirty) {
      const auto [cols, rows] = RawTerminal::size();
      model.view().width = cols;
      model.view().height = rows;
      RawTerminal::write_all(frame_of(render_top(model.view()), cols, rows));
      dirty = false;
    }
    // Wait for a key, the next tick, or at most 100 ms (to notice `stop`).
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock::now());
    pollfd pfd{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::clamp<long>(left.count(), 0, 100)));
    if (ready <= 0 || !(pfd.revents & (POLLIN | POLLHUP))) continue;
    char bytes[64];
    const ssize_t n = ::read(STDIN_FILENO, bytes, sizeof bytes);
    if (n == 0) return;  // the terminal went away
    if (n < 0) continue;
    for (int k : decode_keys(std::string_view(bytes, static_cast<std::size_t>(n)))) {
      if (hooks.key && hooks.key(k, model, tick_now)) {
        dirty = true;
        continue;
      }
      const bool was_drilled = !model.view().drill.empty();
      switch (model.key(k)) {
        case TopModel::Action::kQuit:
          if (on_quit) on_quit();
          return;
        case TopModel::Action::kRedraw:
          dirty = true;
          // Drilled in: fetch at once, so the service starts timing the zones now.
          if (!was_drilled && !model.view().drill.empty()) tick_now = true;
          break;
        case TopModel::Action::kNone:
          break;
      }
    }
  }
}

void run_tui(const std::string& source, const FetchFn& fetch, const TuiOptions& opts) {
  TopModel model(source);
  if (!opts.zones.empty()) {
    model.view().selected = opts.zones;
    model.view().drill = opts.zones;
  }
  install_stop_signals(false);
  const auto interval = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(std::max(opts.interval_s, 0.05)));
  LoopHooks hooks;
  hooks.tick = [&](TopModel& m) {
    if (!m.paused()) {
      std::string err;
      auto s = fetch(m.view().drill, err);
      if (opts.on_sample) opts.on_sample(s ? &*s : nullptr, err);
      if (s)
        m.update(std::move(*s));
      else
        m.failed(err);
    }
    return interval;
  };
  tui_loop(model, hooks, opts.stop, opts.on_quit);
}

}  // namespace mayhem::cli
