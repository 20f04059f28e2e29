// Issue 16, item 3: `mayhem --version` (one line per fact, exit 0).
#include <httplib.h>
#include <unistd.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "mayhem/observe/build_info.hpp"
#include "mayhem/observe/process_stats.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/service.hpp"
#include "support/known_snapshot.hpp"
#include "support/prometheus_check.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<std::string> build_info_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

double build_info_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// `promtool check metrics` on `text`: its output and exit status, or nullopt without promtool.
std::optional<test::Result> build_info_promtool(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) return std::nullopt;
  char path[] = "/tmp/mayhem-metrics-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  test::Subprocess p({"-c", std::string("promtool check metrics < ") + path}, "/bin/sh");
  auto r = p.wait(30s);
  std::remove(path);
  return r;
}

}  // namespace

TEST_CASE("mayhem --version prints one line per fact and exits 0", "[cli][version]") {
  test::Subprocess p({"--version"});
  const auto r = p.wait(30s);
  REQUIRE(r.exit_code == 0);
  INFO(r.out << r.err);
  CHECK(r.err.empty());
  const auto lines = build_info_lines(r.out);
  const std::vector<std::string> names = {"mayhem", "revision", "compiler", "oneTBB",
                                          "spdlog", "nats.c",   "SQLite",   "libpq"};
  REQUIRE(lines.size() == names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    INFO(lines[i]);
    REQUIRE(lines[i].rfind(names[i] + ": ", 0) == 0);
    CHECK(lines[i].size() > names[i].size() + 2);  // a value follows
  }
  CHECK(lines[0] == std::string("mayhem: ") + build_version());
  CHECK(lines[1] == std::string("revision: ") + build_revision());
  // The version is the project's (CMakeLists.txt), MAJOR.MINOR.PATCH.
  CHECK(std::count(lines[0].begin(), lines[0].end(), '.') == 2);
  CHECK(r.out == version_text());
}
