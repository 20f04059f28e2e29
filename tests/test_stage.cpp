// The stage table (mayhem/stage.hpp), the simulated I/O's draws (io/simulated_io.hpp) and the
// memory store (the null store, store/memory_store.hpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "mayhem/faults.hpp"
#include "mayhem/io/simulated_io.hpp"
#include "mayhem/rng.hpp"
#include "mayhem/stage.hpp"
#include "mayhem/store/memory_store.hpp"

using namespace mayhem;

namespace {

// An IoService that records what is submitted (nothing completes).
class StageTestIo final : public IoService {
 public:
  explicit StageTestIo(bool inline_zero) : inline_zero_(inline_zero) {}
  void start(IoSink) override {}
  void submit(Op op, Message* const* msgs, const Nanos* delays, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) submitted.push_back({op, msgs[i], delays[i]});
  }
  void cancel_all() override {}
  std::size_t pending() const override { return submitted.size(); }
  bool zero_delay_inline() const override { return inline_zero_; }

  struct Entry {
    Op op;
    Message* msg;
    Nanos delay;
  };
  std::vector<Entry> submitted;

 private:
  bool inline_zero_;
};

Options stage_test_options(double scale, double fail_rate) {
  Options o;
  o.latency_scale = scale;
  o.fail_rate = fail_rate;
  o.restart_backoff = 0.1;
  return o;
}

}  // namespace

TEST_CASE("The stage table: printed names and operation indexes and --inject names", "[stage]") {
  const char* names[] = {"publish",   "consume", "save",   "saved", "restart",
                         "restarted", "cleanup", "settle", "lease"};
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i)
    CHECK(std::string(to_string(static_cast<Stage>(i))) == names[i]);
  CHECK(std::string(to_string(Stage::kCount)) == "?");
  CHECK(op_index(Op::kSave) == 0);
  CHECK(op_index(Op::kRestart) == 1);
  CHECK(op_index(Op::kCleanup) == 2);
  CHECK(op_index(Stage::kLease) == 3);
  CHECK(op_index(Stage::kSettle) == -1);
  for (int i = 0; i < kOpCount; ++i) CHECK(op_index(kOps[i]) == i);
  CHECK(std::string(stage_file(Stage::kLease)) == "src/lease/lease_manager.cpp");
  std::string err;
  const auto timer = parse_fault("timer:error:0.5", err);
  REQUIRE(timer);
  CHECK(timer->stage == Stage::kLease);
  const auto cleanup = parse_fault("cleanup:crash:1", err);
  REQUIRE(cleanup);
  CHECK(cleanup->stage == Stage::kCleanup);
  CHECK_FALSE(parse_fault("lease:error:0.5", err));
  CHECK(err == "--inject: unknown stage 'lease' (save, restart, cleanup, timer)");
  CHECK_FALSE(parse_fault("settle:error:0.5", err));
}

TEST_CASE("SimulatedIo's draws are pure functions of message and operation and attempt",
          "[stage][io]") {
  BatchPool batches{4};
  StageTestIo io(true);
  const Options o = stage_test_options(0.5, 0.25);
  SimulatedIo sim(o, io, batches);
  Message m;
  m.seed = 0x1234'5678'9abcULL;
  // The formula the pipeline used (key = op * 64 + attempt * 2 [+ 1 for failures]).
  const double save_s = to_unit(mix(m.seed, 0)) * 0.5;
  CHECK(sim.delay(m, Op::kSave) == seconds_to_nanos(save_s));
  CHECK(sim.delay(m, Op::kCleanup) == seconds_to_nanos(to_unit(mix(m.seed, 2 * 64)) * 0.5));
  m.restart_attempts = 3;
  const double restart_s = to_unit(mix(m.seed, 64 + 3 * 2)) * 0.5 + std::ldexp(0.1 * 0.5, 2);
  CHECK(sim.delay(m, Op::kRestart) == seconds_to_nanos(restart_s));
  CHECK(sim.fails(m, Op::kSave, 0) == (to_unit(mix(m.seed, 1)) < 0.25));
  CHECK(sim.fails(m, Op::kRestart, 2) == (to_unit(mix(m.seed, 64 + 2 * 2 + 1)) < 0.25));
  CHECK_FALSE(sim.fails(m, Op::kCleanup, 0));
  int failed = 0;
  for (std::uint64_t s = 1; s <= 4000; ++s) {
    Message x;
    x.seed = s;
    failed += sim.fails(x, Op::kSave, 0) ? 1 : 0;
    CHECK(sim.fails(x, Op::kSave, 0) == sim.fails(x, Op::kSave, 0));
  }
  CHECK(failed > 800);
  CHECK(failed < 1200);
}

TEST_CASE("SimulatedIo::submit keeps zero delays for the caller only when the model allows it",
          "[stage][io]") {
  Message a, b;
  a.seed = 1;
  b.seed = 2;
  Message* msgs[] = {&a, &b};
  {
    BatchPool batches{4};
    StageTestIo io(true);
    SimulatedIo sim(stage_test_options(0, 0), io, batches);
    Batch* now = sim.submit(Op::kRestart, msgs, 2);
    REQUIRE(now != nullptr);
    CHECK(now->size == 2);
    CHECK_FALSE(now->cancelled);
    CHECK(io.submitted.empty());
    batches.release_one(now);
  }
  {
    BatchPool batches{4};
    StageTestIo io(false);
    SimulatedIo sim(stage_test_options(0, 0), io, batches);
    CHECK(sim.submit(Op::kCleanup, msgs, 2) == nullptr);
    REQUIRE(io.submitted.size() == 2);
    CHECK(io.submitted[0].op == Op::kCleanup);
    CHECK(io.submitted[0].delay == 0);
  }
  {
    BatchPool batches{4};
    StageTestIo io(true);
    SimulatedIo sim(stage_test_options(1, 0), io, batches);
    CHECK(sim.submit(Op::kSave, msgs, 2) == nullptr);
    REQUIRE(io.submitted.size() == 2);
    CHECK(io.submitted[1].delay == sim.delay(b, Op::kSave));
  }
}

TEST_CASE("The memory store is the null store: simulated saves and nothing written or counted",
          "[stage][store]") {
  BatchPool batches{4};
  StageTestIo io(false);
  const Options o = stage_test_options(1, 0.5);
  SimulatedIo sim(o, io, batches);
  std::string err;
  const auto spec = parse_store_spec("memory", err);
  REQUIRE(spec);
  auto store = open_store(*spec, batches, SteadyClock::instance(), nullptr, sim);
  REQUIRE(store != nullptr);
  CHECK(std::string(store->kind()) == "memory");
  store->start([](Batch*) { FAIL("the memory store's saves complete through the IoService"); });
  Message a;
  a.seed = 77;
  Message* msgs[] = {&a};
  CHECK(store->save(msgs, 1) == nullptr);
  REQUIRE(io.submitted.size() == 1);
  CHECK(io.submitted[0].op == Op::kSave);
  CHECK(io.submitted[0].delay == sim.delay(a, Op::kSave));
  int agree = 0;
  for (std::uint64_t s = 1; s <= 200; ++s) {
    Message x;
    x.seed = s;
    agree += store->simulated_failure(x) == sim.fails(x, Op::kSave, 0) ? 1 : 0;
  }
  CHECK(agree == 200);
  store->settled(msgs, 1);
  CHECK(store->cancel_saves(0));
  CHECK(store->close());
  const StoreStats st = store->stats();
  CHECK(st.rows_inserted + st.duplicates + st.write_failures + st.transactions + st.outcomes == 0);
}
