// The service's logger: the line formats (reference, iso, json), and the file sinks' promises:
// every line written exactly once and the whole file in timestamp order, whatever the threads do
// (the ordered sink: per-thread blocks merged by one writer; the locked sink of --log-buffer 0),
// appended to an existing file, reopened on request, memory bounded.
#include <catch2/catch.hpp>

#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "mayhem/log/context.hpp"
#include "mayhem/log/locked_file_sink.hpp"
#include "mayhem/log/ordered_file_sink.hpp"
#include "mayhem/logging.hpp"
#include "mayhem/message.hpp"
#include "support/temp_dir.hpp"

using mayhem::test::TempDir;

namespace {
std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}
// "<ns since the epoch> <payload>": the order checks need the stamp at full resolution.
class NanosFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(msg.time.time_since_epoch()).count();
    const auto text = std::to_string(ns) + " ";
    dest.append(text.data(), text.data() + text.size());
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<NanosFormatter>();
  }
};

struct Stamped {
  long long ns;
  std::string text;
};
std::vector<Stamped> stamped_lines(const std::string& path) {
  std::vector<Stamped> out;
  for (const auto& l : lines_of(path)) {
    const auto sp = l.find(' ');
    out.push_back({std::stoll(l.substr(0, sp)), l.substr(sp + 1)});
  }
  return out;
}
}  // namespace

TEST_CASE("File log lines have the reference's format", "[logging]") {
  TempDir dir;
  mayhem::Options o;
  o.log_file = dir.file("mayhem.log");
  o.log_level = "debug";
  auto log = mayhem::make_logger(o);
  log->info("Pulled {}", 7);
  log->error("Handling general error: {}", "boom");
  log->warn("careful");
  log->debug("detail");
  log->flush();
  const auto lines = lines_of(o.log_file);
  REQUIRE(lines.size() == 4);
  // "%(asctime)s,%(msecs)03d %(levelname)s: %(message)s" with datefmt "%H:%M:%S"
  const std::regex stamp(R"(^\d\d:\d\d:\d\d,\d\d\d )");
  for (const auto& l : lines) CHECK(std::regex_search(l, stamp));
  CHECK(lines[0].substr(13) == "INFO: Pulled 7");
  CHECK(lines[1].substr(13) == "ERROR: Handling general error: boom");
  CHECK(lines[2].substr(13) == "WARNING: careful");
  CHECK(lines[3].substr(13) == "DEBUG: detail");
}

TEST_CASE("Ordered sink: many threads, every line once, the whole file in timestamp order",
          "[logging]") {
  TempDir dir;
  const auto path = dir.file("threads.log");
  constexpr int kThreads = 4, kLines = 20000;
  std::uint64_t late = 0, lines = 0;
  {
    mayhem::OrderedFileSink::Options so;
    so.block_bytes = 4096;  // many blocks: the writer frees and threads reuse them
    auto sink = std::make_shared<mayhem::OrderedFileSink>(path, so);
    sink->set_formatter(std::make_unique<NanosFormatter>());
    spdlog::logger log("t", sink);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kLines; ++i) log.info("t{} n{}", t, i);
      });
    // Flushes racing with the writers must neither lose nor repeat a line.
    for (int f = 0; f < 50; ++f) log.flush();
    for (auto& th : threads) th.join();
    late = sink->late_lines();
    lines = sink->lines();
  }  // the sink writes what is left when it is destroyed
  CHECK(late == 0);
  CHECK(lines == static_cast<std::uint64_t>(kThreads * kLines));
  std::vector<int> next(kThreads, 0);
  const std::regex re(R"(^t(\d+) n(\d+)$)");
  long long prev = 0;
  std::size_t count = 0, steps_back = 0;
  for (const auto& l : stamped_lines(path)) {
    std::smatch m;
    REQUIRE(std::regex_search(l.text, m, re));
    const int t = std::stoi(m[1]), n = std::stoi(m[2]);
    REQUIRE(n == next[t]);  // each thread's lines in order, none missing, none repeated
    ++next[t];
    ++count;
    if (l.ns < prev) ++steps_back;
    prev = std::max(prev, l.ns);
  }
  CHECK(count == static_cast<std::size_t>(kThreads * kLines));
  CHECK(steps_back == 0);  // every line in timestamp order across the threads
}

TEST_CASE("Both file sinks keep the order of lines logged in turn by two threads", "[logging]") {
  // Two threads take strict turns (a shared counter, no sleeps): line k is logged before k+1, so
  // it must come first in the file, whichever thread's block it is in.
  auto run = [](const std::string& path, std::uint32_t buffer) {
    mayhem::Options o;
    o.log_file = path;
    o.log_buffer = buffer;
    auto log = mayhem::make_logger(o);
    std::atomic<int> turn{0};
    constexpr int kLines = 2000;
    auto player = [&](int me) {
      for (int k = me; k < kLines; k += 2) {
        while (turn.load(std::memory_order_acquire) != k) std::this_thread::yield();
        log->info("k{}", k);
        turn.store(k + 1, std::memory_order_release);
      }
    };
    std::thread a(player, 0), b(player, 1);
    a.join();
    b.join();
    log->flush();
    std::vector<int> order;
    for (const auto& l : lines_of(path)) order.push_back(std::stoi(l.substr(l.rfind('k') + 1)));
    return order;
  };
  TempDir dir;
  for (const std::uint32_t buffer : {0u, 1u << 20, 300u}) {
    CAPTURE(buffer);
    const auto order = run(dir.file(("turns-" + std::to_string(buffer) + ".log").c_str()), buffer);
    REQUIRE(order.size() == 2000);
    for (int k = 0; k < 2000; ++k) REQUIRE(order[static_cast<std::size_t>(k)] == k);
  }
}

TEST_CASE("Ordered sink: flush writes what was logged before it, and memory stays within its bound",
          "[logging]") {
  TempDir dir;
  const auto path = dir.file("bounded.log");
  mayhem::OrderedFileSink::Options so;
  so.block_bytes = 512;
  so.max_bytes = 1024;  // raised to two blocks per thread plus two: the threads must wait
  auto sink = std::make_shared<mayhem::OrderedFileSink>(path, so);
  sink->set_formatter(std::make_unique<NanosFormatter>());
  spdlog::logger log("b", sink);
  log.info("first");
  log.flush();
  REQUIRE(lines_of(path).size() == 1);
  const std::string big(3000, 'x');  // longer than a block: a block of its own
  log.info("{}", big);
  for (int i = 0; i < 20000; ++i) log.info("line {}", i);
  log.flush();
  const auto lines = stamped_lines(path);
  REQUIRE(lines.size() == 20002);
  CHECK(lines[1].text == big);
  CHECK(lines.back().text == "line 19999");
  CHECK(sink->waits() > 0);  // 20,000 lines of ~30 bytes through 4 blocks of 512
  CHECK(sink->late_lines() == 0);
  CHECK(sink->write_errors() == 0);
}

TEST_CASE("Ordered sink: a line stamped before the writer's watermark is stamped again",
          "[logging]") {
  // What a thread preempted between spdlog's clock read and the sink would hand in: a stamp from
  // before lines that are already in the file.
  TempDir dir;
  const auto path = dir.file("late.log");
  auto sink = std::make_shared<mayhem::OrderedFileSink>(path, mayhem::OrderedFileSink::Options{});
  sink->set_formatter(std::make_unique<NanosFormatter>());
  spdlog::logger log("late", sink);
  log.info("first");
  log.flush();  // the writer's watermark is now past "first"
  spdlog::details::log_msg stale("late", spdlog::level::info, "stale");
  stale.time -= std::chrono::milliseconds(5);
  sink->log(stale);
  log.info("last");
  log.flush();
  const auto lines = stamped_lines(path);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].text == "first");
  CHECK(lines[1].text == "stale");
  CHECK(lines[2].text == "last");
  CHECK(lines[0].ns <= lines[1].ns);
  CHECK(lines[1].ns <= lines[2].ns);
  CHECK(sink->restamped() == 1);
  CHECK(sink->late_lines() == 0);
}

TEST_CASE("Log files are appended to and reopened on request (logrotate)", "[logging]") {
  for (const std::uint32_t buffer : {0u, 65536u}) {
    CAPTURE(buffer);
    TempDir dir;
    const auto path = dir.file("svc.log"), rotated = dir.file("svc.log.1");
    { std::ofstream(path) << "an earlier run's line\n"; }
    mayhem::Options o;
    o.log_file = path;
    o.log_buffer = buffer;
    auto log = mayhem::make_logger(o);
    log->info("before");
    REQUIRE(std::rename(path.c_str(), rotated.c_str()) == 0);  // logrotate moves it away
    log->info("still to the old file");
    const auto r = mayhem::reopen_log_file(log);
    CHECK(r.file);
    CHECK_FALSE(r.error);
    log->info("after");
    log->flush();
    const auto old_lines = lines_of(rotated), new_lines = lines_of(path);
    REQUIRE(old_lines.size() == 3);
    CHECK(old_lines[0] == "an earlier run's line");
    CHECK(old_lines[1].substr(13) == "INFO: before");
    CHECK(old_lines[2].substr(13) == "INFO: still to the old file");
    REQUIRE(new_lines.size() == 1);
    CHECK(new_lines[0].substr(13) == "INFO: after");

    // The path cannot be opened any more: the error is reported and the old file kept.
    const std::string here = dir.path().string(), gone = here + ".gone";
    REQUIRE(std::rename(here.c_str(), gone.c_str()) == 0);
    const auto bad = mayhem::reopen_log_file(log);
    REQUIRE(std::rename(gone.c_str(), here.c_str()) == 0);
    CHECK(bad.error);
    log->info("kept");
    log->flush();
    CHECK(lines_of(path).size() == 2);
  }
  mayhem::Options o;  // stderr: nothing to reopen
  CHECK_FALSE(mayhem::reopen_log_file(mayhem::make_logger(o)).file);
}

TEST_CASE(
    "Log formats: iso has the date and zone, json one object a line with the message's fields",
    "[logging]") {
  TempDir dir;
  mayhem::Message m;
  std::snprintf(m.instance_name, sizeof m.instance_name, "cattle-1a2b");
  for (int i = 0; i < 16; ++i) m.id[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  auto log_both = [&](mayhem::LogFormat f, const char* name) {
    mayhem::Options o;
    o.log_file = dir.file(name);
    o.log_format = f;
    auto log = mayhem::make_logger(o);
    log->warn("start \"quoted\" \\ tab\t");
    {
      mayhem::LogScope scope(m, "save");
      log->info("Saved {} into database", m);
    }
    log->flush();
    return lines_of(o.log_file);
  };
  const auto iso = log_both(mayhem::LogFormat::kIso, "iso.log");
  REQUIRE(iso.size() == 2);
  const std::regex iso_re(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d INFO: Saved PubSubMessage\(instance_name='cattle-1a2b'\) into database$)");
  CHECK(std::regex_match(iso[1], iso_re));

  const auto json = log_both(mayhem::LogFormat::kJson, "json.log");
  REQUIRE(json.size() == 2);
  const auto a = nlohmann::json::parse(json[0]), b = nlohmann::json::parse(json[1]);
  CHECK(a["level"] == "WARNING");
  CHECK(a["msg"] == "start \"quoted\" \\ tab\t");
  CHECK_FALSE(a.contains("message_id"));  // not about a message
  CHECK(b["level"] == "INFO");
  CHECK(b["msg"] == "Saved PubSubMessage(instance_name='cattle-1a2b') into database");
  CHECK(b["stage"] == "save");
  CHECK(b["message_id"] == "00010203-0405-0607-0809-0a0b0c0d0e0f");
  CHECK(b["instance_name"] == "cattle-1a2b");
  CHECK(std::regex_match(b["ts"].get<std::string>(),
                         std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$)")));
}

TEST_CASE("A log file that cannot be opened is a clear error", "[logging]") {
  mayhem::Options o;
  o.log_file = "/proc/version/cannot/be/here.log";
  CHECK_THROWS_WITH(mayhem::make_logger(o), Catch::Contains("cannot open log file"));
}
