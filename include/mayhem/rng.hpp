// Fast, seedable randomness for the hot path. `std::random_device` is slow (a hardware random
// instruction per call; its cost is in docs/ARCHITECTURE.md), so the service seeds SplitMix64 once
// and derives everything else from it.
// Use: `SplitMix64 r{seed}; r.next(); r.uniform();` or the stateless `mix(a, b)` to derive a
// per-message, per-operation draw without shared state (so concurrent stages never race).
#pragma once

#include <cstdint>

namespace mayhem {

inline constexpr std::uint64_t splitmix_finalize(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Stateless hash of two words: a deterministic draw keyed by (stream, counter).
inline constexpr std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
  return splitmix_finalize(a + 0x9E3779B97F4A7C15ULL * (b + 1));
}

// Uniform double in [0, 1) from 53 random bits.
inline constexpr double to_unit(std::uint64_t x) {
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    state += 0x9E3779B97F4A7C15ULL;
    return splitmix_finalize(state);
  }
  double uniform() { return to_unit(next()); }
};

}  // namespace mayhem
