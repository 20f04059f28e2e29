#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mayhem/lease/lease_manager.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;

namespace {

constexpr Nanos kSec = kNanosPerSecond;
using namespace std::chrono_literals;

// A lot of `n` freshly reset messages, for the tests that run the lease thread on a real clock.
Lot* bare_lot(LotPool& lots, MessagePool& messages, std::uint32_t n) {
  Lot* lot = lots.acquire_one();
  messages.acquire(lot->batch.msgs, n);
  lot->batch.size = n;
  for (std::uint32_t i = 0; i < n; ++i) {
    lot->batch.msgs[i]->reset_state();
    lot->attach(*lot->batch.msgs[i], i);
  }
  return lot;
}

struct Fixture {
  ManualClock clock{100 * kSec};
  Metrics metrics;
  MessagePool messages{64};
  LotPool lots{8};
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<test::TestSink> sink;
  std::vector<std::size_t> hook_calls;
  std::vector<LeaseState> states_seen_by_hook;
  std::unique_ptr<LeaseManager> lease;

  Fixture() {
    std::tie(log, sink) = test::make_test_logger();
    lease = std::make_unique<LeaseManager>(
        LeaseManager::Config{2 * kSec, 3 * kSec, 5'000'000}, clock, log, metrics, lots,
        [this](Message* const* m, std::size_t n) {
          hook_calls.push_back(n);
          for (std::size_t i = 0; i < n; ++i)
            states_seen_by_hook.push_back(m[i]->lot->lease_state(m[i]->lot_slot));
        });
  }

  // A lot as consume makes it: first extension done, deadline set.
  Lot* make_lot(std::uint32_t n) {
    Lot* lot = lots.acquire_one();
    messages.acquire(lot->batch.msgs, n);
    lot->batch.size = n;
    lot->batch.owner = lot;
    lot->refs.store(n);
    MessageFactory f(9);
    for (std::uint32_t i = 0; i < n; ++i) {
      Message* m = lot->batch.msgs[i];
      f.fill(*m, i, clock.now());
      lot->attach(*m, i);
      m->extended_cnt = 1;
      m->deadline_ns = clock.now() + 3 * kSec;
    }
    return lot;
  }
};

}  // namespace

TEST_CASE("Lease thread extends in-flight messages every interval, by the ack deadline",
          "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(3);
  f.lease->register_lot(lot);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 1);
  CHECK(f.metrics.extensions.get() == 0);

  f.clock.advance(2 * kSec - 1);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 0);  // not due yet

  f.clock.advance(1);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 3);
  for (std::uint32_t i = 0; i < 3; ++i) {
    CHECK(lot->batch.msgs[i]->extended_cnt == 2);
    CHECK(lot->batch.msgs[i]->deadline_ns == f.clock.now() + 3 * kSec);
    CHECK(lot->lease_state(i) == LeaseState::kActive);
  }
  CHECK(f.sink->count("Extended deadline by 3 seconds for PubSubMessage(instance_name='cattle-") ==
        3);
  // The hook saw all three in one bulk call, each held in kExtending.
  REQUIRE(f.hook_calls == std::vector<std::size_t>{3});
  for (auto s : f.states_seen_by_hook) CHECK(s == LeaseState::kExtending);

  f.clock.advance(2 * kSec);
  f.lease->tick();
  CHECK(lot->batch.msgs[0]->extended_cnt == 3);
  CHECK(f.metrics.late_extensions.get() == 0);
}

TEST_CASE("Messages whose results are handled are no longer extended", "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(4);
  f.lease->register_lot(lot);
  f.lease->tick();
  LeaseManager::mark_done(*lot->batch.msgs[1]);
  LeaseManager::mark_done(*lot->batch.msgs[3]);
  f.clock.advance(2 * kSec);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 2);
  CHECK(lot->batch.msgs[0]->extended_cnt == 2);
  CHECK(lot->batch.msgs[1]->extended_cnt == 1);
  CHECK(lot->lease_state(3) == LeaseState::kDone);
}

TEST_CASE("A settled message is not the lot's any more: the lease thread never touches it",
          "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(3);
  f.lease->register_lot(lot);
  f.lease->tick();
  // Settle takes message 1 and gives it back to the pool, where publish refills it for another
  // lot; the first lot stays tracked until its other messages settle.
  Message* reused = lot->batch.msgs[1];
  LeaseManager::mark_done(*reused);
  MessageFactory(77).fill(*reused, 99, f.clock.now());
  const Nanos deadline = reused->deadline_ns;
  f.clock.advance(2 * kSec);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 2);
  CHECK(lot->batch.msgs[0]->extended_cnt == 2);
  CHECK(reused->extended_cnt == 0);
  CHECK(reused->deadline_ns == deadline);
  f.lease->release_lot(lot);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
}

TEST_CASE("The fault hook sees a copy: a message settled meanwhile is not extended",
          "[lease][faults]") {
  Fixture f;
  Lot* lot = f.make_lot(2);
  std::vector<const Message*> seen;
  f.lease->set_fault_hook([&](const Message& m, std::uint32_t) {
    seen.push_back(&m);
    // Settle runs meanwhile (it must not wait for the hook) and takes message 0.
    if (m.seq == 0) LeaseManager::mark_done(*lot->batch.msgs[0]);
    return false;
  });
  f.lease->register_lot(lot);
  f.lease->tick();
  f.clock.advance(2 * kSec);
  f.lease->tick();
  REQUIRE(seen.size() == 2);
  for (const Message* m : seen) {
    CHECK(m != lot->batch.msgs[0]);
    CHECK(m != lot->batch.msgs[1]);
  }
  CHECK(f.metrics.extensions.get() == 1);
  CHECK(lot->batch.msgs[0]->extended_cnt == 1);
  CHECK(lot->batch.msgs[1]->extended_cnt == 2);
  f.lease->release_lot(lot);
  f.lease->tick();
}

namespace {
// True when `lot` is among the lot pool's free objects (every one is taken, then given back).
bool lot_is_free(LotPool& lots, Lot* lot) {
  std::vector<Lot*> all(lots.capacity());
  lots.acquire(all.data(), all.size());
  const bool found = std::find(all.begin(), all.end(), lot) != all.end();
  lots.release(all.data(), all.size());
  return found;
}
}  // namespace

TEST_CASE("A released lot is recycled at the next tick and no longer extended", "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(5);
  f.lease->register_lot(lot);
  f.lease->tick();
  for (std::uint32_t i = 0; i < 5; ++i) LeaseManager::mark_done(*lot->batch.msgs[i]);
  f.lease->release_lot(lot);
  CHECK_FALSE(lot_is_free(f.lots, lot));  // still linked in the schedule
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
  CHECK(lot_is_free(f.lots, lot));
  f.clock.advance(10 * kSec);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 0);  // nothing left to extend
}

TEST_CASE("A lot released before the lease thread takes it is recycled when it arrives",
          "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(2);
  f.lease->register_lot(lot);
  f.lease->release_lot(lot);  // settled before the lease thread's next pass
  CHECK_FALSE(lot_is_free(f.lots, lot));
  f.lease->tick();  // the registration arrives: the Lot is recycled, not tracked
  CHECK(f.lease->tracked_lots() == 0);
  CHECK(lot_is_free(f.lots, lot));
  f.clock.advance(4 * kSec);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == 0);
}

TEST_CASE("An extension that comes after the deadline is counted as late", "[lease]") {
  Fixture f;
  Lot* lot = f.make_lot(1);
  f.lease->register_lot(lot);
  f.lease->tick();
  f.clock.advance(5 * kSec);  // the lease thread was starved past the 3 s deadline
  f.lease->tick();
  CHECK(f.metrics.late_extensions.get() == 1);
  CHECK(f.metrics.extensions.get() == 1);
}

TEST_CASE("The lease thread extends on its own with a real clock and short intervals", "[lease]") {
  Metrics metrics;
  MessagePool messages{64};
  LotPool lots{8};
  auto [log, sink] = test::make_test_logger(spdlog::level::off);
  LeaseManager lease({20'000'000, 30'000'000, 1'000'000}, SteadyClock::instance(), log, metrics,
                     lots);
  Lot* lot = bare_lot(lots, messages, 2);
  lease.start();
  lease.register_lot(lot);
  CHECK(test::eventually([&] { return metrics.extensions.get() >= 6; }, 10s));  // 3 rounds of 2
  lease.release_lot(lot);
  lease.stop();
  CHECK(lease.tracked_lots() == 0);
}

TEST_CASE("A failed extension is logged, counted, and retried on the next pass",
          "[lease][faults]") {
  Fixture f;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> asked;  // (seq, attempt)
  // Message 1's first extension attempt (attempt 1: consume did extension 0) fails.
  f.lease->set_fault_hook([&](const Message& m, std::uint32_t attempt) {
    asked.emplace_back(m.seq, attempt);
    return m.seq == 1 && attempt == 1;
  });
  Lot* lot = f.make_lot(3);
  Message* failing = lot->batch.msgs[1];
  const Nanos old_deadline = failing->deadline_ns;
  f.lease->register_lot(lot);
  f.lease->tick();
  f.clock.advance(2 * kSec);
  const Nanos round = f.clock.now();
  const Nanos next = f.lease->tick();
  CHECK(f.metrics.extension_failed.get() == 1);
  CHECK(f.metrics.extensions.get() == 2);
  CHECK(failing->extended_cnt == 1);
  CHECK(failing->deadline_ns == old_deadline);
  CHECK(lot->lease_state(1) == LeaseState::kActive);
  CHECK(f.sink->count("Could not extend deadline for PubSubMessage(instance_name='cattle-") == 1);
  CHECK(next == f.clock.now() + 5'000'000);  // retried at the next pass, not an interval later

  f.clock.advance(5'000'000);
  f.lease->tick();
  CHECK(f.metrics.extension_failed.get() == 1);
  CHECK(failing->extended_cnt == 2);  // the retry (attempt 2) went through
  CHECK(failing->deadline_ns == f.clock.now() + 3 * kSec);
  CHECK(f.metrics.late_extensions.get() == 0);
  CHECK(std::count(asked.begin(), asked.end(), std::make_pair(std::uint64_t{1}, 2u)) == 1);
  // Back on the normal schedule: nothing more until an interval has passed since the round (the
  // retry extended only the message that failed, so it does not move the lot's next round).
  const auto extensions = f.metrics.extensions.get();
  f.clock.set(round + 2 * kSec - 1);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == extensions);
  f.clock.advance(1);
  f.lease->tick();
  CHECK(f.metrics.extensions.get() == extensions + 3);

  // A lot released while waiting for a retry is freed from the retry list like any other.
  f.lease->set_fault_hook([](const Message&, std::uint32_t) { return true; });
  f.clock.advance(2 * kSec);
  f.lease->tick();
  f.lease->release_lot(lot);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
}

TEST_CASE("An exception in a pass leaves every message free and the lot still scheduled",
          "[lease][faults]") {
  Fixture f;
  bool crash = true;
  f.lease->set_fault_hook([&](const Message& m, std::uint32_t) {
    if (crash && m.seq == 2) throw std::runtime_error("boom");
    return false;
  });
  Lot* lot = f.make_lot(4);
  f.lease->register_lot(lot);
  f.lease->tick();
  f.clock.advance(2 * kSec);
  CHECK_THROWS_WITH(f.lease->tick(), "boom");
  for (std::uint32_t i = 0; i < 4; ++i) {
    CHECK(lot->lease_state(i) == LeaseState::kActive);  // mark_done cannot block
    CHECK(lot->batch.msgs[i]->extended_cnt == 1);
  }
  CHECK(f.lease->tracked_lots() == 1);
  crash = false;
  f.lease->tick();  // still due: extended now
  CHECK(f.metrics.extensions.get() == 4);
  f.lease->release_lot(lot);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
}

TEST_CASE("An exception on the lease thread goes to the fatal handler, the thread goes on",
          "[lease][faults]") {
  Metrics metrics;
  MessagePool messages{64};
  LotPool lots{8};
  auto [log, sink] = test::make_test_logger(spdlog::level::off);
  LeaseManager lease({10'000'000, 30'000'000, 1'000'000}, SteadyClock::instance(), log, metrics,
                     lots);
  std::atomic<int> fatals{0};
  lease.set_fault_hook([](const Message&, std::uint32_t) -> bool { throw std::logic_error("x"); });
  lease.set_fatal_handler([&](std::exception_ptr) { fatals.fetch_add(1); });
  Lot* lot = bare_lot(lots, messages, 2);
  lease.start();
  lease.register_lot(lot);
  // After the crash the thread keeps extending (injected faults off) and freeing.
  REQUIRE(test::eventually([&] { return metrics.extensions.get() >= 4; }, 10s));
  CHECK(fatals.load() == 1);
  lease.release_lot(lot);
  CHECK(lease.stop_within(5 * kSec));
  CHECK(lease.tracked_lots() == 0);
}

TEST_CASE("A failed extension retries only the messages that failed, with backoff",
          "[lease][faults]") {
  Fixture f;
  std::map<std::uint64_t, std::vector<Nanos>> asked;  // seq -> times the fault hook was asked
  // Message 1 fails its first three attempts; every other message always succeeds.
  f.lease->set_fault_hook([&](const Message& m, std::uint32_t) {
    auto& times = asked[m.seq];
    times.push_back(f.clock.now());
    return m.seq == 1 && times.size() <= 3;
  });
  Lot* lot = f.make_lot(8);
  f.lease->register_lot(lot);
  f.lease->tick();
  const Nanos t0 = f.clock.now();
  f.clock.advance(2 * kSec);
  // Run the thread's passes as its loop would, up to just before the next regular round.
  for (Nanos next = f.lease->tick(); next < t0 + 4 * kSec - 10'000'000; next = f.lease->tick())
    f.clock.set(next);
  CHECK(f.metrics.extension_failed.get() == 3);
  CHECK(f.metrics.extensions.get() == 8);  // each message extended once in this round
  for (std::uint32_t i = 0; i < 8; ++i) {
    INFO("message " << i);
    CHECK(lot->batch.msgs[i]->extended_cnt == 2);
    CHECK(asked[i].size() == (i == 1 ? 4u : 1u));  // only the failing one was asked again
  }
  // The failing message was retried after 5, 10, then 20 ms: poll x 2^k, not every poll.
  const auto& t = asked[1];
  REQUIRE(t.size() == 4);
  CHECK(t[1] - t[0] == 5'000'000);
  CHECK(t[2] - t[1] == 10'000'000);
  CHECK(t[3] - t[2] == 20'000'000);
  // Hook calls (broker round trips): the round, then one per retry, each with only what failed.
  CHECK(f.hook_calls == std::vector<std::size_t>{7, 1});
  f.lease->release_lot(lot);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
}

TEST_CASE("A lot is leased from its delivery: registered 1.5 s later, it is extended in time",
          "[lease]") {
  Fixture f;
  const Nanos t0 = f.clock.now();
  Lot* late = f.make_lot(2);  // delivered (deadline stamped) at t0
  f.clock.advance(kSec);
  Lot* fresh = f.make_lot(2);  // delivered at t0 + 1 s
  f.clock.advance(kSec / 2);
  // Consume takes the fresh lot first, then the one that waited in the prefetch buffer.
  f.lease->register_lot(fresh);
  f.lease->register_lot(late);
  f.lease->tick();
  f.clock.set(t0 + 2 * kSec);  // one interval after delivery, well before t0 + 3 s
  f.lease->tick();
  for (Message* m : {late->batch.msgs[0], late->batch.msgs[1]}) {
    CHECK(m->extended_cnt == 2);
    CHECK(m->deadline_ns == t0 + 5 * kSec);
  }
  CHECK(fresh->batch.msgs[0]->extended_cnt == 1);  // not due before t0 + 3 s
  f.clock.set(t0 + 3 * kSec);
  f.lease->tick();
  CHECK(fresh->batch.msgs[0]->extended_cnt == 2);
  CHECK(f.metrics.late_extensions.get() == 0);
  f.lease->release_lot(fresh);
  f.lease->release_lot(late);
  f.lease->tick();
  CHECK(f.lease->tracked_lots() == 0);
}

TEST_CASE("A zero extend interval cannot make a lease pass run forever", "[lease]") {
  ManualClock clock{100 * kSec};
  Metrics metrics;
  MessagePool messages{64};
  LotPool lots{8};
  auto [log, sink] = test::make_test_logger(spdlog::level::off);
  LeaseManager lease({0, 3 * kSec, 0}, clock, log, metrics, lots);
  // A pass that never ends would call the fault hook again and again: stop it with an exception.
  std::uint64_t asked = 0;
  lease.set_fault_hook([&](const Message&, std::uint32_t) -> bool {
    if (++asked > 1000) throw std::runtime_error("runaway lease pass");
    return false;
  });
  Lot* lot = bare_lot(lots, messages, 4);
  lease.register_lot(lot);
  for (int i = 0; i < 3; ++i) {
    Nanos next = 0;
    REQUIRE_NOTHROW(next = lease.tick());
    CHECK(next > clock.now());  // the loop would not spin
    clock.set(next);
  }
  CHECK(metrics.extensions.get() <= 3 * 4);
  lease.release_lot(lot);
  lease.tick();
}
