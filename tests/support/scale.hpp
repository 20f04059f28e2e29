// Sizes of the longest test loops. Sanitizer builds (MAYHEM_SANITIZED, set by tests/CMakeLists.txt
// when MAYHEM_SANITIZE is) run 5-20x slower, so they run a fraction of each loop: the assertions
// are the same, and the sanitizer watches every access instead of relying on volume.
// Use: `for (int i = 0; i < test::scaled(100, 4); ++i)`.
#pragma once

#include <algorithm>
#include <cstdint>

namespace mayhem::test {

#ifdef MAYHEM_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// n in a normal build; n / divisor (at least 1) in a sanitizer build.
constexpr std::uint64_t scaled(std::uint64_t n, std::uint64_t divisor) {
  return kSanitized ? std::max<std::uint64_t>(1, n / divisor) : n;
}

}  // namespace mayhem::test
