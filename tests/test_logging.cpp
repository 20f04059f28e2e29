// The service's logger: the reference's line format, and the chunked file sink's promises (every
// line written exactly once, each thread's lines in order, buffered until a chunk fills or flush).
#include <catch2/catch.hpp>

#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/chunked_file_sink.hpp"
#include "mayhem/logging.hpp"
#include "support/temp_dir.hpp"

using mayhem::test::TempDir;

namespace {
std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
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

TEST_CASE("Chunked sink buffers per thread until a chunk fills or flush", "[logging]") {
  TempDir dir;
  const auto path = dir.file("chunked.log");
  mayhem::Options o;
  o.log_file = path;
  o.log_buffer = 1 << 20;
  auto log = mayhem::make_logger(o);
  for (int i = 0; i < 100; ++i) log->info("line {}", i);
  CHECK(lines_of(path).empty());  // 100 short lines do not fill a 1 MiB chunk
  log->flush();
  CHECK(lines_of(path).size() == 100);

  SECTION("a full chunk is written without a flush") {
    o.log_buffer = 4096;
    const auto path2 = dir.file("small.log");
    o.log_file = path2;
    auto small = mayhem::make_logger(o);
    for (int i = 0; i < 1000; ++i) small->info("line {}", i);  // ~25 bytes each: several chunks
    const auto written = lines_of(path2).size();
    CHECK(written > 0);
    CHECK(written < 1000);
    small->flush();
    CHECK(lines_of(path2).size() == 1000);
  }
  SECTION("the sink itself with chunk 0 writes every line at once") {
    auto sink = std::make_shared<mayhem::ChunkedFileSink>(dir.file("direct.log"), 0);
    spdlog::logger direct("direct", sink);
    direct.info("first");
    CHECK(lines_of(dir.file("direct.log")).size() == 1);
  }
}

TEST_CASE("Chunked sink: many threads, every line once, each thread's lines in order",
          "[logging]") {
  TempDir dir;
  const auto path = dir.file("threads.log");
  constexpr int kThreads = 4, kLines = 20000;
  {
    mayhem::Options o;
    o.log_file = path;
    o.log_buffer = 4096;
    auto log = mayhem::make_logger(o);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kLines; ++i) log->info("t{} n{}", t, i);
      });
    // Flushes racing with the writers must neither lose nor repeat a line.
    for (int f = 0; f < 50; ++f) log->flush();
    for (auto& th : threads) th.join();
  }  // the logger's sink flushes what is left when it is destroyed
  std::vector<int> next(kThreads, 0);
  const std::regex re(R"(INFO: t(\d+) n(\d+)$)");
  std::size_t count = 0;
  for (const auto& l : lines_of(path)) {
    std::smatch m;
    REQUIRE(std::regex_search(l, m, re));
    const int t = std::stoi(m[1]), n = std::stoi(m[2]);
    REQUIRE(n == next[t]);  // in order, none missing, none repeated
    ++next[t];
    ++count;
  }
  CHECK(count == static_cast<std::size_t>(kThreads * kLines));
}

TEST_CASE("Log buffer 0 keeps the exact line order across threads, chunks group by thread",
          "[logging]") {
  // Two threads take strict turns (a shared counter, no sleeps): line k is logged before k+1.
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
  const auto strict = run(dir.file("strict.log"), 0);
  REQUIRE(strict.size() == 2000);
  for (int k = 0; k < 2000; ++k) REQUIRE(strict[static_cast<std::size_t>(k)] == k);
  const auto chunked = run(dir.file("chunked.log"), 1 << 20);
  REQUIRE(chunked.size() == 2000);
  CHECK_FALSE(
      std::is_sorted(chunked.begin(), chunked.end()));  // one thread's chunk, then the other's
}

TEST_CASE("A log file that cannot be opened is a clear error", "[logging]") {
  mayhem::Options o;
  o.log_file = "/proc/version/cannot/be/here.log";
  CHECK_THROWS_WITH(mayhem::make_logger(o), Catch::Contains("cannot open log file"));
}
