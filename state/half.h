// IEEE 754 binary16 ("fp16", half precision) conversions.
//
// Contract: FloatToHalf rounds to nearest, ties to even, like the hardware
// conversion (F16C / CUDA __float2half_rn): values too large become +-inf,
// values too small become +-0 or a subnormal half, NaN stays NaN (quiet).
// HalfToFloat is exact. RoundToFp16(x) == HalfToFloat(FloatToHalf(x)): the
// value the state codec stores for x when UserState::fp16 is true, so the
// processor can round its in-memory (h, c) identically and a replay from
// RocksDB gives byte-identical scores.
//
// Thread-safety: pure functions.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace clv::state {

inline uint16_t FloatToHalf(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t exponent = (bits >> 23) & 0xffu;
  uint32_t mantissa = bits & 0x7fffffu;
  if (exponent == 0xffu) {  // inf, or NaN (kept quiet, top payload bits kept)
    return static_cast<uint16_t>(sign | 0x7c00u | (mantissa != 0 ? 0x200u | (mantissa >> 13) : 0u));
  }
  // Exponent re-biased from float (127) to half (15).
  const int32_t half_exponent = static_cast<int32_t>(exponent) - 127 + 15;
  if (half_exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (half_exponent <= 0) {
    // Subnormal half (or zero): value = m * 2^-24.
    if (half_exponent < -10) return sign;  // below half the smallest subnormal
    mantissa |= 0x800000u;                 // implicit leading one of the float
    const uint32_t shift = static_cast<uint32_t>(14 - half_exponent);  // 14..24
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u) != 0)) {
      ++half_mantissa;  // may carry into the smallest normal, which is correct
    }
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  uint32_t half_bits = (static_cast<uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const uint32_t remainder = mantissa & 0x1fffu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half_bits & 1u) != 0)) {
    ++half_bits;  // a carry into the exponent is correct, up to inf (0x7c00)
  }
  return static_cast<uint16_t>(sign | half_bits);
}

inline float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return std::bit_cast<float>(sign);
    // Subnormal half: normalize into a float (always representable).
    uint32_t float_exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --float_exponent;
    }
    mantissa &= 0x3ffu;
    return std::bit_cast<float>(sign | (float_exponent << 23) | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

inline float RoundToFp16(float value) { return HalfToFloat(FloatToHalf(value)); }

// RoundToFp16 of each of values[0, n), in place: the F16C instructions where
// the CPU has them (IEEE round to nearest even, quiet NaN with the top
// payload bits: the same bits as the scalar code, tests/state_test.cpp
// checks every exponent and rounding case), else the scalar code.
void RoundToFp16(float* values, size_t n);
// Whether RoundToFp16(float*, size_t) uses F16C on this CPU.
bool Fp16UsesF16c();

}  // namespace clv::state
