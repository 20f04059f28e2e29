// Time for the whole service: one monotonic nanosecond clock behind an interface, so tests can
// inject a ManualClock and drive timers (lease ticks, I/O wheels, the pacer) without sleeping.
// Durations from outside (flags in seconds, computed delays) go through `seconds_to_nanos` or
// `to_nanos`, which saturate: never negative, never more than `kForever`, which a clock reading
// can still be added to (a few times over) without overflowing.
// Use: hold a `const Clock&`; production code passes `SteadyClock::instance()`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>

namespace mayhem {

using Nanos = std::int64_t;

inline constexpr Nanos kNanosPerSecond = 1'000'000'000;

// The longest duration the service works with: INT64_MAX / 4 ns, about 73 years. Any longer
// duration means "forever" and saturates to this. A clock reading (steady_clock counts from boot)
// plus up to three such durations stays within Nanos, so `now() + d` needs no overflow check.
inline constexpr Nanos kForever = std::numeric_limits<Nanos>::max() / 4;

// Nanoseconds held in a double (a rate's or a scale's product) to Nanos: NaN and anything <= 0
// give 0, anything >= kForever gives kForever, a positive fraction of a nanosecond gives 1 (a
// positive duration never becomes "no time at all"); otherwise truncated.
inline Nanos to_nanos(double ns) {
  if (!(ns > 0)) return 0;  // NaN too
  if (ns >= static_cast<double>(kForever)) return kForever;
  if (ns < 1) return 1;
  return static_cast<Nanos>(ns);
}

// Seconds (a flag, or a delay computed in seconds) to Nanos, saturating as `to_nanos`.
inline Nanos seconds_to_nanos(double s) {
  return to_nanos(s * 1e9);
}
inline double nanos_to_seconds(Nanos n) {
  return static_cast<double>(n) / 1e9;
}
inline Nanos steady_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Nanos now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  Nanos now() const override { return steady_now(); }
  static SteadyClock& instance() {
    static SteadyClock clock;
    return clock;
  }
};

// A clock that moves only when told to; for tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Nanos start = 0) : now_(start) {}
  Nanos now() const override { return now_.load(std::memory_order_acquire); }
  void advance(Nanos d) { now_.fetch_add(d, std::memory_order_acq_rel); }
  void set(Nanos t) { now_.store(t, std::memory_order_release); }

 private:
  std::atomic<Nanos> now_;
};

}  // namespace mayhem
