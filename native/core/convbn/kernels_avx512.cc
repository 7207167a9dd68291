// AVX-512 convolution kernels: an 8x48 register tile (24 zmm accumulators, 3 for B, 1 broadcast). Eight
// rows divide every ResNet channel count, so no tile rows are wasted on M = 64 or 128.
#include <immintrin.h>

#include <cstdint>

#include "../common/avx512_masked.h"

#define XNORM_CONVBN_NS avx512

namespace xnorm::convbn::avx512 {

struct Micro {
  static constexpr int MR = 8, NR = 48, VW = 16;  // VW: floats per vector
  static constexpr int64_t KC = 320, MC = 144, NC = 480;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                  const float* bias, bool relu) {
    // A tile of at most 32 (16) columns skips the FMAs of the vectors past it: the narrow last panel
    // of 7x7 maps (128 Winograd tiles in panels of 48) and of GEMM tails. A tile of at most 4 (1) rows
    // skips the rows past it: the last tile of 49 pixels as M (7x7 at batch 1) is one row.
    if (mr > 4) {
      rows<8>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    } else if (mr > 1) {
      rows<4>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    } else {
      rows<1>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    }
  }

  template <int ROWS>
  static void rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                   const float* bias, bool relu) {
    if (nr > 32) {
      cols<3, ROWS>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    } else if (nr > 16) {
      cols<2, ROWS>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    } else {
      cols<1, ROWS>(kc, a, b, c, ldc, mr, nr, add, bias, relu);
    }
  }

  // The micro-kernel on the first NV of the tile's three column vectors and its first ROWS rows (A and
  // B panels keep their MR and NR strides).
  template <int NV, int ROWS>
  static void cols(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                   const float* bias, bool relu) {
    __m512 acc[NV][ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i)
      for (int v = 0; v < NV; ++v) acc[v][i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; ++k) {
      __m512 bv[NV];
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 8
      for (int i = 0; i < ROWS; ++i) {
        const __m512 ai = _mm512_set1_ps(a[i]);
        for (int v = 0; v < NV; ++v) acc[v][i] = _mm512_fmadd_ps(ai, bv[v], acc[v][i]);
      }
      a += MR;
      b += NR;
    }
    const auto lanes = [nr](int from) {  // mask of the columns [from, from + 16) that exist
      int n = nr - from;
      return n >= 16 ? __mmask16(0xffff) : n > 0 ? __mmask16((1u << n) - 1) : __mmask16(0);
    };
    const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < ROWS; ++i) {
      if (i >= mr) break;
      float* row = c + i * ldc;
      for (int v = 0; v < NV; ++v) {
        const __mmask16 m = lanes(16 * v);
        __m512 x = acc[v][i];
        if (add) x = _mm512_add_ps(x, loadu_ps(m, row + 16 * v));
        if (bias) x = _mm512_add_ps(x, _mm512_set1_ps(bias[i]));
        if (relu) x = _mm512_max_ps(x, zero);
        storeu_ps(row + 16 * v, m, x);
      }
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
