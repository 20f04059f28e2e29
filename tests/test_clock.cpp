// Time conversions: seconds (any double a flag or a computation can produce) to nanoseconds must
// saturate instead of overflowing, and the result must stay addable to a clock reading.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include "mayhem/clock.hpp"

using namespace mayhem;

namespace {
constexpr Nanos kYear = 365LL * 24 * 3600 * kNanosPerSecond;
constexpr Nanos kMax = std::numeric_limits<Nanos>::max();
}  // namespace

TEST_CASE("seconds_to_nanos: NaN and negative and zero give 0", "[clock]") {
  CHECK(seconds_to_nanos(std::nan("")) == 0);
  CHECK(seconds_to_nanos(-std::numeric_limits<double>::infinity()) == 0);
  CHECK(seconds_to_nanos(-1e300) == 0);
  CHECK(seconds_to_nanos(-1.0) == 0);
  CHECK(seconds_to_nanos(-0.0) == 0);
  CHECK(seconds_to_nanos(0.0) == 0);
}

TEST_CASE("seconds_to_nanos: ordinary values convert exactly as before", "[clock]") {
  CHECK(seconds_to_nanos(1.0) == kNanosPerSecond);
  CHECK(seconds_to_nanos(0.5) == 500'000'000);
  CHECK(seconds_to_nanos(2.0) == 2 * kNanosPerSecond);
  CHECK(seconds_to_nanos(1e-3) == 1'000'000);
  CHECK(seconds_to_nanos(3600.0) == 3600 * kNanosPerSecond);
  CHECK(seconds_to_nanos(1e9) == 1'000'000'000LL * kNanosPerSecond);  // 31.7 years: exact
}

TEST_CASE("seconds_to_nanos: a positive duration never becomes 0", "[clock]") {
  // --extend-interval 1e-10 used to become 0 ns (a lease pass that never ends).
  CHECK(seconds_to_nanos(1e-10) >= 1);
  CHECK(seconds_to_nanos(1e-300) >= 1);
  CHECK(seconds_to_nanos(std::numeric_limits<double>::denorm_min()) >= 1);
  CHECK(seconds_to_nanos(1e-10) <= 1);
}

TEST_CASE("seconds_to_nanos: huge values saturate to a 'forever' that a clock can still add",
          "[clock]") {
  // --shutdown-timeout 1e10 (1e19 ns > INT64_MAX) used to wrap to a negative wait.
  const double huge[] = {9.3e9,
                         1e10,
                         1e19,
                         1e300,
                         std::numeric_limits<double>::max(),
                         std::numeric_limits<double>::infinity()};
  Nanos prev = 0;
  for (double s : huge) {
    INFO("seconds " << s);
    const Nanos n = seconds_to_nanos(s);
    CHECK(n >= 50 * kYear);  // longer than any run
    CHECK(n <= kMax / 4);    // now + n + n + n never overflows
    CHECK(n >= prev);        // monotonic
    prev = n;
    // A clock reading (steady_clock since boot, or a test clock far along) plus the duration,
    // twice, stays positive and ordered.
    const Nanos now = steady_now();
    CHECK(now + n > now);
    CHECK(now + n + n > now + n);
  }
}

TEST_CASE("seconds_to_nanos is monotonic across the saturation point", "[clock]") {
  double s = 1e-12;
  Nanos prev = 0;
  while (s < 1e30) {
    const Nanos n = seconds_to_nanos(s);
    INFO("seconds " << s);
    REQUIRE(n >= prev);
    prev = n;
    s *= 1.7;
  }
}
