#include "mayhem/source/pacer.hpp"

#include <algorithm>
#include <chrono>

#include "mayhem/thread_name.hpp"

namespace mayhem {

namespace {

// A count held in a double to uint64: NaN and negatives give 0, anything past the range saturates.
std::uint64_t to_count(double x) {
  if (!(x > 0)) return 0;
  if (x >= 0x1p64) return UINT64_MAX;
  return static_cast<std::uint64_t>(x);
}

}  // namespace

Pacer::Pacer(const Options& opts, const Clock& clock, Order order)
    : opts_(opts), clock_(clock), order_(std::move(order)), rng_{mix(opts.seed, 0x9ace5)} {}

void Pacer::start() {
  const Nanos start = clock_.now();
  thread_ = std::thread([this, start] {
    name_this_thread("mayhem-pacer");
    if (opts_.rate > 0)
      run_rate(start);
    else
      run_interval();
  });
}

void Pacer::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Pacer::sleep_until(Nanos t) {
  std::unique_lock lock(mutex_);
  const Nanos wait = t - clock_.now();
  if (wait > 0) cv_.wait_for(lock, std::chrono::nanoseconds(wait), [&] { return stop_; });
  return !stop_;
}

void Pacer::run_rate(Nanos start) {
  const std::uint64_t target = opts_.messages;
  const double per_ns = opts_.rate / 1e9;
  std::uint64_t issued = 0;
  // Never sleep less than 2 ms, never more than 10 ms. Every order wakes the TBB workers, which
  // spin for ~0.1-0.3 ms looking for more work before they sleep: ordering each message as it
  // fell due (a wake-up every 0.5 ms at 2000 msgs/s) measured 70% of a core at that rate.
  // Messages due within the same 2 ms are ordered together, in one order whatever their number
  // (2000 at 1M msgs/s): the publish stage makes them in batches and coalesces orders, so a rate
  // beyond the pipeline's pace costs a counter, not a queued order per batch. Each message's
  // latency is measured from its actual publication.
  const Nanos min_sleep = 2'000'000;
  const Nanos max_sleep = 10'000'000;
  for (;;) {
    if (target != 0 && issued >= target) return;
    const Nanos now = clock_.now();
    std::uint64_t due = to_count(static_cast<double>(now - start) * per_ns);
    if (target != 0) due = std::min(due, target);
    if (due > issued) {
      order_(due - issued);
      issued = due;
    }
    // When the next message falls due (saturating: at 1e-300 msgs/s it is "forever"), clamped
    // to [2, 10] ms from now.
    const Nanos next_in =
        to_nanos((static_cast<double>(issued) + 1) / per_ns - static_cast<double>(now - start));
    if (!sleep_until(now + std::clamp(next_in, min_sleep, max_sleep))) return;
  }
}

void Pacer::run_interval() {
  const std::uint64_t target = opts_.messages;
  std::uint64_t issued = 0;
  for (;;) {
    if (target != 0 && issued >= target) return;
    order_(1);
    ++issued;
    const Nanos pause = seconds_to_nanos(rng_.uniform() * opts_.publish_interval);
    if (!sleep_until(clock_.now() + pause)) return;
  }
}

}  // namespace mayhem
