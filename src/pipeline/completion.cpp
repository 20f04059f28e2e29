// The pipeline's I/O stages and completions (see pipeline.hpp): save, restart and cleanup submit
// each lot's operations (to the store and the simulated I/O); saved and restarted are the
// reference's gather and handle_results; settle acks or nacks (the end of the reference's
// cleanup()). Zero-delay completions run inline in the submitting task.
#include <algorithm>

#include "mayhem/faults.hpp"
#include "mayhem/log/context.hpp"
#include "mayhem/observe/zone.hpp"
#include "mayhem/pipeline/pipeline.hpp"

namespace mayhem {

// ---- save / restart / cleanup: hand the I/O to the store or the simulated I/O ------------------

void Pipeline::submit_body(Op op, Batch* in, IoNode::gateway_type& gw) {
  // An Op is its submit stage.
  ObserveScope scope(observer_, op, in->size, in->msgs);
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
    send_to_restart(in);
  else
    done_with(in);
}

// Zero-delay completions, handled in the task that submitted them: the same handlers the
// completion nodes run, without a task hop or another pass over cold cache lines.
void Pipeline::complete_inline(Op op, Batch* done) {
  switch (op) {
    case Op::kSave: {
      ObserveScope scope(observer_, Stage::kSaved, done->size, done->msgs);
      if (Batch* ready = handle_saves(done, true)) send_to_cleanup(ready);
      break;
    }
    case Op::kRestart: {
      RestartResults r{};
      {
        ObserveScope scope(observer_, Stage::kRestarted, done->size, done->msgs);
        r = handle_restarts(done, nullptr);
      }
      // The retries are submitted here too (at zero latency without a fault hook there are none
      // left: handle_restarts drew them per message): those that complete at once join the same
      // ready batch, so the lot goes on to cleanup in one batch, not one per attempt.
      while (r.retry) {
        Batch* retry = r.retry;
        Batch* now_retry;
        {
          ObserveScope scope(observer_, Op::kRestart, retry->size, retry->msgs);
          // All at once: the retry batch is its own completion (no copy through submit).
          now_retry =
              io_.completes_now() ? retry : io_.submit(Op::kRestart, retry->msgs, retry->size);
        }
        if (now_retry != retry) done_with(retry);
        r.retry = nullptr;
        if (!now_retry) break;
        ObserveScope scope(observer_, Stage::kRestarted, now_retry->size, now_retry->msgs);
        r = handle_restarts(now_retry, r.ready);
      }
      if (r.ready) send_to_cleanup(r.ready);
      break;
    }
    case Op::kCleanup: {
      ObserveScope scope(observer_, Stage::kSettle, done->size, done->msgs);
      if (handle_settle(done)) send_to_consume();
      break;
    }
    default:  // not an I/O operation
      break;
  }
}

// ---- saved / restarted: the gather's two branches, and handle_results -------------------------

void Pipeline::handle_results(Message& m) {
  if (m.save_failed) {
    LogScope scope(m, to_string(Stage::kSave));
    log_->error("Handling general error: Could not save {}", m);
  }
  if (m.restart_failed) {
    LogScope scope(m, to_string(Stage::kRestart));
    log_->error("Handling general error: Could not restart {}", Host{m});
  }
  // The reference's event.set() stopped extensions here; the lease now holds until settle
  // (Leases::done there): cleanup may wait for a pool thread, and a broker redelivers
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

// Inlined into both branches' loops (a call per message cost more than its body).
[[gnu::always_inline]] inline void Pipeline::finish_branch(Message& m, Batch*& ready, bool first,
                                                           bool log_errors) {
  if (first) {
    // No other branch can touch the count yet: a plain store, which the hand-off of the lot
    // to restart publishes.
    m.pending.store(1, std::memory_order_relaxed);
    return;
  }
  // 1: the other branch finished (it never touches the count again; acquire reads its flags),
  // so this one is the last without a read-modify-write. Else the two may race: decrement.
  if (m.pending.load(std::memory_order_acquire) != 1 &&
      m.pending.fetch_sub(1, std::memory_order_acq_rel) != 1)
    return;  // the other branch is pending
  if (log_errors && (m.save_failed || m.restart_failed)) handle_results(m);
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

Batch* Pipeline::handle_saves(Batch* in, bool inline_first) {
  const bool info = log_->should_log(spdlog::level::info);
  const bool log_errors = log_->should_log(spdlog::level::err);
  const bool faults = static_cast<bool>(fault_);
  std::uint64_t ok = 0, failed = 0;
  Batch* ready = nullptr;
  for_each_prefetched(in->msgs, in->size, [&](Message& m) {
    try {
      if (in->cancelled) {
        m.save_cancelled = true;
      } else if (m.save_failed || (faults && injected_failure(Op::kSave, m)) ||
                 store_.simulated_failure(m)) {
        m.save_failed = true;
        ++failed;
      } else {
        m.saved = true;
        ++ok;
        if (info) {
          LogScope scope(m, to_string(Stage::kSave));
          MAYHEM_ZONED(observer_, log_->info("Saved {} into database", m));
        }
      }
    } catch (...) {
      guard_failed(m, Op::kSave);
    }
    finish_branch(m, ready, inline_first, log_errors);
  });
  // Shared counters: a zero is not written (a locked add on a line other cores write too).
  if (ok != 0) metrics_.saved.add(ok);
  if (failed != 0) metrics_.save_failed.add(failed);
  done_with(in);
  return ready;
}

void Pipeline::saved_body(Batch* in, SavedNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kSaved, in->size, in->msgs);
  if (Batch* ready = handle_saves(in, false)) std::get<0>(out).try_put(ready);
}

Pipeline::RestartResults Pipeline::handle_restarts(Batch* in, Batch* ready) {
  const bool info = log_->should_log(spdlog::level::info);
  const bool log_errors = log_->should_log(spdlog::level::err);
  const bool faults = static_cast<bool>(fault_);
  const bool stopping = shutdown_.stopping();
  // Every retry would complete at once (zero latency, inline completions, no fault hook): a
  // message's retries are drawn here, one after the other, instead of in a batch per round.
  const bool retry_now = !faults && io_.completes_now();
  std::uint64_t ok = 0, failed = 0, retried = 0;
  Batch* retry = nullptr;
  for_each_prefetched(in->msgs, in->size, [&](Message& m) {
    try {
      for (;;) {
        if (in->cancelled) {
          m.restart_cancelled = true;
        } else if ((faults && injected_failure(Op::kRestart, m)) ||
                   io_.fails(m, Op::kRestart, m.restart_attempts)) {
          if (m.restart_attempts < opts_.restart_retries && !stopping) {
            if (log_errors) {
              LogScope scope(m, to_string(Stage::kRestart));
              log_->error("Retrying for failure to restart: {}", Host{m});
            }
            ++m.restart_attempts;
            ++retried;
            if (retry_now) continue;  // the retry, completed at once
            if (!retry) retry = new_batch();
            retry->push(&m);
            return;  // the next message
          }
          m.restart_failed = true;
          ++failed;
        } else {
          m.restarted = true;
          ++ok;
          if (info) {
            LogScope scope(m, to_string(Stage::kRestart));
            MAYHEM_ZONED(observer_, log_->info("Restarted {}", Host{m}));
          }
        }
        break;
      }
    } catch (...) {
      guard_failed(m, Op::kRestart);
    }
    finish_branch(m, ready, false, log_errors);
  });
  if (ok != 0) metrics_.restarted.add(ok);
  if (failed != 0) metrics_.restart_failed.add(failed);
  if (retried != 0) metrics_.restart_retries.add(retried);
  done_with(in);
  return {ready, retry};
}

void Pipeline::restarted_body(Batch* in, RestartedNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kRestarted, in->size, in->msgs);
  const RestartResults r = handle_restarts(in, nullptr);
  if (r.ready) std::get<0>(out).try_put(r.ready);
  if (r.retry) std::get<1>(out).try_put(r.retry);
}

// ---- settle: the end of the reference's cleanup(): ack (or nack: cancelled, no row) -------------

bool Pipeline::handle_settle(Batch* in) {
  const std::uint32_t n = in->size;
  const bool info = log_->should_log(spdlog::level::info);
  const bool debug = log_->should_log(spdlog::level::debug);
  // A real database: a message is acked only with its row, and only once the row says `acked`
  // (record_acks; the ack goes out from recorded_body). Asked once per batch, not per message.
  const bool ack_needs_row = store_.ack_needs_row();
  if (!in->cancelled && !fault_ && !ack_needs_row && opts_.on_failure != OnFailure::kNack) {
    // Every message is acked (the common case): settle_some marks them in its own pass.
    const bool wake = settle_some(nullptr, 0, in->msgs, n, info, true);
    done_with(in);
    return wake;
  }
  Message* acks[kBatchCapacity];
  Message* nacks[kBatchCapacity];
  std::uint32_t na = 0, nn = 0;
  for_each_prefetched(in->msgs, n, [&](Message& m) {
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
    // No ack without its row: with a real database, a message whose save failed or was
    // cancelled goes back to the source, to be saved when it comes again. (The memory store
    // keeps the reference's rule: a failed save is logged, then acked.)
    if (ack && !m.saved && ack_needs_row) ack = false;
    if (ack) {
      m.acked = true;
      acks[na++] = &m;
    } else {
      m.nacked = true;
      nacks[nn++] = &m;
      if (debug) {
        LogScope scope(m, to_string(Stage::kSettle));
        log_->debug("Nacked {}", m);
      }
    }
  });
  bool wake = false;
  if (ack_needs_row && na != 0) {
    // The acks wait for their outcome's commit, leased meanwhile; the graph waits for them too.
    graph_.reserve_wait();
    store_.record_acks(acks, na);
    wake = settle_some(nacks, nn, nullptr, 0, info, false);
  } else {
    wake = settle_some(nacks, nn, acks, na, info, false);
  }
  done_with(in);
  return wake;
}

void Pipeline::acks_recorded(Batch* b) {
  recorded_.try_put(b);
  graph_.release_wait();
}

// The acks whose rows say `acked` now (or, cancelled, could not be recorded: nacked instead).
bool Pipeline::handle_recorded(Batch* in) {
  const std::uint32_t n = in->size;
  const bool info = log_->should_log(spdlog::level::info);
  bool wake;
  if (in->cancelled) {
    for (std::uint32_t i = 0; i < n; ++i) {
      in->msgs[i]->acked = false;
      in->msgs[i]->nacked = true;
    }
    log_->warn("{} acks could not be recorded in the database; nacking them", n);
    wake = settle_some(in->msgs, n, nullptr, 0, info, false);
  } else {
    wake = settle_some(nullptr, 0, in->msgs, n, info, false);
  }
  done_with(in);
  return wake;
}

// Ends the leases of `na` acks and `nn` nacks, counts them and tells the source (unless a
// timed-out shutdown sealed settle), records the nacks' outcome (a database group-commits it with
// later saves; the acks' is recorded already, or never is: the memory store), frees their
// permits and lot references. True: a parked consume should be woken.
bool Pipeline::settle_some(Message* const* nacks, std::uint32_t nn, Message* const* acks,
                           std::uint32_t na, bool info, bool mark_acked) {
  const Nanos now = clock_.now();
  Histogram& latency = metrics_.latency.local();
  // Group consecutive messages of one lot, so a lot's count drops once per run, not per message.
  Lot* lots[2 * kBatchCapacity];
  std::uint32_t counts[2 * kBatchCapacity];
  std::uint32_t runs = 0;
  const auto end_lease = [&](Message& m) {
    Leases::done(m);  // the lease ends here: settle owns the message and its handle
    if (runs != 0 && lots[runs - 1] == m.lot) {
      ++counts[runs - 1];
    } else {
      lots[runs] = m.lot;
      counts[runs++] = 1;
    }
  };
  for_each_prefetched_with_lot(nacks, nn, end_lease);
  for_each_prefetched_with_lot(acks, na, [&](Message& m) {
    if (mark_acked) m.acked = true;
    end_lease(m);
    latency.record(static_cast<std::uint64_t>(std::max<Nanos>(now - m.published_ns, 0)));
    if (info) {
      LogScope scope(m, to_string(Stage::kSettle));
      MAYHEM_ZONED(observer_, log_->info("Done. Acked {}", m));
    }
  });
  // Count and tell the source, unless a timed-out shutdown sealed settle (it counted these
  // messages nacked already). The gate makes count-or-not and the seal one decision, and
  // seal_settle waits for the bodies inside it: once sealed, every earlier count and ack is done.
  const bool sealed = (settle_gate_.fetch_add(1) & kSealed) != 0;
  if (!sealed) {
    if (na != 0) metrics_.acked.add(na);
    if (nn != 0) metrics_.nacked.add(nn);
    if (na != 0) source_.ack(acks, na);
    if (nn != 0) source_.nack(nacks, nn);
  }
  settle_gate_.fetch_sub(1);
  if (sealed) {
    for (std::uint32_t i = 0; i < na; ++i) {
      acks[i]->acked = false;
      acks[i]->nacked = true;
    }
    // Acks included: they were counted nacked.
    if (na != 0) source_.return_unsettled(acks, na);
    if (nn != 0) source_.return_unsettled(nacks, nn);
  }
  if (nn != 0) store_.settled(nacks, nn);
  // Settled: back to the pool now, not with their lot (whose slowest message may take seconds
  // more). The lease ended above, so nothing reads them through the lot any more.
  messages_.release(nacks, nn);
  messages_.release(acks, na);
  metrics_.in_flight.fetch_sub(na + nn);
  // Freed permits wake a consume parked on --max-in-flight (it re-checks after parking).
  const bool wake = consume_parked_.load() && consume_parked_.exchange(false) &&
                    !consume_scheduled_.exchange(true);
  if (opts_.messages != 0 && metrics_.settled() >= opts_.messages)
    shutdown_.request(StopReason::kCompleted);
  // Last: once a lot's count reaches zero the lease thread may free its messages.
  for (std::uint32_t r = 0; r < runs; ++r) unref_lot(lots[r], counts[r]);
  return wake;
}

void Pipeline::settle_body(Batch* in, SettleNode::output_ports_type& out) {
  ObserveScope scope(observer_, Stage::kSettle, in->size, in->msgs);
  if (handle_settle(in)) std::get<0>(out).try_put(continue_msg());
}

// Not observed as a stage of its own: its messages were counted into settle once already.
void Pipeline::recorded_body(Batch* in, SettleNode::output_ports_type& out) {
  if (handle_recorded(in)) std::get<0>(out).try_put(continue_msg());
}

}  // namespace mayhem
