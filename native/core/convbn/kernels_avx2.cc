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

  // A tile of at most 8 columns skips the FMAs of its second vector: the last panel of 49 pixels as N
  // (a 7x7 map in NCHW) holds one column.
  template <int R>
  static void rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int nr, bool add,
                   const float* bias, bool relu) {
    if (nr > 8) {
      cols<2, R>(kc, a, b, c, ldc, nr, add, bias, relu);
    } else {
      cols<1, R>(kc, a, b, c, ldc, nr, add, bias, relu);
    }
  }

  // The micro-kernel on the first NV of the tile's two column vectors and its first R rows (A and B
  // panels keep their MR and NR strides).
  template <int NV, int R>
  static void cols(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int nr, bool add,
                   const float* bias, bool relu) {
    __m256 acc[NV][R];
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < NV; ++v) acc[v][i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      __m256 bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 ai = _mm256_broadcast_ss(a + i);
        for (int v = 0; v < NV; ++v) acc[v][i] = _mm256_fmadd_ps(ai, bv[v], acc[v][i]);
      }
      a += MR;
      b += NR;
    }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      float* row = c + i * ldc;
      for (int v = 0; v < NV; ++v) {
        const int n = nr - 8 * v;
        const __m256i m = lane_mask(n >= 8 ? 8 : n > 0 ? n : 0);
        __m256 x = acc[v][i];
        if (add) x = _mm256_add_ps(x, _mm256_maskload_ps(row + 8 * v, m));
        if (bias) x = _mm256_add_ps(x, _mm256_broadcast_ss(bias + i));
        if (relu) x = _mm256_max_ps(x, zero);
        _mm256_maskstore_ps(row + 8 * v, m, x);
      }
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
