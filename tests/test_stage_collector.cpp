// The stage collector behind `--stats-addr`, `mayhem top` and `--live`: own time excludes nested
// stage bodies, total includes them; bodies are timed for a first window, then only while someone looks; counted always.
#include <catch2/catch.hpp>

#include <thread>

#include "mayhem/observe/stage_collector.hpp"

using namespace mayhem;

TEST_CASE("Stage collector: own time excludes nested stage bodies, total includes them",
          "[observe]") {
  ManualClock clock(1000);
  StageCollector c(clock);
  (void)c.collect();  // someone looks: bodies are timed from now on
  REQUIRE(c.timing());
  c.on_entry(Stage::kSave, 10);
  clock.advance(100);
  c.on_entry(Stage::kSaved, 4);  // an inline completion inside the submit
  clock.advance(30);
  c.on_exit(Stage::kSaved, 4);
  clock.advance(20);
  c.on_exit(Stage::kSave, 10);

  std::thread other([&] {  // another thread: its own slot, summed when read
    c.on_entry(Stage::kSaved, 6);
    c.on_exit(Stage::kSaved, 6);
  });
  other.join();

  const auto rows = c.collect();
  REQUIRE(rows.size() == static_cast<std::size_t>(kStageCount));
  const auto& save = rows[static_cast<int>(Stage::kSave)];
  const auto& saved = rows[static_cast<int>(Stage::kSaved)];
  CHECK(save.name == "save");
  CHECK(save.calls == 1);
  CHECK(save.items == 10);
  CHECK(save.total.sum == 150);
  CHECK(save.own.sum == 120);
  CHECK(saved.calls == 2);
  CHECK(saved.items == 10);
  CHECK(saved.total.sum == 30);  // the other thread's call took no (manual) time
  CHECK(saved.own.sum == 30);
  CHECK(save.active == 0);
  CHECK(c.items_entered(Stage::kSaved) == 10);

  c.on_entry(Stage::kRestart, 3);  // still running when read
  const auto mid = c.collect();
  CHECK(mid[static_cast<int>(Stage::kRestart)].active == 1);
  CHECK(mid[static_cast<int>(Stage::kRestart)].in_flight == 3);
  c.on_exit(Stage::kRestart, 3);
}

TEST_CASE(
    "Stage collector: timed from the start, then only while someone looks, and counted always",
    "[observe]") {
  ManualClock clock(1000);
  StageCollector c(clock, 1'000'000);  // a 1 ms watch window
  REQUIRE(c.timing());                 // nobody has looked yet, and bodies are timed
  c.on_entry(Stage::kSettle, 5);
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);

  clock.advance(2'000'000);       // the first window passes with nobody looking
  c.on_entry(Stage::kSettle, 5);  // this body notices and stops timing (it is still timed)
  c.on_exit(Stage::kSettle, 5);
  CHECK_FALSE(c.timing());
  c.on_entry(Stage::kSettle, 5);
  c.on_exit(Stage::kSettle, 5);
  auto rows = c.collect();  // the first look: the histogram was filled before it; arms timing
  const auto& settle = rows[static_cast<int>(Stage::kSettle)];
  CHECK(settle.calls == 3);
  CHECK(settle.items == 15);
  CHECK(settle.own.count == 2);
  CHECK(settle.own.sum == 100);

  c.on_entry(Stage::kSettle, 5);
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);
  rows = c.collect();
  CHECK(rows[static_cast<int>(Stage::kSettle)].calls == 4);
  CHECK(rows[static_cast<int>(Stage::kSettle)].own.count == 3);
}
