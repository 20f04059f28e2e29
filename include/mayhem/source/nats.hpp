// NATS JetStream as the pub/sub (nats.c): a connection that survives the server going away and
// coming back, the stream (with --stream-replicas copies) and durable pull consumer created when
// missing, JetStream requests that ride out a cluster's leader election (retried for --nats-wait),
// and `NatsSource`, the `Source` the pipeline consumes from when run with `--source
// nats://HOST:PORT[,nats://HOST:PORT...]`.
//
// Threads and ownership (see docs/NATS.md): one fetcher thread pulls batches from the durable
// consumer (a fetch never runs concurrently on one subscription), decodes each payload
// (malformed ones are terminated right there and never enter the pipeline), stamps each message's
// lease at delivery (`deadline_ns`: the server's AckWait runs from there), and hands messages to
// consume through a prefetch ring under one mutex (one lock per pull of up to 128 messages);
// `Message::handle` owns the natsMsg. While a message waits in the ring, the fetcher extends it
// (in-progress ack) when it comes due, under that mutex, so consume cannot take it meanwhile. Once
// pulled, exactly one thread touches it at a time: the lease thread while the message is
// kExtending (in-progress ack = lease extension), then the settling thread, which acks or nacks it
// and destroys it (exactly once). Acks are fire-and-forget: one checkpoint thread flushes
// (PING/PONG) every 100 ms while acks were sent, and an ack counts as confirmed once a flush after
// it succeeded; the rest are `acks_unconfirmed()` (the server may never have got them). Shutdown:
// `stop_fetching()` first, the pipeline nacks what it holds, then `close(give_up_at)` flushes
// every ack to the server (until the deadline) before the subscription and connection go away.
// A fetcher that found nothing for a second asks for the consumer's info once a second, so a
// consumer without a leader (a lost majority) is logged (start, every 5 s, end), not taken for an
// idle stream. In a cluster, a NatsSource moves its connection to the server that leads its
// consumer before binding (deliveries and acks then cross no route between servers).
// Use: `NatsSource src(cfg, pool, clock, log, metrics); src.start(notify, stopping); ...pipeline
// uses src...; src.stop_fetching(); ...drain...; src.close(deadline);`
#pragma once

#include <nats/nats.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mayhem/clock.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/observe/numbers.hpp"
#include "mayhem/source/source.hpp"

namespace mayhem {

struct NatsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A connection and its JetStream context. `url` is one server or a comma-separated list (a
// cluster's servers). Reconnects forever (every 250 ms, with jitter) while the server is away;
// publishes and acks made meanwhile wait in a 32 MB reconnect buffer. Every state change is
// logged. The first connection is not retried: a server that is not there at start is an error
// (NatsError, with the server's text). JetStream API requests that time out or find no leader (a
// cluster electing one) are retried with backoff for the client's patience (see request()).
class NatsClient {
 public:
  // `js_opts` (may be null) configures the JetStream context, e.g. async publishing. The servers
  // of `url` are tried in a random order (nats.c's default, which spreads clients over a
  // cluster), or in the order given when `in_order`.
  NatsClient(const std::string& url, std::shared_ptr<spdlog::logger> log,
             jsOptions* js_opts = nullptr, bool in_order = false);
  ~NatsClient();
  NatsClient(const NatsClient&) = delete;
  NatsClient& operator=(const NatsClient&) = delete;

  natsConnection* connection() const { return conn_; }
  jsCtx* js() const { return js_; }
  const std::string& url() const { return url_; }
  // Closes the connection and waits up to `wait` for nats.c's closed callback (then destroys it).
  // Idempotent; the destructor closes with a 5 s wait.
  void close(std::chrono::nanoseconds wait);

  // How long request() keeps retrying (default 30 s), and a predicate that ends the wait early
  // (a shutdown requested meanwhile).
  void set_patience(Nanos wait, std::function<bool()> give_up = {});

  // One JetStream API request: `attempt` makes it with the per-attempt Wait it is given in its
  // options and sets the error code. Made again, with backoff (100 ms doubling to 2 s), while
  // JetStream has no leader to answer (timeout, no responders, "temporarily unavailable"), each
  // wait logged (the first, then every 5 s), until the patience runs out: then NatsError ("...
  // no answer within N s"). Any other outcome (success, not found, another error) is returned.
  natsStatus request(const std::string& what,
                     const std::function<natsStatus(jsOptions&, jsErrCode&)>& attempt,
                     jsErrCode& jerr);

  // The stream holding `subject`, created when missing: `replicas` copies, file storage,
  // work-queue retention (a message is deleted once acked or terminated), a 2-minute
  // de-duplication window on Nats-Msg-Id. An existing stream is used as it is (a different
  // replica count is logged). More replicas than the cluster can place: NatsError saying so
  // ("no suitable peers" is retried for up to 10 s first: a cluster that just started may not
  // know all its servers yet).
  void ensure_stream(const std::string& stream, const std::string& subject, int replicas = 1);

 private:
  // What nats.c's connection callbacks use (their closure). They run on nats.c's own thread, the
  // closed callback last: close waits for it (bounded), then frees this; when it did not come in
  // time, this is left allocated (and reachable), so a late callback touches live memory.
  struct Callbacks {
    std::string url;
    std::shared_ptr<spdlog::logger> log;
    std::atomic<bool> closing{false};
    std::mutex closed_mutex;
    std::condition_variable closed_cv;
    bool closed = false;
  };

  void close_connection(std::chrono::nanoseconds wait);
  static void on_disconnected(natsConnection* nc, void* self);
  static void on_reconnected(natsConnection* nc, void* self);
  static void on_closed(natsConnection* nc, void* self);
  static void on_error(natsConnection* nc, natsSubscription* sub, natsStatus err, void* self);

  std::string url_;
  std::shared_ptr<spdlog::logger> log_;
  natsOptions* opts_ = nullptr;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  Nanos patience_ = 30 * kNanosPerSecond;
  std::function<bool()> give_up_;
  Callbacks* callbacks_ = nullptr;
  bool connection_closed_ = false;
};

// JetStream had no leader to answer (yet): a timeout, no responders (e.g. a new stream's subject
// not yet known to every server), the connection down, or "cluster not available / not leader /
// incomplete" (an election, a server restarting, a minority). Worth retrying: what request()
// retries, and what `mayhem publish` re-sends.
bool jetstream_unavailable(natsStatus s, jsErrCode e = jsErrCode(0));
// `--source`'s servers: a comma-separated list, each URL's leading spaces dropped, empties skipped.
std::vector<std::string> split_server_list(const std::string& list);
// The name a NATS server gives itself (server_name in the INFO line it sends first on any TCP
// connection), read from a plain connection to `url`; "" when not read within `timeout_ms`.
std::string nats_server_name(const std::string& url, int timeout_ms);
// Where the server named `name` (as JetStream names a stream's or consumer's leader) is: the
// server `nc` is attached to, or the URL of another one of its pool (`configured`, the
// comma-separated list given, first: its entries keep their credentials; then the servers the
// cluster told of), or neither (url empty).
struct ServerLookup {
  bool connected_to_it = false;
  std::string url;
};
ServerLookup nats_find_server(natsConnection* nc, const std::string& configured,
                              const std::string& name, int timeout_ms);
// Throws NatsError with `what`, the status text and nats.c's last error detail.
[[noreturn]] void throw_nats(const std::string& what, natsStatus s, jsErrCode jerr = jsErrCode(0));
// The status text, nats.c's last error detail on this thread, and the JetStream error code.
std::string describe_nats(natsStatus s, jsErrCode jerr = jsErrCode(0));

class NatsSource final : public Source {
 public:
  // Messages per fetch, and the most fetched and not yet pulled (two fetches' worth; both capped
  // by --max-in-flight). Each fetch wakes the graph's workers once, and they spin (sched_yield)
  // before they sleep again: 256 per fetch measured 6.7 µs of CPU per message, 1024 5.0.
  static constexpr std::uint32_t kFetchBatch = 1024;
  static constexpr std::uint64_t kMaxPrefetch = 2048;

  struct Config {
    std::string url, stream, subject, durable;
    Nanos ack_wait = 3 * kNanosPerSecond;     // the consumer's AckWait: --ack-deadline
    std::int64_t max_ack_pending = 100'000;   // the consumer's MaxAckPending (all processes)
    std::uint32_t fetch_batch = kFetchBatch;  // messages per fetch request
    std::uint64_t max_queued = kMaxPrefetch;  // fetched and not yet pulled by consume
    std::uint64_t limit = 0;                  // stop fetching after this many messages (0: never)
    // Messages waiting in the prefetch ring are extended this long after delivery (or after
    // their last extension): --extend-interval. At least 1 ms.
    Nanos extend_interval = 2 * kNanosPerSecond;
    int stream_replicas = 1;  // copies of the stream when this creates it: --stream-replicas
    // Start-up retries JetStream look-ups that find no leader this long: --nats-wait.
    Nanos nats_wait = 30 * kNanosPerSecond;
    // True once a shutdown was requested: start-up stops waiting for JetStream (NatsError).
    std::function<bool()> give_up;
  };

  // Connects, ensures the stream and the durable pull consumer, moves to the consumer's leader
  // (a cluster: see attach_to_consumer_leader), binds to it (each riding out a leader election
  // for up to `nats_wait`). Throws NatsError.
  NatsSource(Config cfg, MessagePool& messages, const Clock& clock,
             std::shared_ptr<spdlog::logger> log, Metrics& metrics);
  ~NatsSource() override;

  // Starts the fetcher; `notify` is called (from the fetcher thread) after messages were queued.
  // The fetcher starts no new fetch once `stopping()` is true (a shutdown was requested), so
  // messages nacked during the shutdown are not fetched back by this process.
  void start(std::function<void()> notify, std::function<bool()> stopping);
  // Stops and joins the fetcher; what it fetched stays queued for the pipeline to nack.
  void stop_fetching();
  // After every message is settled: flushes acks to the server (until `give_up_at`, on the
  // source's clock; what a failed flush leaves stays unconfirmed), then unsubscribes and closes
  // (waiting for the connection's closed callback no later than the deadline either).
  void close(Nanos give_up_at);
  // A shutdown that left the graph running (it may still use the connection): flush until
  // `give_up_at` to confirm the acks sent so far, without closing anything.
  void confirm_acks(Nanos give_up_at);
  // Acks sent (or attempted) that no successful flush has confirmed yet.
  std::uint64_t acks_unconfirmed() const {
    return acks_.load(std::memory_order_acquire) - acks_confirmed_.load(std::memory_order_acquire);
  }

  std::size_t pull(Message** out, std::size_t max) override;
  void ack(Message* const* msgs, std::size_t n) override;
  void nack(Message* const* msgs, std::size_t n) override;
  void extend(Message* const* msgs, std::size_t n) override;  // in-progress acks
  std::uint64_t backlog() const override { return depth_.load(std::memory_order_acquire); }
  // Broker scope: `received` (not `published`), prefetched messages as the backlog, and acked
  // counted only once the server confirmed it (the rest is ack_unconfirmed).
  void report(Numbers& n) const override {
    n.scope = NumberScope::kBroker;
    n.backlog = backlog();
    n.malformed = malformed();
    n.redelivered = redelivered();
    n.ack_unconfirmed = acks_unconfirmed();
    n.acked -= std::min(n.acked, n.ack_unconfirmed);
  }
  std::size_t drain(Message** out, std::size_t max) override;  // pull(): the ring is locked

  std::uint64_t malformed() const { return malformed_.load(std::memory_order_relaxed); }
  std::uint64_t redelivered() const { return redelivered_.load(std::memory_order_relaxed); }

 private:
  void ensure_consumer();
  // In a cluster, every delivery comes from the consumer's leader and every ack goes to it:
  // attached to another server, both cross a route (measured: ~7 µs more of the servers' CPU per
  // message, on R3 about a fifth of it). So when the leader is another server of the pool, the
  // connection is made again to it (best effort: no leader, no answer or no connection keeps the
  // one there is; after a failover nats.c reconnects to any server, as before).
  void attach_to_consumer_leader();
  void fetch_loop();
  // Fetcher thread: in-progress acks for the queued messages that are due; returns when the
  // next one is due (max when none is queued).
  Nanos extend_queued(Nanos now);
  // Fetcher thread: asks JetStream for the consumer's info; "" when it answered, else why not
  // (no leader, no responders, no answer in time).
  std::string probe_leader();
  // Fetcher thread: fetches fail or the consumer has no leader (logged when it starts, then
  // every 5 s while it lasts), and when it is over (logged with how long it lasted).
  void fetch_trouble(Nanos now, const std::string& why);
  void fetch_recovered(Nanos now);
  void settle(Message* const* msgs, std::size_t n, bool ack);
  void checkpoint_loop();
  // One flush: on success, every ack sent before it is confirmed.
  natsStatus flush_and_confirm(std::int64_t timeout_ms);

  const Config cfg_;
  MessagePool& messages_;
  const Clock& clock_;
  std::shared_ptr<spdlog::logger> log_;
  Metrics& metrics_;
  std::unique_ptr<NatsClient> client_;
  natsSubscription* sub_ = nullptr;

  // The prefetch ring (FIFO): fetcher pushes, pull() pops, the fetcher extends in place.
  std::mutex ring_mutex_;
  std::vector<Message*> ring_;  // capacity: max_queued (the fetcher never fetches past it)
  std::size_t ring_head_ = 0;
  std::size_t ring_size_ = 0;
  std::vector<Message*> extended_;  // fetcher thread only: what extend_queued() extended
  alignas(64) std::atomic<std::uint64_t> depth_{0};
  alignas(64) std::atomic<bool> fetcher_waiting_{false};
  std::mutex wait_mutex_;
  std::condition_variable wait_cv_;

  std::function<void()> notify_;
  std::function<bool()> stopping_;
  std::thread fetcher_;
  std::atomic<bool> stop_{false};
  std::uint64_t fetched_ = 0;  // fetcher thread only
  std::uint64_t seq_ = 0;      // fetcher thread only
  bool trouble_ = false;       // fetcher thread only: see fetch_trouble()
  std::uint64_t trouble_attempts_ = 0;
  Nanos trouble_since_ = 0, trouble_logged_ = 0;
  alignas(64) std::atomic<std::uint64_t> malformed_{0};
  std::atomic<std::uint64_t> redelivered_{0};
  std::atomic<std::uint64_t> settle_errors_{0};
  // Ack confirmation: acks_ counts every ack (attempted), acks_sent_ those nats.c took (written
  // to the connection or its reconnect buffer), acks_confirmed_ the acks_sent_ seen before the
  // last successful flush. The checkpoint thread flushes while acks_sent_ > acks_confirmed_.
  alignas(64) std::atomic<std::uint64_t> acks_{0};
  std::atomic<std::uint64_t> acks_sent_{0};
  alignas(64) std::atomic<std::uint64_t> acks_confirmed_{0};
  std::mutex checkpoint_mutex_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_stop_ = false;
  std::thread checkpoint_;
  bool closed_ = false;
};

}  // namespace mayhem
