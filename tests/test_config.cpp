// The service's options from MAYHEM_* variables and a TOML file (--config): precedence flag >
// environment > file > default for a number, a string, a choice, a flag and a list; a bad value
// from either is one line naming the flag and where it came from, exit 2; unknown keys, sections
// and unreadable files are refused; `publish` ignores both; the shipped deploy/mayhem.toml parses
// and lists every option. In-process through the real parser (parse_args), and end to end
// through the binary for a few cases.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mayhem/cli/run.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

using namespace mayhem;
using namespace mayhem::test;
using namespace std::chrono_literals;

namespace {

using CfgVars = std::map<std::string, std::string>;

// Sets variables for one scope and restores what was there (tests in one process run one at a
// time).
class CfgEnv {
 public:
  explicit CfgEnv(const CfgVars& vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~CfgEnv() {
    for (const auto& [name, old] : saved_) {
      if (old)
        setenv(name.c_str(), old->c_str(), 1);
      else
        unsetenv(name.c_str());
    }
  }
  CfgEnv(const CfgEnv&) = delete;
  CfgEnv& operator=(const CfgEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

struct CfgParsed {
  std::optional<int> rc;
  std::string message;
  Options opts;
  std::vector<FaultSpec> faults;
  std::optional<cli::PublishOptions> publish;
};

CfgParsed cfg_parse(std::vector<std::string> args) {
  CfgParsed p;
  args.insert(args.begin(), "mayhem");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  p.rc = cli::parse_args(static_cast<int>(args.size()), argv.data(), p.opts, p.faults, p.message,
                         &p.publish);
  return p;
}

std::string cfg_write(const TempDir& dir, const char* name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

// A bad input's message: one line, "mayhem: error: ", containing every `part`.
void cfg_refused(const CfgParsed& p, std::initializer_list<std::string> parts) {
  INFO(p.message);
  REQUIRE(p.rc);
  CHECK(*p.rc == 2);
  CHECK(p.message.rfind("mayhem: error: ", 0) == 0);
  CHECK(p.message.find('\n') == std::string::npos);
  for (const auto& part : parts) CHECK(p.message.find(part) != std::string::npos);
}

std::string cfg_deploy_file() {
  return std::string(MAYHEM_SOURCE_DIR) + "/deploy/mayhem.toml";
}

// The keys of `# key = value` lines (a config example's options).
std::set<std::string> cfg_example_keys(const std::string& text) {
  std::set<std::string> keys;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find(" = ");
    if (line.rfind("# ", 0) == 0 && eq != std::string::npos &&
        line.find(' ', 2) == eq)  // one word before " = "
      keys.insert(line.substr(2, eq - 2));
  }
  return keys;
}

}  // namespace

TEST_CASE("Config: a flag beats the environment, which beats the file, which beats the default",
          "[cli][config]") {
  TempDir dir;
  const std::string file = cfg_write(dir, "mayhem.toml",
                                     "# a comment\n"
                                     "rate = 100\n"
                                     "store = \"sqlite:/tmp/from-file.db\"\n"
                                     "io-model = \"blocking\"\n"
                                     "summary-json = true\n"
                                     "inject = [\"save:error:0.5\", \"restart:crash:0.25\"]\n"
                                     "threads = 3\n");
  const CfgVars env = {{"MAYHEM_RATE", "200"},
                       {"MAYHEM_STORE", "sqlite:/tmp/from-env.db"},
                       {"MAYHEM_IO_MODEL", "async"},
                       {"MAYHEM_SUMMARY_JSON", "false"},
                       {"MAYHEM_INJECT", "cleanup:error:0.125"}};
  const std::vector<std::string> flags = {
      "--rate",       "300",      "--store",        "sqlite:/tmp/from-flag.db",
      "--io-model",   "blocking", "--summary-json", "--inject",
      "timer:error:1"};

  SECTION("default") {
    const auto p = cfg_parse({});
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 0);
    CHECK(p.opts.store == "memory");
    CHECK(p.opts.io_model == IoModel::kAsync);
    CHECK_FALSE(p.opts.summary_json);
    CHECK(p.faults.empty());
  }
  SECTION("file") {
    const auto p = cfg_parse({"--config", file});
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 100);
    CHECK(p.opts.store == "sqlite:/tmp/from-file.db");
    CHECK(p.opts.io_model == IoModel::kBlocking);
    CHECK(p.opts.summary_json);
    REQUIRE(p.faults.size() == 2);
    CHECK(p.faults[1].probability == 0.25);
    CHECK(p.opts.threads == 3);
  }
  SECTION("the file named by MAYHEM_CONFIG") {
    CfgEnv e(CfgVars{{"MAYHEM_CONFIG", file}});
    const auto p = cfg_parse({});
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 100);
    CHECK(p.opts.threads == 3);
  }
  SECTION("environment over file") {
    CfgEnv e(env);
    const auto p = cfg_parse({"--config", file});
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 200);
    CHECK(p.opts.store == "sqlite:/tmp/from-env.db");
    CHECK(p.opts.io_model == IoModel::kAsync);
    CHECK_FALSE(p.opts.summary_json);
    REQUIRE(p.faults.size() == 1);
    CHECK(p.faults[0].probability == 0.125);
    CHECK(p.opts.threads == 3);  // not in the environment: still the file's
  }
  SECTION("flag over environment and file") {
    CfgEnv e(env);
    std::vector<std::string> args = flags;
    args.insert(args.end(), {"--config", file});
    const auto p = cfg_parse(args);
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 300);
    CHECK(p.opts.store == "sqlite:/tmp/from-flag.db");
    CHECK(p.opts.io_model == IoModel::kBlocking);
    CHECK(p.opts.summary_json);
    REQUIRE(p.faults.size() == 1);
    CHECK(p.faults[0].probability == 1);
  }
  SECTION("--config over MAYHEM_CONFIG") {
    const std::string other = cfg_write(dir, "other.toml", "rate = 7\n");
    CfgEnv e(CfgVars{{"MAYHEM_CONFIG", file}});
    const auto p = cfg_parse({"--config=" + other});
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 7);
    CHECK(p.opts.threads != 3);  // the other file was not read
  }
  SECTION("an empty variable counts as unset") {
    CfgEnv e(CfgVars{{"MAYHEM_RATE", ""}, {"MAYHEM_IO_MODEL", ""}});
    const auto p = cfg_parse({"--config", file});
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 100);
    CHECK(p.opts.io_model == IoModel::kBlocking);
  }
  SECTION("a comma-separated value stays one string; MAYHEM_INJECT takes several") {
    const std::string urls =
        cfg_write(dir, "urls.toml", "source = \"nats://127.0.0.1:4222,nats://127.0.0.1:4223\"\n");
    CfgEnv e(CfgVars{{"MAYHEM_INJECT", "save:error:0.5,restart:hang:0.25"}});
    const auto p = cfg_parse({"--config", urls});
    INFO(p.message);
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.source == "nats://127.0.0.1:4222,nats://127.0.0.1:4223");
    CHECK(p.faults.size() == 2);
  }
}

TEST_CASE("Config: a bad value from the environment or the file is one line naming both",
          "[cli][config]") {
  TempDir dir;
  SECTION("environment, out of range") {
    CfgEnv e(CfgVars{{"MAYHEM_THREADS", "0"}});
    cfg_refused(cfg_parse({}), {"--threads (from MAYHEM_THREADS): must be"});
  }
  SECTION("environment, not a number") {
    CfgEnv e(CfgVars{{"MAYHEM_RATE", "fast"}});
    cfg_refused(cfg_parse({}), {"--rate (from MAYHEM_RATE): must be", "'fast'"});
  }
  SECTION("environment, not a choice") {
    CfgEnv e(CfgVars{{"MAYHEM_IO_MODEL", "threads"}});
    cfg_refused(cfg_parse({}), {"--io-model (from MAYHEM_IO_MODEL)"});
  }
  SECTION("environment, not a bool") {
    CfgEnv e(CfgVars{{"MAYHEM_SUMMARY_JSON", "maybe"}});
    cfg_refused(cfg_parse({}), {"--summary-json (from MAYHEM_SUMMARY_JSON)"});
  }
  SECTION("environment, a bad fault; checks after the parse name the source too") {
    {
      CfgEnv e(CfgVars{{"MAYHEM_INJECT", "save:error:2"}});
      cfg_refused(cfg_parse({}), {"--inject (from MAYHEM_INJECT)"});
    }
    {
      CfgEnv e(CfgVars{{"MAYHEM_STORE", "bogus"}});
      cfg_refused(cfg_parse({}), {"--store (from MAYHEM_STORE) must be"});
    }
    const std::string f = cfg_write(dir, "bad.toml", "stats-addr = \"nonsense\"\n");
    cfg_refused(cfg_parse({"--config", f}), {"--stats-addr (from config file '" + f + "')"});
    // A default named in a message is not said to come from anywhere.
    cfg_refused(cfg_parse({"--config", f, "--inject", "x"}), {});
  }
  SECTION("a flag on the command line hides a bad variable") {
    CfgEnv e(CfgVars{{"MAYHEM_RATE", "fast"}});
    const auto p = cfg_parse({"--rate", "5"});
    REQUIRE_FALSE(p.rc);
    CHECK(p.opts.rate == 5);
  }
  SECTION("file, out of range") {
    const std::string f = cfg_write(dir, "bad.toml", "rate = 1e28\n");
    cfg_refused(cfg_parse({"--config", f}),
                {"--rate (from config file '" + f + "'): must be", "1e28"});
  }
  SECTION("file, empty value") {
    const std::string f = cfg_write(dir, "bad.toml", "latency-scale = \"\"\n");
    cfg_refused(cfg_parse({"--config", f}), {"--latency-scale (from config file", "needs a value"});
  }
  SECTION("file, not a choice") {
    const std::string f = cfg_write(dir, "bad.toml", "log-level = \"loud\"\n");
    cfg_refused(cfg_parse({"--config", f}), {"--log-level (from config file"});
  }
  SECTION("file, two values for one") {
    const std::string f = cfg_write(dir, "bad.toml", "rate = [1, 2]\n");
    cfg_refused(cfg_parse({"--config", f}), {"config file '" + f + "'", "'rate' takes one value"});
  }
}

TEST_CASE("Config: unknown keys, sections and unreadable files are refused", "[cli][config]") {
  TempDir dir;
  SECTION("unknown key") {
    const std::string f = cfg_write(dir, "x.toml", "rate = 5\nraet = 5\n");
    cfg_refused(cfg_parse({"--config", f}), {"config file '" + f + "'", "unknown key 'raet'"});
  }
  SECTION("a key spelt as the flag or the variable") {
    for (const char* key : {"--rate", "MAYHEM_RATE", "latency_scale"}) {
      const std::string f = cfg_write(dir, "x.toml", std::string(key) + " = 5\n");
      cfg_refused(cfg_parse({"--config", f}), {"unknown key"});
    }
  }
  SECTION("a key that is not an option's value") {
    for (const char* key : {"help", "version", "config", "config-example"}) {
      const std::string f = cfg_write(dir, "x.toml", std::string(key) + " = true\n");
      cfg_refused(cfg_parse({"--config", f}), {"config file"});
    }
  }
  SECTION("a section") {
    const std::string f = cfg_write(dir, "x.toml", "[publish]\nrate = 5\n");
    cfg_refused(cfg_parse({"--config", f}), {"[publish]: no [sections]"});
  }
  SECTION("a missing file") {
    const std::string f = dir.file("missing.toml");
    cfg_refused(cfg_parse({"--config", f}), {"--config: cannot read '" + f + "'"});
  }
  SECTION("a missing file from MAYHEM_CONFIG") {
    CfgEnv e(CfgVars{{"MAYHEM_CONFIG", dir.file("missing.toml")}});
    cfg_refused(cfg_parse({}), {"--config (from MAYHEM_CONFIG): cannot read"});
  }
  SECTION("a device that never ends") {
    cfg_refused(cfg_parse({"--config", "/dev/zero"}), {"larger than 1 MiB"});
  }
  SECTION("a directory") {
    cfg_refused(cfg_parse({"--config", dir.path().string()}), {"is a directory"});
  }
}

TEST_CASE("Config: publish and top take flags only", "[cli][config]") {
  // `top` and `profile` are dispatched before the parser; after service flags they are refused.
  cfg_refused(cfg_parse({"--rate", "5", "top", "--addr", "127.0.0.1:1"}), {"top"});
  cfg_refused(cfg_parse({"--rate", "5", "profile", "--addr", "127.0.0.1:1"}), {"profile"});
  TempDir dir;
  const std::string f = cfg_write(dir, "x.toml", "raet = 1\n");
  CfgEnv e(CfgVars{{"MAYHEM_RATE", "fast"}, {"MAYHEM_MESSAGES", "-1"}, {"MAYHEM_CONFIG", f}});
  const auto p = cfg_parse({"publish", "--nats", "nats://127.0.0.1:4222", "--messages", "5"});
  INFO(p.message);
  REQUIRE_FALSE(p.rc);
  REQUIRE(p.publish);
  CHECK(p.publish->rate == 0);
  CHECK(p.publish->messages == 5);
}

TEST_CASE("Config: the shipped deploy/mayhem.toml parses and lists every option", "[cli][config]") {
  const std::string shipped = read_file(cfg_deploy_file());
  REQUIRE_FALSE(shipped.empty());
  // As shipped (everything commented out): the defaults.
  const auto p = cfg_parse({"--config", cfg_deploy_file()});
  INFO(p.message);
  REQUIRE_FALSE(p.rc);
  CHECK(p.opts.rate == 0);
  CHECK(p.opts.store == "memory");
  // Every `# key = value` line uncommented: each value is valid and is the default.
  TempDir dir;
  std::string uncommented;
  std::istringstream in(shipped);
  const std::set<std::string> keys = cfg_example_keys(shipped);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find(" = ");
    if (eq != std::string::npos && keys.count(line.substr(2, eq - 2)) && line.rfind("# ", 0) == 0)
      line = line.substr(2);
    uncommented += line + "\n";
  }
  const auto all = cfg_parse({"--config", cfg_write(dir, "all.toml", uncommented)});
  INFO(all.message);
  REQUIRE_FALSE(all.rc);
  const Options defaults;
  CHECK(all.opts.rate == defaults.rate);
  CHECK(all.opts.fail_rate == defaults.fail_rate);
  CHECK(all.opts.io_model == defaults.io_model);
  CHECK(all.opts.log_level == defaults.log_level);
  CHECK(all.opts.stream == defaults.stream);
  CHECK(all.opts.summary_json == defaults.summary_json);
  CHECK(all.faults.empty());
  // The same options as the binary's own example (regenerate the file with
  // `build/release/mayhem --config-example > deploy/mayhem.toml` after adding a flag).
  Subprocess ex({"--config-example"});
  const Result r = ex.wait(10s);
  REQUIRE(r.exit_code == 0);
  CHECK(cfg_example_keys(r.out) == keys);
  CHECK(keys.count("latency-scale"));
  CHECK(keys.count("inject"));
}

TEST_CASE("Config end to end: the binary takes flag > environment > file, refuses bad values",
          "[cli][config]") {
  TempDir dir;
  const std::string file = cfg_write(dir, "mayhem.toml",
                                     "messages = 3\npublish-interval = 0\nlatency-scale = 0\n"
                                     "summary-json = true\nlog-level = \"off\"\n");
  const auto published = [](const Result& r) {
    const auto at = r.out.find("\"published\":");
    return at == std::string::npos ? std::string("?")
                                   : r.out.substr(at + 12, r.out.find(',', at) - at - 12);
  };
  {
    Subprocess p({"--config", file});
    const Result r = p.wait(30s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(published(r) == "3");
  }
  {
    Subprocess p({"--config", file}, MAYHEM_BINARY, {"MAYHEM_MESSAGES=5"});
    const Result r = p.wait(30s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(published(r) == "5");
  }
  {
    Subprocess p({"--messages", "7"}, MAYHEM_BINARY,
                 {"MAYHEM_MESSAGES=5", "MAYHEM_CONFIG=" + file});
    const Result r = p.wait(30s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(published(r) == "7");
  }
  const auto one_line = [](const Result& r, const std::string& part) {
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.find('\n') == r.err.size() - 1);
    CHECK(r.err.rfind("mayhem: error: ", 0) == 0);
    CHECK(r.err.find(part) != std::string::npos);
  };
  {
    Subprocess p({"--config", file}, MAYHEM_BINARY, {"MAYHEM_RATE=inf"});
    one_line(p.wait(10s), "--rate (from MAYHEM_RATE): must be");
  }
  {
    Subprocess p({"--config", cfg_write(dir, "bad.toml", "threads = 100000\n")});
    one_line(p.wait(10s), "--threads (from config file");
  }
  {
    Subprocess p({"--config", cfg_write(dir, "unknown.toml", "thread = 2\n")});
    one_line(p.wait(10s), "unknown key 'thread'");
  }
  {
    Subprocess p({"--config", dir.file("missing.toml")});
    one_line(p.wait(10s), "--config: cannot read");
  }
}

TEST_CASE("Help names the config file and the variables, lists top, shows no CLI11 noise",
          "[cli][config]") {
  Subprocess p({"--help"});
  const Result r = p.wait(10s);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("--config FILE") != std::string::npos);
  CHECK(r.out.find("MAYHEM_CONFIG") != std::string::npos);
  CHECK(r.out.find("(Env:MAYHEM_LATENCY_SCALE)") != std::string::npos);
  CHECK(r.out.find("A flag beats the environment, which beats the file") != std::string::npos);
  CHECK(r.out.find("deploy/mayhem.toml") != std::string::npos);
  const auto subcommands = r.out.find("Subcommands:");
  REQUIRE(subcommands != std::string::npos);
  CHECK(r.out.find("\n  publish ", subcommands) != std::string::npos);
  CHECK(r.out.find("\n  top ", subcommands) != std::string::npos);
  CHECK(r.out.find("\n  profile ", subcommands) != std::string::npos);
  CHECK(r.out.find("--io-model {async,blocking}=async") != std::string::npos);
  for (const char* noise : {" TEXT", "=[]", "FLOAT", ":{", "async|blocking"}) {
    INFO(noise);
    CHECK(r.out.find(noise) == std::string::npos);
  }
  for (const char* sub : {"publish", "top", "profile"}) {
    Subprocess s({sub, "--help"});
    const Result rs = s.wait(10s);
    INFO(sub);
    CHECK(rs.exit_code == 0);
    CHECK(rs.out.find(" TEXT") == std::string::npos);
    CHECK(rs.out.find(":{") == std::string::npos);
  }
}
