// 8 x 8 transposes of 32-bit words with AVX2 shuffles, for the AVX2 and AVX-512 kernel files (each
// includes it in its own anonymous namespace, so every translation unit keeps its own copy).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace xnorm::bconv {
namespace {

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols.
inline void transpose_words_avx2(const uint32_t* src, int64_t rows, int64_t cols, int64_t lds, uint32_t* dst,
                                 int64_t ldd) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t c0 = 0;
    for (; c0 + 8 <= cols; c0 += 8) {
      __m256i r[8], t[8], u[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + (r0 + k) * lds + c0));
      for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_epi32(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_epi32(r[k], r[k + 1]);
      }
      for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_unpacklo_epi64(t[k], t[k + 2]);
        u[k + 1] = _mm256_unpackhi_epi64(t[k], t[k + 2]);
        u[k + 2] = _mm256_unpacklo_epi64(t[k + 1], t[k + 3]);
        u[k + 3] = _mm256_unpackhi_epi64(t[k + 1], t[k + 3]);
      }
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (c0 + k) * ldd + r0), _mm256_permute2x128_si256(u[k], u[k + 4], 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (c0 + k + 4) * ldd + r0), _mm256_permute2x128_si256(u[k], u[k + 4], 0x31));
      }
    }
    for (; c0 < cols; ++c0)
      for (int64_t k = r0; k < r0 + 8; ++k) dst[c0 * ldd + k] = src[k * lds + c0];
  }
  for (; r0 < rows; ++r0)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r0] = src[r0 * lds + c];
}

}  // namespace
}  // namespace xnorm::bconv
