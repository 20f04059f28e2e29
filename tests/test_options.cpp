#include <catch2/catch.hpp>

#include "mayhem/options.hpp"

using namespace mayhem;

TEST_CASE("Default options are valid and match the reference", "[options]") {
  Options o;
  CHECK_FALSE(validate(o).has_value());
  CHECK(o.fail_rate == 0.25);
  CHECK(o.extend_interval == 2.0);
  CHECK(o.ack_deadline == 3.0);
  CHECK(o.publish_interval == 1.0);
  CHECK(o.latency_scale == 1.0);
  CHECK(o.threads >= 1);
}

TEST_CASE("validate rejects each bad option with a message naming the flag", "[options]") {
  struct Case {
    const char* flag;
    void (*mutate)(Options&);
  };
  const Case cases[] = {
      {"--fail-rate", [](Options& o) { o.fail_rate = 1.5; }},
      {"--fail-rate", [](Options& o) { o.fail_rate = -0.1; }},
      {"--latency-scale", [](Options& o) { o.latency_scale = -1; }},
      {"--publish-interval", [](Options& o) { o.publish_interval = -1; }},
      {"--rate", [](Options& o) { o.rate = -5; }},
      {"--extend-interval", [](Options& o) { o.extend_interval = 0; }},
      {"--ack-deadline", [](Options& o) { o.ack_deadline = 0; }},
      {"--max-in-flight", [](Options& o) { o.max_in_flight = 0; }},
      {"--queue-capacity", [](Options& o) { o.queue_capacity = 0; }},
      {"--batch-size", [](Options& o) { o.batch_size = 0; }},
      {"--batch-size", [](Options& o) { o.batch_size = 129; }},
      {"--threads", [](Options& o) { o.threads = 0; }},
      {"--io-threads", [](Options& o) { o.io_threads = 0; }},
      {"--restart-retries", [](Options& o) { o.restart_retries = 17; }},
      {"--shutdown-timeout", [](Options& o) { o.shutdown_timeout = 0; }},
      {"--stream-replicas", [](Options& o) { o.stream_replicas = 0; }},
      {"--stream-replicas", [](Options& o) { o.stream_replicas = 6; }},
      {"--nats-wait", [](Options& o) { o.nats_wait = -1; }},
      {"--source", [](Options& o) { o.source = "nats://a:1,http://b:2"; }},
      {"--source", [](Options& o) { o.source = "nats://a:1,"; }},
  };
  for (const auto& c : cases) {
    Options o;
    c.mutate(o);
    auto err = validate(o);
    INFO(c.flag);
    REQUIRE(err.has_value());
    CHECK(err->find(c.flag) != std::string::npos);
  }
}
