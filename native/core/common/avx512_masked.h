// Masked AVX-512 loads and stores that take the plain instruction when every lane is set. Masked memory
// operations are slow on some CPUs even with a full mask (AMD Zen 4/5: moments over channels-last rows
// ran at 9 GB/s with masked loads and 29 GB/s with plain ones on one core), and kernels that handle
// a channel tail with a mask use them for every full vector too. Include only in AVX-512 files.
#pragma once
#include <immintrin.h>

namespace xnorm {

inline __m512 loadu_ps(__mmask16 m, const float* p) {
  return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline __m512i loadu_epi32(__mmask16 m, const void* p) {
  return m == 0xffff ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi32(m, p);
}
inline __m256i loadu_epi16(__mmask16 m, const void* p) {
  return m == 0xffff ? _mm256_loadu_si256(static_cast<const __m256i*>(p)) : _mm256_maskz_loadu_epi16(m, p);
}
inline void storeu_ps(float* p, __mmask16 m, __m512 v) {
  if (m == 0xffff) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, m, v);
}
inline void storeu_epi32(void* p, __mmask16 m, __m512i v) {
  if (m == 0xffff) _mm512_storeu_si512(p, v);
  else _mm512_mask_storeu_epi32(p, m, v);
}
inline void storeu_epi16(void* p, __mmask16 m, __m256i v) {
  if (m == 0xffff) _mm256_storeu_si256(static_cast<__m256i*>(p), v);
  else _mm256_mask_storeu_epi16(p, m, v);
}

}  // namespace xnorm
