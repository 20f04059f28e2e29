#include "mayhem/cli/publish.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mayhem/cli/number_flag.hpp"
#include "mayhem/logging.hpp"
#include "mayhem/message.hpp"
#include "mayhem/options.hpp"
#include "mayhem/source/nats.hpp"
#include "mayhem/source/payload.hpp"

namespace mayhem::cli {

namespace {

using SteadyClock = std::chrono::steady_clock;
// Re-sends back off from the first to the last, the wait for a publish's confirmation is at most
// this long (then it counts as unanswered and is re-sent), a wait is logged this often, and the
// first errors are logged one by one.
constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kLastBackoff = std::chrono::milliseconds(2000);
constexpr double kMaxAckWaitS = 5.0;
constexpr double kRetryLogEvery = 5.0;
constexpr std::uint64_t kErrorsLogged = 5;
// Re-sends stop within the stream's 2-minute de-duplication window (counted from the first
// failure, which comes at most one ack wait after the first send), so a re-send of something the
// server did store is still recognised as a duplicate.
constexpr double kMaxResendS = 100.0;

// A publish JetStream could not take yet, and when to send it again.
struct Resend {
  SteadyClock::time_point first_failed, due;
  int attempts = 0;
};

struct Confirmations {
  std::atomic<std::uint64_t> confirmed{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> failed{0};
  std::shared_ptr<spdlog::logger> log;

  // Publishes to send again (owned here), and re-sent ones not answered yet. The mutex is taken
  // only while something was refused: `waiting` and `resent_out` say when, without it.
  std::mutex mutex;
  std::vector<std::pair<natsMsg*, Resend>> queue;
  std::unordered_map<natsMsg*, Resend> resent;
  std::string last_error;
  std::atomic<std::uint64_t> waiting{0};
  std::atomic<std::uint64_t> resent_out{0};
  std::atomic<std::uint64_t> resent_confirmed{0};
};

SteadyClock::duration backoff_for(int attempts) {
  auto b = std::chrono::duration_cast<SteadyClock::duration>(kFirstBackoff);
  for (int i = 0; i < attempts && b < kLastBackoff; ++i) b *= 2;
  return std::min<SteadyClock::duration>(b, kLastBackoff);
}

// Called by nats.c's delivery thread for every publish it hears back about (a confirmation, an
// error, or no answer within the publish's MaxWait). One that JetStream could not take (no
// responders, no answer, no leader) is kept for the main thread to send again.
void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* c = static_cast<Confirmations*>(closure);
  Resend r{};
  bool was_resent = false;
  if (c->resent_out.load(std::memory_order_acquire) != 0) {
    std::lock_guard lock(c->mutex);
    if (auto it = c->resent.find(msg); it != c->resent.end()) {
      r = it->second;
      was_resent = true;
      c->resent.erase(it);
      c->resent_out.fetch_sub(1, std::memory_order_release);
    }
  }
  if (pa != nullptr) {
    (pa->Duplicate ? c->duplicates : c->confirmed).fetch_add(1, std::memory_order_relaxed);
    if (was_resent) c->resent_confirmed.fetch_add(1, std::memory_order_relaxed);
  } else if (pae != nullptr && jetstream_unavailable(pae->Err, pae->ErrCode)) {
    const auto now = SteadyClock::now();
    if (!was_resent) r.first_failed = now;
    r.due = now + backoff_for(r.attempts);
    std::lock_guard lock(c->mutex);
    c->last_error = describe_nats(pae->Err, pae->ErrCode);
    c->queue.emplace_back(msg, r);
    c->waiting.fetch_add(1, std::memory_order_release);
    return;  // ours until re-sent
  } else if (pae != nullptr) {
    if (c->failed.fetch_add(1, std::memory_order_relaxed) < kErrorsLogged)
      c->log->error("Publish failed: {} ({})", pae->ErrText ? pae->ErrText : "",
                    natsStatus_GetText(pae->Err));
  }
  natsMsg_Destroy(msg);
}

// The main thread's side: sends again what is due, gives up on what waited too long, and logs
// the wait (its start, every 5 s, its end), as the worker's JetStream look-ups do.
class Resender {
 public:
  Resender(Confirmations& c, jsCtx* js, double patience_s, std::int64_t ack_wait_ms)
      : c_(c), js_(js), patience_s_(std::min(patience_s, kMaxResendS)), ack_wait_ms_(ack_wait_ms) {}

  // Something is waiting to be sent again.
  bool waiting() const { return c_.waiting.load(std::memory_order_acquire) != 0; }
  // Something is waiting, or was re-sent and not answered yet.
  bool busy() const { return waiting() || c_.resent_out.load(std::memory_order_acquire) != 0; }
  std::uint64_t resends() const { return resends_; }
  // Nothing refused, nothing re-sent outstanding, no wait being logged.
  bool idle() const { return !in_wait_ && !busy(); }

  // Sends again what is due; returns when the next one is due (or now + 50 ms).
  SteadyClock::time_point pump() {
    const auto now = SteadyClock::now();
    std::vector<std::pair<natsMsg*, Resend>> due;
    auto next = now + std::chrono::milliseconds(50);
    std::string error;
    std::size_t refused = 0;
    if (waiting()) {
      std::lock_guard lock(c_.mutex);
      error = c_.last_error;
      auto& q = c_.queue;
      refused = q.size();
      for (std::size_t i = 0; i < q.size();) {
        if (q[i].second.due <= now) {
          due.push_back(q[i]);
          q[i] = q.back();
          q.pop_back();
          c_.waiting.fetch_sub(1, std::memory_order_release);
        } else {
          next = std::min(next, q[i].second.due);
          ++i;
        }
      }
    }
    for (auto& [msg, r] : due) send_again(msg, r, now);
    log_wait(now, refused, error);
    return next;
  }

 private:
  void send_again(natsMsg* msg, Resend r, SteadyClock::time_point now) {
    if (std::chrono::duration<double>(now - r.first_failed).count() > patience_s_) {
      if (c_.failed.fetch_add(1, std::memory_order_relaxed) < kErrorsLogged)
        c_.log->error(
            "Publish failed: JetStream did not take a message within {:g} s of re-sending ({} "
            "attempts); no leader: is a majority of the cluster up? (--nats-wait sets the wait)",
            patience_s_, r.attempts + 1);
      natsMsg_Destroy(msg);
      return;
    }
    ++r.attempts;
    ++resends_;
    {
      std::lock_guard lock(c_.mutex);
      c_.resent.emplace(msg, r);
      c_.resent_out.fetch_add(1, std::memory_order_release);
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = ack_wait_ms_;  // the Nats-Msg-Id header is still on the message
    natsMsg* m = msg;
    if (js_PublishMsgAsync(js_, &m, &po) == NATS_OK) return;
    // Not taken (e.g. the window stayed full): still ours, back in the queue.
    std::lock_guard lock(c_.mutex);
    if (c_.resent.erase(msg) != 0) c_.resent_out.fetch_sub(1, std::memory_order_release);
    r.due = SteadyClock::now() + backoff_for(r.attempts);
    c_.queue.emplace_back(msg, r);
    c_.waiting.fetch_add(1, std::memory_order_release);
  }

  // After the re-sends: `refused` were waiting before them, for `error` (the last one).
  void log_wait(SteadyClock::time_point now, std::size_t refused, const std::string& error) {
    const bool busy_now = busy();
    if (!in_wait_) {
      if (!busy_now) return;
      in_wait_ = true;
      since_ = logged_ = now;
      resends_at_start_ = resends_;
      confirmed_at_start_ = c_.resent_confirmed.load();
      c_.log->warn(
          "Publish: JetStream did not take {} message(s) ({}); it may be electing a leader, or a "
          "new stream's subject has not reached every server yet: re-sending them (same message "
          "id: the de-duplication window keeps one copy) with backoff for up to {:g} s "
          "(--nats-wait)",
          refused, error.empty() ? "no answer" : error, patience_s_);
      return;
    }
    const double waited = std::chrono::duration<double>(now - since_).count();
    if (!busy_now) {
      in_wait_ = false;
      const std::uint64_t n = resends_ - resends_at_start_;
      if (c_.resent_confirmed.load() != confirmed_at_start_)
        c_.log->warn("Publish: JetStream confirmed again after {:.1f} s ({} re-sends)", waited, n);
      else
        c_.log->error("Publish: gave up re-sending after {:.1f} s ({} re-sends)", waited, n);
      return;
    }
    if (std::chrono::duration<double>(now - logged_).count() >= kRetryLogEvery) {
      logged_ = now;
      c_.log->warn("Publish: still re-sending after {:.1f} s: {} waiting, {} re-sent so far ({})",
                   waited, c_.waiting.load(), resends_ - resends_at_start_,
                   error.empty() ? "no answer" : error);
    }
  }

  Confirmations& c_;
  jsCtx* js_;
  const double patience_s_;
  const std::int64_t ack_wait_ms_;
  std::uint64_t resends_ = 0;
  bool in_wait_ = false;
  SteadyClock::time_point since_, logged_;
  std::uint64_t resends_at_start_ = 0, confirmed_at_start_ = 0;
};

// Invalid payloads of several kinds, for tests of the consumer's malformed-message path.
std::string malformed_payload(std::uint64_t i) {
  switch (i % 5) {
    case 0:
      return "this is not json";
    case 1:
      return "[\"cattle-abcd\", \"not an object\"]";
    case 2:
      return R"({"instance_name": "cattle-abcd"})";
    case 3:
      return R"({"instance_name": "cattle-abcd", "message_id": "not-a-uuid"})";
    default:
      return R"({"instance_name": "an instance name that is far too long", )"
             R"("message_id": "0b4f0a6e-8b1f-4c1e-9d3a-6f1e2d3c4b5a"})";
  }
}

}  // namespace

CLI::App* add_publish_command(CLI::App& app, PublishOptions& o) {
  auto* cmd = app.add_subcommand(
      "publish",
      "Publish N messages to a NATS JetStream stream (created when missing): asynchronous, at "
      "most --max-pending unconfirmed, message_id as the de-duplication id; prints one JSON "
      "object with what the server confirmed");
  cmd->option_defaults()->always_capture_default();
  cmd->add_option("--nats", o.url,
                  "Server URL, nats://HOST:PORT, or a comma-separated list (a cluster's servers)")
      ->type_name("URL[,URL...]")
      ->required();
  add_number(*cmd, "--messages", o.messages, "Messages to publish")->required();
  add_number(*cmd, "--rate", o.rate, "Messages per second (0 = as fast as confirmations allow)");
  cmd->add_option("--stream", o.stream, "JetStream stream")->type_name("NAME");
  cmd->add_option("--subject", o.subject, "Subject to publish on")->type_name("SUBJECT");
  add_number(*cmd, "--stream-replicas", o.stream_replicas,
             "Copies of the stream when this creates it (1..5, at most the cluster's servers)");
  add_number(*cmd, "--nats-wait", o.nats_wait,
             "Seconds to keep retrying (and re-sending publishes) while JetStream has no leader (a "
             "cluster electing one) or no responders (a new stream); re-sends stop at 100 s");
  add_number(*cmd, "--max-pending", o.max_pending, "Most unconfirmed publishes at a time");
  add_number(*cmd, "--seed", o.seed, "Seed for instance names and ids (0 = pick one)");
  add_number(*cmd, "--malformed", o.malformed,
             "Also publish this many invalid payloads, before the messages (for tests)");
  add_number(*cmd, "--timeout", o.timeout,
             "Seconds to wait for the last confirmations (longer while re-sending)");
  add_log_level(*cmd, o.log_level);
  return cmd;
}

std::optional<std::string> validate(const PublishOptions& o) {
  if (!valid_nats_urls(o.url))
    return fmt::format(
        "--nats must be nats://HOST:PORT or a comma-separated list of them (got '{}')", o.url);
  if (o.messages == 0 && o.malformed == 0)
    return std::string("--messages: must be at least 1 (or --malformed)");
  const std::pair<const char*, double> numbers[] = {
      {"--messages", static_cast<double>(o.messages)},
      {"--malformed", static_cast<double>(o.malformed)},
      {"--rate", o.rate},
      {"--max-pending", static_cast<double>(o.max_pending)},
      {"--timeout", o.timeout},
  };
  for (const auto& [flag, value] : numbers)
    if (auto why = check_value(flag_range(flag), value)) return fmt::format("{}: {}", flag, *why);
  Options run;  // the same name rules as the consumer's flags
  run.stream = o.stream;
  run.subject = o.subject;
  run.stream_replicas = o.stream_replicas;
  run.nats_wait = o.nats_wait;
  if (auto err = mayhem::validate(run)) return err;
  return std::nullopt;
}

int publish(const PublishOptions& o) {
  Options lo;
  lo.log_level = o.log_level;
  auto log = make_logger(lo);
  const std::uint64_t seed = o.seed != 0 ? o.seed : (std::random_device{}() | 1ULL);
  Confirmations conf;
  conf.log = log;

  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = static_cast<std::int64_t>(o.max_pending);
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = &conf;
  jo.PublishAsync.StallWait = 1000;  // a full window waits this long, then we retry

  std::unique_ptr<NatsClient> client;
  try {
    client = std::make_unique<NatsClient>(o.url, log, &jo);
    client->set_patience(seconds_to_nanos(o.nats_wait));
    client->ensure_stream(o.stream, o.subject, static_cast<int>(o.stream_replicas));
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    return 1;
  }
  log->info("Publishing {} messages (+{} malformed) to {} subject {} (seed {})", o.messages,
            o.malformed, o.url, o.subject, seed);

  const auto start = SteadyClock::now();
  const auto deadline_of = [&](std::uint64_t i) {
    return start + std::chrono::duration_cast<SteadyClock::duration>(
                       std::chrono::duration<double>(static_cast<double>(i) / o.rate));
  };
  // Each publish waits this long for its confirmation; unanswered, it is re-sent like one that
  // found no responders (see Resender), for up to --nats-wait.
  const auto ack_wait_ms = static_cast<std::int64_t>(std::min(o.timeout, kMaxAckWaitS) * 1000);
  Resender resender(conf, client->js(), o.nats_wait, ack_wait_ms);
  // Before a new publish: what waits to be sent again goes first (nothing new while JetStream
  // refuses: the unconfirmed window stays bounded).
  const auto resend_first = [&] {
    if (resender.idle()) return;  // the usual case: two atomic loads per publish
    while (resender.waiting()) std::this_thread::sleep_until(resender.pump());
    resender.pump();
  };
  // One publish, retried while the window stays full or the server is away (same Nats-Msg-Id:
  // a retry of something the server did store is recognised as a duplicate).
  const auto send = [&](const std::string& payload, const std::string& msg_id) -> bool {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    po.MaxWait = ack_wait_ms;
    const auto give_up = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                                  std::chrono::duration<double>(o.timeout));
    for (;;) {
      resend_first();
      const natsStatus s = js_PublishAsync(client->js(), o.subject.c_str(), payload.data(),
                                           static_cast<int>(payload.size()), &po);
      if (s == NATS_OK) return true;
      if (SteadyClock::now() > give_up) {
        log->error("Publish of {} failed: {}", msg_id, natsStatus_GetText(s));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  };

  std::uint64_t sent = 0, not_sent = 0;
  for (std::uint64_t i = 0; i < o.malformed; ++i) {
    if (send(malformed_payload(i), fmt::format("malformed-{}-{}", seed, i)))
      ++sent;
    else
      ++not_sent;
  }
  MessageFactory factory(seed);
  Message m;
  for (std::uint64_t i = 0; i < o.messages; ++i) {
    if (o.rate > 0) std::this_thread::sleep_until(deadline_of(i));
    factory.fill(m, i, 0);
    const std::string id = m.id_string();
    if (send(encode_payload(m.instance_name, id), id))
      ++sent;
    else
      ++not_sent;
    if (log->should_log(spdlog::level::debug)) log->debug("Published message {}", m);
  }
  const double publish_s = std::chrono::duration<double>(SteadyClock::now() - start).count();

  // The last confirmations: every publish is answered within its wait (or times out and is
  // re-sent, or given up after --nats-wait), so this ends; --timeout (plus --nats-wait while
  // re-sending) bounds it anyway.
  const auto sends_done = SteadyClock::now();
  const auto patience =
      std::chrono::duration<double>(o.timeout + std::min(o.nats_wait, kMaxResendS));
  jsPubOptions co;
  jsPubOptions_Init(&co);
  co.MaxWait = 100;
  natsStatus s = NATS_OK;
  for (;;) {
    const auto next = resender.pump();
    if (!resender.waiting()) {
      s = js_PublishAsyncComplete(client->js(), &co);
      if (s == NATS_OK && !resender.busy()) break;
    } else {
      std::this_thread::sleep_until(next);
    }
    if (SteadyClock::now() - sends_done > patience) {
      s = NATS_TIMEOUT;
      break;
    }
  }
  resender.pump();  // logs the end of a wait
  std::uint64_t unconfirmed = 0;
  if (s != NATS_OK) {
    natsMsgList pending{nullptr, 0};
    if (js_PublishAsyncGetPendingList(&pending, client->js()) == NATS_OK) {
      unconfirmed = static_cast<std::uint64_t>(pending.Count);
      natsMsgList_Destroy(&pending);
    }
    log->error("{} publishes were not confirmed within {:g} s ({})", unconfirmed,
               std::chrono::duration<double>(SteadyClock::now() - sends_done).count(),
               natsStatus_GetText(s));
  }
  const double wall_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  client.reset();
  {
    // Given up on before they could be sent again (the wait above ran out): ours to free.
    std::lock_guard lock(conf.mutex);
    for (auto& [msg, r] : conf.queue) natsMsg_Destroy(msg);
    unconfirmed += conf.queue.size();
    conf.queue.clear();
  }

  const std::uint64_t confirmed = conf.confirmed.load(), dup = conf.duplicates.load(),
                      failed = conf.failed.load();
  const std::uint64_t total = o.messages + o.malformed;
  log->info("Published {} in {:.3f} s; confirmed {} (+{} duplicates), failed {}, unconfirmed {}",
            sent, wall_s, confirmed, dup, failed, unconfirmed);
  nlohmann::json out{{"requested", total},
                     {"sent", sent},
                     {"not_sent", not_sent},
                     {"confirmed", confirmed},
                     {"duplicates", dup},
                     {"failed", failed},
                     {"resent", resender.resends()},
                     {"unconfirmed", unconfirmed},
                     {"malformed", o.malformed},
                     {"publish_s", publish_s},
                     {"wall_s", wall_s},
                     {"msgs_per_s", wall_s > 0 ? static_cast<double>(confirmed + dup) / wall_s : 0},
                     {"seed", seed}};
  std::cout << out.dump() << std::endl;
  log->flush();
  return confirmed + dup == total ? 0 : 1;
}

}  // namespace mayhem::cli
