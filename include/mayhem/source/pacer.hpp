// The publisher's clock for paced modes: a thread that decides how many messages are due and
// orders the publish stage to make them. `--rate R` issues orders of up to one batch so that R
// msgs/s are published open loop; the default mode sleeps uniform(0,1) x `--publish-interval`
// between single messages, like the reference's publish(). (Flat-out publishing needs no pacer:
// the publish stage re-orders itself.)
// Use: `Pacer p(opts, clock, [&](uint32_t n){ pipeline.order_publish(n); }); p.start(); p.stop();`
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "mayhem/clock.hpp"
#include "mayhem/options.hpp"
#include "mayhem/rng.hpp"

namespace mayhem {

class Pacer {
 public:
  using Order = std::function<void(std::uint32_t n)>;
  Pacer(const Options& opts, Order order);
  ~Pacer() { stop(); }
  void start();
  void stop();

 private:
  void run_rate();
  void run_interval();
  bool sleep_until(Nanos t);  // false when stopped

  const Options& opts_;
  Order order_;
  SplitMix64 rng_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace mayhem
