// libFuzzer target for the command-line flag decoder, mayhem::cli::parse_args (CLI11 plus
// validate() plus the --inject parser). The input is one argument per line (so the corpus in
// fuzz/corpus/fuzz_cli_args/ is readable); an embedded NUL ends its argument, as in a real argv. A
// line `ENV:MAYHEM_NAME=VALUE` is not an argument: it sets that variable for this input (unset
// after), so the MAYHEM_* variables and MAYHEM_CONFIG (include/mayhem/cli/config.hpp) are fuzzed
// too.
// Properties: it never crashes, throws or exits; bad input gives exit status 2 and exactly one line
// "mayhem: error: ..." ("mayhem publish: error: ..." for the subcommand's flags), and a number out
// of its range (src/flags.cpp) names its flag first ("--rate: must be ...", "--rate (from
// MAYHEM_RATE): must be ..."); --help, --version and --config-example give status 0 and their
// text; anything accepted is valid (the service's options or publish's).
#include <stdlib.h>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "mayhem/cli/publish.hpp"
#include "mayhem/cli/run.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"mayhem"}, env_values, env_names;
  std::string current;
  const auto take = [&](const std::string& line) {
    const auto eq = line.find('=');
    // Only the service's own variables, no NUL in them (setenv would cut them).
    if (line.rfind("ENV:MAYHEM_", 0) == 0 && eq != std::string::npos &&
        line.find('\0') == std::string::npos) {
      env_names.push_back(line.substr(4, eq - 4));
      env_values.push_back(line.substr(eq + 1));
      setenv(env_names.back().c_str(), env_values.back().c_str(), 1);
    } else {
      args.push_back(line);
    }
  };
  for (std::size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == '\n') {
      take(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (size != 0 && args.size() < 64) take(current);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());  // c_str(): a NUL cuts the argument
  argv.push_back(nullptr);

  mayhem::Options opts;
  std::vector<mayhem::FaultSpec> faults;
  std::string message;
  std::optional<mayhem::cli::PublishOptions> publish;
  const auto rc = mayhem::cli::parse_args(static_cast<int>(args.size()), argv.data(), opts, faults,
                                          message, &publish);
  for (const auto& name : env_names) unsetenv(name.c_str());
  if (!rc) {
    if (!message.empty()) std::abort();
    if (publish ? mayhem::cli::validate(*publish).has_value() : mayhem::validate(opts).has_value())
      std::abort();  // accepted means valid
    for (const auto& f : faults)
      if (!(f.probability >= 0 && f.probability <= 1)) std::abort();
  } else if (*rc == 2) {
    const bool ours = message.rfind("mayhem: error: ", 0) == 0 ||
                      message.rfind("mayhem publish: error: ", 0) == 0;
    if (!ours || message.find('\n') != std::string::npos) std::abort();  // one clear line
    // A range error names its flag. CLI11 echoes unexpected arguments, so the phrase may be the
    // input's own text: the property is checked only where no argument carries it.
    bool echoed = false;
    for (const auto& a : args) echoed = echoed || a.find(": must be") != std::string::npos;
    for (const auto& v : env_values) echoed = echoed || v.find(": must be") != std::string::npos;
    // A config file's errors quote its text (a key), which may say anything.
    echoed = echoed || message.rfind("mayhem: error: config file ", 0) == 0;
    const auto why = message.find(": must be ");
    if (!echoed && why != std::string::npos && message.find(": error: --") == std::string::npos)
      std::abort();
  } else if (*rc == 0) {
    // The help text, the version or the config example.
    if (message.find("--messages") == std::string::npos &&
        message.find("revision: ") == std::string::npos &&
        message.find("# messages = ") == std::string::npos)
      std::abort();
  } else {
    std::abort();  // no other exit status is documented
  }
  return 0;
}
