#include "mayhem/cli/publish.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <iostream>
#include <random>
#include <thread>

#include "mayhem/logging.hpp"
#include "mayhem/message.hpp"
#include "mayhem/options.hpp"
#include "mayhem/source/nats.hpp"
#include "mayhem/source/payload.hpp"

namespace mayhem::cli {

namespace {

struct Confirmations {
  std::atomic<std::uint64_t> confirmed{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::atomic<std::uint64_t> failed{0};
  std::shared_ptr<spdlog::logger> log;
};

// Called by nats.c's delivery thread for every publish it hears back about.
void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* c = static_cast<Confirmations*>(closure);
  if (pa != nullptr) {
    (pa->Duplicate ? c->duplicates : c->confirmed).fetch_add(1, std::memory_order_relaxed);
  } else if (pae != nullptr) {
    if (c->failed.fetch_add(1, std::memory_order_relaxed) < 5)
      c->log->error("Publish failed: {} ({})", pae->ErrText ? pae->ErrText : "",
                    natsStatus_GetText(pae->Err));
  }
  natsMsg_Destroy(msg);
}

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
      ->required();
  cmd->add_option("--messages", o.messages, "Messages to publish")->required();
  cmd->add_option("--rate", o.rate, "Messages per second (0 = as fast as confirmations allow)");
  cmd->add_option("--stream", o.stream, "JetStream stream");
  cmd->add_option("--subject", o.subject, "Subject to publish on");
  cmd->add_option(
      "--stream-replicas", o.stream_replicas,
      "Copies of the stream when this creates it (1..5, at most the cluster's servers)");
  cmd->add_option(
      "--nats-wait", o.nats_wait,
      "Seconds to keep retrying while JetStream has no leader (a cluster electing one)");
  cmd->add_option("--max-pending", o.max_pending, "Most unconfirmed publishes at a time");
  cmd->add_option("--seed", o.seed, "Seed for instance names and ids (0 = pick one)");
  cmd->add_option("--malformed", o.malformed,
                  "Also publish this many invalid payloads, before the messages (for tests)");
  cmd->add_option("--timeout", o.timeout, "Seconds to wait for the last confirmations");
  cmd->add_option("--log-level", o.log_level, "trace|debug|info|warning|error|critical|off")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warning", "warn", "error", "critical", "off"}));
  return cmd;
}

std::optional<std::string> validate(const PublishOptions& o) {
  if (!valid_nats_urls(o.url))
    return fmt::format(
        "--nats must be nats://HOST:PORT or a comma-separated list of them (got '{}')", o.url);
  if (o.messages == 0 && o.malformed == 0) return std::string("--messages must be at least 1");
  if (!(std::isfinite(o.rate) && o.rate >= 0))
    return fmt::format("--rate must be >= 0 (got {})", o.rate);
  if (o.max_pending == 0 || o.max_pending > 1'000'000)
    return fmt::format("--max-pending must be within [1, 1000000] (got {})", o.max_pending);
  if (!(std::isfinite(o.timeout) && o.timeout > 0))
    return fmt::format("--timeout must be > 0 seconds (got {})", o.timeout);
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

  const auto start = std::chrono::steady_clock::now();
  const auto deadline_of = [&](std::uint64_t i) {
    return start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(i) / o.rate));
  };
  // One publish, retried while the window stays full or the server is away (same Nats-Msg-Id:
  // a retry of something the server did store is recognised as a duplicate).
  const auto send = [&](const std::string& payload, const std::string& msg_id) -> bool {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id.c_str();
    const auto give_up = std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double>(o.timeout));
    for (;;) {
      const natsStatus s = js_PublishAsync(client->js(), o.subject.c_str(), payload.data(),
                                           static_cast<int>(payload.size()), &po);
      if (s == NATS_OK) return true;
      if (std::chrono::steady_clock::now() > give_up) {
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
  const double publish_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  jsPubOptions co;
  jsPubOptions_Init(&co);
  co.MaxWait = static_cast<std::int64_t>(o.timeout * 1000);
  natsStatus s = js_PublishAsyncComplete(client->js(), &co);
  std::uint64_t unconfirmed = 0;
  if (s != NATS_OK) {
    natsMsgList pending{nullptr, 0};
    if (js_PublishAsyncGetPendingList(&pending, client->js()) == NATS_OK) {
      unconfirmed = static_cast<std::uint64_t>(pending.Count);
      natsMsgList_Destroy(&pending);
    }
    log->error("{} publishes were not confirmed within {:g} s ({})", unconfirmed, o.timeout,
               natsStatus_GetText(s));
  }
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  client.reset();

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
