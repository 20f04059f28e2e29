// libFuzzer target for the command-line flag decoder, mayhem::cli::parse_args (CLI11 plus
// validate() plus the --inject parser). The input is one argument per line (so the corpus in
// fuzz/corpus/fuzz_cli_args/ is readable); an embedded NUL ends its argument, as in a real argv.
// Properties: it never crashes, throws or exits; bad input gives exit status 2 and exactly one line
// "mayhem: error: ..." ("mayhem publish: error: ..." for the subcommand's flags), and a number out
// of its range (src/flags.cpp) names its flag first ("--rate: must be ..."); --help gives status
// 0 and the help text; anything accepted is valid (the service's options or publish's).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "mayhem/cli/publish.hpp"
#include "mayhem/cli/run.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"mayhem"};
  std::string current;
  for (std::size_t i = 0; i < size && args.size() < 64; ++i) {
    if (data[i] == '\n') {
      args.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (size != 0 && args.size() < 64) args.push_back(current);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());  // c_str(): a NUL cuts the argument
  argv.push_back(nullptr);

  mayhem::Options opts;
  std::vector<mayhem::FaultSpec> faults;
  std::string message;
  std::optional<mayhem::cli::PublishOptions> publish;
  const auto rc = mayhem::cli::parse_args(static_cast<int>(args.size()), argv.data(), opts, faults,
                                          message, &publish);
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
    const auto why = message.find(": must be ");
    if (!echoed && why != std::string::npos && message.find(": error: --") == std::string::npos)
      std::abort();
  } else if (*rc == 0) {
    if (message.find("--messages") == std::string::npos) std::abort();  // the help text
  } else {
    std::abort();  // no other exit status is documented
  }
  return 0;
}
