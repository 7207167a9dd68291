// AVX-512 convolution kernels: an 8x48 register tile (24 zmm accumulators, 3 for B, 1 broadcast). Eight
// rows divide every ResNet channel count, so no tile rows are wasted on M = 64 or 128.
#include <immintrin.h>

#include <cstdint>

#define XNORM_CONVBN_NS avx512

namespace xnorm::convbn::avx512 {

struct Micro {
  static constexpr int MR = 8, NR = 48, VW = 16;  // VW: floats per vector
  static constexpr int64_t KC = 320, MC = 144, NC = 480;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                  const float* bias, bool relu) {
    __m512 acc0[MR], acc1[MR], acc2[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = acc2[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i]);
        acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
        acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        acc2[i] = _mm512_fmadd_ps(ai, b2, acc2[i]);
      }
      a += MR;
      b += NR;
    }
    const auto lanes = [nr](int from) {  // mask of the columns [from, from + 16) that exist
      int n = nr - from;
      return n >= 16 ? __mmask16(0xffff) : n > 0 ? __mmask16((1u << n) - 1) : __mmask16(0);
    };
    const __mmask16 m0 = lanes(0), m1 = lanes(16), m2 = lanes(32);
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      if (i >= mr) break;
      float* row = c + i * ldc;
      __m512 v0 = acc0[i], v1 = acc1[i], v2 = acc2[i];
      if (add) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
        v2 = _mm512_add_ps(v2, _mm512_maskz_loadu_ps(m2, row + 32));
      }
      if (bias) {
        const __m512 bv = _mm512_set1_ps(bias[i]);
        v0 = _mm512_add_ps(v0, bv);
        v1 = _mm512_add_ps(v1, bv);
        v2 = _mm512_add_ps(v2, bv);
      }
      if (relu) {
        v0 = _mm512_max_ps(v0, zero);
        v1 = _mm512_max_ps(v1, zero);
        v2 = _mm512_max_ps(v2, zero);
      }
      _mm512_mask_storeu_ps(row, m0, v0);
      _mm512_mask_storeu_ps(row + 16, m1, v1);
      _mm512_mask_storeu_ps(row + 32, m2, v2);
    }
  }
};

// Bit i of the result = (y[i] > 0), for 32 values.
inline uint32_t positive_bits(const float* y) {
  const __m512 z = _mm512_setzero_ps();
  return uint32_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(y), z, _CMP_GT_OQ)) |
         uint32_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(y + 16), z, _CMP_GT_OQ)) << 16;
}

// x[i] = 0 where bit i of `bits` is clear, for 32 values.
inline void keep_bits(float* x, uint32_t bits) {
  _mm512_storeu_ps(x, _mm512_maskz_mov_ps(__mmask16(bits), _mm512_loadu_ps(x)));
  _mm512_storeu_ps(x + 16, _mm512_maskz_mov_ps(__mmask16(bits >> 16), _mm512_loadu_ps(x + 16)));
}

// 16 independent accumulators cover the FMA latency (4 cycles) on two ports.
double fma_loop(int64_t iters) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, a);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 16 * 16 * 2;
}

}  // namespace xnorm::convbn::avx512

#include "kernels_impl.h"

namespace xnorm::convbn {
const Kernels& kernels_avx512() { return avx512::table(); }
}  // namespace xnorm::convbn
