// The NATS connection and JetStream setup: throw_nats, NatsClient (the connection, its callbacks,
// the stream), and NatsSource's setup and teardown (the durable pull consumer, the bind, the
// destructor). The fetcher, the prefetch ring and the acks are in nats_source.cpp.
#include "mayhem/source/nats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {
// A JetStream API request waits at most this long for its answer (with no leader, none comes:
// then it is made again), the backoff between requests doubles from the first to the last, and a
// retry is logged this often.
constexpr std::int64_t kApiWaitMs = 2000;
constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kLastBackoff = std::chrono::milliseconds(2000);
constexpr double kRetryLogEvery = 5.0;
// Creating a replicated stream that finds "no suitable peers" is retried this long (at most the
// patience), this often.
constexpr Nanos kPlacementWait = 10 * kNanosPerSecond;
constexpr auto kPlacementRetry = std::chrono::milliseconds(250);

// The cluster cannot place that many copies of a stream (or is a single server).
bool too_many_replicas(jsErrCode e) {
  return e == JSStreamReplicasNotSupportedErr || e == JSInsufficientResourcesErr ||
         e == JSClusterNoPeersErr;
}
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
constexpr std::int64_t kDuplicateWindowNs = 120LL * kNanosPerSecond;
constexpr Nanos kCloseWaitNs = 5 * kNanosPerSecond;  // without a deadline (the destructor)

// Callback states whose closed callback never came (see NatsClient::Callbacks): kept reachable.
std::mutex g_orphans_mutex;
std::vector<void*>* g_orphans = new std::vector<void*>;
}  // namespace

std::vector<std::string> split_server_list(const std::string& list) {
  std::vector<std::string> urls;
  for (std::size_t start = 0;;) {
    const std::size_t comma = list.find(',', start);
    std::string one = list.substr(start, comma == std::string::npos ? comma : comma - start);
    one.erase(0, one.find_first_not_of(' '));
    if (!one.empty()) urls.push_back(std::move(one));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return urls;
}

bool jetstream_unavailable(natsStatus s, jsErrCode e) {
  return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED ||
         e == JSClusterNotAvailErr || e == JSClusterNotLeaderErr || e == JSClusterIncompleteErr;
}

void throw_nats(const std::string& what, natsStatus s, jsErrCode jerr) {
  throw NatsError(fmt::format("{}: {}", what, describe_nats(s, jerr)));
}

std::string describe_nats(natsStatus s, jsErrCode jerr) {
  natsStatus last = NATS_OK;
  std::string_view detail = nats_GetLastError(&last) ? nats_GetLastError(&last) : "";
  // nats.c prefixes its detail with "(file.c:line): ": keep only the text.
  if (!detail.empty() && detail.front() == '(') {
    const std::size_t end = detail.find("): ");
    if (end != std::string_view::npos) detail.remove_prefix(end + 3);
  }
  const std::string_view status = natsStatus_GetText(s);
  std::string msg(status);
  if (!detail.empty() && detail != status) msg += fmt::format(" ({})", detail);
  if (jerr != 0) msg += fmt::format(" (JetStream error {})", static_cast<int>(jerr));
  return msg;
}

// ---- NatsClient ---------------------------------------------------------------------------------

NatsClient::NatsClient(const std::string& url, std::shared_ptr<spdlog::logger> log,
                       jsOptions* js_opts, bool in_order)
    : url_(url), log_(std::move(log)), callbacks_(new Callbacks) {
  callbacks_->url = url_;
  callbacks_->log = log_;
  // One URL or a comma-separated list (a cluster's nodes): each becomes a server of the pool.
  const std::vector<std::string> urls = split_server_list(url_);
  std::vector<const char*> servers;
  for (const auto& u : urls) servers.push_back(u.c_str());
  natsStatus s = natsOptions_Create(&opts_);
  if (s == NATS_OK)
    s = natsOptions_SetServers(opts_, servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK && in_order) s = natsOptions_SetNoRandomize(opts_, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts_, -1);  // forever
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts_, 250);
  if (s == NATS_OK) s = natsOptions_SetReconnectJitter(opts_, 100, 1000);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts_, 32 * 1024 * 1024);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts_, on_disconnected, callbacks_);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts_, on_reconnected, callbacks_);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts_, on_closed, callbacks_);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts_, on_error, callbacks_);
  if (s != NATS_OK) {
    natsOptions_Destroy(opts_);
    delete callbacks_;
    throw_nats("NATS options", s);
  }
  s = natsConnection_Connect(&conn_, opts_);
  if (s != NATS_OK) {
    natsOptions_Destroy(opts_);
    delete callbacks_;  // no connection: no callback can come
    throw_nats(fmt::format("cannot connect to {}", url_), s);
  }
  s = natsConnection_JetStream(&js_, conn_, js_opts);
  if (s != NATS_OK) {
    close_connection(std::chrono::nanoseconds(kCloseWaitNs));
    throw_nats("JetStream context", s);
  }
  log_->info("NATS: connected to {}", url_);
}

NatsClient::~NatsClient() {
  close(std::chrono::nanoseconds(kCloseWaitNs));
}

void NatsClient::close(std::chrono::nanoseconds wait) {
  if (connection_closed_) return;
  jsCtx_Destroy(js_);
  js_ = nullptr;
  close_connection(wait);
}

void NatsClient::close_connection(std::chrono::nanoseconds wait) {
  connection_closed_ = true;
  Callbacks* cb = callbacks_;
  cb->closing.store(true);
  natsConnection_Close(conn_);
  bool came;
  {
    std::unique_lock lock(cb->closed_mutex);
    came = cb->closed_cv.wait_for(lock, wait, [&] { return cb->closed; });
  }
  natsConnection_Destroy(conn_);
  natsOptions_Destroy(opts_);
  if (came) {
    delete cb;  // the closed callback is the last one
  } else {
    // A late callback would touch `cb`: leave it allocated (and reachable, for leak checkers).
    log_->warn("NATS: the connection's closed callback did not run within {:g} s; not waiting",
               std::chrono::duration<double>(wait).count());
    std::lock_guard lock(g_orphans_mutex);
    g_orphans->push_back(cb);
  }
  callbacks_ = nullptr;
}

void NatsClient::on_disconnected(natsConnection*, void* self) {
  auto* c = static_cast<Callbacks*>(self);
  if (c->closing.load()) return;  // our own close
  c->log->warn(
      "NATS: disconnected from {}; reconnecting every 250 ms (work in flight continues; acks "
      "are buffered and sent on reconnect)",
      c->url);
}
void NatsClient::on_reconnected(natsConnection*, void* self) {
  auto* c = static_cast<Callbacks*>(self);
  c->log->warn("NATS: reconnected to {}", c->url);
}
void NatsClient::on_closed(natsConnection*, void* self) {
  auto* c = static_cast<Callbacks*>(self);
  c->log->debug("NATS: connection to {} closed", c->url);
  // Notify under the lock: once it is released, close_connection may proceed and free `c`.
  std::lock_guard lock(c->closed_mutex);
  c->closed = true;
  c->closed_cv.notify_all();
}
void NatsClient::on_error(natsConnection*, natsSubscription*, natsStatus err, void* self) {
  auto* c = static_cast<Callbacks*>(self);
  c->log->error("NATS: asynchronous error: {}", natsStatus_GetText(err));
}

void NatsClient::set_patience(Nanos wait, std::function<bool()> give_up) {
  patience_ = wait;
  give_up_ = std::move(give_up);
}

natsStatus NatsClient::request(const std::string& what,
                               const std::function<natsStatus(jsOptions&, jsErrCode&)>& attempt,
                               jsErrCode& jerr) {
  using std::chrono::steady_clock;
  const auto start = steady_clock::now();
  const auto give_up_at = start + std::chrono::nanoseconds(patience_);
  auto backoff = std::chrono::duration_cast<steady_clock::duration>(kFirstBackoff);
  double logged_at = -kRetryLogEvery;
  for (int tries = 1;; ++tries) {
    jsOptions o;
    jsOptions_Init(&o);
    // A request waits no longer than the time left.
    const auto left_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(give_up_at - steady_clock::now())
            .count();
    o.Wait = tries == 1 ? kApiWaitMs : std::clamp<std::int64_t>(left_ms, 100, kApiWaitMs);
    jerr = jsErrCode(0);
    const natsStatus s = attempt(o, jerr);
    if (!jetstream_unavailable(s, jerr)) {
      if (tries > 1)
        log_->warn("NATS: {}: JetStream answered after {:.2f} s ({} attempts)", what,
                   seconds_since(start), tries);
      return s;
    }
    const double waited = seconds_since(start);
    const bool stop = give_up_ && give_up_();
    if (stop || steady_clock::now() + backoff >= give_up_at) {
      std::string why =
          stop ? fmt::format("{}: stopped while JetStream had no leader to answer", what)
               : fmt::format(
                     "{}: no answer from JetStream within {:g} s ({} attempts; no leader: is a "
                     "majority of the cluster up? --nats-wait sets the wait)",
                     what, nanos_to_seconds(patience_), tries);
      throw_nats(why, s, jerr);
    }
    if (waited - logged_at >= kRetryLogEvery) {
      logged_at = waited;
      log_->warn(
          "NATS: {}: {}{} after {:.1f} s; JetStream may be electing a leader: retrying for up to "
          "{:g} s",
          what, natsStatus_GetText(s),
          jerr != 0 ? fmt::format(" (JetStream error {})", static_cast<int>(jerr)) : "", waited,
          nanos_to_seconds(patience_));
    }
    // Sleep the backoff in slices, so a shutdown requested meanwhile is seen soon.
    const auto wake = steady_clock::now() + backoff;
    while (steady_clock::now() < wake && !(give_up_ && give_up_()))
      std::this_thread::sleep_for(std::min<steady_clock::duration>(wake - steady_clock::now(),
                                                                   std::chrono::milliseconds(50)));
    backoff = std::min<steady_clock::duration>(backoff * 2, kLastBackoff);
  }
}

void NatsClient::ensure_stream(const std::string& stream, const std::string& subject,
                               int replicas) {
  jsStreamInfo* si = nullptr;
  jsErrCode jerr = jsErrCode(0);
  const auto info = [&](jsOptions& o, jsErrCode& e) {
    return js_GetStreamInfo(&si, js_, stream.c_str(), &o, &e);
  };
  natsStatus s = request(fmt::format("stream {}: info", stream), info, jerr);
  if (s == NATS_OK) {
    const auto have = si->Config->Replicas;
    jsStreamInfo_Destroy(si);
    // Fewer copies than asked is worth a warning; more (an R3 stream, the default 1 asked) is not.
    if (have < replicas)
      log_->warn(
          "NATS: stream {} exists with {} replica(s), fewer than the {} asked for "
          "(--stream-replicas); using it as it is",
          stream, have, replicas);
    else if (have > replicas)
      log_->info("NATS: stream {} exists with {} replicas; using it as it is", stream, have);
    return;
  }
  if (s != NATS_NOT_FOUND) throw_nats(fmt::format("stream {}: info", stream), s, jerr);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subjects[] = {subject.c_str()};
  cfg.Name = stream.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_WorkQueuePolicy;
  cfg.Storage = js_FileStorage;
  cfg.Duplicates = kDuplicateWindowNs;
  cfg.Replicas = replicas;
  // A cluster that just started may not know all its servers yet: "no suitable peers" is retried
  // for a few seconds before it counts as more replicas than the cluster has.
  const auto placement_until =
      std::chrono::steady_clock::now() +
      std::min(std::chrono::nanoseconds(patience_), std::chrono::nanoseconds(kPlacementWait));
  for (bool logged = false;; logged = true) {
    s = request(
        fmt::format("stream {}: create", stream),
        [&](jsOptions& o, jsErrCode& e) { return js_AddStream(&si, js_, &cfg, &o, &e); }, jerr);
    if (s == NATS_OK || jerr != JSClusterNoPeersErr ||
        std::chrono::steady_clock::now() + kPlacementRetry >= placement_until ||
        (give_up_ && give_up_()))
      break;
    if (!logged)
      log_->warn(
          "NATS: stream {}: no servers to place {} replicas on yet (a cluster that just started "
          "may not know all its servers); retrying for up to {:g} s",
          stream, replicas,
          std::chrono::duration<double>(placement_until - std::chrono::steady_clock::now())
              .count());
    std::this_thread::sleep_for(kPlacementRetry);
  }
  if (s != NATS_OK) {
    if (too_many_replicas(jerr))
      throw_nats(fmt::format("stream {}: cannot be created with {} replicas (--stream-replicas): "
                             "more than the servers of the cluster (or than are up; a single "
                             "server holds 1)",
                             stream, replicas),
                 s, jerr);
    // Another process may have created it at the same moment.
    jsErrCode jerr2 = jsErrCode(0);
    if (request(fmt::format("stream {}: info", stream), info, jerr2) == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return;
    }
    throw_nats(fmt::format("stream {}: create", stream), s, jerr);
  }
  jsStreamInfo_Destroy(si);
  log_->info(
      "NATS: created stream {} (subject {}, {} replica(s), file storage, work-queue retention, 2 "
      "min de-duplication window)",
      stream, subject, replicas);
}

// ---- NatsSource ---------------------------------------------------------------------------------

NatsSource::NatsSource(Config cfg, MessagePool& messages, const Clock& clock,
                       std::shared_ptr<spdlog::logger> log, Metrics& metrics)
    : cfg_(std::move(cfg)),
      messages_(messages),
      clock_(clock),
      log_(std::move(log)),
      metrics_(metrics),
      ring_(std::max<std::uint64_t>(cfg_.max_queued, 1)) {
  client_ = std::make_unique<NatsClient>(cfg_.url, log_);
  client_->set_patience(cfg_.nats_wait, cfg_.give_up);
  client_->ensure_stream(cfg_.stream, cfg_.subject, cfg_.stream_replicas);
  ensure_consumer();
  attach_to_consumer_leader();
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = cfg_.stream.c_str();
  so.Consumer = cfg_.durable.c_str();  // bind: never create (nor delete) a consumer implicitly
  jsErrCode jerr = jsErrCode(0);
  const natsStatus s = client_->request(
      fmt::format("bind to consumer {}", cfg_.durable),
      [&](jsOptions& o, jsErrCode& e) {
        const natsStatus st = js_PullSubscribe(&sub_, client_->js(), cfg_.subject.c_str(),
                                               cfg_.durable.c_str(), &o, &so, &e);
        // The consumer exists (ensure_consumer found or made it), but in a cluster a consumer
        // another worker made a moment ago may not be known yet where the bind looks it up:
        // waited out like an election (seen with three workers starting together on R3).
        return e == JSConsumerNotFoundErr ? NATS_TIMEOUT : st;
      },
      jerr);
  if (s != NATS_OK) throw_nats(fmt::format("bind to consumer {}", cfg_.durable), s, jerr);
  checkpoint_ = std::thread([this] {
    name_this_thread("mayhem-natsack");
    checkpoint_loop();
  });
}

NatsSource::~NatsSource() {
  stop_fetching();
  // Normally close() ran after the pipeline settled everything. If not (construction of a later
  // piece failed), whatever is still queued goes back to the server.
  if (!closed_) {
    Message* buf[kBatchCapacity];
    for (std::size_t n; (n = drain(buf, kBatchCapacity)) != 0;) {
      nack(buf, n);
      messages_.release(buf, n);
    }
    close(clock_.now() + kCloseWaitNs);
  }
}

void NatsSource::ensure_consumer() {
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  const std::string what = fmt::format("consumer {}: info", cfg_.durable);
  const auto info = [&](jsOptions& o, jsErrCode& e) {
    return js_GetConsumerInfo(&ci, client_->js(), cfg_.stream.c_str(), cfg_.durable.c_str(), &o,
                              &e);
  };
  natsStatus s = client_->request(what, info, jerr);
  if (s == NATS_OK) {
    const jsConsumerConfig* c = ci->Config;
    if (c->DeliverSubject != nullptr && *c->DeliverSubject != '\0') {
      jsConsumerInfo_Destroy(ci);
      throw NatsError(fmt::format(
          "consumer {} on stream {} is a push consumer; Mayhem needs a pull consumer (pick "
          "another --durable)",
          cfg_.durable, cfg_.stream));
    }
    const bool same = c->AckWait == cfg_.ack_wait && c->MaxAckPending == cfg_.max_ack_pending;
    if (same) {
      jsConsumerInfo_Destroy(ci);
      log_->info("NATS: bound to durable pull consumer {} on stream {}", cfg_.durable, cfg_.stream);
      return;
    }
    // The lease thread's extension interval is chosen against AckWait: keep them in step.
    jsConsumerConfig upd = *c;
    upd.AckWait = cfg_.ack_wait;
    upd.MaxAckPending = cfg_.max_ack_pending;
    jsConsumerInfo* ci2 = nullptr;
    s = client_->request(
        fmt::format("consumer {}: update", cfg_.durable),
        [&](jsOptions& o, jsErrCode& e) {
          return js_UpdateConsumer(&ci2, client_->js(), cfg_.stream.c_str(), &upd, &o, &e);
        },
        jerr);
    log_->info("NATS: consumer {} had AckWait {:g} s, MaxAckPending {}; updated to {:g} s, {}",
               cfg_.durable, nanos_to_seconds(c->AckWait), c->MaxAckPending,
               nanos_to_seconds(cfg_.ack_wait), cfg_.max_ack_pending);
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) throw_nats(fmt::format("consumer {}: update", cfg_.durable), s, jerr);
    jsConsumerInfo_Destroy(ci2);
    return;
  }
  if (s != NATS_NOT_FOUND) throw_nats(fmt::format("consumer {}: info", cfg_.durable), s, jerr);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = cfg_.durable.c_str();
  cc.DeliverPolicy = js_DeliverAll;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = cfg_.ack_wait;
  cc.MaxDeliver = -1;  // at-least-once: never drop a message for having been redelivered often
  cc.MaxAckPending = cfg_.max_ack_pending;
  cc.FilterSubject = cfg_.subject.c_str();
  // Replicas stay 0: the consumer follows its stream.
  s = client_->request(
      fmt::format("consumer {}: create", cfg_.durable),
      [&](jsOptions& o, jsErrCode& e) {
        return js_AddConsumer(&ci, client_->js(), cfg_.stream.c_str(), &cc, &o, &e);
      },
      jerr);
  if (s != NATS_OK) {
    // Another process may have created it at the same moment.
    jsErrCode jerr2 = jsErrCode(0);
    if (client_->request(what, info, jerr2) == NATS_OK) {
      jsConsumerInfo_Destroy(ci);
      return;
    }
    throw_nats(fmt::format("consumer {}: create", cfg_.durable), s, jerr);
  }
  jsConsumerInfo_Destroy(ci);
  log_->info(
      "NATS: created durable pull consumer {} on stream {} (AckWait {:g} s, MaxAckPending {}, "
      "explicit acks, unlimited deliveries)",
      cfg_.durable, cfg_.stream, nanos_to_seconds(cfg_.ack_wait), cfg_.max_ack_pending);
}

}  // namespace mayhem
