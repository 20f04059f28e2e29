// The `mayhem` command line: parses flags into `Options` (CLI11), validates them, runs the
// service with real signal handling, and prints the JSON summary. Bad input prints one line to
// stderr and returns 2 before anything starts.
// Use: `int main(int argc, char** argv) { return mayhem::cli::main(argc, argv); }`
#pragma once

#include <iosfwd>

namespace mayhem::cli {

int main(int argc, char** argv);

}  // namespace mayhem::cli
