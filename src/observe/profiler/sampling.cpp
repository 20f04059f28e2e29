// The profiler's trace sampling by pool slot (Profiler::sampled, sampled_mask, any_sampled): which
// messages of a batch are traced, decided from their addresses alone, with SSE2 (every x86-64) or
// AVX2 (where the CPU has it, chosen once at start), four pointers at a time.
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MAYHEM_AVX2_SAMPLING 1
#endif

#include "mayhem/message.hpp"
#include "mayhem/observe/profiler.hpp"
#include "thread_data.hpp"

namespace mayhem {

// Sampling by where the message lives, not its contents: the check must not touch the message
// (a cache miss per message would cost more than the whole trace). In every window of 1024
// consecutive pool slots (a pool slab is 1024 messages) the first round(P x 1024) are sampled:
// any 1024 consecutive slots hold exactly that many, so the fraction is exact however small the
// pool, and slots are reused in turn, so about a fraction P of messages is traced (P is rounded
// to a multiple of 1/1024, at least 1/1024). The sampled slots are neighbours: the pool hands
// out neighbouring slots together, so a sampled message's batch-mates tend to be sampled too, and
// few stage bodies carry a sampled message (at P = 1 % with 128-message batches nearly every
// body would carry one if the sampled slots were spread out).
bool Profiler::sampled(const Message* m) const {
  const auto slot = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(m) >>
                                               profiler_detail::kSlotShift);
  return (slot & (profiler_detail::kWindow - 1)) < threshold_;
}

#if defined(__SSE2__)
namespace {
// Profiler::sampled for four message pointers: slot index (shift), position in its window (and),
// compare; lanes of all ones where sampled.
inline __m128i sampled4(Message* const* msgs, __m128i window_mask, __m128i thr) {
  const __m128i a = _mm_srli_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msgs)),
                                   profiler_detail::kSlotShift);
  const __m128i b = _mm_srli_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msgs + 2)),
                                   profiler_detail::kSlotShift);
  // The low 32 bits of the four 64-bit lanes, in order.
  const __m128i lo = _mm_castps_si128(
      _mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0)));
  return _mm_cmplt_epi32(_mm_and_si128(lo, window_mask), thr);  // both < 2^31: signed is fine
}
}  // namespace
#endif

#if defined(MAYHEM_AVX2_SAMPLING)
namespace {
// The same test on four 64-bit pointers at once, without shifting: a slot's position in its window
// is bits [kSlotShift, kSlotShift + 10) of the address, so masking those bits and comparing with
// threshold << kSlotShift decides it. Lanes of all ones where sampled.
[[gnu::target("avx2")]] inline __m256i sampled4_avx2(Message* const* msgs, __m256i window_bits,
                                                     __m256i thr) {
  const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(msgs));
  return _mm256_cmpgt_epi64(thr, _mm256_and_si256(p, window_bits));
}

[[gnu::target("avx2")]] bool any_sampled_avx2(Message* const* msgs, std::uint32_t n,
                                              std::uint32_t threshold) {
  const __m256i window_bits = _mm256_set1_epi64x(
      static_cast<long long>(profiler_detail::kWindow - 1) << profiler_detail::kSlotShift);
  const __m256i thr =
      _mm256_set1_epi64x(static_cast<long long>(threshold) << profiler_detail::kSlotShift);
  __m256i acc = _mm256_setzero_si256();
  std::uint32_t i = 0;
  for (; i + 8 <= n; i += 8)
    acc = _mm256_or_si256(acc, _mm256_or_si256(sampled4_avx2(msgs + i, window_bits, thr),
                                               sampled4_avx2(msgs + i + 4, window_bits, thr)));
  if (i + 4 <= n) {
    acc = _mm256_or_si256(acc, sampled4_avx2(msgs + i, window_bits, thr));
    i += 4;
  }
  bool any = !_mm256_testz_si256(acc, acc);
  for (; i < n; ++i)
    any |= ((static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(msgs[i]) >>
                                        profiler_detail::kSlotShift) &
             (profiler_detail::kWindow - 1)) < threshold);
  return any;
}

[[gnu::target("avx2")]] std::uint64_t sampled_mask_avx2(Message* const* msgs, std::uint32_t n,
                                                        std::uint32_t threshold) {
  const __m256i window_bits = _mm256_set1_epi64x(
      static_cast<long long>(profiler_detail::kWindow - 1) << profiler_detail::kSlotShift);
  const __m256i thr =
      _mm256_set1_epi64x(static_cast<long long>(threshold) << profiler_detail::kSlotShift);
  std::uint64_t mask = 0;
  std::uint32_t i = 0;
  for (; i + 4 <= n; i += 4)
    mask |= static_cast<std::uint64_t>(
                _mm256_movemask_pd(_mm256_castsi256_pd(sampled4_avx2(msgs + i, window_bits, thr))))
            << i;
  for (; i < n; ++i)
    mask |= static_cast<std::uint64_t>(
                (static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(msgs[i]) >>
                                            profiler_detail::kSlotShift) &
                 (profiler_detail::kWindow - 1)) < threshold)
            << i;
  return mask;
}

// Whether this CPU runs the AVX2 scans (every x86-64 of the last decade; else SSE2).
const bool g_avx2 = __builtin_cpu_supports("avx2");
}  // namespace
#endif

// Which of msgs[0..n) (n <= 64) are sampled, as a bit mask (only for batches that have one).
std::uint64_t Profiler::sampled_mask(Message* const* msgs, std::uint32_t n) const {
#if defined(MAYHEM_AVX2_SAMPLING)
  if (g_avx2) return sampled_mask_avx2(msgs, n, threshold_);
#endif
  std::uint64_t mask = 0;
  std::uint32_t i = 0;
#if defined(__SSE2__)
  const __m128i window_mask = _mm_set1_epi32(static_cast<int>(profiler_detail::kWindow - 1));
  const __m128i thr = _mm_set1_epi32(static_cast<int>(threshold_));
  for (; i + 4 <= n; i += 4)
    mask |= static_cast<std::uint64_t>(
                _mm_movemask_ps(_mm_castsi128_ps(sampled4(msgs + i, window_mask, thr))))
            << i;
#endif
  for (; i < n; ++i) mask |= static_cast<std::uint64_t>(sampled(msgs[i])) << i;
  return mask;
}

// Does the batch carry a sampled message? Four pointers at a time with AVX2 (about 1.1
// instructions per message) or SSE2 (every x86-64 has it: about 2.5), no branch but the loop's.
bool Profiler::any_sampled(Message* const* msgs, std::uint32_t n) const {
  if (sample_all_) return n > 0;
#if defined(MAYHEM_AVX2_SAMPLING)
  if (g_avx2) return any_sampled_avx2(msgs, n, threshold_);
#endif
  std::uint32_t i = 0;
  bool any = false;
#if defined(__SSE2__)
  const __m128i window_mask = _mm_set1_epi32(static_cast<int>(profiler_detail::kWindow - 1));
  const __m128i thr = _mm_set1_epi32(static_cast<int>(threshold_));
  __m128i acc = _mm_setzero_si128();
  for (; i + 8 <= n; i += 8)
    acc = _mm_or_si128(acc, _mm_or_si128(sampled4(msgs + i, window_mask, thr),
                                         sampled4(msgs + i + 4, window_mask, thr)));
  if (i + 4 <= n) {
    acc = _mm_or_si128(acc, sampled4(msgs + i, window_mask, thr));
    i += 4;
  }
  any = _mm_movemask_epi8(acc) != 0;
#endif
  for (; i < n; ++i) any |= sampled(msgs[i]);
  return any;
}

}  // namespace mayhem
