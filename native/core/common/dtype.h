// Element types and the scalar conversions for the 16-bit float formats (stored as uint16 bits).
#pragma once
#include <cstdint>
#include <cstring>

namespace xnorm {

enum class DType { Float32, Float16, BFloat16, Int32, UInt8, Bit };

inline int dtype_bytes(DType t) {
  switch (t) {
    case DType::Float32: case DType::Int32: case DType::Bit: return 4;  // 'bit' is stored in 32-bit words
    case DType::Float16: case DType::BFloat16: return 2;
    case DType::UInt8: return 1;
  }
  return 1;
}

inline bool dtype_is_float(DType t) { return t == DType::Float32 || t == DType::Float16 || t == DType::BFloat16; }

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Round to nearest even; NaN stays NaN (a quiet bit is forced so rounding cannot turn it into Inf).
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal: value = man * 2^-24
    float v = float(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (man << 13));
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest even, with overflow to Inf and gradual underflow.
inline uint16_t float_to_f16(float f) {
  uint32_t u = float_to_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // rounds to >= 65520: Inf
  if (a < 0x38800000u) {                                         // below the smallest normal: subnormal or 0
    float v = bits_to_float(a) * 16777216.0f;                    // scale to units of 2^-24, exact
    uint32_t r = uint32_t(v);
    float frac = v - float(r);
    if (frac > 0.5f || (frac == 0.5f && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return uint16_t(sign | ((rounded - (112u << 23)) >> 13));
}

// Element i of a float-dtype buffer (float32 unless t is float16 or bfloat16), as a float.
inline float float_at(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::Float16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

}  // namespace xnorm

// Calls fn<DType::X>(args...) for the float dtype t (float32 unless t is float16 or bfloat16).
#define XNORM_BY_FLOAT_DTYPE(fn, t, ...)                                 \
  switch (t) {                                                           \
    case ::xnorm::DType::Float16: return fn<::xnorm::DType::Float16>(__VA_ARGS__);   \
    case ::xnorm::DType::BFloat16: return fn<::xnorm::DType::BFloat16>(__VA_ARGS__); \
    default: return fn<::xnorm::DType::Float32>(__VA_ARGS__);                        \
  }
