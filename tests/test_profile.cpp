// The built-in profilers (mayhem/observe/profiler.hpp), driven through the Observer interface with
// a ManualClock so every duration is known: the table's arithmetic, waits, zones and the
// line_profiler view, the Callgrind file read back by callgrind_annotate, the Chrome trace, the
// slow-task warning and the watchdog; then the binary end to end.
#include <fmt/format.h>
#include <signal.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "mayhem/message.hpp"
#include "mayhem/observe/profiler.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Msgs {
  std::array<Message, 8> m;
  std::array<Message*, 8> p{};
  explicit Msgs(std::uint64_t first_seq = 0, Nanos published = 0) {
    for (std::size_t i = 0; i < m.size(); ++i) {
      m[i].seq = first_seq + i;
      m[i].published_ns = published;
      // fmt, not snprintf: g++ at -O0 (the tsan tree's test files) cannot see i < 8 and warns
      // that "%04zu" may be truncated.
      fmt::format_to_n(m[i].instance_name, sizeof m[i].instance_name - 1, "cattle-{:04}", i);
      p[i] = &m[i];
    }
  }
  Message* const* data() const { return p.data(); }
};

const ProfileRow* find_row(const ProfileSnapshot& s, const std::string& name) {
  for (const auto& r : s.rows)
    if (r.name == name) return &r;
  return nullptr;
}

// For every row: its own time plus what it spent in each callee is its cumulative time.
void check_arithmetic(const ProfileSnapshot& s) {
  for (std::size_t i = 0; i < s.rows.size(); ++i) {
    Nanos children = 0;
    for (const auto& e : s.edges)
      if (e.caller == static_cast<int>(i)) children += e.incl;
    INFO(s.rows[i].name);
    CHECK(s.rows[i].tottime + children == s.rows[i].cumtime);
  }
}

std::string temp_path(const char* name) {
  return std::string("/tmp/mayhem-test-") + std::to_string(getpid()) + "-" + name;
}

std::string run_command(const std::string& cmd, int& status) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  status = pclose(f);
  return out;
}

// Well-formed Chrome trace: X events have the fields Perfetto needs, every thread that has slices
// is named, and on every track slices nest properly (pid 1: stage bodies, a zero-latency
// completion runs inside its submit) or never overlap at all (pid 2: message lanes).
void check_trace(const json& t) {
  REQUIRE(t.contains("traceEvents"));
  std::map<std::pair<int, long>, std::vector<std::pair<double, double>>> tracks;
  std::map<std::pair<int, long>, bool> named;
  for (const auto& e : t["traceEvents"]) {
    REQUIRE(e.contains("ph"));
    const std::string ph = e["ph"];
    if (ph == "M" && e["name"] == "thread_name") named[{e["pid"], e["tid"]}] = true;
    if (ph != "X") continue;
    REQUIRE(e.contains("name"));
    REQUIRE(e["ts"].is_number());
    REQUIRE(e["dur"].is_number());
    CHECK(e["dur"].get<double>() >= 0);
    tracks[{e["pid"], e["tid"]}].emplace_back(e["ts"].get<double>(),
                                              e["ts"].get<double>() + e["dur"].get<double>());
  }
  for (auto& [track, v] : tracks) {
    INFO("pid " << track.first << " tid " << track.second);
    CHECK(named[track]);
    // Sort by start, longer first, then walk with a stack of open slices.
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    std::vector<double> open;
    for (const auto& [s, e] : v) {
      while (!open.empty() && open.back() <= s) open.pop_back();
      if (track.first == 2) CHECK(open.empty());   // lanes: no overlap at all
      if (!open.empty()) CHECK(e <= open.back());  // threads: nested inside the open slice
      open.push_back(e);
    }
  }
}

}  // namespace

TEST_CASE("Profile table: tottime + time in children == cumtime, known durations", "[profile]") {
  ManualClock clock(1'000'000);
  Profiler p(ProfilerConfig{}, clock, nullptr);
  Msgs m;
  static constinit ZoneSite zone{"log_->info(\"Saved {} into database\", m)", __FILE__, 1234};
  for (int round = 0; round < 2; ++round) {
    p.on_entry(Stage::kSave, 8, m.data());  // save: 100 + 50 + 25 own, 300 zone, 200 saved
    clock.advance(100);
    p.on_zone_entry(zone);
    clock.advance(300);
    p.on_zone_exit(zone);
    clock.advance(50);
    p.on_entry(Stage::kSaved, 8, m.data());  // a zero-delay completion inside the submit
    clock.advance(200);
    p.on_exit(Stage::kSaved, 8);
    clock.advance(25);
    p.on_exit(Stage::kSave, 8);
  }
  p.on_entry(Stage::kSaved, 4, m.data());  // saved on its own (an I/O completion): 1000
  clock.advance(1000);
  p.on_exit(Stage::kSaved, 4);

  const ProfileSnapshot s = p.snapshot();
  check_arithmetic(s);
  const ProfileRow* save = find_row(s, "save");
  const ProfileRow* saved = find_row(s, "saved");
  const ProfileRow* z = find_row(s, zone.name);
  REQUIRE(save);
  REQUIRE(saved);
  REQUIRE(z);
  CHECK(save->ncalls == 2);
  CHECK(save->items == 16);
  CHECK(save->tottime == 2 * 175);
  CHECK(save->cumtime == 2 * 675);
  CHECK(saved->ncalls == 3);
  CHECK(saved->tottime == 2 * 200 + 1000);
  CHECK(saved->cumtime == 2 * 200 + 1000);
  CHECK(z->ncalls == 2);
  CHECK(z->cumtime == 600);
  CHECK(z->line == 1234);
  // The call graph: root -> save (2), root -> saved (1), save -> saved (2), save -> zone (2).
  std::map<std::pair<std::string, std::string>, std::uint64_t> calls;
  for (const auto& e : s.edges)
    calls[{e.caller < 0 ? "(root)" : s.rows[e.caller].name, s.rows[e.callee].name}] += e.calls;
  CHECK(calls[{"(root)", "save"}] == 2);
  CHECK(calls[{"(root)", "saved"}] == 1);
  CHECK(calls[{"save", "saved"}] == 2);
  CHECK(calls[{"save", zone.name}] == 2);

  SECTION("the table shows the rows in the asked order") {
    const std::string by_tot = format_table(s, ProfileSort::kTottime);
    CHECK(by_tot.find("ncalls    tottime    percall    cumtime    percall  name") !=
          std::string::npos);
    // saved has the most own time (1.4 us), then the zone (0.6 us), then save (0.35 us).
    CHECK(by_tot.find("stage:saved") < by_tot.find("test_profile.cpp:1234"));
    CHECK(by_tot.find("test_profile.cpp:1234") < by_tot.find("stage:save ("));
    const std::string by_cum = format_table(s, ProfileSort::kCumtime);
    CHECK(by_cum.find("stage:saved") < by_cum.find("stage:save ("));  // 1400 vs 1350
    CHECK(format_table(s, ProfileSort::kNcalls).find("Ordered by: call count") !=
          std::string::npos);
    const std::string by_name = format_table(s, ProfileSort::kName);
    CHECK(by_name.find("stage:save (") < by_name.find("stage:saved"));
  }
  SECTION("the line view puts the zone under the stage that called it") {
    const std::string lines = format_lines(s);
    CHECK(lines.find("Function: stage save (2 calls, 16 messages)") != std::string::npos);
    CHECK(lines.find("Line #       Hits           Time    Per Hit   % Time  Line Contents") !=
          std::string::npos);
    // 600 ns over 2 hits = 0.3 us per hit, 600 / 1350 = 44.4 % of save.
    CHECK(lines.find("  1234          2            0.6        0.3     44.4  log_->info") !=
          std::string::npos);
  }
}

TEST_CASE("Profile waits: queue and I/O time per message, pending I/O counted up to now",
          "[profile]") {
  ManualClock clock(5'000);
  Profiler p(ProfilerConfig{}, clock, nullptr);
  Msgs m(0, /*published=*/1'000);
  clock.set(3'000);  // the four messages waited 2000 ns each in the pub/sub queue
  p.on_entry(Stage::kConsume, 0, nullptr);
  p.on_pull(m.data(), 4);
  p.on_exit(Stage::kConsume, 0);
  p.on_entry(Stage::kSave, 4, m.data());  // submitted at 3000
  p.on_exit(Stage::kSave, 4);
  clock.set(4'000);
  {
    const ProfileSnapshot s = p.snapshot();
    CHECK(find_row(s, "pub/sub queue")->ncalls == 4);
    CHECK(find_row(s, "pub/sub queue")->cumtime == 4 * 2000);
    CHECK(find_row(s, "save I/O")->ncalls == 0);
    CHECK(find_row(s, "save I/O")->cumtime == 4 * 1000);  // still pending, waited 1000 so far
  }
  clock.set(7'000);
  p.on_entry(Stage::kSaved, 2, m.data());  // two complete after 4000
  p.on_exit(Stage::kSaved, 2);
  clock.set(9'000);
  p.on_entry(Stage::kSaved, 2, m.data() + 2);  // two after 6000
  p.on_exit(Stage::kSaved, 2);
  const ProfileSnapshot s = p.snapshot();
  CHECK(find_row(s, "save I/O")->ncalls == 4);
  CHECK(find_row(s, "save I/O")->cumtime == 2 * 4000 + 2 * 6000);
  CHECK(find_row(s, "restart I/O")->cumtime == 0);
  CHECK(format_table(s, ProfileSort::kTottime).find("wait:save I/O (per message)") !=
        std::string::npos);
}

namespace {
void zoned_work(Observer* o, int& counter) {
  MAYHEM_ZONE(o, "zoned_work");
  ++counter;
  MAYHEM_ZONED(o, counter += 10);
}
}  // namespace

TEST_CASE("Zone macros record hits, file:line and the statement text", "[profile][zone]") {
  ManualClock clock;
  Profiler p(ProfilerConfig{}, clock, nullptr);
  int counter = 0;
  zoned_work(nullptr, counter);  // no observer: the code runs, nothing is recorded
  CHECK(counter == 11);
  CHECK(p.snapshot().threads == 0);
  p.on_entry(Stage::kSettle, 1, Msgs().data());
  for (int i = 0; i < 7; ++i) zoned_work(&p, counter);
  p.on_exit(Stage::kSettle, 1);
  CHECK(counter == 88);
  const ProfileSnapshot s = p.snapshot();
  const ProfileRow* outer = find_row(s, "zoned_work");
  const ProfileRow* stmt = find_row(s, "counter += 10");
  REQUIRE(outer);
  REQUIRE(stmt);
  CHECK(outer->ncalls == 7);
  CHECK(stmt->ncalls == 7);
  CHECK(outer->file.find("test_profile.cpp") != std::string::npos);
  CHECK(stmt->line == outer->line + 2);
  // The statement zone nests inside the block zone, which nests inside the stage.
  bool nested = false, under_stage = false;
  for (const auto& e : s.edges) {
    if (e.caller >= 0 && &s.rows[e.caller] == outer && &s.rows[e.callee] == stmt)
      nested = e.calls == 7;
    if (e.caller >= 0 && s.rows[e.caller].name == "settle" && &s.rows[e.callee] == outer)
      under_stage = e.calls == 7;
  }
  CHECK(nested);
  CHECK(under_stage);
  check_arithmetic(s);
}

TEST_CASE("Callgrind output is read back by callgrind_annotate", "[profile][callgrind]") {
  ManualClock clock;
  Profiler p(ProfilerConfig{}, clock, nullptr);
  static constinit ZoneSite zone{"log line", "src/pipeline/pipeline.cpp", 77};
  Msgs m;
  p.on_entry(Stage::kSave, 8, m.data());
  clock.advance(100);
  p.on_zone_entry(zone);
  clock.advance(300);
  p.on_zone_exit(zone);
  clock.advance(21);
  p.on_exit(Stage::kSave, 8);
  p.on_entry(Stage::kSaved, 8, m.data());
  clock.advance(500);
  p.on_exit(Stage::kSaved, 8);
  const std::string path = temp_path("profile.callgrind");
  {
    std::ofstream f(path);
    write_callgrind(p.snapshot(), f, "mayhem --test");
  }
  int status = -1;
  const std::string self = run_command("callgrind_annotate " + path + " 2>&1", status);
  INFO(self);
  REQUIRE(status == 0);
  CHECK(self.find("Events recorded:  ns wait_ns") != std::string::npos);
  // Self cost: save 121, the zone 300, saved 500 + the save I/O wait (8 x 421 ns in wait_ns).
  CHECK(self.find("121") != std::string::npos);
  CHECK(self.find("stage save") != std::string::npos);
  CHECK(self.find("zone pipeline.cpp:77 log line") != std::string::npos);
  CHECK(self.find("3,368") != std::string::npos);  // 8 x 421 ns of save I/O wait
  const std::string incl =
      run_command("callgrind_annotate --inclusive=yes " + path + " 2>&1", status);
  INFO(incl);
  REQUIRE(status == 0);
  CHECK(incl.find("421") != std::string::npos);  // save's inclusive time
  std::remove(path.c_str());
}

TEST_CASE("Trace: valid JSON, named threads, nested slices, I/O on lanes that never overlap",
          "[profile][trace]") {
  ManualClock clock(1'000'000);
  ProfilerConfig cfg;
  cfg.trace = true;
  Profiler p(cfg, clock, nullptr);
  Msgs a(0), b(100);
  // Two batches whose save I/O overlaps in time: [1000, 5000] and [2000, 6000].
  clock.advance(1000);
  p.on_entry(Stage::kSave, 2, a.data());
  clock.advance(10);
  p.on_entry(Stage::kSaved, 1, a.data());  // a zero-delay completion inside
  clock.advance(10);
  p.on_exit(Stage::kSaved, 1);
  p.on_exit(Stage::kSave, 2);
  clock.advance(980);
  std::thread other([&] {
    p.on_entry(Stage::kSave, 2, b.data());
    p.on_exit(Stage::kSave, 2);
  });
  other.join();
  clock.advance(3000);
  p.on_entry(Stage::kSaved, 1, a.data() + 1);
  p.on_exit(Stage::kSaved, 1);
  clock.advance(1000);
  p.on_entry(Stage::kSaved, 2, b.data());
  p.on_exit(Stage::kSaved, 2);
  p.on_entry(Stage::kLease, 0, nullptr);
  p.on_exit(Stage::kLease, 0);
  const std::string path = temp_path("trace.json");
  std::string err;
  REQUIRE(p.write_trace(path, err));
  const json t = json::parse(test::read_file(path));
  check_trace(t);
  int save_slices = 0, lanes_used = 0, counters = 0, lease = 0;
  std::set<long> save_lanes;
  for (const auto& e : t["traceEvents"]) {
    if (e["ph"] == "X" && e["name"] == "save") {
      ++save_slices;
      CHECK(e["args"]["messages"] == 2);
    }
    if (e["ph"] == "X" && e["name"] == "save I/O") save_lanes.insert(e["tid"].get<long>());
    if (e["ph"] == "X" && e["name"] == "lease tick") ++lease;
    if (e["ph"] == "C") ++counters;
  }
  lanes_used = static_cast<int>(save_lanes.size());
  CHECK(save_slices == 2);
  CHECK(lanes_used >= 2);  // b's I/O overlaps a's: it needed a lane of its own
  CHECK(lease == 1);
  CHECK(counters == 2);  // in flight, queue depth
  std::remove(path.c_str());
}

TEST_CASE("Trace sampling keeps about the asked fraction of messages", "[profile][trace]") {
  ManualClock clock;
  ProfilerConfig cfg;
  cfg.trace = true;
  cfg.trace_sample = 0.1;
  Profiler p(cfg, clock, nullptr);
  std::vector<Message> msgs(4000);
  std::vector<Message*> ptrs;
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    msgs[i].seq = i;
    ptrs.push_back(&msgs[i]);
  }
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    p.on_entry(Stage::kCleanup, 1, &ptrs[i]);
    p.on_exit(Stage::kCleanup, 1);
    clock.advance(100);
  }
  const std::string path = temp_path("sampled.json");
  std::string err;
  REQUIRE(p.write_trace(path, err));
  const json t = json::parse(test::read_file(path));
  int slices = 0;
  for (const auto& e : t["traceEvents"]) slices += e["ph"] == "X" && e["name"] == "cleanup";
  CHECK(slices > 300);  // 10 % of 4000, with room for chance
  CHECK(slices < 500);
  std::remove(path.c_str());
}

TEST_CASE("Slow-task warning fires above --slow-task-ms, not below", "[profile][slow]") {
  auto [log, sink] = test::make_test_logger();
  ManualClock clock(1);
  ProfilerConfig cfg;
  cfg.slow_task = 50'000'000;  // 50 ms
  Profiler p(cfg, clock, log);
  Msgs m(42);
  p.on_entry(Stage::kSave, 3, m.data());
  clock.advance(49'000'000);
  p.on_exit(Stage::kSave, 3);
  CHECK(sink->count("Executing stage") == 0);
  p.on_entry(Stage::kRestart, 3, m.data());
  clock.advance(80'000'000);
  p.on_exit(Stage::kRestart, 3);
  REQUIRE(sink->count("Executing stage") == 1);
  CHECK(sink->count("warning: Executing stage restart (3 messages, first "
                    "PubSubMessage(instance_name='cattle-0000') seq 42) took 0.080 seconds") == 1);
  CHECK(p.snapshot().slow_tasks == 1);
}

TEST_CASE("Watchdog reports a stage that has not returned, once, while it is stuck",
          "[profile][slow]") {
  auto [log, sink] = test::make_test_logger();
  ManualClock clock(1);
  ProfilerConfig cfg;
  cfg.slow_task = 100'000'000;  // 100 ms
  Profiler p(cfg, clock, log);
  Msgs m(7);
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  std::thread stuck([&] {
    p.on_entry(Stage::kSaved, 5, m.data());
    std::unique_lock lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    lock.unlock();
    p.on_exit(Stage::kSaved, 5);
  });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return entered; });
  }
  clock.advance(90'000'000);
  CHECK(p.check_stuck() == 0);  // not past the threshold yet
  clock.advance(30'000'000);
  CHECK(p.check_stuck() == 1);
  CHECK(p.check_stuck() == 0);  // reported once
  CHECK(sink->count("Stage saved has been running for 0.120 seconds and has not returned (5 "
                    "messages, first PubSubMessage(instance_name='cattle-0000') seq 7") == 1);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  stuck.join();
  CHECK(sink->count("Executing stage saved") == 1);  // and the slow-task warning at its end
  CHECK(p.check_stuck() == 0);
}

TEST_CASE("Profiling options are validated", "[profile][options]") {
  Options o;
  CHECK_FALSE(validate(o));
  o.trace_sample = 0;
  CHECK(validate(o)->find("--trace-sample") != std::string::npos);
  o.trace_sample = 1;
  o.profile_sort = "speed";
  CHECK(validate(o)->find("--profile-sort") != std::string::npos);
  o.profile_sort = "cumtime";
  o.slow_task_ms = -1;
  CHECK(validate(o)->find("--slow-task-ms") != std::string::npos);
}

// ---- the binary --------------------------------------------------------------------------------

TEST_CASE("mayhem --profile --profile-out --trace-out prints the table and writes both files",
          "[profile][cli]") {
  const std::string cg = temp_path("p.callgrind"), tr = temp_path("t.json");
  test::Subprocess proc({"--messages", "5000", "--publish-interval", "0", "--latency-scale",
                         "0.001", "--profile", "--profile-out", cg, "--trace-out", tr});
  const test::Result r = proc.wait(60s);
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.exit_code == 0);
  INFO(r.out);
  CHECK(r.out.find("ncalls    tottime    percall    cumtime    percall  name") !=
        std::string::npos);
  CHECK(r.out.find("Ordered by: internal time") != std::string::npos);
  for (const char* row :
       {"stage:publish", "stage:consume", "stage:save (5000 msgs)", "stage:saved (5000 msgs)",
        "stage:settle (5000 msgs)", "wait:pub/sub queue", "wait:save I/O", "wait:cleanup I/O"})
    CHECK(r.out.find(row) != std::string::npos);
  // The line view of the save stage's completion shows its logging line.
  CHECK(r.out.find("Function: stage saved") != std::string::npos);
  CHECK(r.out.find("log_->info(\"Saved {} into database\", m)") != std::string::npos);
  int status = -1;
  const std::string annotated = run_command("callgrind_annotate " + cg + " 2>&1", status);
  CHECK(status == 0);
  CHECK(annotated.find("stage saved") != std::string::npos);
  const json t = json::parse(test::read_file(tr));
  check_trace(t);
  std::set<std::string> names;
  for (const auto& e : t["traceEvents"]) names.insert(e["name"].get<std::string>());
  for (const char* n : {"publish", "consume", "save", "restart", "cleanup", "settle", "lease tick",
                        "in flight", "queue depth", "save I/O", "pub/sub queue", "thread_name"})
    CHECK(names.count(n) == 1);
  std::remove(cg.c_str());
  std::remove(tr.c_str());
}

TEST_CASE("Watchdog in the binary: a hung save is reported while stuck, shutdown still ends",
          "[profile][cli][faults]") {
  const std::string log = temp_path("watchdog.log");
  test::Subprocess proc({"--messages", "0", "--rate", "2000", "--latency-scale", "0.01", "--inject",
                         "save:hang:0.01", "--slow-task-ms", "200", "--shutdown-timeout", "1",
                         "--log-file", log});
  REQUIRE(test::eventually(
      [&] { return test::read_file(log).find("has not returned") != std::string::npos; }, 30s));
  CHECK(test::read_file(log).find("WARNING: Stage saved has been running for") !=
        std::string::npos);
  proc.signal(SIGINT);
  const auto start = std::chrono::steady_clock::now();
  const test::Result r = proc.wait(30s);
  REQUIRE_FALSE(r.timed_out);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(r.exit_code == 1);  // the shutdown timed out with the stage still stuck
  std::remove(log.c_str());
}

TEST_CASE("Profiling flags: a bad value or an unwritable file exits 2 with one line",
          "[profile][cli]") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--profile-sort", "speed"},
           {"--trace-sample", "0"},
           {"--slow-task-ms", "-5"},
           {"--messages", "1", "--profile-out", "/nonexistent-dir/p.callgrind"}}) {
    test::Subprocess proc(args);
    const test::Result r = proc.wait(30s);
    INFO(args[0] << " " << args[1]);
    CHECK(r.exit_code == 2);
    CHECK(r.err.rfind("mayhem: error: ", 0) == 0);
  }
}
