// Time for the whole service: one monotonic nanosecond clock behind an interface, so tests can
// inject a ManualClock and drive timers (lease ticks, I/O wheels) without sleeping.
// Use: hold a `Clock&`; production code passes `SteadyClock::instance()`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mayhem {

using Nanos = std::int64_t;

inline constexpr Nanos kNanosPerSecond = 1'000'000'000;

inline Nanos seconds_to_nanos(double s) {
  return static_cast<Nanos>(s * 1e9);
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
