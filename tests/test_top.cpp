// `mayhem top`: the rendering of a known snapshot (sort, reset, pause, a service that went away)
// and the command line's refusals (bad --stats-addr, no --addr, --live without a terminal, nothing
// listening).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include "mayhem/cli/top.hpp"
#include "support/known_snapshot.hpp"
#include "support/subprocess.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using test::known_snapshot;

TEST_CASE("mayhem top renders a known snapshot", "[observe][top]") {
  cli::TopModel model("127.0.0.1:9100");
  StatsSnapshot first = known_snapshot();
  first.uptime_ns = 9'000'000'000;
  first.published = 4000;
  first.acked = 3000;
  first.nacked = 10;
  first.extensions = 5000;
  first.stages[0].calls = 40;
  first.stages[2].calls = 20;
  model.update(first);
  model.update(known_snapshot());
  // Every column (width 0), with the cursor and the key line.
  const std::string expected =
      "mayhem top  127.0.0.1:9100  up 0:00:10  threads 2  [running]\n"
      "msgs/s in 1000 out 1000  in flight 890/100.0k  backlog 100  leases 7  ext/s 1000\n"
      "acks 4000 (+1000)  nacks 10 (+0)  failed saves 1000 (+0)  restarts 20 (+0)\n"
      "retries 300 (+0)  log overruns 0  end-to-end mean 600.00ms p99 700.00ms\n"
      "sort: pipeline\n"
      "\n"
      "  vSTAGE       CONC  IN-FLT  QUEUED  CALLS/S  OWN-MEAN   OWN-P99  TOT-MEAN   TOT-P99   %OWN "
      "  %TOT   ERRORS  RETRIES\n"
      "> publish       0/1       0       -       10      20ns      20ns      20ns      20ns   50.0 "
      "  50.0        0        0\n"
      "  consume     0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "  save        1/inf     600       0       20      10ns      10ns      30ns      30ns   25.0 "
      "  75.0        0        0\n"
      "  saved       0/inf       0       -        0      20ns      20ns      20ns      20ns   25.0 "
      "  25.0     1000        0\n"
      "  restart     0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "  restarted   0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "  cleanup     0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "  settle      0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "  lease       0/inf       0       -        0         -         -         -         -    0.0 "
      "   0.0        0        0\n"
      "\n"
      "NUMBERS\n"
      "published                    5000  consumed                     4900  saved                 "
      "       3000\n"
      "save_failed                  1000  restarted                    3500  restart_failed        "
      "         20\n"
      "restart_retries               300  acked                        4000  nacked                "
      "         10\n"
      "extensions                   6000  late_extensions                 0  extension_failed      "
      "          0\n"
      "log_dropped                     0  store_rows                      0  store_duplicates      "
      "          0\n"
      "store_write_failures            0  store_transactions              0  in_flight             "
      "        890\n"
      "peak_in_flight                  0  max_in_flight              100000  backlog               "
      "        100\n"
      "log_queue_depth                 3  peak_backlog                    0  queue_capacity        "
      "      16384\n"
      "leased_lots                     7  pool_messages                   0\n"
      "\n"
      "keys: j/k select  enter zones  space pause  s/S sort  r reset  ? help  q quit\n";
  CHECK(cli::render_top(model.view()) == expected);
  // 80 columns, as --once prints it: the lowest-priority columns dropped, no cursor, no key line.
  model.view().width = 80;
  model.view().interactive = false;
  const std::string at80 =
      "mayhem top  127.0.0.1:9100  up 0:00:10  threads 2  [running]\n"
      "msgs/s in 1000 out 1000  in flight 890/100.0k  backlog 100  leases 7  ext/s 1000\n"
      "acks 4000 (+1000)  nacks 10 (+0)  failed saves 1000 (+0)  restarts 20 (+0)\n"
      "retries 300 (+0)  log overruns 0  end-to-end mean 600.00ms p99 700.00ms\n"
      "sort: pipeline\n"
      "\n"
      "vSTAGE     IN-FLT  QUEUED  CALLS/S  OWN-MEAN   OWN-P99   %OWN   %TOT   ERRORS\n"
      "publish         0       -       10      20ns      20ns   50.0   50.0        0\n"
      "consume         0       -        0         -         -    0.0    0.0        0\n"
      "save          600       0       20      10ns      10ns   25.0   75.0        0\n"
      "saved           0       -        0      20ns      20ns   25.0   25.0     1000\n"
      "restart         0       -        0         -         -    0.0    0.0        0\n"
      "restarted       0       -        0         -         -    0.0    0.0        0\n"
      "cleanup         0       -        0         -         -    0.0    0.0        0\n"
      "settle          0       -        0         -         -    0.0    0.0        0\n"
      "lease           0       -        0         -         -    0.0    0.0        0\n"
      "\n"
      "NUMBERS\n"
      "published                    5000  consumed                     4900\n"
      "saved                        3000  save_failed                  1000\n"
      "restarted                    3500  restart_failed                 20\n"
      "restart_retries               300  acked                        4000\n"
      "nacked                         10  extensions                   6000\n"
      "late_extensions                 0  extension_failed                0\n"
      "log_dropped                     0  store_rows                      0\n"
      "store_duplicates                0  store_write_failures            0\n"
      "store_transactions              0  in_flight                     890\n"
      "peak_in_flight                  0  max_in_flight              100000\n"
      "backlog                       100  log_queue_depth                 3\n"
      "peak_backlog                    0  queue_capacity              16384\n"
      "leased_lots                     7  pool_messages                   0\n";
  CHECK(cli::render_top(model.view()) == at80);
  model.view().width = 0;
  model.view().interactive = true;

  model.cycle_sort();  // calls/s: save (20/s) before publish (10/s)
  const std::string by_calls = cli::render_top(model.view());
  CHECK(by_calls.find("sort: calls/s") != std::string::npos);
  CHECK(by_calls.find("vCALLS/S") != std::string::npos);
  CHECK(by_calls.find("save ") < by_calls.find("publish "));

  model.reset();  // from now on: nothing happened yet
  const std::string after_reset = cli::render_top(model.view());
  CHECK(after_reset.find("since reset 0:00:00") != std::string::npos);
  CHECK(after_reset.find("acks 0 (+1000)  nacks 0 (+0)") != std::string::npos);

  model.toggle_pause();
  StatsSnapshot newer = known_snapshot();
  newer.uptime_ns += 1'000'000'000;
  newer.acked += 777;
  model.update(newer);  // ignored while paused
  CHECK(cli::render_top(model.view()).find("[PAUSED]") != std::string::npos);
  CHECK(cli::render_top(model.view()).find("acks 0 ") != std::string::npos);
  model.toggle_pause();
  model.update(newer);
  CHECK(cli::render_top(model.view()).find("acks 777 ") != std::string::npos);

  model.failed("connection refused or unreachable");
  CHECK(cli::render_top(model.view()).find("went away: connection refused") != std::string::npos);
  CHECK(cli::render_top(model.view()).find("[GONE]") != std::string::npos);
  cli::TopModel never("127.0.0.1:1");
  never.failed("connection refused or unreachable");
  CHECK(cli::render_top(never.view()) ==
        "mayhem top  127.0.0.1:1  [unreachable]\n\ncannot reach the service at 127.0.0.1:1: "
        "connection refused "
        "or unreachable\nretrying every second; q quits\n");
}

TEST_CASE("mayhem top and --stats-addr refuse bad input, and top says when nothing listens",
          "[observe][cli]") {
  using test::Subprocess;
  auto r = Subprocess({"--stats-addr", "nowhere", "--messages", "1"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--stats-addr") != std::string::npos);
  r = Subprocess({"top"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--addr") != std::string::npos);
  r = Subprocess({"top", "--addr", "nonsense"}).wait(20s);  // names its own flag
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("mayhem top: error: --addr: ", 0) == 0);
  r = Subprocess({"--live", "--messages", "1"}).wait(20s);  // stdin is /dev/null
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("terminal") != std::string::npos);
  // A port nothing listens on: bind one (no listen), close it, ask there.
  std::uint16_t port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
    ::close(fd);
  }
  r = Subprocess({"top", "--addr", "127.0.0.1:" + std::to_string(port), "--once"}).wait(20s);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("cannot reach the service") != std::string::npos);
}
