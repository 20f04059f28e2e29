// The `mayhem` command line: parses flags (and MAYHEM_* variables, a --config file) into `Options`
// (CLI11), validates them, runs the service with real signal handling, and prints the JSON
// summary. Bad input prints one line to stderr and returns 2 before anything starts.
// Use: `int main(int argc, char** argv) { return mayhem::cli::main(argc, argv); }`
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mayhem/cli/publish.hpp"
#include "mayhem/faults.hpp"
#include "mayhem/options.hpp"

namespace mayhem::cli {

int main(int argc, char** argv);

// The flag decoder alone (fuzzed: fuzz/fuzz_cli_args.cpp): parses argv, the MAYHEM_* variables
// and the --config file (include/mayhem/cli/config.hpp) into `opts` and `faults` with no other side
// effects; never exits, never throws. Returns the exit status when the process should stop now,
// with what to print in `message`: 0 after --help, --version or --config-example (the text, for
// stdout), 2 after bad input (one line, "mayhem: error: ...", for stderr). nullopt: the options
// are valid, run (or, after `mayhem publish ...`, *publish holds its valid options: run that
// instead; publish takes flags only).
std::optional<int> parse_args(int argc, const char* const* argv, Options& opts,
                              std::vector<FaultSpec>& faults, std::string& message,
                              std::optional<PublishOptions>* publish = nullptr);

}  // namespace mayhem::cli
