// CPU emulation (see cuda_runtime.h): float16 as raw bits, converted with the core's conversions.
#pragma once
#include <cstdint>

#include "../../../native/core/common/dtype.h"

struct __half {
  uint16_t x;
};
inline __half __ushort_as_half(uint16_t u) { return __half{u}; }
inline uint16_t __half_as_ushort(__half h) { return h.x; }
inline float __half2float(__half h) { return xnorm::f16_to_float(h.x); }
inline __half __float2half_rn(float f) { return __half{xnorm::float_to_f16(f)}; }
