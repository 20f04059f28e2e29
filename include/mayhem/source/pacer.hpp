// The publisher's clock for paced modes: a thread that decides how many messages are due and
// orders the publish stage to make them. `--rate R` orders, every 2-10 ms, all that fell due since
// the last order, so that R msgs/s are published open loop (the publish stage coalesces orders
// into one debt: a rate beyond what the pipeline can take means "as fast as it goes", in bounded
// memory); the default mode sleeps uniform(0,1) x `--publish-interval` between single messages,
// like the reference's publish(). (Flat-out publishing needs no pacer: the publish stage
// re-orders itself.) Every duration and count saturates: any rate, any interval is safe.
// Use: `Pacer p(opts, clock, [&](uint64_t n){ pipeline.order_publish(n); }); p.start(); p.stop();`
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
  using Order = std::function<void(std::uint64_t n)>;
  // `clock` gives the due counts and the sleeps' targets (the sleeps themselves are real waits of
  // at most 10 ms in rate mode, so a test's ManualClock moves the pacer within milliseconds).
  Pacer(const Options& opts, const Clock& clock, Order order);
  ~Pacer() { stop(); }
  void start();  // the rate's time zero is the clock's reading here
  void stop();   // prompt: the thread checks the stop flag at every step

 private:
  void run_rate(Nanos start);
  void run_interval();
  bool sleep_until(Nanos t);  // false when stopped

  const Options& opts_;
  const Clock& clock_;
  Order order_;
  SplitMix64 rng_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace mayhem
