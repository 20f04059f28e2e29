// The pacer (the publisher's clock for paced modes), driven by a manual clock: how many messages
// it orders by a given time, at any rate or interval, and how promptly it stops. The service end
// to end is in test_service.cpp.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "mayhem/source/pacer.hpp"
#include "support/subprocess.hpp"

using namespace mayhem;
using namespace std::chrono_literals;

namespace {

// Counts what a Pacer orders; flags a running total that would have wrapped.
struct OrderCounter {
  std::atomic<std::uint64_t> ordered{0};
  std::atomic<bool> wrapped{false};
  Pacer::Order order() {
    return [this](std::uint64_t n) {
      const std::uint64_t before = ordered.load();
      if (n > UINT64_MAX - before) wrapped = true;
      ordered.store(before + n);  // one pacer thread: no lost update
    };
  }
};

// Stops the pacer and returns how long that took.
std::chrono::nanoseconds time_stop(Pacer& p) {
  const auto start = std::chrono::steady_clock::now();
  p.stop();
  return std::chrono::steady_clock::now() - start;
}

}  // namespace

TEST_CASE("Pacer at --rate R orders exactly R x t messages by a manual clock", "[pacer][time]") {
  ManualClock clock(7 * kNanosPerSecond);
  Options o;
  o.rate = 1000;
  o.messages = 0;
  OrderCounter c;
  Pacer p(o, clock, c.order());
  p.start();
  clock.advance(kNanosPerSecond);
  REQUIRE(test::eventually([&] { return c.ordered.load() == 1000; }, 5s));
  clock.advance(kNanosPerSecond / 2);
  REQUIRE(test::eventually([&] { return c.ordered.load() == 1500; }, 5s));
  clock.advance(kNanosPerSecond / 1000 - 1);  // 0.999 ms: the 1501st is not due yet
  CHECK(time_stop(p) < 1s);
  CHECK(c.ordered.load() == 1500);
  CHECK_FALSE(c.wrapped.load());
}

TEST_CASE("Pacer stops at --messages and stops promptly at any rate", "[pacer][time]") {
  ManualClock clock(0);
  Options o;
  o.messages = 1200;
  OrderCounter c;
  SECTION("an ordinary rate") {
    o.rate = 1000;
    Pacer p(o, clock, c.order());
    p.start();
    clock.advance(2 * kNanosPerSecond);
    REQUIRE(test::eventually([&] { return c.ordered.load() == 1200; }, 5s));
    CHECK(time_stop(p) < 1s);
  }
  SECTION("1e28 msgs/s: 1e19 a nanosecond, past uint64") {
    o.rate = 1e28;
    Pacer p(o, clock, c.order());
    p.start();
    clock.advance(1);
    REQUIRE(test::eventually([&] { return c.ordered.load() == 1200; }, 5s));
    CHECK(time_stop(p) < 1s);
  }
  CHECK(c.ordered.load() == 1200);
  CHECK_FALSE(c.wrapped.load());
}

TEST_CASE("Pacer with no message limit: extreme rates saturate and never wrap and stop is prompt",
          "[pacer][time]") {
  ManualClock clock(0);
  Options o;
  o.messages = 0;
  OrderCounter c;
  SECTION("1e28 msgs/s") {
    o.rate = 1e28;
    Pacer p(o, clock, c.order());
    p.start();
    clock.advance(kNanosPerSecond);
    // Everything that can be counted is due at once: one saturated order, no more, no wrap.
    REQUIRE(test::eventually([&] { return c.ordered.load() == UINT64_MAX; }, 5s));
    clock.advance(kNanosPerSecond);
    CHECK(time_stop(p) < 1s);
    CHECK(c.ordered.load() == UINT64_MAX);
  }
  SECTION("1e-300 msgs/s: the next message is due in forever") {
    o.rate = 1e-300;
    Pacer p(o, clock, c.order());
    p.start();
    clock.advance(1000 * kNanosPerSecond);
    CHECK(time_stop(p) < 1s);
    CHECK(c.ordered.load() == 0);
  }
  SECTION("--publish-interval 1e300: a pause of forever after the first message") {
    o.rate = 0;
    o.publish_interval = 1e300;
    Pacer p(o, clock, c.order());
    p.start();
    REQUIRE(test::eventually([&] { return c.ordered.load() == 1; }, 5s));
    CHECK(time_stop(p) < 1s);
    CHECK(c.ordered.load() == 1);
  }
  CHECK_FALSE(c.wrapped.load());
}
