// The binary's log file as an operator meets it: an existing file is appended to; every line is in
// time order; SIGUSR1 (logrotate's postrotate) moves the service to a new file without losing a
// line; the last line says the service shut down; `--log-format json` gives one object a line.
#include <signal.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

using mayhem::test::file_shows;
using mayhem::test::Subprocess;
using mayhem::test::TempDir;
using namespace std::chrono_literals;

namespace {
std::vector<std::string> log_file_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
std::size_t count_containing(const std::vector<std::string>& lines, const std::string& text) {
  std::size_t n = 0;
  for (const auto& l : lines) n += l.find(text) != std::string::npos;
  return n;
}
}  // namespace

TEST_CASE("Log file: appended to, in time order, reopened on SIGUSR1, the shutdown line last",
          "[cli][logfile]") {
  TempDir dir;
  const auto log = dir.file("svc.log"), rotated = dir.file("svc.log.1");
  std::ofstream(log) << "an earlier run's line\n";
  Subprocess p({"--messages", "0", "--rate", "2000", "--latency-scale", "0.01", "--log-file", log,
                "--log-format", "iso", "--summary-json"});
  REQUIRE(file_shows(log, "Done. Acked", 30s));
  REQUIRE(std::rename(log.c_str(), rotated.c_str()) == 0);  // what logrotate does first
  p.signal(SIGUSR1);
  REQUIRE(file_shows(log, "SIGUSR1: reopened the log file", 30s));
  REQUIRE(file_shows(log, "Done. Acked", 30s));  // the run goes on, into the new file
  p.signal(SIGINT);
  const auto r = p.wait(60s);
  REQUIRE(r.exit_code == 0);
  const auto summary = nlohmann::json::parse(r.out);

  const auto old_lines = log_file_lines(rotated), new_lines = log_file_lines(log);
  REQUIRE(old_lines.size() > 3);
  REQUIRE_FALSE(new_lines.empty());
  CHECK(old_lines[0] == "an earlier run's line");  // appended, not truncated
  CHECK(old_lines[1].find("Starting Mayhem") != std::string::npos);
  CHECK(new_lines.back().find("Successfully shutdown the Mayhem service.") != std::string::npos);
  CHECK(count_containing(old_lines, "SIGUSR1") == 0);

  // Both files together: every stamp at or after the one before (ISO stamps of one zone compare
  // as text), and every acked message's line is in one of them.
  std::vector<std::string> all(old_lines.begin() + 1, old_lines.end());
  all.insert(all.end(), new_lines.begin(), new_lines.end());
  std::size_t steps_back = 0;
  for (std::size_t i = 1; i < all.size(); ++i) {
    REQUIRE(all[i].size() > 32);
    steps_back += all[i].compare(0, 32, all[i - 1], 0, 32) < 0;
  }
  CHECK(steps_back == 0);
  CHECK(count_containing(all, "INFO: Done. Acked") == summary["acked"].get<std::size_t>());
  CHECK(summary["acked"].get<std::size_t>() > 0);
}

TEST_CASE("Log file: --log-format json is one object a line, with the message's fields",
          "[cli][logfile]") {
  TempDir dir;
  const auto log = dir.file("svc.json.log");
  Subprocess p({"--messages", "50", "--publish-interval", "0", "--latency-scale", "0", "--log-file",
                log, "--log-format", "json", "--summary-json"});
  const auto r = p.wait(60s);
  REQUIRE(r.exit_code == 0);
  std::size_t acked = 0, saved = 0;
  for (const auto& line : log_file_lines(log)) {
    const auto j = nlohmann::json::parse(line);  // throws (fails) on anything but one object
    REQUIRE(j.is_object());
    REQUIRE(j.contains("ts"));
    REQUIRE(j.contains("level"));
    REQUIRE(j.contains("msg"));
    const auto msg = j["msg"].get<std::string>();
    if (msg.rfind("Done. Acked", 0) == 0) {
      ++acked;
      CHECK(j["stage"] == "settle");
      CHECK(j["message_id"].get<std::string>().size() == 36);
      const auto name = j["instance_name"].get<std::string>();
      CHECK(msg.find("instance_name='" + name + "'") != std::string::npos);
    }
    if (msg.rfind("Saved ", 0) == 0) {
      ++saved;
      CHECK(j["stage"] == "save");
    }
  }
  CHECK(acked == 50);
  CHECK(saved > 0);
}
