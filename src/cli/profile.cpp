#include "mayhem/cli/profile.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "mayhem/cli/number_flag.hpp"
#include "mayhem/observe/capture.hpp"
#include "mayhem/observe/stats_server.hpp"

namespace mayhem::cli {

namespace {

constexpr const char* kPrefix = "mayhem profile: ";

int fail(int rc, const std::string& what) {
  std::string line = kPrefix + what;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::cerr << line << "\n";
  return rc;
}

// The file --out names, created (or truncated) only once the capture has succeeded; checked
// before asking, so a path that cannot be written costs no capture.
std::string check_out(const std::string& path) {
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  if (!existed) ::unlink(path.c_str());
  return "";
}

bool write_file(const std::string& path, const std::string& body, std::string& err) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    err = std::strerror(errno);
    return false;
  }
  const bool wrote = std::fwrite(body.data(), 1, body.size(), f) == body.size();
  const int saved = errno;
  if (std::fclose(f) != 0 || !wrote) {
    err = std::strerror(wrote ? errno : saved);
    return false;
  }
  return true;
}

}  // namespace

int profile_main(int argc, char** argv) {
  CLI::App app{
      "Capture a profile of a running Mayhem service (started with --stats-addr) for --seconds, "
      "as `go tool pprof URL` does: the cProfile-style table (printed), a Callgrind file for "
      "callgrind_annotate or KCacheGrind, or a Perfetto/Chrome trace (written to --out). Exit "
      "status: 0 done, 1 no capture (nothing listens, the service failed or stopped), 2 bad "
      "flags, 3 another capture is running.",
      "mayhem profile"};
  std::string addr_text, format = "table", sort = "tottime", out;
  std::uint64_t seconds = 30;
  double sample = 1.0;
  app.add_option("--addr", addr_text, "HOST:PORT of the service's --stats-addr")
      ->type_name("HOST:PORT")
      ->required();
  add_number(app, "--seconds", seconds, "How long to capture (the profiler is attached that long)");
  app.add_option("--format", format,
                 "table: the cProfile-style table and line timings (stdout); callgrind: a "
                 "Callgrind file; trace: Chrome trace-event JSON for ui.perfetto.dev")
      ->check(CLI::IsMember({"table", "callgrind", "trace"}).description(""))
      ->type_name("{table,callgrind,trace}")
      ->default_str("table");
  auto* sample_opt =
      add_number(app, "--sample", sample,
                 "--format trace: the fraction of messages traced (as --trace-sample)");
  auto* sort_opt =
      app.add_option("--sort", sort, "--format table: the table's order")
          ->check(CLI::IsMember({"tottime", "cumtime", "ncalls", "name"}).description(""))
          ->type_name("{tottime,cumtime,ncalls,name}")
          ->default_str("tottime");
  app.add_option("--out", out,
                 "Write the result to FILE (default: stdout; a callgrind file or trace needs "
                 "--out when stdout is a terminal)")
      ->type_name("FILE");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.size() > 3 && arg.rfind("--", 0) == 0 && arg.back() == '=')
      return fail(2, "error: " + arg.substr(0, arg.size() - 1) +
                         ": needs a value (got an empty one after '=')");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(2, fmt::format("error: {} (see mayhem profile --help)", e.what()));
  }
  std::string err;
  const auto addr = parse_stats_address(addr_text, err, "--addr");
  if (!addr) return fail(2, "error: " + err);
  if (addr->port == 0) return fail(2, "error: --addr needs the service's port");
  if (sample_opt->count() && format != "trace")
    return fail(2, "error: --sample: only with --format trace");
  if (sort_opt->count() && format != "table")
    return fail(2, "error: --sort: only with --format table");
  if (out.empty() && format != "table" && ::isatty(STDOUT_FILENO))
    return fail(2, fmt::format("error: --format {} writes a file: give --out FILE (or redirect "
                               "stdout)",
                               format));
  if (!out.empty()) {
    if (const std::string why = check_out(out); !why.empty())
      return fail(2, fmt::format("error: --out: cannot write '{}': {}", out, why));
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string where = fmt::format("{}:{}", addr->host, addr->port);
  std::string target =
      format == "trace"
          ? fmt::format("/trace?seconds={}&sample={}", seconds, sample)
          : fmt::format("/profile?seconds={}&format={}&sort={}", seconds, format, sort);
  std::cerr << fmt::format("{}capturing {} s from http://{}{} ...\n", kPrefix, seconds, where,
                           target)
            << std::flush;
  httplib::Client client(addr->host, addr->port);
  client.set_connection_timeout(2, 0);
  client.set_write_timeout(2, 0);
  // The answer comes after the window: allow it and the report's making.
  client.set_read_timeout(static_cast<time_t>(seconds) + 30, 0);
  const auto res = client.Get(target.c_str());
  if (!res) {
    if (res.error() == httplib::Error::Connection)
      return fail(1, fmt::format("cannot reach the service at {}: connection refused or "
                                 "unreachable (is it running with --stats-addr {}?)",
                                 where, where));
    return fail(1, fmt::format("no answer from the service at {}: {}", where,
                               httplib::to_string(res.error())));
  }
  const std::string body_line = res->body.substr(0, res->body.find('\n'));
  switch (res->status) {
    case 200:
      break;
    case 409:
      return fail(3, fmt::format("a capture is already running at {} (one at a time): try again "
                                 "when it ends",
                                 where));
    case 404:
      return fail(1, fmt::format("{} takes no captures (HTTP 404: is it a Mayhem --stats-addr "
                                 "endpoint of version 0.17 or later?)",
                                 where));
    default:
      return fail(1, fmt::format("the service at {} refused the capture: {}", where, body_line));
  }
  const std::string window = res->get_header_value("X-Mayhem-Capture-Seconds");
  const std::string ended = res->get_header_value("X-Mayhem-Capture-Ended");
  if (out.empty()) {
    std::cout << res->body << std::flush;
  } else if (!write_file(out, res->body, err)) {
    return fail(1, fmt::format("cannot write '{}': {}", out, err));
  }
  std::cerr << fmt::format(
      "{}captured {} s ({}){}\n", kPrefix, window.empty() ? "?" : window,
      ended.empty() ? "?" : ended,
      out.empty() ? "" : fmt::format(": wrote {} ({} bytes)", out, res->body.size()));
  return 0;
}

}  // namespace mayhem::cli
