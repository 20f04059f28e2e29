// The service end to end, in-process (Service: the graph, the I/O models, the lease thread, flow
// control, shutdown and the accounting invariant). Each run is short (latency scales of a few
// milliseconds); waits are on conditions with deadlines, never bare sleeps. The tests at the end
// inject a ManualClock (Service::Deps::clock): time moves only when the test advances it, so what
// is in flight, when a lease falls due and when a shutdown gives up are the test's to decide.
#include <signal.h>
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "mayhem/faults.hpp"
#include "mayhem/service.hpp"
#include "mayhem/source/pubsub.hpp"
#include "support/running_service.hpp"
#include "support/scale.hpp"
#include "support/subprocess.hpp"
#include "support/test_sink.hpp"

using namespace mayhem;
using namespace std::chrono_literals;

namespace {

Options quick(std::uint64_t messages, double latency) {
  Options o;
  o.messages = messages;
  o.publish_interval = 0;
  o.latency_scale = latency;
  o.seed = 12345;
  return o;
}

struct Outcome {
  int rc = -1;
  Summary s;
  std::shared_ptr<test::TestSink> sink;
  std::uint64_t source_acks = 0, source_nacks = 0;
};

Outcome run(Options o, std::function<void(Op, const Message&)> fault = {},
            spdlog::level::level_enum level = spdlog::level::info) {
  auto [log, sink] = test::make_test_logger(level);
  Service svc(o, Service::Deps{log, nullptr, false, std::move(fault)});
  Outcome out;
  out.rc = svc.run();
  out.s = svc.summary();
  out.sink = sink;
  out.source_acks = svc.pubsub().acks();
  out.source_nacks = svc.pubsub().nacks();
  return out;
}

// Polls `pred` like test::eventually, moving `clock` on by `step` before each look: on a
// ManualClock, time passes only while the test waits for something to happen.
template <typename Pred>
bool advance_until(ManualClock& clock, Nanos step, Pred pred, std::chrono::milliseconds timeout) {
  return test::eventually(
      [&] {
        if (pred()) return true;
        clock.advance(step);
        return false;
      },
      timeout);
}

void check_accounting(const Outcome& o) {
  CHECK(o.s.published == o.s.acked + o.s.nacked);
  CHECK(o.source_acks == o.s.acked);
  CHECK(o.source_nacks == o.s.nacked);
}

// What the pub/sub was told, message by message (by publish sequence number).
class Ledger {
 public:
  void record(bool ack, Message* const* msgs, std::size_t n) {
    std::lock_guard lock(mu_);
    if (!msgs) {
      anonymous_ += n;
      return;
    }
    for (std::size_t i = 0; i < n; ++i) {
      auto& e = events_[msgs[i]->seq];
      if (ack && e.nacks != 0) ack_after_nack_ = true;
      (ack ? e.acks : e.nacks) += 1;
    }
  }
  // Empty when every message 0..published-1 was settled exactly once (one ack or one nack);
  // otherwise what went wrong first.
  std::string problems(std::uint64_t published) const {
    std::lock_guard lock(mu_);
    if (anonymous_ != 0) return "anonymous nacks";
    if (ack_after_nack_) return "a message was acked after being nacked";
    if (events_.size() != published)
      return fmt::format("{} of {} settled", events_.size(), published);
    for (const auto& [seq, e] : events_) {
      if (seq >= published) return fmt::format("unknown message {}", seq);
      if (e.acks > 1) return fmt::format("message {} acked {} times", seq, e.acks);
      if (e.acks + e.nacks != 1)
        return fmt::format("message {}: {} acks, {} nacks", seq, e.acks, e.nacks);
    }
    return {};
  }
  // After a shutdown that timed out (--shutdown-timeout shorter than the drain): the messages the
  // graph had not settled were nacked anonymously, once, in one go; every other message was
  // settled exactly once by name. Empty when so.
  std::string problems_after_timeout(std::uint64_t published) const {
    std::lock_guard lock(mu_);
    if (ack_after_nack_) return "a message was acked after being nacked";
    for (const auto& [seq, e] : events_) {
      if (seq >= published) return fmt::format("unknown message {}", seq);
      if (e.acks + e.nacks != 1)
        return fmt::format("message {}: {} acks, {} nacks", seq, e.acks, e.nacks);
    }
    if (events_.size() + anonymous_ != published)
      return fmt::format("{} settled by name + {} anonymous nacks != {} published", events_.size(),
                         anonymous_, published);
    return {};
  }

 private:
  struct Events {
    std::uint32_t acks = 0, nacks = 0;
  };
  mutable std::mutex mu_;
  std::map<std::uint64_t, Events> events_;
  std::uint64_t anonymous_ = 0;
  bool ack_after_nack_ = false;
};

}  // namespace

TEST_CASE("Every message is pulled, saved and restarted, then acked, with the reference's logs",
          "[pipeline]") {
  for (double latency : {0.0, 0.002}) {
    for (IoModel model : {IoModel::kAsync, IoModel::kBlocking}) {
      DYNAMIC_SECTION("latency " << latency << " io " << to_string(model)) {
        Options o = quick(2000, latency);
        o.io_model = model;
        o.io_threads = 64;
        const Outcome r = run(o);
        REQUIRE(r.rc == 0);
        CHECK(r.s.published == 2000);
        CHECK(r.s.acked == 2000);
        CHECK(r.s.nacked == 0);
        check_accounting(r);
        CHECK(r.s.saved + r.s.save_failed == 2000);
        CHECK(r.s.restarted + r.s.restart_failed == 2000);
        CHECK(r.s.save_failed > 300);  // fail rate 0.25
        CHECK(r.s.save_failed < 700);
        const auto& sink = *r.sink;
        CHECK(sink.count("Pulled PubSubMessage(instance_name='cattle-") == 2000);
        CHECK(sink.count("Done. Acked PubSubMessage(") == 2000);
        CHECK(sink.count("Saved PubSubMessage(") == r.s.saved);
        CHECK(sink.count("Restarted cattle-") == r.s.restarted);
        CHECK(sink.count("Handling general error: Could not save PubSubMessage(") ==
              r.s.save_failed);
        CHECK(sink.count("Handling general error: Could not restart cattle-") ==
              r.s.restart_failed);
        CHECK(sink.count("Retrying for failure to restart: cattle-") == r.s.restart_retries);
        CHECK(sink.count("Extended deadline by 3 seconds for PubSubMessage(") == r.s.extensions);
        CHECK(sink.count("Successfully shutdown the Mayhem service.") == 1);
      }
    }
  }
}

TEST_CASE("Save and restart of one message run concurrently (the reference's gather)",
          "[pipeline]") {
  Options o = quick(400, 0.05);
  o.fail_rate = 0;
  std::mutex mu;
  std::map<std::uint64_t, std::pair<Nanos, Nanos>> done;  // seq -> (save done, restart done)
  const Outcome r = run(o, [&](Op op, const Message& m) {
    const Nanos now = steady_now();
    std::lock_guard lock(mu);
    if (op == Op::kSave) done[m.seq].first = now;
    if (op == Op::kRestart) done[m.seq].second = now;
  });
  REQUIRE(r.rc == 0);
  REQUIRE(done.size() == 400);
  // Each message's delays are a pure function of the seed: replay them to count the messages whose
  // restart is shorter than their save (the pipeline's own draw: op * 64 + attempt * 2).
  MessageFactory factory(o.seed);
  Message m;
  int expected = 0;
  for (std::uint64_t seq = 0; seq < 400; ++seq) {
    factory.fill(m, seq, 0);
    expected += to_unit(mix(m.seed, 64)) < to_unit(mix(m.seed, 0));
  }
  // Run one after the other, restart would never finish first. Run concurrently, it finishes first
  // exactly when its delay is the shorter one, up to near-ties (timer ticks, submission order).
  int restart_first = 0;
  for (auto& [seq, t] : done) restart_first += t.second < t.first;
  INFO("expected " << expected << ", observed " << restart_first);
  CHECK(expected > 150);
  CHECK(restart_first >= expected - 30);
  CHECK(restart_first <= expected + 30);
}

TEST_CASE("Failed restarts are really retried, then given up", "[pipeline]") {
  Options o = quick(300, 0.001);
  o.fail_rate = 1;
  o.restart_retries = 2;
  const Outcome r = run(o);
  REQUIRE(r.rc == 0);
  CHECK(r.s.restart_retries == 600);
  CHECK(r.s.restart_failed == 300);
  CHECK(r.s.restarted == 0);
  CHECK(r.s.save_failed == 300);
  CHECK(r.s.acked == 300);  // the reference acks even when handling failed
  CHECK(r.sink->count("Retrying for failure to restart") == 600);

  o.fail_rate = 0;
  const Outcome ok = run(o);
  CHECK(ok.s.saved == 300);
  CHECK(ok.s.restarted == 300);
  CHECK(ok.s.restart_retries == 0);
  CHECK(ok.sink->count("ERROR") == 0);
}

TEST_CASE("Messages in flight longer than the interval are extended by the lease thread",
          "[pipeline][lease]") {
  Options o = quick(100, 0.3);
  o.fail_rate = 0;
  o.extend_interval = 0.05;
  o.ack_deadline = 0.5;
  const Outcome r = run(o);
  REQUIRE(r.rc == 0);
  CHECK(r.s.acked == 100);
  // Each message lives max(save, restart) + cleanup, about 0.35 s on average: ~7 extensions each.
  CHECK(r.s.extensions > 100 * 3);
  CHECK(r.s.late_extensions == 0);
  CHECK(r.sink->count("Extended deadline by 0.5 seconds for") == r.s.extensions);
}

TEST_CASE("Flow control bounds the messages in flight and the pub/sub backlog", "[pipeline]") {
  Options o = quick(20000, 0.005);
  o.max_in_flight = 64;
  o.queue_capacity = 256;
  // On a manual clock (Service::Deps::clock): while it stands still no I/O completes, so consume
  // must stop at exactly --max-in-flight and the publisher at a full pub/sub, and stay there. Then
  // the test moves time on (5 ms, one --latency-scale, per look) until the run has ended.
  ManualClock clock(kNanosPerSecond);
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  Service::Deps deps{log, nullptr, false, {}};
  deps.clock = &clock;
  Service svc(o, std::move(deps));
  Outcome r;
  {
    test::Running running(svc);
    svc.wait_started();
    const Metrics& m = svc.metrics();
    REQUIRE(test::eventually(
        [&] {
          return m.in_flight.load() == 64 && svc.pubsub().backlog() == 256 &&
                 m.published.get() == 64 + 256;
        },
        20s));
    CHECK(m.acked.get() == 0);
    REQUIRE(advance_until(
        clock, 5'000'000, [&] { return running.finished(); }, 60s));
    r.rc = running.join(SIGTERM);
  }
  r.s = svc.summary();
  REQUIRE(r.rc == 0);
  CHECK(r.s.acked == 20000);
  CHECK(r.s.peak_in_flight <= 64);
  CHECK(r.s.peak_in_flight >= 32);
  // Unbounded, the publisher would have made all 20000 up front; bounded, the pool stays at
  // in-flight + backlog + lots awaiting the lease thread's next pass, within two 4096-slabs.
  CHECK(r.s.pool_messages <= 8192);
}

TEST_CASE("A signal shuts down gracefully: outstanding messages are nacked, nothing is lost",
          "[pipeline][shutdown]") {
  for (IoModel model : {IoModel::kAsync, IoModel::kBlocking}) {
    DYNAMIC_SECTION("io " << to_string(model)) {
      Options o = quick(0, 0.5);
      o.rate = 4000;
      o.io_model = model;
      o.io_threads = 256;
      auto [log, sink] = test::make_test_logger();
      Service svc(o, Service::Deps{log, nullptr, false, {}});
      test::Running running(svc);
      svc.wait_started();
      REQUIRE(test::eventually(
          [&] { return svc.metrics().acked.get() >= 20 && svc.metrics().in_flight.load() >= 100; },
          20s));
      const int rc = running.join(SIGINT);
      const Summary s = svc.summary();
      CHECK(rc == 0);
      CHECK(s.nacked >= 100);
      CHECK(s.published == s.acked + s.nacked);
      CHECK(svc.pubsub().acks() == s.acked);
      CHECK(svc.pubsub().nacks() == s.nacked);
      CHECK(svc.metrics().in_flight.load() == 0);
      CHECK(sink->count("Received exit signal SIGINT...") == 1);
      CHECK(sink->count("Closing database connections") == 1);
      CHECK(sink->count("Nacking outstanding messages") == 1);
      CHECK(sink->count("Cancelling outstanding tasks") == 1);
      CHECK(sink->count("Flushing metrics") == 1);
      CHECK(sink->count("Successfully shutdown the Mayhem service.") == 1);
    }
  }
}

TEST_CASE("An unexpected exception in a stage shuts down gracefully with a failing status",
          "[pipeline][shutdown]") {
  for (Op where : {Op::kSave, Op::kRestart, Op::kCleanup}) {
    DYNAMIC_SECTION("exception in " << to_string(where)) {
      Options o = quick(0, 0.01);
      o.rate = 5000;
      const Outcome r = run(o, [where](Op op, const Message& m) {
        if (op == where && m.seq == 100) throw std::runtime_error("boom");
      });
      CHECK(r.rc == 1);
      CHECK(r.s.exit_code == 1);
      CHECK(r.s.nacked >= 1);
      check_accounting(r);
      CHECK(r.sink->count("Caught exception: boom") == 1);
      CHECK(r.sink->count("Shutting down...") == 1);
      CHECK(r.sink->count("Successfully shutdown the Mayhem service.") == 1);
    }
  }
}

TEST_CASE("No message is acked twice, and none is acked after being nacked", "[pipeline]") {
  Options o = quick(5000, 0.001);
  std::mutex mu;
  std::multiset<std::uint64_t> cleaned;
  const Outcome r = run(
      o,
      [&](Op op, const Message& m) {
        if (op != Op::kCleanup) return;
        std::lock_guard lock(mu);
        cleaned.insert(m.seq);
      },
      spdlog::level::warn);
  REQUIRE(r.rc == 0);
  CHECK(cleaned.size() == 5000);
  CHECK(std::set<std::uint64_t>(cleaned.begin(), cleaned.end()).size() == 5000);
  CHECK(r.source_acks == 5000);
  CHECK(r.source_nacks == 0);
}

TEST_CASE("Accounting invariant holds when a signal arrives at a random moment",
          "[pipeline][shutdown][property]") {
  // 100 short runs, each a random configuration stopped by a random signal after a random number
  // of messages: published == acked + nacked, every message settled exactly once (no double ack,
  // no ack after a nack, none lost), exit status 0. Reproduce one with its printed seed.
  std::mt19937_64 rng(2026);
  // Every fourth run (its own generator, so the others keep their configurations) also gets a
  // --shutdown-timeout shorter than the drain: the settle stage is slowed down once the signal
  // came, so the timeout hits while the graph is still settling. Then the exit status is 1, and
  // the accounting must hold all the same: what the graph had not settled is nacked exactly once.
  std::mt19937_64 timeouts(13);
  int timed_out = 0;
  for (int iteration = 0; iteration < 100; ++iteration) {
    Options o;
    o.messages = 0;
    o.seed = rng() | 1;
    const double latencies[] = {0, 0.0005, 0.005, 0.02};
    o.latency_scale = latencies[rng() % 4];
    o.publish_interval = 0;
    if (rng() % 2) o.rate = 20000;
    o.io_model = rng() % 3 == 0 ? IoModel::kBlocking : IoModel::kAsync;
    o.io_threads = 32;
    o.threads = 1 + static_cast<std::uint32_t>(rng() % 4);
    o.max_in_flight = 1 + rng() % 5000;
    o.queue_capacity = 1 + rng() % 20000;
    o.batch_size = 1 + static_cast<std::uint32_t>(rng() % 128);
    o.fail_rate = static_cast<double>(rng() % 100) / 100.0;
    o.restart_retries = static_cast<std::uint32_t>(rng() % 4);
    o.restart_backoff = 0.01;
    o.extend_interval = (rng() % 2) ? 0.002 : 2.0;  // the lease thread busy, or idle
    const std::uint64_t stop_after = 1 + rng() % 1500;
    const int signo = std::array{SIGINT, SIGTERM, SIGHUP}[rng() % 3];
    const bool short_timeout = timeouts() % 4 == 0;
    if (short_timeout) o.shutdown_timeout = 0.001 * static_cast<double>(1 + timeouts() % 3);
    INFO("iteration " << iteration << " seed " << o.seed << " latency " << o.latency_scale << " io "
                      << to_string(o.io_model) << " threads " << o.threads << " max_in_flight "
                      << o.max_in_flight << " queue " << o.queue_capacity << " batch "
                      << o.batch_size << " fail " << o.fail_rate << " stop after " << stop_after
                      << " signal " << signo << " shutdown timeout " << o.shutdown_timeout);
    auto [log, sink] = test::make_test_logger(spdlog::level::warn);
    // Shared with the service: after a timed-out shutdown the graph may still be settling.
    auto ledger = std::make_shared<Ledger>();
    auto slow = std::make_shared<std::atomic<bool>>(false);
    Service::Deps deps{log, nullptr, false, {}};
    deps.audit = [ledger, slow](bool ack, Message* const* m, std::size_t n) {
      ledger->record(ack, m, n);
      if (slow->load() && m != nullptr) std::this_thread::sleep_for(n * 20us);  // slow drain
    };
    Service svc(o, std::move(deps));
    test::Running running(svc);
    svc.wait_started();
    REQUIRE(test::eventually([&] { return svc.metrics().published.get() >= stop_after; }, 20s));
    slow->store(short_timeout);
    const int rc = running.join(signo);  // Service::request_stop: as if the signal had come
    const Summary s = svc.summary();
    if (!short_timeout || !svc.abandoned()) {
      REQUIRE(rc == 0);
      REQUIRE(s.published == s.acked + s.nacked);
      REQUIRE(svc.pubsub().acks() == s.acked);
      REQUIRE(svc.pubsub().nacks() == s.nacked);
      REQUIRE(ledger->problems(s.published) == "");
      REQUIRE(sink->count("Accounting mismatch") == 0);
      continue;
    }
    ++timed_out;
    REQUIRE(rc == 1);
    REQUIRE(s.published == s.acked + s.nacked);
    REQUIRE(svc.pubsub().acks() == s.acked);
    REQUIRE(svc.pubsub().nacks() == s.nacked);
    REQUIRE(ledger->problems_after_timeout(s.published) == "");
    REQUIRE(sink->count("Accounting mismatch") == 0);
    // The graph was slow, not stuck: it goes on settling after run() returned, and must count
    // nothing again (the messages it settles now were counted nacked at the timeout).
    REQUIRE(test::eventually([&] { return svc.metrics().in_flight.load() == 0; }, 20s));
    const Summary later = svc.summary();
    REQUIRE(later.published == s.published);
    REQUIRE(later.acked == s.acked);
    REQUIRE(later.nacked == s.nacked);
    REQUIRE(svc.pubsub().acks() + svc.pubsub().nacks() == s.published);
    REQUIRE(ledger->problems_after_timeout(s.published) == "");
  }
  CHECK(timed_out >= 5);  // the short timeouts really were shorter than the drain
}

TEST_CASE("Tight bounds at zero latency: every run completes, no message is reused in flight",
          "[pipeline][stress]") {
  // Regression: a lot released before the lease thread saw it used to be recycled while its
  // releaser was still returning its messages, handing in-flight messages out twice (a hang about
  // one run in ten at this size).
  // Under a sanitizer 50000 a run: TSan sees the reuse itself, it does not need the hang.
  const std::uint64_t n = test::scaled(400'000, 8);
  for (int i = 0; i < 8; ++i) {
    Options o = quick(n, 0);
    o.seed = 100 + i;
    o.max_in_flight = 4096 + 4096 * (i % 3);
    o.queue_capacity = 2048 + 8192 * (i % 2);
    INFO("run " << i);
    const Outcome r = run(o, {}, spdlog::level::warn);
    REQUIRE(r.rc == 0);
    REQUIRE(r.s.acked == n);
    check_accounting(r);
  }
}

TEST_CASE("Injected I/O errors are handled per message like the reference's failures",
          "[pipeline][faults]") {
  Options o = quick(2000, 0.001);
  o.fail_rate = 0;
  std::string err;
  auto save_err = parse_fault("save:error:1", err);
  auto cleanup_err = parse_fault("cleanup:error:0.25", err);
  REQUIRE(save_err);
  REQUIRE(cleanup_err);
  const Outcome r = run(o, make_fault_hook({*save_err, *cleanup_err}), spdlog::level::warn);
  REQUIRE(r.rc == 0);  // expected failures never shut the service down
  CHECK(r.s.save_failed == 2000);
  CHECK(r.s.saved == 0);
  CHECK(r.s.restarted == 2000);
  CHECK(r.s.nacked > 350);  // a cleanup that cannot ack nacks: about a quarter
  CHECK(r.s.nacked < 650);
  check_accounting(r);
  CHECK(r.sink->count("Caught exception") == 0);
}

TEST_CASE("A shutdown that times out while the graph is still draining counts every message once",
          "[pipeline][shutdown]") {
  // The graph is slow, not stuck: once the signal came, settling takes 0.5 ms more per message
  // (the audit hook runs on the settling thread), so draining ~500 messages takes far longer than
  // the 20 ms shutdown timeout. The timeout counts what is unsettled as nacked; the
  // graph then goes on settling those same messages, and must not count them again.
  Options o = quick(0, 0.5);
  o.rate = 4000;
  o.batch_size = 4;
  o.threads = 2;
  o.fail_rate = 0;
  o.shutdown_timeout = 0.02;
  auto [log, sink] = test::make_test_logger(spdlog::level::warn);
  auto ledger = std::make_shared<Ledger>();
  auto slow = std::make_shared<std::atomic<bool>>(false);
  Service::Deps deps{log, nullptr, false, {}};
  deps.audit = [ledger, slow](bool ack, Message* const* m, std::size_t n) {
    ledger->record(ack, m, n);
    if (slow->load() && m != nullptr) std::this_thread::sleep_for(n * 500us);
  };
  Service svc(o, std::move(deps));
  test::Running running(svc);
  svc.wait_started();
  REQUIRE(test::eventually([&] { return svc.metrics().in_flight.load() >= 500; }, 20s));
  slow->store(true);
  const int rc = running.join(SIGINT);
  const Summary s = svc.summary();
  CHECK(rc == 1);  // the shutdown timed out
  CHECK(svc.abandoned());
  CHECK(sink->count("Shutdown timed out after 0.02 s") == 1);
  CHECK(s.published == s.acked + s.nacked);
  CHECK(svc.pubsub().acks() == s.acked);
  CHECK(svc.pubsub().nacks() == s.nacked);
  CHECK(ledger->problems_after_timeout(s.published) == "");
  CHECK(sink->count("Accounting mismatch") == 0);
  // Now let the graph finish the drain it was still doing: nothing may be counted twice.
  REQUIRE(test::eventually([&] { return svc.metrics().in_flight.load() == 0; }, 30s));
  const Summary later = svc.summary();
  INFO("at run()'s end: published " << s.published << " acked " << s.acked << " nacked " << s.nacked
                                    << "; after the drain: acked " << later.acked << " nacked "
                                    << later.nacked);
  CHECK(later.published == later.acked + later.nacked);
  CHECK(later.acked == s.acked);
  CHECK(later.nacked == s.nacked);
  CHECK(svc.pubsub().acks() + svc.pubsub().nacks() == later.published);
  CHECK(ledger->problems_after_timeout(later.published) == "");
}

// ---- on a manual clock (Service::Deps::clock): time moves only when the test moves it ---------

namespace {

// Counts the lease thread's passes (through Service::Deps::observer). Pass k + 2 began after pass
// k + 1 ended: when the count has grown by 2 since a clock step, a whole pass saw the new time.
class LeasePasses final : public Observer {
 public:
  void on_entry(Stage stage, std::uint32_t, Message* const*) override {
    if (stage == Stage::kLease) passes_.fetch_add(1);
  }
  void on_exit(Stage, std::uint32_t) override {}
  std::uint64_t count() const { return passes_.load(); }

 private:
  std::atomic<std::uint64_t> passes_{0};
};

}  // namespace

TEST_CASE("On a manual clock each interval extends every message in flight exactly once",
          "[pipeline][lease][shutdown][time]") {
  // The I/O takes up to 1000 s of a clock that moves only when the test says, so the 100 messages
  // stay in flight: each --extend-interval the clock passes, the lease thread extends every one of
  // them exactly once (never late, never a nanosecond early), and the signal then finds exactly
  // those 100 in flight and nacks each of them once.
  ManualClock clock(kNanosPerSecond);
  LeasePasses lease_passes;
  Options o = quick(100, 1000);
  o.rate = 4000;
  o.fail_rate = 0;
  o.extend_interval = 0.05;
  o.ack_deadline = 0.5;
  auto [log, sink] = test::make_test_logger();
  auto ledger = std::make_shared<Ledger>();
  Service::Deps deps{log, &lease_passes, false, {}};
  deps.audit = [ledger](bool ack, Message* const* m, std::size_t n) { ledger->record(ack, m, n); };
  deps.clock = &clock;
  Service svc(o, std::move(deps));
  test::Running running(svc);
  svc.wait_started();
  const Metrics& m = svc.metrics();
  // 25 ms at --rate 4000: the pacer orders exactly the 100 of --messages; consume extends each.
  clock.advance(25'000'000);
  REQUIRE(test::eventually([&] { return m.in_flight.load() == 100; }, 20s));
  CHECK(m.published.get() == 100);
  CHECK(m.extensions.get() == 100);
  for (std::uint64_t round = 1; round <= 5; ++round) {
    INFO("round " << round);
    // A nanosecond short of one --extend-interval: a whole lease pass sees it, extends nothing.
    clock.advance(50'000'000 - 1);
    const std::uint64_t passes = lease_passes.count();
    REQUIRE(test::eventually([&] { return lease_passes.count() >= passes + 2; }, 20s));
    CHECK(m.extensions.get() == 100 * round);
    clock.advance(1);
    REQUIRE(test::eventually([&] { return m.extensions.get() >= 100 * (round + 1); }, 20s));
    CHECK(m.extensions.get() == 100 * (round + 1));
    CHECK(m.in_flight.load() == 100);
  }
  CHECK(m.acked.get() == 0);
  const int rc = running.join(SIGINT);
  const Summary s = svc.summary();
  CHECK(rc == 0);
  CHECK(s.published == 100);
  CHECK(s.acked == 0);
  CHECK(s.nacked == 100);
  CHECK(s.extensions == 600);
  CHECK(s.late_extensions == 0);
  // The run's wall time is the service's clock's: 25 ms + 5 intervals, and not a nanosecond more.
  CHECK(s.wall_s == nanos_to_seconds(275'000'000));
  CHECK(sink->count("Extended deadline by 0.5 seconds for") == 600);
  CHECK(svc.pubsub().acks() == 0);
  CHECK(svc.pubsub().nacks() == 100);
  CHECK(ledger->problems(100) == "");
  CHECK(svc.metrics().in_flight.load() == 0);
  CHECK(sink->count("Received exit signal SIGINT...") == 1);
  CHECK(sink->count("Shutdown timed out") == 0);
}

namespace {

// An audit hook's gate (Service::Deps::audit): once closed, every named ack or nack blocks in it
// until the test opens it again, so settle stays busy for as long as the test wants.
class SettleGate {
 public:
  void close() {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  void open() {
    {
      std::lock_guard lock(mu_);
      closed_ = false;
    }
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock lock(mu_);
    if (closed_) ++held_;
    cv_.wait(lock, [&] { return !closed_; });
  }
  int held() const {
    std::lock_guard lock(mu_);
    return held_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  int held_ = 0;  // settle bodies that were held
};

}  // namespace

TEST_CASE("On a manual clock a shutdown times out when the clock passes the timeout, not before",
          "[pipeline][shutdown][time]") {
  // 500 messages in flight on a clock that stands still; at the signal, settle is held in the
  // audit hook, so the graph cannot drain. The drain waits for --shutdown-timeout (30 s) on the
  // service's clock: it gives up when the test moves the clock past it, not before and not after
  // 30 real seconds. Then every message not settled is counted nacked once, and the graph, let go,
  // settles the rest without counting them again.
  // Static: a timed-out service is left behind (abandoned) and its graph still reads the clock.
  static ManualClock clock;
  clock.set(kNanosPerSecond);
  Options o = quick(500, 1000);
  o.batch_size = 4;
  o.threads = 2;
  o.fail_rate = 0;
  o.shutdown_timeout = 30;
  auto [log, sink] = test::make_test_logger();
  // A copy to capture (clang 14 does not capture structured bindings).
  const std::shared_ptr<test::TestSink> lines = sink;
  // Shared with the service: after the timeout its graph still settles through the hook.
  auto ledger = std::make_shared<Ledger>();
  auto gate = std::make_shared<SettleGate>();
  Service::Deps deps{log, nullptr, false, {}};
  deps.audit = [ledger, gate](bool ack, Message* const* m, std::size_t n) {
    ledger->record(ack, m, n);
    if (m != nullptr) gate->pass();
  };
  deps.clock = &clock;
  Service svc(o, std::move(deps));
  test::Running running(svc);
  // Declared after `running`, so it runs first: a failed REQUIRE opens the gate before the join.
  struct Opener {
    std::shared_ptr<SettleGate> g;
    ~Opener() { g->open(); }
  } opener{gate};
  svc.wait_started();
  const Metrics& m = svc.metrics();
  REQUIRE(test::eventually([&] { return m.in_flight.load() == 500; }, 20s));
  REQUIRE(m.published.get() == 500);  // all pulled: shutdown's nack of the backlog has nothing
  gate->close();
  svc.request_stop(SIGINT);
  // The shutdown cancelled the I/O; settle is held; the drain is waiting on the clock.
  REQUIRE(test::eventually(
      [&] { return gate->held() >= 1 && lines->count("Cancelling outstanding tasks") == 1; }, 20s));
  // 29 s on: the lease thread, which reads the same clock, extends what is still unsettled (late);
  // the drain still waits.
  const std::uint64_t extensions = m.extensions.get();
  clock.advance(29 * kNanosPerSecond);
  REQUIRE(test::eventually([&] { return m.extensions.get() > extensions; }, 20s));
  CHECK_FALSE(running.finished());
  CHECK(sink->count("Shutdown timed out") == 0);
  // Past the deadline: the drain gives up at once (30 real seconds would fail the wait).
  clock.advance(kNanosPerSecond);
  REQUIRE(test::eventually([&] { return running.finished(); }, 20s));
  const int rc = running.join(SIGINT);
  const Summary s = svc.summary();
  CHECK(rc == 1);
  CHECK(svc.abandoned());
  CHECK(sink->count("Shutdown timed out after 30 s") == 1);
  CHECK(s.wall_s == 30.0);  // on the service's clock: from the start to the timeout
  CHECK(s.published == 500);
  CHECK(s.acked == 0);
  CHECK(s.published == s.acked + s.nacked);
  CHECK(svc.pubsub().acks() == s.acked);
  CHECK(svc.pubsub().nacks() == s.nacked);
  CHECK(ledger->problems_after_timeout(s.published) == "");
  CHECK(sink->count("Accounting mismatch") == 0);
  // Let the graph finish the drain it was held in: nothing may be counted twice.
  gate->open();
  REQUIRE(test::eventually([&] { return svc.metrics().in_flight.load() == 0; }, 30s));
  const Summary later = svc.summary();
  CHECK(later.published == later.acked + later.nacked);
  CHECK(later.acked == s.acked);
  CHECK(later.nacked == s.nacked);
  CHECK(svc.pubsub().acks() + svc.pubsub().nacks() == later.published);
  CHECK(ledger->problems_after_timeout(later.published) == "");
}
