// `mayhem top`: the command line, fetching /stats over HTTP, --once, --record (with or without a
// terminal) and --replay.
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mayhem/cli/number_flag.hpp"
#include "mayhem/cli/top.hpp"
#include "mayhem/cli/top_record.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/stage.hpp"
#include "terminal.hpp"

namespace mayhem::cli {

namespace {

FetchFn http_fetch(const StatsAddress& addr) {
  auto client = std::make_shared<httplib::Client>(addr.host, addr.port);
  client->set_connection_timeout(1, 0);
  client->set_read_timeout(2, 0);
  client->set_write_timeout(1, 0);
  return [client](const std::string& zones, std::string& err) -> std::optional<StatsSnapshot> {
    auto res = client->Get(zones.empty() ? std::string("/stats") : "/stats?zones=" + zones);
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

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Appends whole lines to the recording (O_APPEND: each line lands in one write).
class Recorder {
 public:
  bool open(const std::string& path, std::string& err) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) err = fmt::format("--record: cannot open {}: {}", path, std::strerror(errno));
    return fd_ >= 0;
  }
  ~Recorder() {
    if (fd_ >= 0) ::close(fd_);
  }
  void add(const std::string& source, const StatsSnapshot* s, const std::string& error) {
    if (fd_ < 0) return;
    const std::string l = record_line(source, wall_ms(), s, error);
    if (::write(fd_, l.data(), l.size()) == static_cast<ssize_t>(l.size())) ++count_;
  }
  int count() const { return count_; }

 private:
  int fd_ = -1;
  int count_ = 0;
};

bool is_stage_name(const std::string& name) {
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i)
    if (name == to_string(static_cast<Stage>(i))) return true;
  return false;
}

int default_width() {
  if (!isatty(STDOUT_FILENO)) return 0;
  const char* cols = std::getenv("COLUMNS");
  return cols ? std::max(std::atoi(cols), 0) : 0;
}

}  // namespace

int top_main(int argc, char** argv) {
  CLI::App app{
      "Live per-stage view of a running Mayhem service (started with --stats-addr). Keys: j/k "
      "select a stage, enter its zones, esc back, space pause, s sort column, S reverse, r reset, "
      "? help, q quit.",
      "mayhem top"};
  std::string addr_text, record_file, replay_file, zones;
  double interval = 1.0;
  bool once = false;
  int width = -1, at = 0;
  app.add_option("--addr", addr_text, "HOST:PORT of the service's --stats-addr")
      ->type_name("HOST:PORT");
  add_number(app, "--interval", interval, "Seconds between refreshes");
  app.add_flag("--once", once,
               "Print one screen (two samples, --interval apart; with --replay: a recorded "
               "sample) and exit");
  app.add_option("--record", record_file,
                 "Append every sample fetched to FILE (JSON lines); without a terminal, record "
                 "until SIGINT/SIGTERM")
      ->type_name("FILE");
  app.add_option("--replay", replay_file, "Show a --record file instead of a service")
      ->type_name("FILE");
  app.add_option("--zones", zones, "Start drilled into this stage's zones (e.g. save)")
      ->type_name("STAGE");
  app.add_option("--width", width, "Columns for --once (default: the terminal's; else all)")
      ->type_name("COLS")
      ->check(CLI::Range(0, 1000));
  app.add_option("--at", at, "With --replay --once: the sample to print (1 = first; default last)")
      ->type_name("N")
      ->check(CLI::Range(1, 1 << 30));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "mayhem top: error: " << e.what() << " (see mayhem top --help)\n";
    return 2;
  }
  const auto fail = [](const std::string& why) {
    std::cerr << "mayhem top: error: " << why << "\n";
    return 2;
  };
  if (!zones.empty() && !is_stage_name(zones))
    return fail(
        fmt::format("--zones: not a stage name (got '{}'): publish, consume, save, saved, "
                    "restart, restarted, cleanup, settle, lease",
                    zones));
  if (width < 0) width = default_width();
  ::signal(SIGPIPE, SIG_IGN);

  if (!replay_file.empty()) {
    if (!addr_text.empty() || !record_file.empty())
      return fail("--replay shows a recording: it takes no --addr or --record");
    std::ifstream in(replay_file, std::ios::binary);
    if (!in) return fail(fmt::format("--replay: cannot read {}", replay_file));
    std::stringstream text;
    text << in.rdbuf();
    std::string err;
    const auto rec = parse_recording(text.str(), err);
    if (!rec) return fail(fmt::format("--replay {}: {}", replay_file, err));
    if (!rec->warning.empty())
      std::cerr << "mayhem top: warning: " << replay_file << ": " << rec->warning << "\n";
    if (at > static_cast<int>(rec->samples.size()))
      return fail(fmt::format("--at {}: the recording has {} samples", at, rec->samples.size()));
    if (once) {
      Replay player(*rec);
      player.seek(at > 0 ? static_cast<std::size_t>(at - 1) : rec->samples.size() - 1);
      TopModel model(rec->source);
      model.view().interactive = false;
      model.view().width = width;
      model.view().drill = zones;
      model.toggle_pause();  // "paused": the state word of a still picture
      player.show(model);
      std::cout << render_top(model.view());
      return 0;
    }
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
      return fail("--replay needs a terminal (add --once to print a sample)");
    run_replay_tui(*rec, replay_file, TuiOptions{interval, nullptr, {}, {}, zones});
    return 0;
  }

  if (addr_text.empty()) return fail("--addr is required (or --replay FILE)");
  std::string err;
  const auto addr = parse_stats_address(addr_text, err, "--addr");
  if (!addr) return fail(err);
  if (addr->port == 0) return fail("--addr needs the service's port");
  Recorder recorder;
  if (!record_file.empty() && !recorder.open(record_file, err)) return fail(err);
  const std::string source = fmt::format("{}:{}", addr->host, addr->port);
  const FetchFn fetch = http_fetch(*addr);
  const SampleFn record = [&](const StatsSnapshot* s, const std::string& e) {
    recorder.add(source, s, e);
  };
  if (once) {
    TopModel model(source);
    model.view().interactive = false;
    model.view().width = width;
    model.view().drill = zones;
    for (int i = 0; i < 2; ++i) {
      if (i) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
      auto s = fetch(zones, err);
      record(s ? &*s : nullptr, err);
      if (!s) {
        std::cerr << "mayhem top: cannot reach the service at " << source << ": " << err << "\n";
        return 1;
      }
      model.update(std::move(*s));
    }
    std::cout << render_top(model.view());
    return 0;
  }
  const bool terminal = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  if (!terminal && record_file.empty())
    return fail("needs a terminal (use --once to print one screen, or --record FILE)");
  if (!terminal) {
    // Headless recording: a sample every --interval until a signal.
    install_stop_signals(true);
    using clock = std::chrono::steady_clock;
    const auto step =
        std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(interval));
    auto next = clock::now();
    while (stop_signal() == 0) {
      if (clock::now() >= next) {
        next = std::max(next + step, clock::now());  // a slow fetch delays, never bunches
        auto s = fetch(zones, err);
        record(s ? &*s : nullptr, err);
      }
      std::this_thread::sleep_for(std::min<clock::duration>(
          std::chrono::milliseconds(50), std::max<clock::duration>(next - clock::now(), {})));
    }
    std::cerr << fmt::format("mayhem top: recorded {} samples to {}\n", recorder.count(),
                             record_file);
    return 0;
  }
  run_tui(source, fetch,
          TuiOptions{interval, nullptr, {}, record_file.empty() ? SampleFn{} : record, zones});
  return 0;
}

}  // namespace mayhem::cli
