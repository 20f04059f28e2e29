#include "mayhem/cli/top.hpp"

#include <fmt/format.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <vector>

#include "mayhem/cli/number_flag.hpp"
#include "mayhem/observe/stats_server.hpp"

namespace mayhem::cli {

const char* to_string(SortKey k) {
  switch (k) {
    case SortKey::kPipeline:
      return "pipeline";
    case SortKey::kCallsPerSec:
      return "calls/s";
    case SortKey::kOwnPct:
      return "%own";
    case SortKey::kTotalPct:
      return "%total";
    case SortKey::kOwnP99:
      return "own p99";
    case SortKey::kTotalP99:
      return "total p99";
    case SortKey::kErrors:
      return "errors";
    case SortKey::kCount:
      break;
  }
  return "?";
}

// ---- rendering (pure) ---------------------------------------------------------------------------

namespace {

std::string human(double v) {
  if (v < 10'000) return fmt::format("{:.0f}", v);
  if (v < 1e6) return fmt::format("{:.1f}k", v / 1e3);
  if (v < 1e9) return fmt::format("{:.2f}M", v / 1e6);
  return fmt::format("{:.2f}G", v / 1e9);
}

std::string duration(double ns) {
  if (ns < 1e3) return fmt::format("{:.0f}ns", ns);
  if (ns < 1e6) return fmt::format("{:.1f}us", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.2f}ms", ns / 1e6);
  return fmt::format("{:.2f}s", ns / 1e9);
}

std::string clock_text(std::uint64_t ns) {
  const std::uint64_t s = ns / 1'000'000'000;
  return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
}

const StageSnapshot* find_stage(const StatsSnapshot& s, const std::string& name) {
  for (const auto& r : s.stages)
    if (r.name == name) return &r;
  return nullptr;
}

struct Row {
  std::size_t order;
  const StageSnapshot* live;  // gauges
  StageSnapshot counted;      // counters since the baseline
  std::optional<double> calls_per_s;
  double own_pct = 0, total_pct = 0;
};

double sort_value(const Row& r, SortKey k) {
  switch (k) {
    case SortKey::kCallsPerSec:
      return r.calls_per_s.value_or(0);
    case SortKey::kOwnPct:
      return r.own_pct;
    case SortKey::kTotalPct:
      return r.total_pct;
    case SortKey::kOwnP99:
      return static_cast<double>(r.counted.own.percentile(0.99));
    case SortKey::kTotalP99:
      return static_cast<double>(r.counted.total.percentile(0.99));
    case SortKey::kErrors:
      return static_cast<double>(r.counted.errors);
    default:
      return 0;
  }
}

}  // namespace

namespace {
// Messages in: published into the in-process pub/sub, or received from a broker.
std::uint64_t intake(const StatsSnapshot& s) {
  return s.scope == NumberScope::kBroker ? s.received : s.published;
}
}  // namespace

std::string render_top(const TopView& v) {
  std::string out;
  const auto line = [&out](const std::string& s) {
    out += s;
    out += '\n';
  };
  const std::string keys = "keys: space pause  s sort  r reset  q quit";
  if (!v.now) {
    line(fmt::format("mayhem top  {}", v.source));
    line("");
    line(v.problem.empty()
             ? fmt::format("connecting to {} ...", v.source)
             : fmt::format("cannot reach the service at {}: {}", v.source, v.problem));
    line("retrying every second; q quits");
    return out;
  }
  const StatsSnapshot& now = *v.now;
  const StatsSnapshot counted = v.baseline ? since(now, *v.baseline) : now;
  std::optional<double> dt;
  if (v.prev && now.uptime_ns > v.prev->uptime_ns)
    dt = static_cast<double>(now.uptime_ns - v.prev->uptime_ns) / 1e9;
  const auto rate = [&](std::uint64_t cur, std::uint64_t before) -> std::string {
    if (!dt) return "-";
    return human(static_cast<double>(cur >= before ? cur - before : 0) / *dt);
  };

  std::string state = v.paused ? "PAUSED" : "running";
  line(fmt::format(
      "mayhem top  {}  up {}  threads {}  sort: {}  [{}]{}", v.source, clock_text(now.uptime_ns),
      now.threads, to_string(v.sort), state,
      v.baseline ? "  since reset " +
                       clock_text(now.uptime_ns - std::min(now.uptime_ns, v.baseline->uptime_ns))
                 : ""));
  const StatsSnapshot& p = v.prev ? *v.prev : now;
  line(fmt::format("msgs/s in {}  out {}  in flight {}/{}  backlog {}  leases {}  extensions/s {}",
                   rate(intake(now), intake(p)), rate(now.acked + now.nacked, p.acked + p.nacked),
                   now.in_flight, now.max_in_flight, now.backlog, now.leased_lots,
                   rate(now.extensions, p.extensions)));
  line(fmt::format("acks {}  nacks {}  retries {}  log overruns {}  end-to-end mean {} p99 {}",
                   counted.acked, counted.nacked, counted.restart_retries, counted.log_dropped,
                   counted.latency.count ? duration(counted.latency.mean()) : "-",
                   counted.latency.count
                       ? duration(static_cast<double>(counted.latency.percentile(0.99)))
                       : "-"));
  line("");
  line(fmt::format("{:<10} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>7} {:>7}",
                   "STAGE", "CONC", "IN-FLT", "QUEUED", "CALLS/S", "OWN-MEAN", "OWN-P99",
                   "TOT-MEAN", "TOT-P99", "%OWN", "%TOT", "ERRORS", "RETRIES"));

  std::vector<Row> rows;
  double own_sum = 0;
  for (std::size_t i = 0; i < now.stages.size(); ++i) {
    Row r{i, &now.stages[i], counted.stages[i], std::nullopt};
    if (dt) {
      const StageSnapshot* before = v.prev ? find_stage(*v.prev, now.stages[i].name) : nullptr;
      const std::uint64_t c0 = before ? before->calls : 0;
      r.calls_per_s =
          static_cast<double>(now.stages[i].calls - std::min(now.stages[i].calls, c0)) / *dt;
    }
    own_sum += static_cast<double>(r.counted.own.sum);
    rows.push_back(std::move(r));
  }
  for (auto& r : rows) {
    if (own_sum > 0) {
      r.own_pct = 100.0 * static_cast<double>(r.counted.own.sum) / own_sum;
      r.total_pct = 100.0 * static_cast<double>(r.counted.total.sum) / own_sum;
    }
  }
  if (v.sort != SortKey::kPipeline) {
    std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
      return sort_value(a, v.sort) > sort_value(b, v.sort);
    });
  }
  for (const auto& r : rows) {
    const StageSnapshot& g = *r.live;
    const StageSnapshot& c = r.counted;
    const bool timed = c.own.count != 0;
    line(fmt::format(
        "{:<10} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6.1f} {:>6.1f} {:>7} {:>7}",
        g.name, fmt::format("{}/{}", g.active, g.limit == 0 ? "inf" : std::to_string(g.limit)),
        human(static_cast<double>(g.in_flight)),
        g.queued < 0 ? std::string("-") : human(static_cast<double>(g.queued)),
        r.calls_per_s ? human(*r.calls_per_s) : "-", timed ? duration(c.own.mean()) : "-",
        timed ? duration(static_cast<double>(c.own.percentile(0.99))) : "-",
        timed ? duration(c.total.mean()) : "-",
        timed ? duration(static_cast<double>(c.total.percentile(0.99))) : "-", r.own_pct,
        r.total_pct, c.errors, c.retries));
  }
  line("");
  // Every number of the table (mayhem/observe/numbers.hpp) the service reports: counters since
  // the start (or the reset key), gauges as they are now.
  line(v.baseline ? "NUMBERS (counters since reset)" : "NUMBERS");
  std::string row;
  int in_row = 0;
  for_each_number(counted, [&](const NumberDef& d, std::uint64_t value) {
    row += fmt::format("{}{:<20} {:>12}", in_row == 0 ? "" : "  ", d.name, value);
    if (++in_row == 3) {
      line(row);
      row.clear();
      in_row = 0;
    }
  });
  if (in_row != 0) line(row);
  line("");
  if (!v.problem.empty())
    line(fmt::format("!! the service at {} went away: {} (last numbers shown; retrying)", v.source,
                     v.problem));
  line(keys);
  return out;
}

void TopModel::update(StatsSnapshot s) {
  view_.problem.clear();
  if (view_.paused) return;
  if (view_.now && s.uptime_ns < view_.now->uptime_ns) {  // a restarted service: start over
    view_.prev.reset();
    view_.baseline.reset();
  } else {
    view_.prev = std::move(view_.now);
  }
  view_.now = std::move(s);
}

void TopModel::failed(std::string problem) {
  view_.problem = std::move(problem);
}

void TopModel::cycle_sort() {
  view_.sort =
      static_cast<SortKey>((static_cast<int>(view_.sort) + 1) % static_cast<int>(SortKey::kCount));
}

void TopModel::reset() {
  if (view_.now) view_.baseline = view_.now;
}

// ---- the terminal -------------------------------------------------------------------------------

namespace {

volatile sig_atomic_t g_term_signal = 0;
extern "C" void on_term_signal(int signo) {
  g_term_signal = signo;
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
  static int columns() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 132;
  }

 private:
  termios saved_{};
  bool have_ = false;
};

// Home, each line cut to the terminal's width and cleared to its end, then clear below.
std::string frame_of(const std::string& text, int cols) {
  std::string out = "\x1b[H";
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) {
    if (static_cast<int>(l.size()) > cols) l.resize(static_cast<std::size_t>(cols));
    out += l;
    out += "\x1b[K\r\n";
  }
  out += "\x1b[J";
  return out;
}

}  // namespace

void run_tui(const std::string& source, const FetchFn& fetch, const TuiOptions& opts) {
  TopModel model(source);
  RawTerminal term;
  using clock = std::chrono::steady_clock;
  const auto interval = std::chrono::duration_cast<clock::duration>(
      std::chrono::duration<double>(std::max(opts.interval_s, 0.05)));
  auto next = clock::now();
  bool dirty = true;
  for (;;) {
    if (g_term_signal != 0 || (opts.stop && opts.stop->load())) return;
    if (clock::now() >= next) {
      next = clock::now() + interval;
      if (!model.paused()) {
        std::string err;
        if (auto s = fetch(err))
          model.update(std::move(*s));
        else
          model.failed(err);
      }
      dirty = true;
    }
    if (dirty) {
      RawTerminal::write_all(frame_of(render_top(model.view()), RawTerminal::columns()));
      dirty = false;
    }
    // Wait for a key, the next refresh, or at most 100 ms (to notice `stop`).
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock::now());
    pollfd pfd{STDIN_FILENO, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::clamp<long>(left.count(), 0, 100)));
    if (ready <= 0 || !(pfd.revents & POLLIN)) continue;
    char keys[16];
    const ssize_t n = ::read(STDIN_FILENO, keys, sizeof keys);
    if (n == 0) return;  // the terminal went away
    for (ssize_t i = 0; i < n; ++i) {
      switch (keys[i]) {
        case 'q':
        case 'Q':
        case 3:  // Ctrl-C
          if (opts.on_quit) opts.on_quit();
          return;
        case ' ':
          model.toggle_pause();
          break;
        case 's':
        case 'S':
          model.cycle_sort();
          break;
        case 'r':
        case 'R':
          model.reset();
          break;
        default:
          continue;
      }
      dirty = true;
    }
  }
}

// ---- mayhem top ---------------------------------------------------------------------------------

namespace {

FetchFn http_fetch(const StatsAddress& addr) {
  auto client = std::make_shared<httplib::Client>(addr.host, addr.port);
  client->set_connection_timeout(1, 0);
  client->set_read_timeout(2, 0);
  client->set_write_timeout(1, 0);
  return [client](std::string& err) -> std::optional<StatsSnapshot> {
    auto res = client->Get("/stats");
    if (!res) {
      err = httplib::to_string(res.error());
      if (res.error() == httplib::Error::Connection) err = "connection refused or unreachable";
      return std::nullopt;
    }
    if (res->status != 200) {
      err = fmt::format("HTTP {} from /stats", res->status);
      return std::nullopt;
    }
    try {
      return nlohmann::json::parse(res->body).get<StatsSnapshot>();
    } catch (const std::exception& e) {
      err = std::string("not a Mayhem /stats answer: ") + e.what();
      return std::nullopt;
    }
  };
}

}  // namespace

int top_main(int argc, char** argv) {
  CLI::App app{
      "Live per-stage view of a running Mayhem service (started with --stats-addr). Keys: space "
      "pause, s cycle the sort column, r reset the counts, q quit.",
      "mayhem top"};
  std::string addr_text;
  double interval = 1.0;
  bool once = false;
  app.add_option("--addr", addr_text, "HOST:PORT of the service's --stats-addr")
      ->type_name("HOST:PORT")
      ->required();
  add_number(app, "--interval", interval, "Seconds between refreshes");
  app.add_flag("--once", once, "Print one screen (two samples, --interval apart) and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mayhem top: error: " << e.what() << " (see mayhem top --help)\n";
    return 2;
  }
  std::string err;
  const auto addr = parse_stats_address(addr_text, err, "--addr");
  if (!addr) {
    std::cerr << "mayhem top: error: " << err << "\n";
    return 2;
  }
  if (addr->port == 0) {
    std::cerr << "mayhem top: error: --addr needs the service's port\n";
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string source = fmt::format("{}:{}", addr->host, addr->port);
  const FetchFn fetch = http_fetch(*addr);
  if (once) {
    TopModel model(source);
    for (int i = 0; i < 2; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      auto s = fetch(err);
      if (!s) {
        std::cerr << "mayhem top: cannot reach the service at " << source << ": " << err << "\n";
        return 1;
      }
      model.update(std::move(*s));
    }
    std::cout << render_top(model.view());
    return 0;
  }
  if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
    std::cerr << "mayhem top: error: needs a terminal (use --once to print one screen)\n";
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_term_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  run_tui(source, fetch, TuiOptions{interval, nullptr, {}});
  return 0;
}

}  // namespace mayhem::cli
