#include <signal.h>

#include "mayhem/cli/run.hpp"

namespace {
// SIGINT/SIGTERM/SIGHUP (and SIGUSR1, which reopens the log file) are blocked before anything
// else of the process runs: this runs from
// .preinit_array, right after the dynamic loader relocated the libraries and before their
// initialisers (OpenSSL's, libstdc++'s: tens of milliseconds on a loaded machine), so a signal
// sent at start-up waits, pending, for the service's signal thread instead of killing the process
// with the default action. cli::main unblocks them for subcommands that do not run the service.
// (Only the dynamic loader's own few milliseconds come before this.)
void block_shutdown_signals_early(int, char**, char**) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, nullptr);
}
__attribute__((section(".preinit_array"),
               used)) void (*const block_early)(int, char**,
                                                char**) = &block_shutdown_signals_early;
}  // namespace

int main(int argc, char** argv) {
  return mayhem::cli::main(argc, argv);
}
