// CPU emulation (see cuda_runtime.h): bfloat16 as raw bits, converted with the core's conversions.
#pragma once
#include <cstdint>

#include "../../../native/core/common/dtype.h"

struct __nv_bfloat16 {
  uint16_t x;
};
inline __nv_bfloat16 __ushort_as_bfloat16(uint16_t u) { return __nv_bfloat16{u}; }
inline uint16_t __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline float __bfloat162float(__nv_bfloat16 h) { return xnorm::bf16_to_float(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{xnorm::float_to_bf16(f)}; }
