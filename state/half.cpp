// The bulk fp16 rounding of half.h, with an F16C path chosen at run time
// (the build targets baseline x86-64).
#include "state/half.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace clv::state {

namespace {

void RoundScalar(float* values, size_t n) {
  for (size_t i = 0; i < n; ++i) values[i] = RoundToFp16(values[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void RoundF16c(float* values, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(values + i);
    const __m128i half = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_ps(values + i, _mm256_cvtph_ps(half));
  }
  RoundScalar(values + i, n - i);
}

bool HasF16c() {
  // AVX (which also says the OS saves the YMM registers), and CPUID leaf 1
  // ECX bit 29 for F16C (not every compiler names it to __builtin_cpu_supports).
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx")) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & (1u << 29)) != 0;
}
#endif

}  // namespace

bool Fp16UsesF16c() {
#if defined(__x86_64__)
  static const bool has = HasF16c();
  return has;
#else
  return false;
#endif
}

void RoundToFp16(float* values, size_t n) {
#if defined(__x86_64__)
  if (Fp16UsesF16c()) {
    RoundF16c(values, n);
    return;
  }
#endif
  RoundScalar(values, n);
}

}  // namespace clv::state
