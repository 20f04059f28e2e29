// Latency at low load, by counting instead of by wall time: on a ManualClock that the test holds
// still, a lone message must go from publish to ack. A stage that held it for a batch to fill
// would wait for messages that never come; one that flushed on a timer of the service's clock
// would wait for a tick that never comes (the clock does not move). Either way the ack would not
// arrive and the test would fail at its deadline, not by a timing threshold.
#include <signal.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>

#include "mayhem/service.hpp"
#include "support/running_service.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;

TEST_CASE("At low load a lone message is acked without waiting for a batch or a clock tick",
          "[pipeline][latency][time]") {
  constexpr std::uint64_t kLone = 6;
  // --rate 1000 on a manual clock: each millisecond the test moves it on, the pacer orders exactly
  // one message; the clock then stands still until that message is acked.
  ManualClock clock(kNanosPerSecond);
  Options o;
  o.messages = kLone;
  o.rate = 1000;
  o.latency_scale = 0;
  o.fail_rate = 0;
  o.seed = 18;
  const std::uint32_t threads = GENERATE(1u, 2u);
  o.threads = threads;
  INFO("--threads " << threads);
  auto [log, sink] = test::make_test_logger();
  Service::Deps deps{log, nullptr, false, {}};
  deps.clock = &clock;
  Service svc(o, std::move(deps));
  test::Running running(svc);
  svc.wait_started();
  const Metrics& m = svc.metrics();
  for (std::uint64_t i = 1; i <= kLone; ++i) {
    INFO("message " << i);
    clock.advance(1'000'000);
    REQUIRE(test::eventually([&] { return m.published.get() >= i; }, 20s));
    CHECK(m.published.get() == i);
    // The clock is still; no other message will be published until this one is acked.
    REQUIRE(test::eventually([&] { return m.acked.get() == i; }, 20s));
    CHECK(m.published.get() == i);
  }
  REQUIRE(test::eventually([&] { return running.finished(); }, 20s));
  CHECK(running.join() == 0);
  const Summary s = svc.summary();
  CHECK(s.published == kLone);
  CHECK(s.acked == kLone);
  CHECK(s.nacked == 0);
  // Published and acked at the same reading of the service's clock: no time had to pass.
  CHECK(s.latency_max_ms == 0);
}
