#include "mayhem/service.hpp"

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "mayhem/io/io_service.hpp"
#include "mayhem/io/simulated_io.hpp"
#include "mayhem/lease/lease_manager.hpp"
#include "mayhem/logging.hpp"
#include "mayhem/notify.hpp"
#include "mayhem/observe/capture.hpp"
#include "mayhem/observe/live_observer.hpp"
#include "mayhem/observe/process_stats.hpp"
#include "mayhem/observe/stage_collector.hpp"
#include "mayhem/observe/stats_server.hpp"
#include "mayhem/pipeline/pipeline.hpp"
#include "mayhem/shutdown.hpp"
#include "mayhem/source/nats.hpp"
#include "mayhem/source/pacer.hpp"
#include "mayhem/source/pubsub.hpp"
#include "mayhem/store/store.hpp"
#include "mayhem/thread_name.hpp"

namespace mayhem {

struct Service::Impl {
  Options opts;
  Deps deps;
  std::shared_ptr<spdlog::logger> log;
  // Deps::clock (a test's ManualClock) or the steady clock for every timed part below (the
  // blocking I/O model alone really blocks, in real time).
  const Clock& clock = deps.clock ? *deps.clock : SteadyClock::instance();
  // Watching (--stats-addr, --live): the collector, forwarding to any observer from Deps and to an
  // on-demand capture's profiler while one runs (LiveObserver); outlives the lease, pipeline.
  std::unique_ptr<StageCollector> collector;
  std::unique_ptr<LiveObserver> live;
  std::unique_ptr<ProfileCapture> capture;  // --stats-addr: GET /profile, GET /trace
  Observer* observer = nullptr;
  std::optional<StatsAddress> stats_addr;
  std::atomic<bool> stats_ready{false};  // run() has built everything a snapshot reads
  Metrics metrics;
  MessagePool messages{4096};
  LotPool lots{256};
  BatchPool batches{256};
  InProcessPubSub pubsub;
  std::unique_ptr<NatsSource> nats;  // --source nats://...: the broker replaces the pub/sub
  ShutdownManager shutdown;
  std::unique_ptr<tbb::global_control> parallelism;
  std::unique_ptr<tbb::task_arena> arena;
  std::unique_ptr<IoService> io;
  std::unique_ptr<SimulatedIo> sim;  // the simulated I/O draws, over `io`
  std::unique_ptr<Store> store;      // --store: memory (the null store), sqlite or postgres
  std::unique_ptr<LeaseManager> lease;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<Pacer> pacer;
  Notifier notifier{Notifier::from_environment()};  // systemd's READY/STOPPING/WATCHDOG; or none

  std::mutex started_mutex;
  std::condition_variable started_cv;
  bool started = false;

  Nanos start_ns = 0, end_ns = 0;
  std::atomic<Nanos> stopped_ns{0};  // end_ns for the stats thread: uptime stops with the run
  double cpu_start = 0, cpu_end = 0;
  int exit_code = 0;

  Impl(Options o, Deps d)
      : opts(std::move(o)),
        deps(std::move(d)),
        log(deps.log ? deps.log : make_logger(opts)),
        pubsub(opts.queue_capacity),
        shutdown(log) {
    pubsub.set_audit(deps.audit);
    std::string err;
    auto spec = parse_store_spec(opts.store, err);
    if (!spec) throw std::invalid_argument(err);
    spec->retry_for = seconds_to_nanos(opts.store_retry_for);
    spec->group_commit = opts.store_group_commit;
    observer = deps.observer;
    if (!opts.stats_addr.empty() || opts.live) {
      collector = std::make_unique<StageCollector>(clock);
      live = std::make_unique<LiveObserver>(*collector, deps.observer);
      observer = collector.get();  // it hands the hooks on to `live` while that wants them
      if (!opts.stats_addr.empty()) capture = std::make_unique<ProfileCapture>(*live, clock, log);
    }
    // The I/O models start their threads in start() (run()); the memory store needs them now.
    const Nanos max_delay = SimulatedIo::max_delay(opts);
    io = opts.io_model == IoModel::kAsync ? make_async_io(batches, clock, max_delay)
                                          : make_blocking_io(batches, opts.io_threads);
    sim = std::make_unique<SimulatedIo>(opts, *io, batches, observer);
    store = open_store(*spec, batches, clock, log, *sim);  // a database we cannot use fails here
  }
  StatsSnapshot stats_snapshot() const;
  void gather(Numbers& n) const;

  bool abandoned = false;  // shutdown timed out: a stage never returned, the graph is left running
  std::unique_ptr<StatsServer> stats_server;  // last: stops before what its snapshots read dies

  int run();
  // Where messages come from: the broker when --source names one, else the in-process pub/sub.
  Source& source() { return nats ? static_cast<Source&>(*nats) : pubsub; }
  bool start_broker();
  // Wakes those waiting for the run to have started (or to have failed to).
  void mark_started() {
    {
      std::lock_guard lock(started_mutex);
      started = true;
    }
    started_cv.notify_all();
  }
  void shut_down(StopReason why);
  // Waits until the graph is idle; false once `clock` reaches `give_up_at` (the waiter is then left
  // behind). Absolute: a relative deadline read the clock twice, and a clock moved in between
  // pushed it past the shutdown's.
  bool wait_idle_until(Nanos give_up_at);
};

bool Service::Impl::wait_idle_until(Nanos give_up_at) {
  struct Waiter {
    std::mutex mutex;
    std::condition_variable cv;
    bool idle = false;
  };
  auto w = std::make_shared<Waiter>();
  std::thread([w, p = pipeline.get()] {
    name_this_thread("mayhem-drain");
    p->wait_idle();
    {
      std::lock_guard lock(w->mutex);
      w->idle = true;
    }
    w->cv.notify_all();
  }).detach();
  // The deadline is on the service's clock, waited for in real slices of at most 10 ms: on a test's
  // ManualClock the drain gives up only once the test moves the clock past it, never by itself.
  std::unique_lock lock(w->mutex);
  while (!w->idle) {
    const Nanos left = give_up_at - clock.now();
    if (left <= 0) return false;
    w->cv.wait_for(lock, std::chrono::nanoseconds(std::min<Nanos>(left, 10'000'000)));
  }
  return true;
}

bool Service::Impl::start_broker() {
  NatsSource::Config c;
  c.url = opts.source;
  c.stream = opts.stream;
  c.subject = opts.subject;
  c.durable = opts.durable;
  c.ack_wait = seconds_to_nanos(opts.ack_deadline);
  c.max_ack_pending = static_cast<std::int64_t>(opts.max_in_flight);
  // Prefetch no more than consume may take, so N processes on one durable share the work.
  c.max_queued = std::min<std::uint64_t>(NatsSource::kMaxPrefetch, opts.max_in_flight);
  c.fetch_batch =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(NatsSource::kFetchBatch, c.max_queued));
  c.limit = opts.messages;
  c.extend_interval = seconds_to_nanos(opts.extend_interval);
  c.stream_replicas = static_cast<int>(opts.stream_replicas);
  c.nats_wait = seconds_to_nanos(opts.nats_wait);
  c.give_up = [this] { return shutdown.stopping(); };
  try {
    nats = std::make_unique<NatsSource>(c, messages, clock, log, metrics);
  } catch (const std::exception& e) {
    // Nothing was consumed: a start-up error (2), as bad flags; a signal meanwhile ends it (0).
    const bool stopping = shutdown.stopping();
    log->log(stopping ? spdlog::level::warn : spdlog::level::err, "NATS source: {}", e.what());
    exit_code = stopping ? 0 : 2;
    log->flush();
    mark_started();
    return false;
  }
  log->info("Consuming from {} stream {} subject {} durable {} (on-failure {})", opts.source,
            opts.stream, opts.subject, opts.durable, to_string(opts.on_failure));
  // A lease runs from delivery to settle, extended every --extend-interval, so ack_deadline -
  // extend_interval must absorb a late lease pass, a fetch in progress (the fetcher extends
  // prefetched messages between fetches, which wait at most 200 ms) and the ack's trip to the
  // server. Safe: at least 0.5 s and at least 20% of the deadline.
  const double margin = opts.ack_deadline - opts.extend_interval;
  if (margin < 0.5 || margin < 0.2 * opts.ack_deadline)
    log->warn(
        "--ack-deadline {:g} s (the consumer's AckWait) leaves {:g} s after each --extend-interval "
        "({:g} s), less than the safe margin (0.5 s and 20% of the deadline): messages may be "
        "redelivered while still in flight",
        opts.ack_deadline, margin, opts.extend_interval);
  return true;
}

int Service::Impl::run() {
  if (deps.handle_signals) {
    ShutdownManager::block_signals();  // before any thread exists, so every thread inherits it
    shutdown.start_signal_thread();
  }
  if (stats_addr) {
    stats_server = std::make_unique<StatsServer>(
        *stats_addr, [this] { return stats_snapshot(); }, log);
    stats_server->set_zones_hook(  // /stats?zones=STAGE: mayhem top's drill-down
        [c = collector.get()](const std::string& z) { return c->watch_zones(z); });
    stats_server->set_capture(capture.get());
    if (auto err = stats_server->start()) {
      log->error("Stats endpoint: {}", *err);
      return exit_code = 2;
    }
  }
  // The broker source connects now: after the signal mask is set (nats.c starts threads).
  if (!opts.source.empty() && !start_broker()) return exit_code;
  Source& source = this->source();
  if (opts.seed == 0) opts.seed = std::random_device{}() | 1ULL;
  const std::uint32_t threads = opts.threads;
  parallelism = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                      threads + 1);
  arena = std::make_unique<tbb::task_arena>(static_cast<int>(threads), 0);

  LeaseManager::Config lease_cfg{
      seconds_to_nanos(opts.extend_interval), seconds_to_nanos(opts.ack_deadline),
      std::min<Nanos>(seconds_to_nanos(opts.extend_interval), 5'000'000)};
  lease = std::make_unique<LeaseManager>(
      lease_cfg, clock, log, metrics, lots,
      [src = &source](Message* const* m, std::size_t n) { src->extend(m, n); }, observer);
  lease->set_fault_hook(deps.timer_fault);
  lease->set_fatal_handler([this](std::exception_ptr e) { shutdown.fatal(std::move(e)); });
  arena->execute([&] {
    pipeline = std::make_unique<Pipeline>(Pipeline::Deps{
        opts, clock, log, metrics, opts.seed, Pipeline::Pools{messages, lots, batches},
        Pipeline::Ports{source, *sim, *store, *lease},
        Pipeline::Control{shutdown, observer, deps.fault}});
  });
  io->start([p = pipeline.get()](Op op, Batch* b) { p->io_complete(op, b); });
  store->start([p = pipeline.get()](Batch* b) { p->io_complete(Op::kSave, b); },
               [p = pipeline.get()](Batch* b) { p->acks_recorded(b); });
  lease->start();

  log->info(
      "Starting Mayhem: messages={} io-model={} threads={} io-threads={} latency-scale={:g} "
      "fail-rate={:g} max-in-flight={} seed={}",
      opts.messages, to_string(opts.io_model), threads, opts.io_threads, opts.latency_scale,
      opts.fail_rate, opts.max_in_flight, opts.seed);
  start_ns = clock.now();
  cpu_start = rusage_cpu_seconds();
  if (nats) {
    nats->start([p = pipeline.get()] { p->notify_source(); },  // no publish stage
                [this] { return shutdown.stopping(); });
  } else if (opts.rate == 0 && opts.publish_interval == 0) {
    pipeline->start_flat_out();
  } else {
    pacer = std::make_unique<Pacer>(opts, clock,
                                    [p = pipeline.get()](std::uint64_t n) { p->order_publish(n); });
    pacer->start();
  }
  mark_started();
  stats_ready.store(true, std::memory_order_release);
  notifier.ready([this] { return metrics.settled(); }, [this] { return metrics.in_flight.load(); });

  // Wait for a stop reason; each second flush the log (`tail -f`) and time a slice of bodies.
  StopReason why;
  while ((why = shutdown.wait_for(std::chrono::seconds(1))) == StopReason::kNone) {
    log->flush();
    if (collector) collector->time_slice();
  }
  shut_down(why);
  cpu_end = rusage_cpu_seconds();
  exit_code = shutdown.fatal_message() || abandoned ? 1 : 0;
  log->info("Successfully shutdown the Mayhem service.");
  log->flush();
  // The stats endpoint keeps serving the run's final numbers until the Service is destroyed.
  return exit_code;
}

// The reference's shutdown(): stop intake, nack outstanding messages, cancel work in flight,
// flush metrics. Every message ends acked or nacked.
void Service::Impl::shut_down(StopReason why) {
  // --shutdown-timeout bounds the whole shutdown, from here: stopping intake (the NATS fetcher's
  // join waits out its current fetch, up to 200 ms), the drain, the store, the lease thread and
  // the broker's last flush each get what is left of it (a healthy thread at least 50 ms).
  const Nanos give_up_at = clock.now() + seconds_to_nanos(opts.shutdown_timeout);
  notifier.stopping();
  if (why == StopReason::kSignal) {
    log->info("Received exit signal {}...", signal_name(shutdown.signal_number()));
  } else if (why == StopReason::kCompleted) {
    log->info("All {} messages settled", opts.messages);
  }
  if (pacer) pacer->stop();         // publish and consume also check the stop flag
  if (nats) nats->stop_fetching();  // what it fetched is nacked below with the backlog
  log->info("Closing database connections");
  log->info("Nacking outstanding messages");
  log->info("Cancelling outstanding tasks");
  log->flush();  // what follows may wait (up to --shutdown-timeout): show how far we got
  // The deadline for a step that must get at least `at_least` from now (a healthy thread: 50 ms).
  constexpr Nanos kHealthy = 50'000'000;
  const auto until = [&](Nanos at_least) { return std::max(give_up_at, clock.now() + at_least); };
  io->cancel_all();  // pending I/O completes now as cancelled; its messages get nacked
  // Saves not yet written complete as cancelled too; a commit being written gets until the
  // deadline (a database locked by another process gives up at once).
  if (!store->cancel_saves(give_up_at))
    log->error("Shutdown: the database transaction being written did not finish within {:g} s",
               opts.shutdown_timeout);
  if (!wait_idle_until(until(0))) {
    // A stage is stuck or slow. Seal settle: it counts nothing more, and every message not settled
    // yet is counted nacked once, below (redelivered by the pub/sub, or by a broker's AckWait).
    pipeline->seal_settle();
    log->error("Shutdown timed out after {:g} s: {} messages still in a stage; nacking them",
               opts.shutdown_timeout, metrics.in_flight.load());
    abandoned = true;
  }
  end_ns = clock.now();  // every message is settled now (acks during the drain included)
  stopped_ns.store(end_ns, std::memory_order_release);
  // Writes the last settlements; a writer that cannot finish by the deadline is left behind.
  if (!store->close(until(kHealthy))) {
    log->error("Shutdown timed out after {:g} s: the database writer did not stop; leaving it",
               opts.shutdown_timeout);
    abandoned = true;
  }
  const std::uint64_t backlog = pipeline->nack_backlog();  // published but never pulled
  // Frees the last lots; a lease thread stuck in a pass (--inject timer:hang) is left behind.
  if (!lease->stop_within(until(kHealthy) - clock.now())) {
    log->error("Shutdown timed out after {:g} s: the lease thread did not stop; leaving it",
               opts.shutdown_timeout);
    abandoned = true;
  } else if (lease->tracked_lots() != 0) {
    log->error("{} lots were still leased at shutdown", lease->tracked_lots());
  }
  if (pipeline->settle_sealed()) {
    // Everything published and not counted by settle before the seal (in a stage, pulled by a
    // consume task still running, or left in the source) is nacked, exactly once.
    const std::uint64_t published = metrics.published.get(), settled = metrics.settled();
    const std::uint64_t unsettled = published > settled ? published - settled : 0;
    metrics.nacked.add(unsettled);
    source().unsettled_at_timeout(unsettled);
  }
  if (nats) {
    // Every ack and nack goes to the server first (a flush within what is left of the timeout):
    // only confirmed acks count. A graph left running still uses the connection: flush, not close.
    const Nanos flush_until = until(kHealthy);
    if (abandoned)
      nats->confirm_acks(flush_until);
    else
      nats->close(flush_until);
  }
  log->info("Flushing metrics");
  Numbers n;  // the numbers the summary reports, from the one table
  gather(n);
  const bool broker = n.scope == NumberScope::kBroker;
  const std::uint64_t intake = broker ? n.received : n.published;
  const char* in_word = broker ? "received" : "published";
  if (intake != n.acked + n.nacked + n.ack_unconfirmed) {
    log->error("Accounting mismatch: {} {} != acked {} + nacked {}{}", in_word, intake, n.acked,
               n.nacked, broker ? fmt::format(" + ack_unconfirmed {}", n.ack_unconfirmed) : "");
  }
  log->info("{} {}, acked {}, nacked {} ({} never pulled); peak in flight {}",
            broker ? "Received" : "Published", intake, n.acked, n.nacked, backlog,
            n.peak_in_flight);
  if (broker) {
    log->info("NATS: malformed {} (terminated), redelivered {}", n.malformed, n.redelivered);
    if (n.ack_unconfirmed != 0)
      log->warn(
          "NATS: {} acks were sent but the server never confirmed them (ack_unconfirmed); it "
          "redelivers those it did not get",
          n.ack_unconfirmed);
  }
}

Service::Service(Options opts, Deps deps) {
  if (auto err = validate(opts)) throw std::invalid_argument(*err);
  std::optional<StatsAddress> stats_addr;
  if (!opts.stats_addr.empty()) {
    std::string err;
    if (!(stats_addr = parse_stats_address(opts.stats_addr, err))) throw std::invalid_argument(err);
  }
  impl_ = std::make_unique<Impl>(std::move(opts), std::move(deps));
  impl_->stats_addr = stats_addr;
}

// Every number of the table (mayhem/observe/numbers.hpp), once: the summary and the stats
// endpoint both read them here. The pipeline's counters first, then what their owners know.
void Service::Impl::gather(Numbers& n) const {
  read_metrics(metrics, n);
  const bool running = stats_ready.load(std::memory_order_acquire);
  const Source& source = nats ? static_cast<const Source&>(*nats) : pubsub;
  source.report(n);
  if (running) n.leased_lots = lease->tracked_lots();
  if (store) {
    const StoreStats st = store->stats();
    n.store_rows = st.rows_inserted;
    n.store_duplicates = st.duplicates;
    n.store_write_failures = st.write_failures;
    n.store_transactions = st.transactions;
  }
  const auto q = log_queue_stats(log);
  n.log_dropped = q.overruns;
  n.log_queue_depth = q.depth;
  n.max_in_flight = opts.max_in_flight;
  n.pool_messages = messages.capacity();
}

StatsSnapshot Service::Impl::stats_snapshot() const {
  StatsSnapshot s;
  gather(s);
  s.threads = opts.threads;
  s.log_async = log_queue_stats(log).async;
  s.latency = HistogramData::of(metrics.latency_merged());
  if (!stats_ready.load(std::memory_order_acquire)) return s;
  const Nanos stopped = stopped_ns.load(std::memory_order_acquire);
  s.uptime_ns = std::max<Nanos>((stopped ? stopped : clock.now()) - start_ns, 0);
  if (collector) add_stage_rows(s, *collector, {opts.save_concurrency, opts.restart_concurrency});
  return s;
}

StatsSnapshot Service::stats_snapshot() const {
  return impl_->stats_snapshot();
}

bool Service::watch_zones(const std::string& stages) {
  return impl_->collector && impl_->collector->watch_zones(stages);
}

std::uint16_t Service::stats_port() const {
  return impl_->stats_server ? impl_->stats_server->port() : 0;
}

Service::Service(Options opts) : Service(std::move(opts), Deps{}) {}

namespace {
// Services left behind by a timed-out shutdown: kept reachable on purpose (never freed), so a
// leak checker does not report what was deliberately left to the threads still using it.
std::mutex g_abandoned_mutex;
std::vector<void*>* g_abandoned = new std::vector<void*>;
}  // namespace

Service::~Service() {
  // After a timed-out shutdown a stage still runs inside the graph and uses this state: leave it
  // (the process is about to exit) rather than block forever in the graph's destructor.
  if (impl_ && impl_->abandoned) {
    impl_->parallelism.reset();  // its limit on TBB's workers must not outlive the run
    std::lock_guard lock(g_abandoned_mutex);
    g_abandoned->push_back(impl_.release());
  }
}

bool Service::abandoned() const {
  return impl_->abandoned;
}

int Service::run() {
  try {
    return impl_->run();
  } catch (...) {
    // E.g. a thread that could not be created (std::system_error). Whatever was started is in an
    // unknown state: leave it (like a timed-out shutdown) and let the caller report and exit.
    impl_->abandoned = true;
    impl_->exit_code = 1;
    throw;
  }
}

void Service::request_stop(int signo) {
  impl_->shutdown.request(StopReason::kSignal, signo);
}

void Service::wait_started() {
  std::unique_lock lock(impl_->started_mutex);
  impl_->started_cv.wait(lock, [&] { return impl_->started; });
}

Summary Service::summary() const {
  const Impl& i = *impl_;
  Summary s;
  i.gather(s);
  s.log_overflow = to_string(i.opts.log_overflow);
  s.wall_s = nanos_to_seconds(i.end_ns - i.start_ns);
  s.msgs_per_s = s.wall_s > 0 ? static_cast<double>(s.acked) / s.wall_s : 0;
  s.cpu_s = i.cpu_end - i.cpu_start;
  const Histogram h = i.metrics.latency_merged();
  s.latency_p50_ms = static_cast<double>(h.percentile(0.50)) / 1e6;
  s.latency_p99_ms = static_cast<double>(h.percentile(0.99)) / 1e6;
  s.latency_max_ms = static_cast<double>(h.max()) / 1e6;
  s.max_rss_kb = rusage_max_rss_kb();
  s.exit_code = i.exit_code;
  s.io_model = to_string(i.opts.io_model);
  s.threads = i.opts.threads;
  if (i.store) s.store = i.store->kind();
  return s;
}

const Metrics& Service::metrics() const {
  return impl_->metrics;
}
const InProcessPubSub& Service::pubsub() const {
  return impl_->pubsub;
}
const Options& Service::options() const {
  return impl_->opts;
}

}  // namespace mayhem
