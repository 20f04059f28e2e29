// The stage collector behind `--stats-addr`, `mayhem top` and `--live`: own time excludes nested
// stage bodies, total includes them; bodies are counted always, timed for a slice from the start and
// from each time_slice(), and while someone looks.
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
  CHECK(c.items_done(Stage::kSaved) == 10);

  c.on_entry(Stage::kRestart, 3);  // still running when read
  const auto mid = c.collect();
  CHECK(mid[static_cast<int>(Stage::kRestart)].active == 1);
  CHECK(mid[static_cast<int>(Stage::kRestart)].in_flight == 3);
  c.on_exit(Stage::kRestart, 3);
}

TEST_CASE("Stage collector: counted always, timed in slices and while someone looks", "[observe]") {
  ManualClock clock(1000);
  // A 1 ms watch window, a 10 s zone window, a 10 us slice.
  StageCollector c(clock, 1'000'000, 10'000'000'000, 10'000);
  REQUIRE(c.timing());    // the first slice: it starts with the first body
  clock.advance(50'000);  // a slow start does not use it up
  c.on_entry(Stage::kSettle, 5);
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);

  clock.advance(20'000);          // the slice passes with nobody looking
  c.on_entry(Stage::kSettle, 5);  // this body notices and stops timing (it is still timed)
  c.on_exit(Stage::kSettle, 5);
  CHECK_FALSE(c.timing());
  for (int i = 0; i < 3; ++i) {  // counted, not timed
    c.on_entry(Stage::kSettle, 5);
    clock.advance(7);
    c.on_exit(Stage::kSettle, 5);
  }
  c.time_slice();  // the service's once-a-second slice
  CHECK(c.timing());
  c.on_entry(Stage::kSettle, 5);
  clock.advance(50);
  c.on_exit(Stage::kSettle, 5);
  clock.advance(20'000);
  c.on_entry(Stage::kSettle, 5);  // notices the slice is over
  c.on_exit(Stage::kSettle, 5);
  CHECK_FALSE(c.timing());

  auto rows = c.collect();  // the first look: arms timing for the watch window
  const auto& settle = rows[static_cast<int>(Stage::kSettle)];
  CHECK(settle.calls == 7);
  CHECK(settle.items == 35);
  CHECK(settle.active == 0);
  CHECK(settle.own.count == 4);  // two bodies in each slice
  CHECK(settle.own.sum == 150);
  CHECK(c.timing());

  c.on_entry(Stage::kSettle, 5);
  clock.advance(100);
  c.on_exit(Stage::kSettle, 5);
  rows = c.collect();
  CHECK(rows[static_cast<int>(Stage::kSettle)].calls == 8);
  CHECK(rows[static_cast<int>(Stage::kSettle)].own.count == 5);

  // A watcher's window is not cut short by a slice.
  clock.advance(500'000);
  c.time_slice();
  clock.advance(400'000);  // past the slice, inside the window
  c.on_entry(Stage::kSettle, 5);
  c.on_exit(Stage::kSettle, 5);
  CHECK(c.timing());
}

TEST_CASE("Stage collector: a body entered untimed and left timed (or the reverse) counts once",
          "[observe]") {
  ManualClock clock(1000);
  StageCollector c(clock, 1'000'000, 10'000'000'000, 10);
  c.on_entry(Stage::kSettle, 1);  // the first body starts the first slice
  c.on_exit(Stage::kSettle, 1);
  clock.advance(100);
  c.on_entry(Stage::kSettle, 1);  // past it: timed, and stops timing
  c.on_exit(Stage::kSettle, 1);
  REQUIRE_FALSE(c.timing());
  c.on_entry(Stage::kRestart, 4);    // untimed: only counted
  (void)c.collect();                 // someone looks in the middle of it
  c.on_entry(Stage::kRestarted, 4);  // nested, timed
  clock.advance(30);
  c.on_exit(Stage::kRestarted, 4);
  c.on_exit(Stage::kRestart, 4);   // its entry was not timed: counted, not timed
  c.on_entry(Stage::kRestart, 2);  // timed
  clock.advance(10);
  c.on_exit(Stage::kRestart, 2);
  const auto rows = c.collect();
  const auto& restart = rows[static_cast<int>(Stage::kRestart)];
  const auto& restarted = rows[static_cast<int>(Stage::kRestarted)];
  CHECK(restart.calls == 2);
  CHECK(restart.items == 6);
  CHECK(restart.active == 0);
  CHECK(restart.in_flight == 0);
  CHECK(restart.own.count == 1);
  CHECK(restart.own.sum == 10);
  CHECK(restarted.calls == 1);
  CHECK(restarted.own.count == 1);
  CHECK(restarted.own.sum == 30);
  CHECK(c.items_done(Stage::kRestart) == 6);
}
