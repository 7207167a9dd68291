// NEON (AArch64 Advanced SIMD) convolution kernels: an 8x12 register tile (24 q-register accumulators,
// 3 for a row of B, 2 for a column of A), each step 24 fused multiply-adds by lane of A.
#include <arm_neon.h>

#include <cstdint>

#define XNORM_CONVBN_NS neon

namespace xnorm::convbn::neon {

struct Micro {
  static constexpr int MR = 8, NR = 12, VW = 4;  // VW: floats per vector
  static constexpr int64_t KC = 256, MC = 144, NC = 480;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                  const float* bias, bool relu) {
    float32x4_t acc[MR][3];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = acc[i][2] = vdupq_n_f32(0.f);
    for (int64_t k = 0; k < kc; ++k) {
      const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
      const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);  // rows 0-3, 4-7 of this k
#define XNORM_NEON_ROW(i, av, lane)                          \
  acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, lane);      \
  acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, lane);      \
  acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, lane);
      XNORM_NEON_ROW(0, a0, 0)
      XNORM_NEON_ROW(1, a0, 1)
      XNORM_NEON_ROW(2, a0, 2)
      XNORM_NEON_ROW(3, a0, 3)
      XNORM_NEON_ROW(4, a1, 0)
      XNORM_NEON_ROW(5, a1, 1)
      XNORM_NEON_ROW(6, a1, 2)
      XNORM_NEON_ROW(7, a1, 3)
#undef XNORM_NEON_ROW
      a += MR;
      b += NR;
    }
    const float32x4_t zero = vdupq_n_f32(0.f);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      if (i >= mr) break;
      float* row = c + i * ldc;
      float32x4_t v[3] = {acc[i][0], acc[i][1], acc[i][2]};
      const float32x4_t bv = bias ? vdupq_n_f32(bias[i]) : zero;
      if (nr == NR) {
#pragma GCC unroll 3
        for (int q = 0; q < 3; ++q) {
          if (add) v[q] = vaddq_f32(v[q], vld1q_f32(row + 4 * q));
          if (bias) v[q] = vaddq_f32(v[q], bv);
          if (relu) v[q] = vmaxq_f32(v[q], zero);
          vst1q_f32(row + 4 * q, v[q]);
        }
      } else {  // a narrow tile at the right edge of C: through a buffer, only nr columns touched
        float tmp[NR];
        for (int q = 0; q < 3; ++q) vst1q_f32(tmp + 4 * q, v[q]);
        for (int j = 0; j < nr; ++j) {
          float x = tmp[j];
          if (add) x += row[j];
          if (bias) x += bias[i];
          if (relu && !(x > 0)) x = 0;
          row[j] = x;
        }
      }
    }
  }
};

// Bit i of the result = (y[i] > 0), for 32 values: each compare lane keeps its own bit, and a
// horizontal add gathers the four bits of a vector.
inline uint32_t positive_bits(const float* y) {
  static const uint32_t kLaneBit[4] = {1, 2, 4, 8};
  const uint32x4_t lane = vld1q_u32(kLaneBit);
  const float32x4_t z = vdupq_n_f32(0.f);
  uint32_t bits = 0;
#pragma GCC unroll 8
  for (int q = 0; q < 8; ++q)
    bits |= vaddvq_u32(vandq_u32(vcgtq_f32(vld1q_f32(y + 4 * q), z), lane)) << (4 * q);
  return bits;
}

// x[i] = 0 where bit i of `bits` is clear, for 32 values.
inline void keep_bits(float* x, uint32_t bits) {
  static const uint32_t kLaneBit[4] = {1, 2, 4, 8};
  const uint32x4_t lane = vld1q_u32(kLaneBit);
#pragma GCC unroll 8
  for (int q = 0; q < 8; ++q) {
    const uint32x4_t keep = vtstq_u32(vdupq_n_u32((bits >> (4 * q)) & 0xfu), lane);
    vst1q_f32(x + 4 * q, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + 4 * q)), keep)));
  }
}

double fma_loop(int64_t iters) {
  float32x4_t acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = vdupq_n_f32(float(i) * 1e-3f);
  const float32x4_t m = vdupq_n_f32(0.999999f), a = vdupq_n_f32(1e-7f);
  for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = vfmaq_f32(a, acc[i], m);
  }
  float32x4_t s = acc[0];
  for (int i = 1; i < 16; ++i) s = vaddq_f32(s, acc[i]);
  volatile float sink = vgetq_lane_f32(s, 0);
  (void)sink;
  return double(iters) * 16 * 4 * 2;
}

}  // namespace xnorm::convbn::neon

#include "kernels_impl.h"

namespace xnorm::convbn {
const Kernels& kernels_neon() { return neon::table(); }
}  // namespace xnorm::convbn
