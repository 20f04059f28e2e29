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
      messages_(d.pools.messages),
      lots_(d.pools.lots),
      batches_(d.pools.batches),
      source_(d.ports.source),
      io_(d.ports.io),
      store_(d.ports.store),
      leases_(d.ports.leases),
      shutdown_(d.control.shutdown),
      observer_(d.control.observer),
      fault_(std::move(d.control.fault)),
      batch_(std::clamp<std::uint32_t>(d.opts.batch_size, 1, kBatchCapacity)),
      ack_deadline_(seconds_to_nanos(d.opts.ack_deadline)),
      publishable_(d.ports.source.publishable()),
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
              [this](Batch* b, SettleNode::output_ports_type& out) { settle_body(b, out); }),
      recorded_(graph_, tbb::flow::unlimited,
                [this](Batch* b, SettleNode::output_ports_type& out) { recorded_body(b, out); }) {
  wire();
}

// Every edge of the graph (the diagram in pipeline.hpp). The make_edge ones carry a node's output
// port; the others are sent by a body itself, through the send_to_* helpers (pipeline.hpp) or an
// async_node gateway, where one input does not make one output:
//
//   from                      to        how                  what
//   publish                 ► consume   make_edge            a wake-up per published batch
//   publish                 ► publish   send_to_publish      flat out: its own next batch
//   consume (after a pull)  ► publish   send_to_publish      wakes a publish parked on a full queue
//   consume                 ► save      make_edge            the lot's batch
//   save                    ► restart   send_to_restart      the lot, once its saves are submitted
//   save/restart/cleanup I/O► saved/restarted/settle   gateway (io_complete)  completions;
//                                       shutting down: submit puts them, cancelled, at once
//   save, zero delay        ► cleanup   send_to_cleanup      inline completion, gather complete
//   saved                   ► cleanup   make_edge            gather complete
//   restart, zero delay     ► cleanup   send_to_cleanup      inline completion; its retries are
//                                       drawn inline too (all at once at zero latency, else each
//                                       round submitted inline: delayed ones go to the I/O)
//   restarted               ► cleanup   make_edge (port 0)   gather complete
//   restarted               ► restart   make_edge (port 1)   retries
//   cleanup                 ► settle    make_edge            (through its gateway)
//   cleanup, zero delay     ► consume   send_to_consume      inline settle freed permits
//   settle                  ► consume   make_edge            freed permits wake a parked consume
//   settle ► store ► recorded           acks_recorded        a real database: acks once recorded
//   recorded                ► consume   make_edge            freed permits wake a parked consume
//   anyone                  ► consume   schedule_consume     more to pull (one queued at a time)
void Pipeline::wire() {
  using tbb::flow::make_edge;
  using tbb::flow::output_port;
  make_edge(output_port<0>(publish_), consume_);
  make_edge(output_port<0>(consume_), save_);
  make_edge(save_, saved_);
  make_edge(restart_, restarted_);
  make_edge(output_port<0>(saved_), cleanup_);
  make_edge(output_port<0>(restarted_), cleanup_);
  make_edge(output_port<1>(restarted_), restart_);
  make_edge(cleanup_, settle_);
  make_edge(output_port<0>(settle_), consume_);
  make_edge(output_port<0>(recorded_), consume_);
}

Pipeline::~Pipeline() {
  graph_.wait_for_all();
}

void Pipeline::start_flat_out() {
  if (flat_out_) send_to_publish();
}

// ---- helpers -------------------------------------------------------------------------------

Batch* Pipeline::new_batch() {
  return acquire_batch(batches_);
}

void Pipeline::unref_lot(Lot* lot, std::uint32_t n) {
  if (lot->refs.fetch_sub(n, std::memory_order_acq_rel) == n) leases_.release(lot);
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
  if (!consume_scheduled_.exchange(true)) send_to_consume();
}

void Pipeline::wake_publish_if_parked() {
  if (publish_parked_.load() && publish_parked_.exchange(false)) send_to_publish();
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
  // socket to a server that stopped reading, and the shutdown must not wait for that. Real time,
  // not clock_: a bound on a spin, which must end even on a test's ManualClock that stands still.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while ((settle_gate_.load() & ~kSealed) != 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
}

}  // namespace mayhem
