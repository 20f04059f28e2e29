// A library for LD_PRELOAD into the `mayhem` binary (tests/test_cli.cpp): its initialiser runs
// with the other libraries' ones, before main, and reports on stderr whether SIGINT, SIGTERM and
// SIGHUP are blocked by then, as one line: "sigmask-probe: blocked=<0|1>".
#include <signal.h>
#include <unistd.h>

namespace {
__attribute__((constructor)) void report_signal_mask() {
  sigset_t now;
  sigemptyset(&now);
  sigprocmask(SIG_BLOCK, nullptr, &now);
  const bool blocked = sigismember(&now, SIGINT) == 1 && sigismember(&now, SIGTERM) == 1 &&
                       sigismember(&now, SIGHUP) == 1;
  static const char yes[] = "sigmask-probe: blocked=1\n";
  static const char no[] = "sigmask-probe: blocked=0\n";
  const ssize_t w = blocked ? write(2, yes, sizeof yes - 1) : write(2, no, sizeof no - 1);
  (void)w;
}
}  // namespace
