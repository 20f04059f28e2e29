#include "mayhem/metrics.hpp"

#include <bit>
#include <cmath>

namespace mayhem {

int Histogram::index_of(std::uint64_t v) {
  if (v < static_cast<std::uint64_t>(kSub)) return static_cast<int>(v);
  const int msb = std::bit_width(v) - 1;  // >= kSubBits
  const int shift = msb - kSubBits;
  return (msb - kSubBits + 1) * kSub + static_cast<int>((v >> shift) & (kSub - 1));
}

std::uint64_t Histogram::lower_bound_of(int index) {
  if (index < kSub) return static_cast<std::uint64_t>(index);
  const int msb = index / kSub + kSubBits - 1;
  const std::uint64_t mantissa = static_cast<std::uint64_t>(kSub + index % kSub);
  return mantissa << (msb - kSubBits);
}

std::uint64_t Histogram::upper_bound_of(int index) {
  if (index + 1 >= kBuckets) return ~std::uint64_t{0};
  return lower_bound_of(index + 1) - 1;
}

void Histogram::merge_into(Histogram& dst) const {
  for (int i = 0; i < kBuckets; ++i) {
    const auto n = bucket(i);
    if (n != 0) dst.buckets_[i].store(dst.bucket(i) + n, std::memory_order_relaxed);
  }
  dst.count_.store(dst.count() + count(), std::memory_order_relaxed);
  dst.sum_.store(dst.sum() + sum(), std::memory_order_relaxed);
  if (max() > dst.max()) dst.max_.store(max(), std::memory_order_relaxed);
}

std::uint64_t Histogram::percentile(double q) const {
  const std::uint64_t n = count();
  if (n == 0) return 0;
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n)));
  if (rank == 0) rank = 1;
  std::uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += bucket(i);
    if (seen >= rank) {
      const auto hi = upper_bound_of(i);
      return hi < max() ? hi : max();
    }
  }
  return max();
}

Histogram Metrics::latency_merged() const {
  Histogram out;
  latency.merge_into(out);
  return out;
}

}  // namespace mayhem
