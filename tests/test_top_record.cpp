// `mayhem top`'s drill-down, recording and layout, in-process: the recording's lines round-trip
// and bad ones are refused with their line number, the player steps and shows failed fetches, the
// columns fit the width (the sort column stays), keys decode, the zones screen of a known
// snapshot, zone counts subtract, the stage collector times zones only while watched, and the
// stats endpoint's ?zones= asks the service for them.
#include <httplib.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "mayhem/cli/top.hpp"
#include "mayhem/cli/top_record.hpp"
#include "mayhem/observe/stage_collector.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "support/known_snapshot.hpp"
#include "support/subprocess.hpp"

using namespace mayhem;
using namespace std::chrono_literals;

namespace {

// The known snapshot with zones timed in save: store_.save (700 ns) holding io_.submit (300 ns),
// over 10 bodies that took 1000 ns.
StatsSnapshot zoned_snapshot() {
  StatsSnapshot s = test::known_snapshot();
  StageZones& z = s.stages[2].zones;
  z.calls = 10;
  z.total = 1000;
  z.rows.push_back(ZoneRow{"now_batch = store_.save(in->msgs, n)", "src/pipeline/completion.cpp",
                           33, "", 10, 700});
  z.rows.push_back(ZoneRow{"io_.submit(op, later, delays, nl)", "src/io/simulated_io.cpp", 38,
                           "src/pipeline/completion.cpp:33", 10, 300});
  s.process.ok = true;
  s.process.cpu_seconds = 2.5;
  s.process.resident_bytes = 20 * 1024 * 1024;
  return s;
}

}  // namespace

TEST_CASE("top recording: lines round-trip, versioned, bad lines named", "[top][record]") {
  const StatsSnapshot s = zoned_snapshot();
  const std::string ok = cli::record_line("127.0.0.1:9100", 1700000000123, &s, "");
  REQUIRE(ok.back() == '\n');
  CHECK(ok.rfind("{\"v\":1,\"t_ms\":1700000000123,\"source\":\"127.0.0.1:9100\",\"stats\":", 0) ==
        0);
  const std::string bad = cli::record_line("127.0.0.1:9100", 1700000001123, nullptr, "refused");
  std::string err;
  auto rec = cli::parse_recording(ok + "\n" + bad + ok, err);
  REQUIRE(rec);
  CHECK(rec->source == "127.0.0.1:9100");
  REQUIRE(rec->samples.size() == 3);  // the blank line is skipped
  CHECK(rec->samples[0].t_ms == 1700000000123);
  REQUIRE(rec->samples[0].stats);
  const StatsSnapshot& back = *rec->samples[0].stats;
  CHECK(back.acked == s.acked);
  CHECK(back.uptime_ns == s.uptime_ns);
  REQUIRE(back.stages.size() == s.stages.size());
  CHECK(back.stages[2].zones.calls == 10);
  REQUIRE(back.stages[2].zones.rows.size() == 2);
  CHECK(back.stages[2].zones.rows[1].parent == "src/pipeline/completion.cpp:33");
  CHECK(back.stages[2].zones.rows[1].time == 300);
  CHECK(back.stages[0].zones.rows.empty());
  CHECK(back.process.ok);
  CHECK(back.process.resident_bytes == 20 * 1024 * 1024);
  CHECK(!rec->samples[1].stats);
  CHECK(rec->samples[1].error == "refused");
  CHECK(rec->warning.empty());

  // A recorder stopped mid-line: the cut line is left out, with a warning.
  rec = cli::parse_recording(ok + ok.substr(0, 40), err);
  REQUIRE(rec);
  CHECK(rec->samples.size() == 1);
  CHECK(rec->warning.find("line 2 is cut short") != std::string::npos);

  CHECK(!cli::parse_recording(ok + "not json\n" + ok, err));
  CHECK(err.rfind("line 2: ", 0) == 0);
  CHECK(!cli::parse_recording("{\"v\":2,\"t_ms\":1}\n", err));
  CHECK(err == "line 1: recorded in format version 2; this mayhem reads version 1");
  CHECK(!cli::parse_recording("{\"stats\":{}}\n", err));
  CHECK(err.find("no \"v\"") != std::string::npos);
  CHECK(!cli::parse_recording("\n\n", err));
  CHECK(err == "no samples in it");
}

TEST_CASE("top replay: steps, speed, failed fetches keep the last numbers", "[top][record]") {
  StatsSnapshot a = test::known_snapshot(), c = test::known_snapshot();
  a.uptime_ns -= 1'000'000'000;
  a.acked -= 500;
  c.uptime_ns += 2'000'000'000;
  c.acked += 800;
  std::string err;
  const auto rec = cli::parse_recording(cli::record_line("h:1", 1000, &a, "") +
                                            cli::record_line("h:1", 2000, nullptr, "refused") +
                                            cli::record_line("h:1", 3000, &c, ""),
                                        err);
  REQUIRE(rec);
  cli::Replay player(*rec);
  cli::TopModel model(rec->source);
  model.toggle_pause();
  player.show(model);
  CHECK(model.view().status == "replay 1/3 1x paused");
  CHECK(model.view().now->acked == a.acked);
  CHECK(!model.view().prev);
  player.step(1);  // the failed fetch: the last numbers, and the error
  player.show(model);
  CHECK(model.view().now->acked == a.acked);
  CHECK(model.view().problem == "refused");
  CHECK(cli::render_top(model.view()).find("[replay 2/3 1x paused]") != std::string::npos);
  CHECK(cli::render_top(model.view()).find("went away: refused") != std::string::npos);
  player.step(5);  // clamped to the end
  player.show(model);
  CHECK(player.at_end());
  CHECK(model.view().now->acked == c.acked);
  CHECK(model.view().prev->acked == a.acked);  // rates across the failed sample
  CHECK(model.view().problem.empty());
  player.step(-1);
  CHECK(player.gap_ms() == 1000);
  player.faster();
  CHECK(player.gap_ms() == 500);
  player.step(-10);
  CHECK(player.index() == 0);
}

TEST_CASE("top layout: columns fit the width, the sort column stays", "[top]") {
  const auto all = cli::columns_for_width(0, cli::SortKey::kPipeline, true);
  CHECK(all.size() == 13);
  const std::vector<std::string> at80 = {"STAGE",   "IN-FLT", "QUEUED", "CALLS/S", "OWN-MEAN",
                                         "OWN-P99", "%OWN",   "%TOT",   "ERRORS"};
  CHECK(cli::columns_for_width(80, cli::SortKey::kPipeline, true) == at80);
  CHECK(cli::columns_for_width(80, cli::SortKey::kPipeline, false) == at80);
  // Sorted by a low-priority column: it stays, another goes.
  CHECK(cli::columns_for_width(80, cli::SortKey::kTotalP99, true) ==
        std::vector<std::string>{"STAGE", "IN-FLT", "QUEUED", "CALLS/S", "OWN-P99", "TOT-P99",
                                 "%OWN", "%TOT", "ERRORS"});
  CHECK(cli::columns_for_width(20, cli::SortKey::kPipeline, true) ==
        std::vector<std::string>{"STAGE", "CALLS/S"});

  // At 80 columns and wider every line fits; narrower, the stage table still does.
  cli::TopModel model("127.0.0.1:9100");
  StatsSnapshot first = zoned_snapshot();
  first.uptime_ns -= 1'000'000'000;
  model.update(first);
  model.update(zoned_snapshot());
  for (int width : {40, 60, 80, 100, 132}) {
    model.view().width = width;
    std::istringstream in(cli::render_top(model.view()));
    std::string l;
    while (std::getline(in, l)) {
      INFO(width << ": " << l);
      if (width >= 80 || l.rfind("> ", 0) == 0 || l.rfind("  ", 0) == 0)
        CHECK(static_cast<int>(l.size()) <= width);
    }
  }
}

TEST_CASE("top keys: decoding, selection, drill-down, help, sort reverse", "[top]") {
  using cli::decode_keys;
  CHECK(decode_keys("\x1b[A\x1b[Bj\r\x1b\x7f?") == std::vector<int>{cli::kKeyUp, cli::kKeyDown, 'j',
                                                                    cli::kKeyEnter, cli::kKeyEsc,
                                                                    cli::kKeyBackspace, '?'});
  CHECK(decode_keys("\x1bOD\x1b[C\x1b[3~q\x03") ==
        std::vector<int>{cli::kKeyLeft, cli::kKeyRight, 'q', cli::kKeyCtrlC});

  cli::TopModel model("127.0.0.1:9100");
  model.update(zoned_snapshot());
  using A = cli::TopModel::Action;
  CHECK(model.key('j') == A::kRedraw);
  CHECK(model.key(cli::kKeyDown) == A::kRedraw);
  CHECK(model.view().selected == "save");
  CHECK(cli::render_top(model.view()).find("\n> save ") != std::string::npos);
  CHECK(model.key(cli::kKeyEnter) == A::kRedraw);
  CHECK(model.view().drill == "save");
  const std::string zones = cli::render_top(model.view());
  const std::string expected_rows =
      "FILE:LINE                HITS     TIME  PER HIT %STAGE  ZONE\n"
      "completion.cpp:33          10    700ns     70ns   70.0  now_batch = store_.save(in->msgs, "
      "n)\n"
      "simulated_io.cpp:38        10    300ns     30ns   30.0    io_.submit(op, later, delays, "
      "nl)\n"
      "                           10    300ns            30.0  (outside the zones)\n";
  INFO(zones);
  CHECK(zones.find("zones of stage save: 10 bodies timed, 1.0us in them\n") != std::string::npos);
  CHECK(zones.find(expected_rows) != std::string::npos);
  CHECK(zones.find("keys: esc back") != std::string::npos);
  CHECK(model.key('k') == A::kRedraw);  // no moving while drilled in
  CHECK(model.view().selected == "save");
  CHECK(model.key(cli::kKeyEsc) == A::kRedraw);
  CHECK(model.view().drill.empty());
  CHECK(model.key('?') == A::kRedraw);
  CHECK(cli::render_top(model.view()).find("KEYS") != std::string::npos);
  CHECK(model.key('x') == A::kRedraw);  // any key closes the help
  CHECK(!model.view().help);
  CHECK(model.key('S') == A::kRedraw);
  CHECK(cli::row_order(model.view()).front() == "lease");
  CHECK(cli::render_top(model.view()).find("^STAGE") != std::string::npos);
  CHECK(model.key('s') == A::kRedraw);  // a new column sorts largest first again
  CHECK(!model.view().reversed);
  CHECK(model.key('Z') == A::kNone);
  CHECK(model.key('q') == A::kQuit);

  // Zone counts subtract like the rest (the reset key, and rates).
  StatsSnapshot later = zoned_snapshot();
  later.stages[2].zones.calls = 25;
  later.stages[2].zones.rows[0].hits = 25;
  later.stages[2].zones.rows[0].time = 1700;
  const StatsSnapshot d = since(later, zoned_snapshot());
  CHECK(d.stages[2].zones.calls == 15);
  CHECK(d.stages[2].zones.rows[0].hits == 15);
  CHECK(d.stages[2].zones.rows[0].time == 1000);
  CHECK(d.stages[2].zones.rows[1].hits == 0);
}

TEST_CASE("Stage collector: zones are timed per stage, only while watched", "[observe][top]") {
  static constinit ZoneSite outer{"outer()", "/x/src/pipeline/test_zone.cpp", 10};
  static constinit ZoneSite inner{"inner()", "/x/src/pipeline/test_zone.cpp", 11};
  ManualClock clock(1000);
  StageCollector c(clock, 1'000'000'000, 1'000'000);  // zones watched for 1 ms at a time
  const auto body = [&] {
    c.on_entry(Stage::kSave, 4);
    clock.advance(5);
    c.on_zone_entry(outer);
    clock.advance(50);
    c.on_zone_entry(inner);
    clock.advance(20);
    c.on_zone_exit(inner);
    clock.advance(10);
    c.on_zone_exit(outer);
    c.on_entry(Stage::kSaved, 4);  // an inline completion: its zones are not save's
    c.on_zone_entry(inner);
    clock.advance(7);
    c.on_zone_exit(inner);
    c.on_exit(Stage::kSaved, 4);
    clock.advance(5);
    c.on_exit(Stage::kSave, 4);
  };
  body();  // nobody watches: no zones
  auto rows = c.collect();
  CHECK(rows[static_cast<int>(Stage::kSave)].zones.calls == 0);
  CHECK(rows[static_cast<int>(Stage::kSave)].zones.rows.empty());

  const int listeners = g_zone_listeners.load();
  CHECK(!c.watch_zones(std::string("save,nonsense")));
  CHECK(!c.watching_zones(Stage::kSave));
  REQUIRE(c.watch_zones(std::string("save")));
  CHECK(c.watching_zones(Stage::kSave));
  CHECK(g_zone_listeners.load() == listeners + 1);  // zones call observers while watched
  REQUIRE(c.watch_zones(std::string("save")));  // again: still one listener
  CHECK(g_zone_listeners.load() == listeners + 1);
  body();
  rows = c.collect();
  const StageZones& z = rows[static_cast<int>(Stage::kSave)].zones;
  CHECK(z.calls == 1);
  CHECK(z.total == 97);
  REQUIRE(z.rows.size() == 2);
  CHECK(z.rows[0].name == "outer()");
  CHECK(z.rows[0].file == "src/pipeline/test_zone.cpp");
  CHECK(z.rows[0].line == 10);
  CHECK(z.rows[0].parent.empty());
  CHECK(z.rows[0].hits == 1);
  CHECK(z.rows[0].time == 80);
  CHECK(z.rows[1].parent == "src/pipeline/test_zone.cpp:10");
  CHECK(z.rows[1].time == 20);
  CHECK(rows[static_cast<int>(Stage::kSaved)].zones.rows.empty());  // saved is not watched

  clock.advance(2'000'000);  // the watch window passes: the next body stops the timing
  body();
  CHECK(!c.watching_zones(Stage::kSave));
  CHECK(g_zone_listeners.load() == listeners);  // no stage watched: zones call nobody
  CHECK(c.collect()[static_cast<int>(Stage::kSave)].zones.calls == 1);
}

TEST_CASE("Stats endpoint: /stats?zones= asks the service to time a stage's zones",
          "[observe][top]") {
  std::vector<std::string> asked;
  StatsServer server(
      {"127.0.0.1", 0}, [] { return test::known_snapshot(); },
      std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>()));
  server.set_zones_hook([&](const std::string& stages) {
    asked.push_back(stages);
    return stages == "save";
  });
  REQUIRE(!server.start());
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/stats?zones=save");
  REQUIRE(res);
  CHECK(res->status == 200);
  const auto j = nlohmann::json::parse(res->body);
  CHECK(j.contains("process"));  // the endpoint adds the process's facts
  res = client.Get("/stats?zones=nonsense");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(res->body.find("zones=") != std::string::npos);
  res = client.Get("/stats");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(asked == std::vector<std::string>{"save", "nonsense"});
  server.stop();
}

TEST_CASE("mayhem top --record/--replay/--zones: bad input refused at start, a replay printed",
          "[top][cli]") {
  using test::Subprocess;
  auto r = Subprocess({"top", "--addr", "127.0.0.1:1", "--zones", "bogus", "--once"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.rfind("mayhem top: error: --zones: not a stage name", 0) == 0);
  r = Subprocess({"top", "--replay", "/nonexistent/rec.jsonl", "--once"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("cannot read") != std::string::npos);
  r = Subprocess({"top", "--addr", "127.0.0.1:1", "--record", "/nonexistent/rec.jsonl"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--record: cannot open") != std::string::npos);

  char path[] = "/tmp/mayhem-top-record-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const StatsSnapshot s = zoned_snapshot();
  const std::string line = cli::record_line("127.0.0.1:9100", 1700000000000, &s, "");
  REQUIRE(::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()));
  ::close(fd);
  r = Subprocess({"top", "--replay", path, "--addr", "127.0.0.1:1"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("takes no --addr") != std::string::npos);
  r = Subprocess({"top", "--replay", path, "--at", "2", "--once"}).wait(20s);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("the recording has 1 samples") != std::string::npos);
  r = Subprocess({"top", "--replay", path}).wait(20s);  // stdin is not a terminal
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("needs a terminal") != std::string::npos);
  r = Subprocess({"top", "--replay", path, "--once", "--zones", "save"}).wait(20s);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("[replay 1/1 1x paused]") != std::string::npos);
  CHECK(r.out.find("completion.cpp:33") != std::string::npos);
  CHECK(r.out.find("keys:") == std::string::npos);
  ::unlink(path);
}
