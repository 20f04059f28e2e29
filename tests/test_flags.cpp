// Every numeric flag of `mayhem` and `mayhem publish` (the table in src/flags.cpp) run through the
// binary with values around and outside its range: each bad one is one line naming the flag and
// exit 2, before anything starts; a good one runs.
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
  bool publish;
  std::string flag, value;  // value "=" means `--flag=` with nothing after it
  bool valid;               // the value is inside the range
  std::vector<std::string> args;
  std::string label;
};

FlagCase make_case(bool publish, const FlagRange& r, const std::string& value) {
  FlagCase c{publish, r.flag, value, false, {}, ""};
  const bool zero_ok = r.integer ? r.ilo == 0 : (r.lo == 0 && !r.lo_open);
  c.valid = value == "0" && zero_ok;
  if (publish) {
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
    c.args.insert(c.args.begin() + (publish ? 1 : 0), c.flag + "=");  // then another flag
  } else {
    c.args.push_back(c.flag);
    c.args.push_back(value);
  }
  // --messages 0 runs until a signal: at the default log level, so the test sees it running.
  if (!publish && c.flag == "--messages" && c.valid)
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
  for (const auto& r : flag_ranges()) {
    const bool publish_only =
        std::find(kPublishOnly.begin(), kPublishOnly.end(), r.flag) != kPublishOnly.end();
    const bool in_publish =
        std::find(kPublishFlags.begin(), kPublishFlags.end(), r.flag) != kPublishFlags.end();
    std::vector<std::string> values = values_of;
    values.push_back(above_max(r));
    for (const auto& v : values) {
      if (!publish_only) cases.push_back(make_case(false, r, v));
      if (in_publish) cases.push_back(make_case(true, r, v));
    }
  }
  // Nine values a flag; 26 flags of the service, 8 of publish.
  CHECK(cases.size() == 9 * (flag_ranges().size() - kPublishOnly.size() + kPublishFlags.size()));
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
      if (!c.publish && c.valid && c.flag == "--messages") {  // runs until a signal
        CHECK(eventually([&] { return p.err_so_far().find("Pulled") != std::string::npos; }, kWait,
                         5ms));
        p.signal(SIGINT);
      }
      const Result r = p.wait(kWait);
      CHECK_FALSE(r.timed_out);
      const auto lines = flags_lines(r.err);
      const std::string prefix =
          std::string(c.publish ? "mayhem publish: error: " : "mayhem: error: ") + c.flag + ": ";
      // publish --messages 0 is in range but not enough (nor --malformed): refused by name.
      const bool refused_anyway = c.publish && c.flag == "--messages" && c.value == "0";
      if (c.valid && !refused_anyway) {
        // A good value: the service runs its 10 messages; publish gets as far as connecting.
        CHECK(r.exit_code == (c.publish ? 1 : 0));
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
  for (const bool publish : {false, true}) {
    Subprocess p(publish ? std::vector<std::string>{"publish", "--help"}
                         : std::vector<std::string>{"--help"});
    const Result r = p.wait(10s);
    REQUIRE(r.exit_code == 0);
    // CLI11's own type names mean a number bound around the table.
    CHECK(r.out.find(" FLOAT") == std::string::npos);
    CHECK(r.out.find(" UINT") == std::string::npos);
    std::size_t ints = 0, ours = 0;
    for (auto at = r.out.find(" INT "); at != std::string::npos; at = r.out.find(" INT ", at + 1))
      ++ints, ours += r.out.compare(at, 8, " INT in ") == 0;
    CHECK(ints == ours);
    for (const auto& range : flag_ranges()) {
      const bool in_publish =
          std::find(kPublishFlags.begin(), kPublishFlags.end(), range.flag) != kPublishFlags.end();
      const bool publish_only =
          std::find(kPublishOnly.begin(), kPublishOnly.end(), range.flag) != kPublishOnly.end();
      if (publish ? !in_publish : publish_only) continue;
      INFO(range.flag);
      CHECK(r.out.find(std::string(range.flag) + " ") != std::string::npos);
      CHECK(r.out.find(describe(range)) != std::string::npos);
    }
  }
}
