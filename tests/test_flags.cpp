// Every numeric flag of `mayhem`, `mayhem publish`, `mayhem top` and `mayhem profile` (the table
// in src/flags.cpp)
// run through the binary with values around and outside its range: each bad one is one line
// naming the flag and exit 2, before anything starts; a good one runs.
#include <fmt/format.h>
#include <signal.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <sstream>

#include "mayhem/flags.hpp"
#include "support/scale.hpp"
#include "support/subprocess.hpp"

using namespace mayhem;
using namespace mayhem::test;
using namespace std::chrono_literals;

namespace {

// Flags of `mayhem publish` (the others of the table are the service's only).
const std::vector<std::string> kPublishFlags = {"--messages",        "--rate",      "--seed",
                                                "--stream-replicas", "--nats-wait", "--max-pending",
                                                "--malformed",       "--timeout"};
const std::vector<std::string> kPublishOnly = {"--max-pending", "--malformed", "--timeout"};
// Flags of `mayhem top` (only its).
const std::vector<std::string> kTopFlags = {"--interval"};
// Flags of `mayhem profile` (only its).
const std::vector<std::string> kProfileFlags = {"--seconds", "--sample"};

bool listed(const std::vector<std::string>& list, const char* flag) {
  return std::find(list.begin(), list.end(), flag) != list.end();
}

std::vector<std::string> flags_lines(const std::string& s) {
  std::vector<std::string> out;
  std::string line;
  std::istringstream in(s);
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// Just past the top of the range.
std::string above_max(const FlagRange& r) {
  if (!r.integer) return fmt::format("{}", r.hi + 1);
  if (r.ihi == std::numeric_limits<std::uint64_t>::max()) return "18446744073709551616";
  return std::to_string(r.ihi + 1);
}

struct FlagCase {
  std::string command;      // "" (the service), "publish" or "top"
  std::string flag, value;  // value "=" means `--flag=` with nothing after it
  bool valid;               // the value is inside the range
  std::vector<std::string> args;
  std::string label;
};

FlagCase make_case(const std::string& command, const FlagRange& r, const std::string& value) {
  FlagCase c{command, r.flag, value, false, {}, ""};
  const bool zero_ok = r.integer ? r.ilo == 0 : (r.lo == 0 && !r.lo_open);
  c.valid = value == "0" && zero_ok;
  if (command == "top") {
    // Nothing listens on port 1 either: a good value gets as far as asking (exit 1).
    c.args = {"top", "--addr", "127.0.0.1:1", "--once"};
  } else if (command == "profile") {
    // Likewise; --sample goes with --format trace.
    c.args = {"profile", "--addr", "127.0.0.1:1", "--format", "trace", "--out", "/dev/null"};
  } else if (command == "publish") {
    // Nothing listens on port 1: a good value gets as far as connecting (exit 1, no error line
    // about the flag).
    c.args = {"publish",    "--nats", "nats://127.0.0.1:1", "--nats-wait", "0",
              "--messages", "1",      "--log-level",        "off"};
  } else {
    c.args = {"--messages",      "10", "--publish-interval", "0",
              "--latency-scale", "0",  "--log-level",        "off"};
  }
  // The flag under test replaces the base's own (a flag given twice is an error of its own).
  if (const auto at = std::find(c.args.begin(), c.args.end(), c.flag); at != c.args.end())
    c.args.erase(at, at + 2);
  if (value == "=") {
    c.args.insert(c.args.begin() + (command.empty() ? 0 : 1), c.flag + "=");  // then another flag
  } else {
    c.args.push_back(c.flag);
    c.args.push_back(value);
  }
  // --messages 0 runs until a signal: at the default log level, so the test sees it running.
  if (command.empty() && c.flag == "--messages" && c.valid)
    c.args.erase(std::find(c.args.begin(), c.args.end(), "--log-level"),
                 std::find(c.args.begin(), c.args.end(), "--log-level") + 2);
  for (const auto& a : c.args) c.label += (a.empty() ? "''" : a) + " ";
  return c;
}

}  // namespace

TEST_CASE(
    "Every numeric flag x {-1, 0, max+1, 1e308, inf, nan, empty, text}: exit 2 and one line, "
    "or a run",
    "[cli][flags]") {
  std::vector<FlagCase> cases;
  const std::vector<std::string> values_of = {"-1", "0", "1e308", "inf", "nan", "", "=", "text"};
  // Under the sanitizers each process costs ~0.5 s: there a flag takes every third value,
  // rotating from flag to flag, so each value still meets a third of the flags (and
  // fuzz_cli_args fuzzes the parser there).
  std::size_t rotation = 0, sampled_out = 0;
  for (const auto& r : flag_ranges()) {
    std::vector<std::string> values = values_of;
    values.push_back(above_max(r));
    ++rotation;
    for (std::size_t vi = 0; vi < values.size(); ++vi) {
      const std::string& v = values[vi];
      const std::size_t before = cases.size();
      if (!listed(kPublishOnly, r.flag) && !listed(kTopFlags, r.flag) &&
          !listed(kProfileFlags, r.flag))
        cases.push_back(make_case("", r, v));
      if (listed(kPublishFlags, r.flag)) cases.push_back(make_case("publish", r, v));
      if (listed(kTopFlags, r.flag)) cases.push_back(make_case("top", r, v));
      if (listed(kProfileFlags, r.flag)) cases.push_back(make_case("profile", r, v));
      if (kSanitized && (rotation + vi) % 3 != 0) {
        sampled_out += cases.size() - before;
        cases.resize(before);
      }
    }
  }
  // Nine values a flag; 26 flags of the service, 8 of publish, 1 of top, 2 of profile.
  const std::size_t all = cases.size() + sampled_out;
  CHECK(all == 9 * (flag_ranges().size() - kPublishOnly.size() + kPublishFlags.size()));
  CHECK(all == 9 * (26 + 8 + 1 + 2));
  CHECK(cases.size() >= (kSanitized ? all / 4 : all));
  // In batches, each batch's processes at once (most refuse within milliseconds).
  constexpr std::size_t kBatch = 8;
  // 10 s for a run of 10 messages; sanitizer builds run several times slower, 8 at a time.
  const auto kWait = kSanitized ? std::chrono::milliseconds(60s) : std::chrono::milliseconds(10s);
  for (std::size_t first = 0; first < cases.size(); first += kBatch) {
    const std::size_t last = std::min(cases.size(), first + kBatch);
    std::vector<std::unique_ptr<Subprocess>> procs;
    for (std::size_t i = first; i < last; ++i)
      procs.push_back(std::make_unique<Subprocess>(cases[i].args));
    for (std::size_t i = first; i < last; ++i) {
      const FlagCase& c = cases[i];
      Subprocess& p = *procs[i - first];
      INFO(c.label);
      if (c.command.empty() && c.valid && c.flag == "--messages") {  // runs until a signal
        CHECK(eventually([&] { return p.err_so_far().find("Pulled") != std::string::npos; }, kWait,
                         5ms));
        p.signal(SIGINT);
      }
      const Result r = p.wait(kWait);
      CHECK_FALSE(r.timed_out);
      const auto lines = flags_lines(r.err);
      const std::string prefix =
          "mayhem" + (c.command.empty() ? "" : " " + c.command) + ": error: " + c.flag + ": ";
      // publish --messages 0 is in range but not enough (nor --malformed): refused by name.
      const bool refused_anyway =
          c.command == "publish" && c.flag == "--messages" && c.value == "0";
      if (c.valid && !refused_anyway) {
        // A good value: the service runs its 10 messages; publish and top get as far as
        // connecting.
        CHECK(r.exit_code == (c.command.empty() ? 0 : 1));
        CHECK(r.err.find("error: --") == std::string::npos);
      } else {
        // Bad (or, for publish --messages 0, good but not enough): one line naming the flag.
        CHECK(r.exit_code == 2);
        CHECK(r.out.empty());
        REQUIRE(lines.size() == 1);
        CHECK(lines[0].rfind(prefix, 0) == 0);
      }
    }
  }
}

TEST_CASE("Help shows every numeric flag's range from the table", "[cli][flags]") {
  for (const std::string command : {"", "publish", "top", "profile"}) {
    Subprocess p(command.empty() ? std::vector<std::string>{"--help"}
                                 : std::vector<std::string>{command, "--help"});
    const Result r = p.wait(10s);
    INFO(command);
    REQUIRE(r.exit_code == 0);
    // CLI11's own type names mean a number bound around the table.
    CHECK(r.out.find(" FLOAT") == std::string::npos);
    CHECK(r.out.find(" UINT") == std::string::npos);
    std::size_t ints = 0, ours = 0;
    for (auto at = r.out.find(" INT "); at != std::string::npos; at = r.out.find(" INT ", at + 1))
      ++ints, ours += r.out.compare(at, 8, " INT in ") == 0;
    CHECK(ints == ours);
    for (const auto& range : flag_ranges()) {
      const bool shown = command == "top"       ? listed(kTopFlags, range.flag)
                         : command == "profile" ? listed(kProfileFlags, range.flag)
                         : command == "publish" ? listed(kPublishFlags, range.flag)
                                                : !listed(kPublishOnly, range.flag) &&
                                                      !listed(kTopFlags, range.flag) &&
                                                      !listed(kProfileFlags, range.flag);
      if (!shown) continue;
      INFO(range.flag);
      CHECK(r.out.find(std::string(range.flag) + " ") != std::string::npos);
      CHECK(r.out.find(describe(range)) != std::string::npos);
    }
  }
}
