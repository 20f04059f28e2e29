// The hand-written floor (benchmark scenario 5): one thread doing the same per-message work as the
// pipeline at zero latency -- make the message (pool, id, name), pull it, first extension, save and
// restart outcomes (with real retries), handle results, ack, record latency, free -- with no graph,
// no queues and no other threads. What the pipeline costs is its throughput next to this one.
// Usage: mayhem_floor --messages N [--fail-rate F] [--restart-retries R] [--seed S] --summary-json
#include <sys/resource.h>
#include <CLI/CLI.hpp>

#include <iostream>

#include "mayhem/clock.hpp"
#include "mayhem/message.hpp"
#include "mayhem/metrics.hpp"
#include "mayhem/summary.hpp"

using namespace mayhem;

int main(int argc, char** argv) {
  std::uint64_t messages = 10'000'000;
  double fail_rate = 0.25;
  std::uint32_t retries = 3;
  std::uint64_t seed = 1;
  double latency_scale = 0;
  bool json = false;
  CLI::App app{"Mayhem's hand-written floor: the pipeline's per-message work in one plain loop"};
  app.add_option("--messages", messages, "Messages to process");
  app.add_option("--fail-rate", fail_rate, "Probability a save or restart attempt fails");
  app.add_option("--restart-retries", retries, "Retries after a failed restart");
  app.add_option("--seed", seed, "Seed");
  app.add_option("--latency-scale", latency_scale, "Must be 0: the floor does no waiting")
      ->check(CLI::Range(0.0, 0.0));
  app.add_flag("--summary-json", json, "Print the JSON summary");
  CLI11_PARSE(app, argc, argv);

  MessagePool pool(4096);
  MessageFactory factory(seed);
  Histogram latency;
  Summary s;
  const Nanos start = steady_now();
  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  constexpr std::uint32_t kBatch = 128;
  Message* buf[kBatch];
  // The messages' lease states, kept by their lot in the pipeline (Lot::lease_bits): one lot here.
  std::atomic<std::uint64_t> lease_bits[kBatch / 32] = {};
  std::uint64_t seq = 0;
  while (seq < messages) {
    const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(kBatch, messages - seq));
    pool.acquire(buf, n);
    const Nanos now = steady_now();
    for (std::uint32_t i = 0; i < n; ++i) {
      Message& m = *buf[i];
      factory.fill(m, seq++, now);  // publish
      m.extended_cnt = 1;           // consume: first extension
      m.deadline_ns = now + 3 * kNanosPerSecond;
      // save and restart outcomes, drawn exactly as the pipeline draws them
      if (to_unit(mix(m.seed, 1)) < fail_rate)
        ++s.save_failed;
      else {
        m.saved = true;
        ++s.saved;
      }
      std::uint32_t attempt = 0;
      for (;;) {
        const auto key = static_cast<std::uint64_t>(1) * 64 + attempt * 2 + 1;
        if (!(to_unit(mix(m.seed, key)) < fail_rate)) {
          m.restarted = true;
          ++s.restarted;
          break;
        }
        if (attempt == retries) {
          m.restart_failed = true;
          ++s.restart_failed;
          break;
        }
        ++attempt;
        ++s.restart_retries;
      }
      // settle: the lease ends (Leases::done), then the ack. One thread, so a store: the
      // pipeline's locked fetch_or (against the lease thread) is part of what the graph costs.
      auto& bits = lease_bits[i / 32];
      bits.store(bits.load(std::memory_order_relaxed) | (std::uint64_t{2} << (2 * (i % 32))),
                 std::memory_order_release);
      m.acked = true;
    }
    const Nanos done = steady_now();
    for (std::uint32_t i = 0; i < n; ++i)
      latency.record(static_cast<std::uint64_t>(done - buf[i]->published_ns));
    pool.release(buf, n);
  }
  s.wall_s = nanos_to_seconds(steady_now() - start);
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);
  s.published = s.acked = messages;
  s.extensions = messages;
  s.peak_in_flight = kBatch;
  s.msgs_per_s = static_cast<double>(messages) / s.wall_s;
  s.cpu_s = static_cast<double>(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
            static_cast<double>(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
  s.latency_p50_ms = static_cast<double>(latency.percentile(0.5)) / 1e6;
  s.latency_p99_ms = static_cast<double>(latency.percentile(0.99)) / 1e6;
  s.latency_max_ms = static_cast<double>(latency.max()) / 1e6;
  s.max_rss_kb = static_cast<std::uint64_t>(ru1.ru_maxrss);
  s.pool_messages = pool.capacity();
  s.io_model = "none";
  s.threads = 1;
  auto j = to_json(s);
  j["impl"] = "floor";
  if (json)
    std::cout << j.dump() << std::endl;
  else
    std::cout << messages << " messages in " << s.wall_s << " s: " << s.msgs_per_s << " msgs/s\n";
  return 0;
}
