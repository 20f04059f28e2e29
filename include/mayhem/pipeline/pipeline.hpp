// The oneTBB flow graph that carries messages: the threaded form of the reference's coroutines.
//
//   publish ──► [pub/sub queue] ──► consume ──► save ────► saved ─────┬─► cleanup ──► settle
//      ▲ (flat out: re-orders itself)              │ lot                │   (async)      │
//      └── pacer thread (paced modes)              ▼                    │                │
//                                                restart ─► restarted ─┘   consume ◄─────┘ permits
//                                                  ▲ (async)    │ retry
//                                                  └────────────┘
//
// (A broker source has no publish stage: consume pulls from it.)
//
// Every edge is listed in one place, Pipeline::wire() (pipeline.cpp): the make_edge ones and those
// a body sends on by itself (send_to_*). Nodes pass batches of message pointers (up to
// `batch_size`), so a graph hop's cost is shared by the batch (docs/ARCHITECTURE.md). save, restart and cleanup are
// `async_node`s: their bodies hand each message's I/O to the store (save) or the simulated I/O
// (restart, cleanup; io/simulated_io.hpp) and return at once; completions come back through the
// gateways into saved / restarted / settle, and zero-delay ones are handled inline. save submits a
// lot's operations then hands the lot to restart, so both waits overlap for every message (the
// reference's gather: its coroutines also run one after the other on one thread until they
// await); a per-message completion count replaces a join: the branch that finishes second handles
// the results (the reference's handle_results) and passes the message on to cleanup. Flow
// control: consume takes no more than `max_in_flight - in_flight` messages and parks; settle wakes
// it. publish runs only for a publishable source (the in-process pub/sub), parks when it is full;
// consume wakes it. The lease is reached through `Leases` only (consume holds a lot, settle ends
// each message's lease, the last reference releases the lot). With a real database settle hands
// its acks to the store first (Store::record_acks): they come back through `acks_recorded` once
// their rows say `acked`, and recorded acks them (the graph waits for them: reserve_wait).
// Bodies: intake.cpp (publish, consume), completion.cpp (save, saved, restart, restarted,
// cleanup, settle, recorded).
// Use: built by Service inside its task_arena; `start_flat_out()` or `order_publish(n)` from the
// pacer, `io_complete` as the IoService and store sink, `wait_idle()` at shutdown.
#pragma once

#include <oneapi/tbb/flow_graph.h>
#include <spdlog/logger.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>

#include "mayhem/clock.hpp"
#include "mayhem/io/io_service.hpp"
#include "mayhem/io/simulated_io.hpp"
#include "mayhem/lease/leases.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/observer.hpp"
#include "mayhem/options.hpp"
#include "mayhem/shutdown.hpp"
#include "mayhem/source/source.hpp"
#include "mayhem/store/store.hpp"

namespace mayhem {

class Pipeline {
 public:
  // What the pipeline works with, by concern. Every reference must outlive the Pipeline.
  // The object pools: messages, lots (consume's batches, which the lease tracks) and batches.
  struct Pools {
    MessagePool& messages;
    LotPool& lots;
    BatchPool& batches;
  };
  // The outside world the stages talk to.
  struct Ports {
    // Where messages come from and their fate goes (and, when publishable, where publish
    // publishes into).
    Source& source;
    // The simulated I/O of restart and cleanup (and of the memory store's saves).
    SimulatedIo& io;
    // The save stage's database (--store): memory (simulated) or sqlite. Its completions come
    // back through io_complete(kSave, ...).
    Store& store;
    // The lease thread, through its pipeline-side interface.
    Leases& leases;
  };
  // Stopping, watching and breaking on purpose.
  struct Control {
    ShutdownManager& shutdown;
    Observer* observer = nullptr;
    // Called inside each message's exception guard when an operation completes (fault injection
    // and tests). A throw there is an unexpected exception: the message is nacked, the service
    // shuts down gracefully with a failing status.
    std::function<void(Op, const Message&)> fault;
  };
  struct Deps {
    const Options& opts;
    const Clock& clock;
    std::shared_ptr<spdlog::logger> log;
    Metrics& metrics;
    // The publish stage's message factory seed (--seed).
    std::uint64_t seed;
    Pools pools;
    Ports ports;
    Control control;
  };

  // Builds the graph; call inside the task_arena the graph should run in.
  explicit Pipeline(Deps deps);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Flat-out publishing (no pacer): starts the self-ordering publish stage.
  void start_flat_out();
  // Paced publishing: the pacer orders `n` more messages. Orders coalesce into one count that the
  // publish stage takes whole; at most one of them waits in the node whatever the rate.
  void order_publish(std::uint64_t n);
  // A broker source has new messages.
  void notify_source() { schedule_consume(); }
  // The IoService sink: completed operations re-enter the graph through the async_node gateways.
  void io_complete(Op op, Batch* batch);
  // The store's recorded sink (Store::record_acks): acks whose rows say `acked` now go to the
  // source (a cancelled batch could not be recorded: nacked instead).
  void acks_recorded(Batch* batch);
  // Waits until no task is left in the graph (call after stopping every outside producer).
  void wait_idle() { graph_.wait_for_all(); }
  // After wait_idle at shutdown: nacks what is still waiting in the source. Returns the count.
  // After seal_settle() it counts nothing (a timed-out shutdown counts the unsettled) and hands
  // the messages back with Source::return_unsettled. It pulls through Source::drain, so a consume
  // task left behind by a timed-out shutdown may still be pulling.
  std::uint64_t nack_backlog();
  // A shutdown that timed out while the graph still settles: from now on publish publishes
  // nothing and settle counts nothing (the caller counts every message published and not yet
  // settled as nacked, once) and acks nothing: what it still settles is handed back with
  // Source::return_unsettled. A settle that counted before the
  // seal has finished counting and telling the source when this returns (waited for up to 100 ms:
  // its counts come first, so only its acks to the source can be later).
  void seal_settle();
  bool settle_sealed() const { return (settle_gate_.load() & kSealed) != 0; }

 private:
  using continue_msg = tbb::flow::continue_msg;
  using PublishNode = tbb::flow::multifunction_node<std::uint32_t, std::tuple<continue_msg>>;
  using ConsumeNode = tbb::flow::multifunction_node<continue_msg, std::tuple<Batch*>>;
  using IoNode = tbb::flow::async_node<Batch*, Batch*>;
  using SavedNode = tbb::flow::multifunction_node<Batch*, std::tuple<Batch*>>;
  using RestartedNode = tbb::flow::multifunction_node<Batch*, std::tuple<Batch*, Batch*>>;
  using SettleNode = tbb::flow::multifunction_node<Batch*, std::tuple<continue_msg>>;

  // The graph's shape, in one place: every edge, the make_edge ones and those a body sends on
  // by itself (the send_to_* helpers below). Called once, by the constructor.
  void wire();
  // The edges a body takes by itself (try_put), named after where they go.
  // publish orders its own next batch (flat out), or is woken from parking.
  void send_to_publish() { publish_.try_put(0); }
  // Wakes consume: settle freed permits (from an inline completion), or more may be waiting.
  void send_to_consume() { consume_.try_put(continue_msg()); }
  // save hands its lot on to restart.
  void send_to_restart(Batch* b) { restart_.try_put(b); }
  // Inline save/restart completions whose gather is complete.
  void send_to_cleanup(Batch* b) { cleanup_.try_put(b); }

  // Stage bodies: intake.cpp (publish, consume), completion.cpp (the rest).
  void publish_body(std::uint32_t n, PublishNode::output_ports_type& out);
  void consume_body(ConsumeNode::output_ports_type& out);
  void submit_body(Op op, Batch* in, IoNode::gateway_type& gw);
  void saved_body(Batch* in, SavedNode::output_ports_type& out);
  void restarted_body(Batch* in, RestartedNode::output_ports_type& out);
  void settle_body(Batch* in, SettleNode::output_ports_type& out);
  void recorded_body(Batch* in, SettleNode::output_ports_type& out);

  // Completion handlers, run by the completion nodes and inline for zero-delay operations. Each
  // consumes its input batch and returns what goes on.
  struct RestartResults {
    // save and restart both settled: on to cleanup
    Batch* ready;
    // failed attempts with retries left: back to restart
    Batch* retry;
  };
  // `inline_first`: run by save's own task before it hands the lot to restart.
  Batch* handle_saves(Batch* in, bool inline_first);
  // `ready`: where the gathered messages go (null: a new batch when needed); it must have room
  // for all of `in`.
  RestartResults handle_restarts(Batch* in, Batch* ready);
  // True: a parked consume should be woken.
  bool handle_settle(Batch* in);
  bool handle_recorded(Batch* in);
  // `mark_acked`: set each ack's `acked` flag here (in the same pass).
  bool settle_some(Message* const* nacks, std::uint32_t nn, Message* const* acks, std::uint32_t na,
                   bool info, bool mark_acked);
  void complete_inline(Op op, Batch* done);

  // The reference's handle_results, for a message whose save and restart are both settled: logs
  // a failed save or restart (finish_branch calls it only then, with the error level on).
  void handle_results(Message& m);
  // Called by saved/restarted for each message: when this branch is the second to finish (the
  // gather is complete), handles the results and appends the message to `ready` (for cleanup).
  // `first`: the other branch cannot have started (save's inline completions, which run before
  // save hands the lot to restart). `log_errors`: the error level is on (asked once per batch).
  void finish_branch(Message& m, Batch*& ready, bool first, bool log_errors);
  void schedule_consume();
  void wake_publish_if_parked();
  std::uint64_t permits() const;
  // Releases an input batch (its lot reference, or the pool object).
  void done_with(Batch* b);
  // After a submit: save hands its lot to restart, else release.
  void pass_on(Op op, Batch* in);
  void unref_lot(Lot* lot, std::uint32_t n);
  Batch* new_batch();
  // An unexpected exception hit `m` inside a stage.
  void guard_failed(Message& m, Op op);
  // An --inject `error` hit this operation.
  bool injected_failure(Op op, const Message& m) const;

  const Options& opts_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Metrics& metrics_;
  MessagePool& messages_;
  LotPool& lots_;
  BatchPool& batches_;
  Source& source_;
  SimulatedIo& io_;
  Store& store_;
  Leases& leases_;
  ShutdownManager& shutdown_;
  Observer* observer_;
  std::function<void(Op, const Message&)> fault_;

  const std::uint32_t batch_;
  const Nanos ack_deadline_;
  // The source takes publishing (Source::publishable): the publish stage runs.
  const bool publishable_;
  const bool flat_out_;

  // publish stage state (serial node)
  MessageFactory factory_;
  std::uint64_t publish_seq_ = 0;
  std::uint64_t publish_debt_ = 0;
  // The pacer's orders not yet taken by publish (saturating), and whether one of its orders
  // waits in the node.
  alignas(64) std::atomic<std::uint64_t> publish_ordered_{0};
  std::atomic<bool> publish_order_queued_{false};
  alignas(64) std::atomic<bool> publish_parked_{false};
  alignas(64) std::atomic<bool> consume_scheduled_{false};
  alignas(64) std::atomic<bool> consume_parked_{false};
  // The counting gate: bit 63 = sealed (seal_settle), the rest = publish and settle bodies
  // counting now (publish adds to `published`, settle to `acked`/`nacked`).
  static constexpr std::uint64_t kSealed = std::uint64_t{1} << 63;
  alignas(64) std::atomic<std::uint64_t> settle_gate_{0};

  tbb::flow::graph graph_;
  PublishNode publish_;
  ConsumeNode consume_;
  IoNode save_;
  SavedNode saved_;
  IoNode restart_;
  RestartedNode restarted_;
  IoNode cleanup_;
  SettleNode settle_;
  // A real database's acks, back from record_acks: acked now.
  SettleNode recorded_;
};

}  // namespace mayhem
