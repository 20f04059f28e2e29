// Google Benchmark micro-benchmarks for the hot pieces of Mayhem: the lock-free hand-off between
// threads (moodycamel queue, the in-process pub/sub), making a message (pool + MessageFactory, and
// std::random_device for comparison), one message through the whole graph (the real Service at
// zero latency, per --batch-size), the SQLite store's group commit (rows/s), the lease thread's
// registration and extension tick, and one log call (spdlog sync vs async vs a disabled level).
// Every "per_*" counter is time per item (wall time where the benchmark says real_time, else
// CPU time); items_per_second is the matching throughput. BM_ServiceFlatOut reports ns_per_msg
// and msgs_per_s from the service's own summary instead. See bench/README.md, "Micro-benchmarks".
// Usage: build/release/bench/mayhem_micro --benchmark_min_time=0.2 [--benchmark_filter=REGEX]
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>
#include <spdlog/logger.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/lease/lease_manager.hpp"
#include "mayhem/logging.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/options.hpp"
#include "mayhem/pool.hpp"
#include "mayhem/service.hpp"
#include "mayhem/source/pubsub.hpp"
#include "mayhem/store/sqlite_store.hpp"
#include "mayhem/summary.hpp"

using namespace mayhem;

namespace {

constexpr std::size_t kBulk = kBatchCapacity;  // 128, the graph's hand-off size
constexpr Nanos kSec = kNanosPerSecond;

// items_per_second plus a "per_<what>" counter: time per item (real or CPU time, as the
// benchmark measures), printed with its unit ("21.5ns", "2.2us"). With benchmark threads, every
// thread counts its items; only thread 0 sets the per-item counter, which then divides the
// (per-thread average) time by the items of all threads.
void report_per_item(benchmark::State& state, double items_per_iteration,
                     const char* name = "per_msg") {
  state.SetItemsProcessed(
      static_cast<std::int64_t>(static_cast<double>(state.iterations()) * items_per_iteration));
  if (state.thread_index() == 0) {
    state.counters[name] =
        benchmark::Counter(items_per_iteration, benchmark::Counter::kIsIterationInvariantRate |
                                                    benchmark::Counter::kInvert);
  }
}

// A ring of real messages whose addresses the hand-off benchmarks pass around.
constexpr std::size_t kRing = 1024;
std::unique_ptr<Message[]> make_ring() {
  return std::unique_ptr<Message[]>(new Message[kRing]);
}

std::shared_ptr<spdlog::logger> quiet_logger() {
  Options o;
  o.log_level = "off";
  return make_logger(o);  // stderr sink, level off: writes nothing
}

// ---- 1. Queue hand-off: one producer thread, one consumer thread --------------------------------
// Each iteration moves kHandoffItems pointers from a std::thread producer to the benchmark thread
// (the consumer), through a fresh queue; the time is the consumer's wall time until the last one
// arrived (thread start and queue construction included; ~0.1 ms of ~10-50 ms).

constexpr std::size_t kHandoffItems = std::size_t{1} << 20;

// Single-item enqueue/try_dequeue without tokens (what Pool::release_one/acquire_one do).
void BM_QueueHandoffSingle(benchmark::State& state) {
  auto ring = make_ring();
  for (auto _ : state) {
    moodycamel::ConcurrentQueue<Message*> q;
    std::thread producer([&] {
      for (std::size_t i = 0; i < kHandoffItems; ++i) q.enqueue(&ring[i & (kRing - 1)]);
    });
    std::size_t got = 0;
    Message* m = nullptr;
    while (got < kHandoffItems) {
      if (q.try_dequeue(m)) {
        benchmark::DoNotOptimize(m);
        ++got;
      }
    }
    producer.join();
  }
  report_per_item(state, kHandoffItems);
}
BENCHMARK(BM_QueueHandoffSingle)->UseRealTime()->Unit(benchmark::kMillisecond);

// Bulk enqueue/try_dequeue of 128 with a producer and a consumer token (the pub/sub's hand-off).
void BM_QueueHandoffBulk128Tokens(benchmark::State& state) {
  auto ring = make_ring();
  for (auto _ : state) {
    moodycamel::ConcurrentQueue<Message*> q;
    std::thread producer([&] {
      moodycamel::ProducerToken tok(q);
      Message* buf[kBulk];
      for (std::size_t i = 0; i < kHandoffItems; i += kBulk) {
        for (std::size_t k = 0; k < kBulk; ++k) buf[k] = &ring[(i + k) & (kRing - 1)];
        q.enqueue_bulk(tok, buf, kBulk);
      }
    });
    moodycamel::ConsumerToken tok(q);
    Message* out[kBulk];
    std::size_t got = 0;
    while (got < kHandoffItems) {
      got += q.try_dequeue_bulk(tok, out, kBulk);
      benchmark::DoNotOptimize(out[0]);
    }
    producer.join();
  }
  report_per_item(state, kHandoffItems);
}
BENCHMARK(BM_QueueHandoffBulk128Tokens)->UseRealTime()->Unit(benchmark::kMillisecond);

// The in-process pub/sub as the publish and consume stages use it: publish 128 when there is room
// (the capacity check is part of the cost), pull up to 128.
void BM_PubSubPublishPullBulk128(benchmark::State& state) {
  auto ring = make_ring();
  for (auto _ : state) {
    InProcessPubSub ps(Options{}.queue_capacity);
    std::thread producer([&] {
      Message* buf[kBulk];
      for (std::size_t i = 0; i < kHandoffItems; i += kBulk) {
        for (std::size_t k = 0; k < kBulk; ++k) buf[k] = &ring[(i + k) & (kRing - 1)];
        while (ps.free_capacity() < kBulk) std::this_thread::yield();
        ps.publish(buf, kBulk);
      }
    });
    Message* out[kBulk];
    std::size_t got = 0;
    while (got < kHandoffItems) {
      got += ps.pull(out, kBulk);
      benchmark::DoNotOptimize(out[0]);
    }
    producer.join();
  }
  report_per_item(state, kHandoffItems);
}
BENCHMARK(BM_PubSubPublishPullBulk128)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same hand-offs on one thread (no cache-line ping-pong): the floor of the queue's cost.
void BM_QueueSameThreadSingle(benchmark::State& state) {
  auto ring = make_ring();
  moodycamel::ConcurrentQueue<Message*> q;
  Message* m = nullptr;
  std::size_t i = 0;
  for (auto _ : state) {
    q.enqueue(&ring[i++ & (kRing - 1)]);
    q.try_dequeue(m);
    benchmark::DoNotOptimize(m);
  }
  report_per_item(state, 1);
}
BENCHMARK(BM_QueueSameThreadSingle);

void BM_QueueSameThreadBulk128Tokens(benchmark::State& state) {
  auto ring = make_ring();
  moodycamel::ConcurrentQueue<Message*> q;
  moodycamel::ProducerToken ptok(q);
  moodycamel::ConsumerToken ctok(q);
  Message* buf[kBulk];
  for (std::size_t k = 0; k < kBulk; ++k) buf[k] = &ring[k];
  Message* out[kBulk];
  for (auto _ : state) {
    q.enqueue_bulk(ptok, buf, kBulk);
    benchmark::DoNotOptimize(q.try_dequeue_bulk(ctok, out, kBulk));
  }
  report_per_item(state, kBulk);
}
BENCHMARK(BM_QueueSameThreadBulk128Tokens);

// ---- 2. Message creation ------------------------------------------------------------------------

// MessageFactory::fill alone, into one hot message: uuid4, "cattle-xxxx", per-message seed.
void BM_MessageFill(benchmark::State& state) {
  MessageFactory f(1);
  Message m;
  std::uint64_t seq = 0;
  const Nanos now = steady_now();
  for (auto _ : state) {
    f.fill(m, seq++, now);
    benchmark::DoNotOptimize(&m);
    benchmark::ClobberMemory();
  }
  report_per_item(state, 1);
}
BENCHMARK(BM_MessageFill);

// What the publish stage does per batch: acquire 128 from the pool, fill them, (hand off), and
// what the lease thread or settle does later: release them to the pool.
void BM_PoolAcquireFillRelease128(benchmark::State& state) {
  MessagePool pool(4096);
  MessageFactory f(1);
  Message* buf[kBulk];
  std::uint64_t seq = 0;
  for (auto _ : state) {
    pool.acquire(buf, kBulk);
    const Nanos now = steady_now();
    for (std::size_t i = 0; i < kBulk; ++i) f.fill(*buf[i], seq++, now);
    benchmark::ClobberMemory();
    pool.release(buf, kBulk);
  }
  report_per_item(state, kBulk);
}
BENCHMARK(BM_PoolAcquireFillRelease128);

// A uuid4 from std::random_device (4 x 32 bits), the obvious way to make message ids: why the
// service seeds SplitMix64 once instead (see include/mayhem/rng.hpp).
void BM_UuidRandomDevice(benchmark::State& state) {
  std::random_device rd;
  std::array<std::uint8_t, 16> id{};
  for (auto _ : state) {
    for (int k = 0; k < 4; ++k) {
      const std::uint32_t r = rd();
      std::memcpy(id.data() + 4 * k, &r, sizeof r);
    }
    id[6] = static_cast<std::uint8_t>((id[6] & 0x0F) | 0x40);
    id[8] = static_cast<std::uint8_t>((id[8] & 0x3F) | 0x80);
    benchmark::DoNotOptimize(id);
  }
  report_per_item(state, 1, "per_uuid");
}
BENCHMARK(BM_UuidRandomDevice);

// ---- 3. One message through the graph: the real Service, flat out, zero latency, logging off ----
// args: messages, batch size. Time is one whole Service::run() (construction, start, shutdown).
// ns_per_msg / msgs_per_s come from the run's summary (wall_s: first publish to last settle,
// the harness's definition), summed over the iterations.
void BM_ServiceFlatOut(benchmark::State& state) {
  Options o;
  o.messages = static_cast<std::uint64_t>(state.range(0));
  o.batch_size = static_cast<std::uint32_t>(state.range(1));
  o.publish_interval = 0;
  o.rate = 0;
  o.latency_scale = 0;
  o.log_level = "off";
  o.seed = 1;
  double wall_s = 0;
  std::uint64_t acked = 0;
  for (auto _ : state) {
    Service::Deps deps;
    deps.log = quiet_logger();
    Service svc(o, std::move(deps));
    const int rc = svc.run();
    const Summary s = svc.summary();
    if (rc != 0 || s.acked != o.messages || s.nacked != 0) {
      state.SkipWithError("service run failed or did not ack every message");
      break;
    }
    wall_s += s.wall_s;
    acked += s.acked;
  }
  if (acked != 0) {
    state.counters["ns_per_msg"] = wall_s * 1e9 / static_cast<double>(acked);
    state.counters["msgs_per_s"] = static_cast<double>(acked) / wall_s;
  }
}
BENCHMARK(BM_ServiceFlatOut)
    ->ArgNames({"messages", "batch"})
    ->ArgsProduct({{200'000}, {1, 8, 32, 128}})
    ->UseRealTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

// ---- 3b. The SQLite store: rows/s with group commit -------------------------------------------
// A real SqliteStore (WAL, synchronous=FULL) on a fresh file under the temp dir. Each iteration
// saves `messages` new messages (fresh uuids: every save inserts a row), submitted in batches of
// 128 from the benchmark thread as the save stage does, and waits until the writer has delivered
// every completion. The writer group-commits whatever is queued; `rows_per_txn` shows how much
// each commit carried. Filling the messages is inside the timed loop (~20 ns each, negligible).
void BM_SqliteGroupCommit(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::string dir = (std::filesystem::temp_directory_path() / "mayhem-micro-XXXXXX").string();
  if (!mkdtemp(dir.data())) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  {
    BatchPool batches{64};
    SqliteStore store(dir + "/bench.db", batches, SteadyClock::instance(), quiet_logger());
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t done = 0, failed = 0;
    store.start([&](Batch* b) {
      {
        std::lock_guard lock(mutex);
        done += b->size;
        for (std::uint32_t i = 0; i < b->size; ++i) failed += b->msgs[i]->save_failed;
      }
      batches.release_one(b);
      cv.notify_one();
    });
    std::vector<Message> msgs(n);
    std::vector<Message*> ptrs(n);
    for (std::size_t i = 0; i < n; ++i) ptrs[i] = &msgs[i];
    MessageFactory factory(11);
    std::uint64_t seq = 0;
    for (auto _ : state) {
      for (Message& m : msgs) factory.fill(m, seq++, 0);
      {
        std::lock_guard lock(mutex);
        done = 0;
      }
      for (std::size_t i = 0; i < n; i += kBatchCapacity)
        store.save(ptrs.data() + i, std::min<std::size_t>(kBatchCapacity, n - i));
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return done == n; });
    }
    store.close();
    const StoreStats st = store.stats();
    if (failed != 0 || st.rows_inserted != seq) state.SkipWithError("a save failed");
    state.counters["rows_per_txn"] = st.transactions ? static_cast<double>(st.rows_inserted) /
                                                           static_cast<double>(st.transactions)
                                                     : 0;
    report_per_item(state, static_cast<double>(n), "per_row");
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
BENCHMARK(BM_SqliteGroupCommit)
    ->ArgName("messages")
    ->Arg(128)
    ->Arg(4096)
    ->Arg(65536)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- 4. Lease: registration and the extension tick (ManualClock, logger off) -------------------
// The set-up follows tests/test_lease.cpp: a lot as consume makes it (first extension done,
// deadline set), 128 messages each.

constexpr std::uint32_t kLotSize = kBatchCapacity;

struct LeaseBench {
  ManualClock clock{100 * kSec};
  Metrics metrics;
  MessagePool messages{4096};
  LotPool lots{256};
  MessageFactory factory{9};
  std::uint64_t seq = 0;
  // As the service wires it: the hook is the pub/sub's extend (a no-op for the in-process one).
  InProcessPubSub pubsub{1024};
  LeaseManager lease{LeaseManager::Config{2 * kSec, 3 * kSec, 5'000'000},
                     clock,
                     quiet_logger(),
                     metrics,
                     lots,
                     [this](Message* const* m, std::size_t n) { pubsub.extend(m, n); }};
  std::vector<Lot*> held;

  // A fresh lot of kLotSize filled messages.
  Lot* make_lot() {
    Lot* lot = lots.acquire_one();
    messages.acquire(lot->batch.msgs, kLotSize);
    for (std::uint32_t i = 0; i < kLotSize; ++i) factory.fill(*lot->batch.msgs[i], seq++, 0);
    arm(lot);
    return lot;
  }
  // What consume does to a pulled lot (messages already filled).
  void arm(Lot* lot) {
    lot->batch.size = kLotSize;
    lot->batch.owner = lot;
    lot->batch.cancelled = false;
    lot->refs.store(kLotSize + 2, std::memory_order_relaxed);
    const Nanos deadline = clock.now() + 3 * kSec;
    for (std::uint32_t i = 0; i < kLotSize; ++i) {
      Message* m = lot->batch.msgs[i];
      lot->attach(*m, i);
      m->extended_cnt = 1;
      m->deadline_ns = deadline;
    }
  }
  ~LeaseBench() {
    for (Lot* lot : held) lease.release_lot(lot);
    lease.stop();  // the last tick recycles them (the messages stay out of the pool until its end)
  }
};

// Per lot: register_lot (consume's side, lock-free enqueue) + the tick that takes it (dequeue in
// bulk, CAS kUnseen -> kTracked, link into the due FIFO); neither reads the lot's messages.
// Between iterations, untimed: the lots are released and freed by a tick and the same number are
// acquired again (a release recycles the Lot object alone: settle gives messages back) and each
// re-acquired lot gets back a fixed set of 128 messages, which never leave the benchmark.
void BM_LeaseRegisterTick(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  LeaseBench b;
  std::vector<Message*> msgs(n * kLotSize);
  for (std::size_t i = 0; i < n; ++i) {
    b.held.push_back(b.make_lot());
    std::memcpy(&msgs[i * kLotSize], b.held[i]->batch.msgs, kLotSize * sizeof(Message*));
  }
  for (auto _ : state) {
    for (Lot* lot : b.held) b.lease.register_lot(lot);
    b.lease.tick();
    state.PauseTiming();
    if (b.lease.tracked_lots() != n) state.SkipWithError("lots not tracked");
    for (Lot* lot : b.held) {
      lot->batch.size = 0;
      b.lease.release_lot(lot);
    }
    b.lease.tick();
    for (std::size_t i = 0; i < n; ++i) {
      Lot* lot = b.lots.acquire_one();
      std::memcpy(lot->batch.msgs, &msgs[i * kLotSize], kLotSize * sizeof(Message*));
      lot->batch.size = kLotSize;
      lot->batch.owner = lot;
      lot->refs.store(kLotSize + 2, std::memory_order_relaxed);
      b.held[i] = lot;
    }
    state.ResumeTiming();
  }
  // Track the last set again, so that ~LeaseBench releases and frees them the normal way.
  for (Lot* lot : b.held) b.lease.register_lot(lot);
  b.lease.tick();
  report_per_item(state, static_cast<double>(n), "per_lot");
}
BENCHMARK(BM_LeaseRegisterTick)->ArgName("lots")->Arg(256)->Arg(4096);

// Per message: the extension tick over N tracked lots, all due (the clock moves one
// extend_interval per iteration): CAS kActive -> kExtending, new deadline, the bulk hook per lot,
// back to kActive, one metrics add and one should_log per lot; each lot moves to the FIFO's back.
void BM_LeaseExtendTick(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  LeaseBench b;
  for (std::size_t i = 0; i < n; ++i) {
    b.held.push_back(b.make_lot());
    b.lease.register_lot(b.held.back());
  }
  b.lease.tick();
  const std::uint64_t before = b.metrics.extensions.get();
  for (auto _ : state) {
    b.clock.advance(2 * kSec);
    b.lease.tick();
  }
  const std::uint64_t expected = static_cast<std::uint64_t>(state.iterations()) * n * kLotSize;
  if (b.metrics.extensions.get() - before != expected) state.SkipWithError("missed extensions");
  report_per_item(state, static_cast<double>(n * kLotSize));
}
BENCHMARK(BM_LeaseExtendTick)->ArgName("lots")->Arg(16)->Arg(256)->Arg(4096);

// ---- 5. One log call: "Pulled {}" with a Message (its fmt formatter), as consume logs it
// --------- The logger comes from make_logger with a file under /tmp (truncated per run, removed
// after). Threads: every thread logs through the same logger; with 2 threads the time per call is
// the wall time divided by the calls of both threads (so perfect scaling would halve it).

struct LogState {
  std::shared_ptr<spdlog::logger> log;
  std::string path;
  Message msg;
};
LogState g_log;

void log_setup(LogMode mode, const char* level, std::uint32_t buffer = Options{}.log_buffer) {
  Options o;
  o.log_buffer = buffer;
  o.log_level = level;
  o.log_mode = mode;
  g_log.path = "/tmp/mayhem_micro_" + std::to_string(::getpid()) + "_" + to_string(mode) + ".log";
  o.log_file = g_log.path;
  g_log.log = make_logger(o);
  MessageFactory(7).fill(g_log.msg, 0, 0);
}
void log_teardown(const benchmark::State&) {
  g_log.log->flush();
  g_log.log.reset();  // async: drains the queue and joins the worker
  std::remove(g_log.path.c_str());
}
void setup_sync_info(const benchmark::State&) {
  log_setup(LogMode::kSync, "info");
}
// --log-buffer 0: spdlog's basic_file_sink_mt, one shared buffer locked per line.
void setup_sync_shared_info(const benchmark::State&) {
  log_setup(LogMode::kSync, "info", 0);
}
void setup_async_info(const benchmark::State&) {
  log_setup(LogMode::kAsync, "info");
}
void setup_sync_off(const benchmark::State&) {
  log_setup(LogMode::kSync, "off");
}

void BM_LogCall(benchmark::State& state) {
  spdlog::logger& log = *g_log.log;
  const Message& m = g_log.msg;
  for (auto _ : state) log.info("Pulled {}", m);
  report_per_item(state, 1, "per_call");
}
BENCHMARK(BM_LogCall)
    ->Name("BM_LogCall/sync")
    ->Setup(setup_sync_info)
    ->Teardown(log_teardown)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_LogCall)
    ->Name("BM_LogCall/sync-shared")
    ->Setup(setup_sync_shared_info)
    ->Teardown(log_teardown)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_LogCall)
    ->Name("BM_LogCall/async")
    ->Setup(setup_async_info)
    ->Teardown(log_teardown)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
// Level off: spdlog's own level check inside info(), arguments never formatted.
BENCHMARK(BM_LogCall)
    ->Name("BM_LogCall/off")
    ->Setup(setup_sync_off)
    ->Teardown(log_teardown)
    ->Threads(1)
    ->UseRealTime();

// Level off, guarded the way the pipeline does it: `if (log->should_log(info))`.
void BM_LogGuardedOff(benchmark::State& state) {
  spdlog::logger& log = *g_log.log;
  const Message& m = g_log.msg;
  for (auto _ : state) {
    if (log.should_log(spdlog::level::info)) log.info("Pulled {}", m);
    benchmark::ClobberMemory();
  }
  report_per_item(state, 1, "per_call");
}
BENCHMARK(BM_LogGuardedOff)->Setup(setup_sync_off)->Teardown(log_teardown)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
