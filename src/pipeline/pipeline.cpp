#include "mayhem/pipeline/pipeline.hpp"

#include "mayhem/faults.hpp"
#include "mayhem/observe/zone.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

namespace mayhem {

namespace {
std::size_t concurrency(std::uint32_t n) {
  if (n == 0) return tbb::flow::unlimited;
  return static_cast<std::size_t>(n);
}
}  // namespace

Pipeline::Pipeline(Deps d)
    : opts_(d.opts),
      clock_(d.clock),
      log_(std::move(d.log)),
      metrics_(d.metrics),
      messages_(d.messages),
      lots_(d.lots),
      batches_(d.batches),
      source_(d.source),
      io_(d.io),
      lease_(d.lease),
      shutdown_(d.shutdown),
      observer_(d.observer),
      fault_(std::move(d.fault)),
      store_(d.store),
      batch_(std::clamp<std::uint32_t>(d.opts.batch_size, 1, kBatchCapacity)),
      ack_deadline_(seconds_to_nanos(d.opts.ack_deadline)),
      deadline_text_(fmt::format("{:g}", d.opts.ack_deadline)),
      publishable_(d.source.publishable()),
      flat_out_(publishable_ && d.opts.rate == 0 && d.opts.publish_interval == 0),
      factory_(d.seed),
      publish_(
          graph_, tbb::flow::serial,
          [this](std::uint32_t n, PublishNode::output_ports_type& out) { publish_body(n, out); }),
      consume_(graph_, tbb::flow::serial,
               [this](continue_msg, ConsumeNode::output_ports_type& out) { consume_body(out); }),
      save_(graph_, concurrency(d.opts.save_concurrency),
            [this](Batch* b, IoNode::gateway_type& gw) { submit_body(Op::kSave, b, gw); }),
      saved_(graph_, tbb::flow::unlimited,
             [this](Batch* b, SavedNode::output_ports_type& out) { saved_body(b, out); }),
      restart_(graph_, concurrency(d.opts.restart_concurrency),
               [this](Batch* b, IoNode::gateway_type& gw) { submit_body(Op::kRestart, b, gw); }),
      restarted_(
          graph_, tbb::flow::unlimited,
          [this](Batch* b, RestartedNode::output_ports_type& out) { restarted_body(b, out); }),
      cleanup_(graph_, tbb::flow::unlimited,
               [this](Batch* b, IoNode::gateway_type& gw) { submit_body(Op::kCleanup, b, gw); }),
      settle_(graph_, tbb::flow::unlimited,
              [this](Batch* b, SettleNode::output_ports_type& out) { settle_body(b, out); }) {
  using tbb::flow::make_edge;
  using tbb::flow::output_port;
  make_edge(output_port<0>(publish_), consume_);
  make_edge(output_port<0>(consume_), save_);
  make_edge(save_, saved_);
  make_edge(restart_, restarted_);
  make_edge(output_port<0>(saved_), cleanup_);
  make_edge(output_port<0>(restarted_), cleanup_);
  make_edge(output_port<1>(restarted_), restart_);  // retries
  make_edge(cleanup_, settle_);
  make_edge(output_port<0>(settle_), consume_);  // freed permits wake a parked consume
}

Pipeline::~Pipeline() {
  graph_.wait_for_all();
}

void Pipeline::start_flat_out() {
  if (flat_out_) publish_.try_put(0);
}

// ---- helpers -------------------------------------------------------------------------------

Batch* Pipeline::new_batch() {
  return acquire_batch(batches_);
}

void Pipeline::unref_lot(Lot* lot, std::uint32_t n) {
  if (lot->refs.fetch_sub(n, std::memory_order_acq_rel) == n) lease_.release_lot(lot);
}

void Pipeline::done_with(Batch* b) {
  if (b->owner)
    unref_lot(b->owner, 1);
  else
    batches_.release_one(b);
}

std::uint64_t Pipeline::permits() const {
  const std::uint64_t used = metrics_.in_flight.load();
  return used >= opts_.max_in_flight ? 0 : opts_.max_in_flight - used;
}

void Pipeline::schedule_consume() {
  if (!consume_scheduled_.exchange(true)) consume_.try_put(continue_msg());
}

void Pipeline::wake_publish_if_parked() {
  if (publish_parked_.load() && publish_parked_.exchange(false)) publish_.try_put(0);
}

void Pipeline::io_complete(Op op, Batch* batch) {
  switch (op) {
    case Op::kSave:
      save_.gateway().try_put(batch);
      break;
    case Op::kRestart:
      restart_.gateway().try_put(batch);
      break;
    case Op::kCleanup:
      cleanup_.gateway().try_put(batch);
      break;
    default:  // not an I/O operation
      break;
  }
}

// ---- publish: the reference's publish(), into a publishable source (the in-process pub/sub) ---

namespace {
std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}
}  // namespace

void Pipeline::order_publish(std::uint64_t n) {
  // Every order waiting in the node is a TBB message: at --rate 1e10 one per batch piled up by
  // GBs. The pacer adds to a count instead, and posts an order only when none is queued; publish
  // clears the flag, then takes the count, so an order added after that posts again.
  std::uint64_t had = publish_ordered_.load();
  while (!publish_ordered_.compare_exchange_weak(had, saturating_add(had, n))) {
  }
  if (!publish_order_queued_.exchange(true)) publish_.try_put(0);
}

void Pipeline::publish_body(std::uint32_t n, PublishNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kPublish, n);
  if (!publishable_ || shutdown_.stopping()) return;
  const std::uint64_t target = opts_.messages;
  std::uint64_t want = batch_;
  if (!flat_out_) {
    publish_order_queued_.exchange(false);  // RMW: reads the pacer's exchange, sees its add
    const std::uint64_t ordered = publish_ordered_.exchange(0);
    want = saturating_add(publish_debt_, saturating_add(n, ordered));
  }
  if (target != 0) want = std::min(want, target - publish_seq_);
  const std::uint64_t make = std::min(want, source_.free_capacity());
  scope.set_items(static_cast<std::uint32_t>(std::min<std::uint64_t>(make, UINT32_MAX)));
  if (!flat_out_) publish_debt_ = want - make;

  const bool debug = log_->should_log(spdlog::level::debug);
  Message* buf[kBatchCapacity];
  const Nanos now = clock_.now();
  for (std::uint64_t left = make; left > 0;) {
    const auto k = static_cast<std::uint32_t>(std::min<std::uint64_t>(left, batch_));
    messages_.acquire(buf, k);
    for (std::uint32_t i = 0; i < std::min(k, kPrefetchAhead); ++i) prefetch_all(buf[i]);
    for (std::uint32_t i = 0; i < k; ++i) {
      if (i + kPrefetchAhead < k) prefetch_all(buf[i + kPrefetchAhead]);
      factory_.fill(*buf[i], publish_seq_++, now);
      if (debug) log_->debug("Published message {}", *buf[i]);
    }
    // Inside the counting gate, as settle's counts: once a timed-out shutdown sealed it (and
    // counted every published message not yet settled), nothing more is published or counted.
    if ((settle_gate_.fetch_add(1) & kSealed) != 0) {
      settle_gate_.fetch_sub(1);
      messages_.release(buf, k);
      return;
    }
    source_.publish(buf, k);
    metrics_.published.add(k);
    settle_gate_.fetch_sub(1);
    left -= k;
    if (!consume_scheduled_.exchange(true)) std::get<0>(out).try_put(continue_msg());
  }

  const bool more = flat_out_ ? (target == 0 || publish_seq_ < target) : publish_debt_ > 0;
  if (!more) return;
  if (source_.free_capacity() > 0) {
    publish_.try_put(0);  // flat out: order the next batch ourselves
  } else {
    // Full pub/sub: park; consume wakes us after pulling. Re-check to close the race with it.
    publish_parked_.store(true);
    if (source_.free_capacity() > 0 && publish_parked_.exchange(false)) publish_.try_put(0);
  }
}

// ---- consume: the reference's consume() --------------------------------------------------------

void Pipeline::consume_body(ConsumeNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kConsume, 0);
  // exchange (acquire), not store: it reads the publisher's exchange(true), so every message
  // enqueued before that trigger is visible to the pull below.
  consume_scheduled_.exchange(false);
  for (int round = 0; round < 16; ++round) {
    if (shutdown_.stopping()) return;
    std::uint64_t avail = permits();
    if (avail == 0) {
      // Flow control: at --max-in-flight. Park until settle frees permits (re-check to close the
      // race with settle, which clears the flag after releasing permits).
      consume_parked_.store(true);
      if (permits() == 0 || !consume_parked_.exchange(false)) return;
      continue;
    }
    Lot* lot = lots_.acquire_one();
    const auto want = static_cast<std::uint32_t>(std::min<std::uint64_t>(avail, batch_));
    std::uint32_t got;
    {
      MAYHEM_ZONE(observer_, "source_.pull(lot->batch.msgs, want)");
      got = static_cast<std::uint32_t>(source_.pull(lot->batch.msgs, want));
    }
    if (got == 0) {
      lots_.release_one(lot);
      return;
    }
    if (observer_) observer_->on_pull(lot->batch.msgs, got);
    wake_publish_if_parked();
    lot->batch.size = got;
    lot->batch.owner = lot;
    lot->batch.cancelled = false;
    lot->refs.store(got + 1, std::memory_order_relaxed);  // messages + the batch's reader

    const Nanos deadline = clock_.now() + ack_deadline_;
    Nanos earliest = deadline;  // the lot's earliest deadline: its lease is scheduled from there
    const bool info = log_->should_log(spdlog::level::info);
    prefetch_ahead(lot->batch.msgs, got);
    for (std::uint32_t i = 0; i < got; ++i) {
      Message* m = lot->batch.msgs[i];
      if (i + kPrefetchAhead < got) prefetch_state(lot->batch.msgs[i + kPrefetchAhead]);
      m->lot = lot;
      m->pending.store(2, std::memory_order_relaxed);
      m->lease.store(LeaseState::kActive, std::memory_order_relaxed);
      // The reference's extend() runs its first iteration as soon as handling starts. A broker
      // source stamped the deadline at delivery (its ack timer runs from there, prefetch
      // included): keep it; the in-process pub/sub leaves it 0.
      ++m->extended_cnt;
      if (m->deadline_ns == 0) m->deadline_ns = deadline;
      earliest = std::min(earliest, m->deadline_ns);
      if (info) {
        MAYHEM_ZONED(observer_, log_->info("Pulled {}", *m));
        MAYHEM_ZONED(observer_,
                     log_->info("Extended deadline by {} seconds for {}", deadline_text_, *m));
      }
    }
    metrics_.consumed.add(got);
    metrics_.extensions.add(got);
    const std::uint64_t in_flight = metrics_.in_flight.fetch_add(got) + got;
    if (in_flight > metrics_.peak_in_flight.load(std::memory_order_relaxed))
      metrics_.peak_in_flight.store(in_flight, std::memory_order_relaxed);
    lease_.register_lot(lot, earliest);
    std::get<0>(out).try_put(&lot->batch);  // save, which hands the lot on to restart
  }
  schedule_consume();  // more may be waiting: yield to other tasks, then continue
}

// ---- save / restart / cleanup: hand the simulated I/O to the IoService ------------------------

void Pipeline::submit_body(Op op, Batch* in, IoNode::gateway_type& gw) {
  ObserveScope scope(observer_, op, in->size, in->msgs);  // an Op is its submit stage
  const std::uint32_t n = in->size;
  Batch* now_batch = nullptr;
  if (shutdown_.stopping()) {
    // Shutting down: nothing new starts; the operations complete at once as cancelled.
    now_batch = new_batch();
    now_batch->cancelled = true;
    for (std::uint32_t i = 0; i < n; ++i) now_batch->push(in->msgs[i]);
    pass_on(op, in);
    gw.try_put(now_batch);
    return;
  }
  // The store's saves (the memory store's go to the simulated I/O too), the simulated I/O's
  // restarts and cleanups; what completed at once (zero delay) is handled here.
  if (op == Op::kSave)
    MAYHEM_ZONED(observer_, now_batch = store_.save(in->msgs, n));
  else
    now_batch = io_.submit(op, in->msgs, n);
  if (now_batch) complete_inline(op, now_batch);
  pass_on(op, in);
}

// The reference's gather(save, restart): save's part is submitted (and, at zero delay, done);
// restart's follows in the next task, usually on this same core, while save's I/O is pending.
void Pipeline::pass_on(Op op, Batch* in) {
  if (op == Op::kSave && in->owner)
    restart_.try_put(in);
  else
    done_with(in);
}

// Zero-delay completions, handled in the task that submitted them: the same handlers the
// completion nodes run, without a task hop or another pass over cold cache lines.
void Pipeline::complete_inline(Op op, Batch* done) {
  switch (op) {
    case Op::kSave: {
      ObserveScope scope(observer_, Stage::kSaved, done->size, done->msgs);
      if (Batch* ready = handle_saves(done)) cleanup_.try_put(ready);
      break;
    }
    case Op::kRestart: {
      ObserveScope scope(observer_, Stage::kRestarted, done->size, done->msgs);
      const RestartResults r = handle_restarts(done);
      if (r.ready) cleanup_.try_put(r.ready);
      if (r.retry) restart_.try_put(r.retry);
      break;
    }
    case Op::kCleanup: {
      ObserveScope scope(observer_, Stage::kSettle, done->size, done->msgs);
      if (handle_settle(done)) consume_.try_put(continue_msg());
      break;
    }
    default:  // not an I/O operation
      break;
  }
}

// ---- saved / restarted: the gather's two branches, and handle_results -------------------------

void Pipeline::handle_results(Message& m) {
  if (m.save_failed) log_->error("Handling general error: Could not save {}", m);
  if (m.restart_failed) log_->error("Handling general error: Could not restart {}", Host{m});
  // The reference's event.set() stopped extensions here; the lease now holds until settle
  // (LeaseManager::mark_done there): cleanup may wait for a pool thread, and a broker redelivers
  // a message whose lease lapsed meanwhile.
}

bool Pipeline::injected_failure(Op op, const Message& m) const {
  if (!fault_) return false;
  try {
    fault_(op, m);
  } catch (const InjectedIoError&) {
    return true;  // an expected I/O failure; anything else propagates to the message's guard
  }
  return false;
}

void Pipeline::finish_branch(Message& m, Batch*& ready) {
  if (m.pending.fetch_sub(1, std::memory_order_acq_rel) != 1)
    return;  // the other branch is pending
  handle_results(m);
  if (!ready) ready = new_batch();
  ready->push(&m);
}

void Pipeline::guard_failed(Message& m, Op op) {
  shutdown_.fatal(std::current_exception());
  if (op == Op::kSave)
    m.save_cancelled = true;
  else
    m.restart_cancelled = true;
}

Batch* Pipeline::handle_saves(Batch* in) {
  const bool info = log_->should_log(spdlog::level::info);
  std::uint64_t ok = 0, failed = 0;
  Batch* ready = nullptr;
  prefetch_ahead(in->msgs, in->size);
  for (std::uint32_t i = 0; i < in->size; ++i) {
    if (i + kPrefetchAhead < in->size) prefetch_state(in->msgs[i + kPrefetchAhead]);
    Message& m = *in->msgs[i];
    try {
      if (in->cancelled) {
        m.save_cancelled = true;
      } else if (m.save_failed || injected_failure(Op::kSave, m) || store_.simulated_failure(m)) {
        m.save_failed = true;
        ++failed;
      } else {
        m.saved = true;
        ++ok;
        if (info) MAYHEM_ZONED(observer_, log_->info("Saved {} into database", m));
      }
    } catch (...) {
      guard_failed(m, Op::kSave);
    }
    finish_branch(m, ready);
  }
  metrics_.saved.add(ok);
  metrics_.save_failed.add(failed);
  done_with(in);
  return ready;
}

void Pipeline::saved_body(Batch* in, SavedNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kSaved, in->size, in->msgs);
  if (Batch* ready = handle_saves(in)) std::get<0>(out).try_put(ready);
}

Pipeline::RestartResults Pipeline::handle_restarts(Batch* in) {
  const bool info = log_->should_log(spdlog::level::info);
  const bool stopping = shutdown_.stopping();
  std::uint64_t ok = 0, failed = 0, retried = 0;
  Batch* ready = nullptr;
  Batch* retry = nullptr;
  prefetch_ahead(in->msgs, in->size);
  for (std::uint32_t i = 0; i < in->size; ++i) {
    if (i + kPrefetchAhead < in->size) prefetch_state(in->msgs[i + kPrefetchAhead]);
    Message& m = *in->msgs[i];
    try {
      if (in->cancelled) {
        m.restart_cancelled = true;
      } else if (injected_failure(Op::kRestart, m) ||
                 io_.fails(m, Op::kRestart, m.restart_attempts)) {
        if (m.restart_attempts < opts_.restart_retries && !stopping) {
          log_->error("Retrying for failure to restart: {}", Host{m});
          ++m.restart_attempts;
          ++retried;
          if (!retry) retry = new_batch();
          retry->push(&m);
          continue;
        }
        m.restart_failed = true;
        ++failed;
      } else {
        m.restarted = true;
        ++ok;
        if (info) MAYHEM_ZONED(observer_, log_->info("Restarted {}", Host{m}));
      }
    } catch (...) {
      guard_failed(m, Op::kRestart);
    }
    finish_branch(m, ready);
  }
  metrics_.restarted.add(ok);
  metrics_.restart_failed.add(failed);
  metrics_.restart_retries.add(retried);
  done_with(in);
  return {ready, retry};
}

void Pipeline::restarted_body(Batch* in, RestartedNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kRestarted, in->size, in->msgs);
  const RestartResults r = handle_restarts(in);
  if (r.ready) std::get<0>(out).try_put(r.ready);
  if (r.retry) std::get<1>(out).try_put(r.retry);
}

// ---- settle: the end of the reference's cleanup(): ack (or nack when cancelled) -----------------

bool Pipeline::handle_settle(Batch* in) {
  const std::uint32_t n = in->size;
  const Nanos now = clock_.now();
  const bool info = log_->should_log(spdlog::level::info);
  const bool debug = log_->should_log(spdlog::level::debug);
  Histogram& latency = metrics_.latency.local();
  Message* acks[kBatchCapacity];
  Message* nacks[kBatchCapacity];
  std::uint32_t na = 0, nn = 0;
  // Group consecutive messages of one lot, so a lot's count drops once per run, not per message.
  Lot* lots[kBatchCapacity];
  std::uint32_t counts[kBatchCapacity];
  std::uint32_t runs = 0;
  prefetch_ahead(in->msgs, n);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (i + kPrefetchAhead < n) prefetch_state(in->msgs[i + kPrefetchAhead]);
    Message& m = *in->msgs[i];
    LeaseManager::mark_done(m);  // the lease ends here: settle owns the message and its handle
    bool ack = !in->cancelled;
    if (ack && fault_) {
      try {
        fault_(Op::kCleanup, m);
      } catch (const InjectedIoError& e) {
        log_->error("Handling general error: {}; nacking", e.what());  // cleanup could not ack
        ack = false;
      } catch (...) {
        shutdown_.fatal(std::current_exception());
        ack = false;
      }
    }
    // --on-failure nack: a restart that failed every retry goes back to the broker.
    if (ack && m.restart_failed && opts_.on_failure == OnFailure::kNack) ack = false;
    if (ack) {
      m.acked = true;
      acks[na++] = &m;
      latency.record(static_cast<std::uint64_t>(std::max<Nanos>(now - m.published_ns, 0)));
      if (info) MAYHEM_ZONED(observer_, log_->info("Done. Acked {}", m));
    } else {
      m.nacked = true;
      nacks[nn++] = &m;
      if (debug) log_->debug("Nacked {}", m);
    }
    if (runs != 0 && lots[runs - 1] == m.lot) {
      ++counts[runs - 1];
    } else {
      lots[runs] = m.lot;
      counts[runs++] = 1;
    }
  }
  // Count and tell the source, unless a timed-out shutdown sealed settle (it counted these
  // messages nacked already). The gate makes count-or-not and the seal one decision, and
  // seal_settle waits for the bodies inside it: once sealed, every earlier count and ack is done.
  const bool sealed = (settle_gate_.fetch_add(1) & kSealed) != 0;
  if (!sealed) {
    metrics_.acked.add(na);
    metrics_.nacked.add(nn);
    if (na != 0) source_.ack(acks, na);
    if (nn != 0) source_.nack(nacks, nn);
  }
  settle_gate_.fetch_sub(1);
  if (sealed) {
    for (std::uint32_t i = 0; i < na; ++i) {
      acks[i]->acked = false;
      acks[i]->nacked = true;
    }
    source_.return_unsettled(in->msgs, n);  // acks included: they were counted nacked
  }
  store_.settled(in->msgs, n);  // the outcome (a database group-commits it with later saves)
  metrics_.in_flight.fetch_sub(n);
  // Freed permits wake a consume parked on --max-in-flight (it re-checks after parking).
  const bool wake = consume_parked_.load() && consume_parked_.exchange(false) &&
                    !consume_scheduled_.exchange(true);
  if (opts_.messages != 0 && metrics_.settled() >= opts_.messages)
    shutdown_.request(StopReason::kCompleted);
  done_with(in);
  // Last: once a lot's count reaches zero the lease thread may free its messages.
  for (std::uint32_t r = 0; r < runs; ++r) unref_lot(lots[r], counts[r]);
  return wake;
}

void Pipeline::settle_body(Batch* in, SettleNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kSettle, in->size, in->msgs);
  if (handle_settle(in)) std::get<0>(out).try_put(continue_msg());
}

// ---- shutdown -----------------------------------------------------------------------------------

std::uint64_t Pipeline::nack_backlog() {
  Message* buf[kBatchCapacity];
  std::uint64_t total = 0;
  const bool sealed = settle_sealed();
  for (;;) {
    const std::size_t n = source_.drain(buf, kBatchCapacity);
    if (n == 0) break;
    for (std::size_t i = 0; i < n; ++i) buf[i]->nacked = true;
    if (sealed)
      source_.return_unsettled(buf, n);  // counted with the rest of the unsettled
    else
      source_.nack(buf, n);
    messages_.release(buf, n);
    total += n;
  }
  if (!sealed) metrics_.nacked.add(total);
  return total;
}

void Pipeline::seal_settle() {
  settle_gate_.fetch_or(kSealed);
  // A settle body that entered the gate before the seal counts first, then acks: wait for it to
  // leave (normally microseconds), but no more than 100 ms: a broker's ack can block on a full
  // socket to a server that stopped reading, and the shutdown must not wait for that.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while ((settle_gate_.load() & ~kSealed) != 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
}

}  // namespace mayhem
