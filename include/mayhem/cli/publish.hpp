// `mayhem publish`: the reference's publish side against a real NATS JetStream server. Publishes
// N messages `{"instance_name": "cattle-xxxx", "message_id": "<uuid4>"}` asynchronously with at
// most `max_pending` unconfirmed at a time, the message_id as the de-duplication id (Nats-Msg-Id,
// so a re-send after a lost confirmation is not stored twice), and reports on stdout, as one JSON
// object, what the server confirmed. A publish JetStream could not take yet (no responders: a
// new stream's subject not on every server yet; no answer within min(--timeout, 5 s); no leader)
// is re-sent with backoff (100 ms doubling to 2 s) for up to --nats-wait (at most 100 s, inside
// the 2-minute de-duplication window), logged when that starts, every 5 s and when JetStream
// confirms again; each message is counted once (confirmed or duplicate, or failed when given up).
// Exit 0 when every message was confirmed.
// Use: `mayhem publish --nats nats://127.0.0.1:4222 --messages 1000 [--rate 500]`.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace mayhem::cli {

struct PublishOptions {
  std::string url;  // nats://HOST:PORT or a comma-separated list
  std::uint64_t messages = 0;
  double rate = 0;  // msgs/s; 0 = as fast as the unconfirmed window allows
  std::string stream = "MAYHEM";
  std::string subject = "mayhem.restart";
  std::uint32_t stream_replicas = 1;  // copies of the stream, when this creates it
  double nats_wait = 30;              // seconds of retries while JetStream has no leader
  std::uint64_t max_pending = 4096;   // unconfirmed publishes at most
  std::uint64_t seed = 0;             // message ids are a function of it; 0 = pick one
  std::uint64_t malformed = 0;        // also publish this many invalid payloads first (tests)
  double timeout = 30;                // seconds to wait for the last confirmations
  std::string log_level = "info";
};

// Adds the `publish` subcommand and its flags to `app`.
CLI::App* add_publish_command(CLI::App& app, PublishOptions& o);
std::optional<std::string> validate(const PublishOptions& o);
// Runs it; returns the exit status (0: all confirmed, 1: some were not or the server failed).
int publish(const PublishOptions& o);

}  // namespace mayhem::cli
