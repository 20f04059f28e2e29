// The pipeline's intake (see pipeline.hpp): publish, the reference's publish() into a publishable
// source (the in-process pub/sub), and consume, the reference's consume(): it pulls lots from the
// source within --max-in-flight, starts their leases and hands them to save.
#include <algorithm>

#include "mayhem/log/context.hpp"
#include "mayhem/observe/zone.hpp"
#include "mayhem/pipeline/pipeline.hpp"

namespace mayhem {

// ---- publish: the reference's publish(), into a publishable source (the in-process pub/sub) ---

namespace {
// How far ahead publish asks for the lines it is about to fill. Its messages come back from the
// pool mostly from the other core's cache (the stages ran there), a longer trip than a stage's
// read of a line publish just wrote: 8 ahead (kPrefetchAhead) left fill waiting; 64 measured no
// better than 32.
constexpr std::uint32_t kFillAhead = 32;
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
  if (!publish_order_queued_.exchange(true)) send_to_publish();
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
    for (std::uint32_t i = 0; i < std::min(k, kFillAhead); ++i) prefetch_all(buf[i]);
    for (std::uint32_t i = 0; i < k; ++i) {
      if (i + kFillAhead < k) prefetch_all(buf[i + kFillAhead]);
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
    send_to_publish();  // flat out: order the next batch ourselves
  } else {
    // Full pub/sub: park; consume wakes us after pulling. Re-check to close the race with it.
    publish_parked_.store(true);
    if (source_.free_capacity() > 0 && publish_parked_.exchange(false)) send_to_publish();
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
    std::uint32_t slot = 0;
    for_each_prefetched(lot->batch.msgs, got, [&](Message& m) {
      lot->attach(m, slot++);
      m.pending.store(2, std::memory_order_relaxed);
      Leases::extend_first(m, deadline);  // the reference's extend(), first iteration
      earliest = std::min(earliest, m.deadline_ns);
      if (info) {
        LogScope scope(m, to_string(Stage::kConsume));
        MAYHEM_ZONED(observer_, log_->info("Pulled {}", m));
        LogScope lease(m, to_string(Stage::kLease));
        MAYHEM_ZONED(observer_, leases_.log_first_extension(m));
      }
    });
    metrics_.consumed.add(got);
    const std::uint64_t in_flight = metrics_.in_flight.fetch_add(got) + got;
    if (in_flight > metrics_.peak_in_flight.load(std::memory_order_relaxed))
      metrics_.peak_in_flight.store(in_flight, std::memory_order_relaxed);
    leases_.hold(lot, earliest, got);       // counts the first extensions, starts the lease
    std::get<0>(out).try_put(&lot->batch);  // save, which hands the lot on to restart
  }
  schedule_consume();  // more may be waiting: yield to other tasks, then continue
}

}  // namespace mayhem
