// AVX2 + FMA convolution kernels: a 6x16 register tile (12 ymm accumulators, 2 for B, 1 broadcast).
#include <immintrin.h>

#include <cstdint>

#define XNORM_CONVBN_NS avx2

namespace xnorm::convbn::avx2 {

inline __m256i lane_mask(int n) {  // the first n (0..8) lanes set
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

struct Micro {
  static constexpr int MR = 6, NR = 16, VW = 8;  // VW: floats per vector
  static constexpr int64_t KC = 256, MC = 144, NC = 512;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                  const float* bias, bool relu) {
    // A partial tile multiplies only its rows (49 pixels are 8 tiles of 6 and one of 1).
    switch (mr) {
      case 1: return rows<1>(kc, a, b, c, ldc, nr, add, bias, relu);
      case 2: return rows<2>(kc, a, b, c, ldc, nr, add, bias, relu);
      case 3: return rows<3>(kc, a, b, c, ldc, nr, add, bias, relu);
      case 4: return rows<4>(kc, a, b, c, ldc, nr, add, bias, relu);
      case 5: return rows<5>(kc, a, b, c, ldc, nr, add, bias, relu);
      default: return rows<MR>(kc, a, b, c, ldc, nr, add, bias, relu);
    }
  }

  template <int R>
  static void rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int nr, bool add,
                   const float* bias, bool relu) {
    __m256 acc0[R], acc1[R];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 ai = _mm256_broadcast_ss(a + i);
        acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
      }
      a += MR;
      b += NR;
    }
    const __m256i m0 = lane_mask(nr >= 8 ? 8 : nr), m1 = lane_mask(nr >= 16 ? 8 : nr > 8 ? nr - 8 : 0);
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      float* row = c + i * ldc;
      __m256 v0 = acc0[i], v1 = acc1[i];
      if (add) {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(row, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(row + 8, m1));
      }
      if (bias) {
        const __m256 bv = _mm256_broadcast_ss(bias + i);
        v0 = _mm256_add_ps(v0, bv);
        v1 = _mm256_add_ps(v1, bv);
      }
      if (relu) {
        v0 = _mm256_max_ps(v0, zero);
        v1 = _mm256_max_ps(v1, zero);
      }
      _mm256_maskstore_ps(row, m0, v0);
      _mm256_maskstore_ps(row + 8, m1, v1);
    }
  }
};

// Bit i of the result = (y[i] > 0), for 32 values.
inline uint32_t positive_bits(const float* y) {
  const __m256 z = _mm256_setzero_ps();
  uint32_t bits = 0;
  for (int q = 0; q < 4; ++q)
    bits |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(y + 8 * q), z, _CMP_GT_OQ))) << (8 * q);
  return bits;
}

// x[i] = 0 where bit i of `bits` is clear, for 32 values.
inline void keep_bits(float* x, uint32_t bits) {
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (int q = 0; q < 4; ++q) {
    const __m256i b = _mm256_set1_epi32(int((bits >> (8 * q)) & 0xffu));
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, lane), lane));
    _mm256_storeu_ps(x + 8 * q, _mm256_and_ps(_mm256_loadu_ps(x + 8 * q), keep));
  }
}

double fma_loop(int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

}  // namespace xnorm::convbn::avx2

#include "kernels_impl.h"

namespace xnorm::convbn {
const Kernels& kernels_avx2() { return avx2::table(); }
}  // namespace xnorm::convbn
