// AVX2 + FMA + F16C kernels. Same scheme as the AVX-512 file with 8 lanes; tails go through a small
// zero-padded buffer so the vector code handles every element.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace xnorm::bnstats {
namespace {

template <DType T>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (T == DType::Float32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else if constexpr (T == DType::Float16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  } else {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
}

// Loads n < 8 elements, the rest zero.
template <DType T>
inline __m256 load_tail(const void* p, int64_t i, int64_t n) {
  alignas(32) uint8_t buf[32] = {};
  std::memcpy(buf, static_cast<const uint8_t*>(p) + i * dtype_bytes(T), size_t(n) * dtype_bytes(T));
  return load8<T>(buf, 0);
}

template <DType T>
inline void store_n(void* p, int64_t i, __m256 v, int64_t n) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  if constexpr (T == DType::Float32) {
    std::memcpy(static_cast<float*>(p) + i, tmp, size_t(n) * 4);
  } else if constexpr (T == DType::Float16) {
    alignas(16) uint16_t h[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(static_cast<uint16_t*>(p) + i, h, size_t(n) * 2);
  } else {
    auto* out = static_cast<uint16_t*>(p) + i;
    for (int64_t l = 0; l < n; ++l) out[l] = float_to_bf16(tmp[l]);
  }
}

inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

struct Acc4 {
  __m256d a1 = _mm256_setzero_pd(), b1 = a1, a2 = a1, b2 = a1;
  inline void add(__m256 x, __m256d kl, __m256d kh) {
    __m256d l = _mm256_sub_pd(lo_pd(x), kl), h = _mm256_sub_pd(hi_pd(x), kh);
    a1 = _mm256_add_pd(a1, l); a2 = _mm256_fmadd_pd(l, l, a2);
    b1 = _mm256_add_pd(b1, h); b2 = _mm256_fmadd_pd(h, h, b2);
  }
};

template <DType T>
ShiftedSums sums_contiguous_t(const void* x, int64_t len) {
  float k = _mm256_cvtss_f32(load_tail<T>(x, 0, 1));
  const __m256d kd = _mm256_set1_pd(k);
  Acc4 p, q;
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    p.add(load8<T>(x, i), kd, kd);
    q.add(load8<T>(x, i + 8), kd, kd);
  }
  for (; i + 8 <= len; i += 8) p.add(load8<T>(x, i), kd, kd);
  ShiftedSums r;
  r.count = double(len);
  r.shift = k;
  r.s1 = hsum(_mm256_add_pd(_mm256_add_pd(p.a1, p.b1), _mm256_add_pd(q.a1, q.b1)));
  r.s2 = hsum(_mm256_add_pd(_mm256_add_pd(p.a2, p.b2), _mm256_add_pd(q.a2, q.b2)));
  for (; i < len; ++i) {  // scalar tail: fewer than 8 values
    double d = double(_mm256_cvtss_f32(load_tail<T>(x, i, 1))) - double(k);
    r.s1 += d;
    r.s2 += d * d;
  }
  return r;
}

// Two vectors (16 channels) of a run of rows, the sums in registers from s1/s2 and back (through a
// zero-padded buffer at the column tail), so that for small C each row is read in one sequential sweep.
// fetch: the next run's bytes, walked in memory order, `ahead` pieces of 16 values per 16 values read
// (null: none).
template <DType T>
const char* sums_column_block(const void* x, int64_t rows, int64_t ld, int64_t c, int64_t cols, const void* shift,
                              double* s1, double* s2, const char* fetch, int ahead) {
  const int64_t n0 = std::min<int64_t>(8, cols - c), n1 = std::max<int64_t>(0, std::min<int64_t>(8, cols - c - 8));
  const bool full = n0 + n1 == 16;
  auto load_from = [&](const void* p, int64_t i, int64_t n) { return n == 8 ? load8<T>(p, i) : load_tail<T>(p, i, n); };
  __m256 k0 = load_from(shift, c, n0), k1 = n1 ? load_from(shift, c + 8, n1) : _mm256_setzero_ps();
  const __m256d k0l = lo_pd(k0), k0h = hi_pd(k0), k1l = lo_pd(k1), k1h = hi_pd(k1);
  PaddedSums<16> tail(s1 + c, s2 + c, full ? 0 : n0 + n1);  // whole blocks load and store s1/s2 directly
  double *a = full ? s1 + c : tail.s1, *b = full ? s2 + c : tail.s2;
  Acc4 p, q;
  p.a1 = _mm256_loadu_pd(a), p.b1 = _mm256_loadu_pd(a + 4), q.a1 = _mm256_loadu_pd(a + 8), q.b1 = _mm256_loadu_pd(a + 12);
  p.a2 = _mm256_loadu_pd(b), p.b2 = _mm256_loadu_pd(b + 4), q.a2 = _mm256_loadu_pd(b + 8), q.b2 = _mm256_loadu_pd(b + 12);
  for (int64_t r = 0; r < rows; ++r) {
    if (fetch) {
      _mm_prefetch(fetch, _MM_HINT_T0);
      if (ahead == 2) _mm_prefetch(fetch + 16 * dtype_bytes(T), _MM_HINT_T0);
      fetch += ahead * 16 * dtype_bytes(T);
    }
    if (full) {
      p.add(load8<T>(x, r * ld + c), k0l, k0h);
      q.add(load8<T>(x, r * ld + c + 8), k1l, k1h);
    } else {
      p.add(load_from(x, r * ld + c, n0), k0l, k0h);
      if (n1) q.add(load_from(x, r * ld + c + 8, n1), k1l, k1h);
    }
  }
  _mm256_storeu_pd(a, p.a1), _mm256_storeu_pd(a + 4, p.b1), _mm256_storeu_pd(a + 8, q.a1), _mm256_storeu_pd(a + 12, q.b1);
  _mm256_storeu_pd(b, p.a2), _mm256_storeu_pd(b + 4, p.b2), _mm256_storeu_pd(b + 8, q.a2), _mm256_storeu_pd(b + 12, q.b2);
  if (!full) tail.store(s1 + c, s2 + c);
  return fetch;
}

// Rows wider than one block go in runs of rows swept block by block, the sums carried in s1/s2 (L1),
// as the AVX-512 kernels do: a run is at least kMinRun rows and kRunBytes, so that each block's sums
// load and store once per many rows (16-row runs through a padded copy of the sums left C = 256 at
// 26-29 % of the read bandwidth), and each run fetches the next one in memory order while it is read
// (such runs are too short for the hardware prefetchers to follow). Only the first run of a call is
// fetched before it is read, so it is short (kFirstRun rows) and the runs after it double up to the
// full length, each fetching twice its own bytes while it is read; the last run of a call fetches
// nothing (the next rows are another task's).
constexpr int64_t kRunBytes = 16 << 10, kMinRun = 32, kFirstRun = 4;

template <DType T>
void sums_columns_t(const void* x, int64_t rows, int64_t cols, int64_t ld, const void* shift, double* s1, double* s2) {
  const int64_t row_bytes = ld * dtype_bytes(T);
  if (cols <= 16) {  // one block: every row read in one sequential sweep
    sums_column_block<T>(x, rows, ld, 0, cols, shift, s1, s2, nullptr, 0);
    return;
  }
  const int64_t run = std::max(kMinRun, kRunBytes / row_bytes);
  int64_t nr = std::min(kFirstRun, rows);
  for (const char *p = static_cast<const char*>(x), *end = p + nr * row_bytes; p < end; p += 64) _mm_prefetch(p, _MM_HINT_T0);
  for (int64_t r0 = 0; r0 < rows; r0 += nr, nr = std::min(2 * nr, run)) {
    const char* xr = static_cast<const char*>(x) + r0 * row_bytes;
    nr = std::min(nr, rows - r0);
    const char* fetch = r0 + nr < rows ? xr + nr * row_bytes : nullptr;
    const int ahead = std::min(2 * nr, run) > nr ? 2 : 1;
    for (int64_t c = 0; c < cols; c += 16) fetch = sums_column_block<T>(xr, nr, ld, c, cols, shift, s1, s2, fetch, ahead);
  }
}

template <DType T>
void apply_contiguous_t(const void* x, void* y, int64_t len, float mean, float mean_lo, float scale, float beta,
                        bool relu) {
  const __m256 mv = _mm256_set1_ps(mean), lv = _mm256_set1_ps(mean_lo), sv = _mm256_set1_ps(scale),
               bv = _mm256_set1_ps(beta);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t i = 0; i < len; i += 8) {
    int64_t n = std::min<int64_t>(8, len - i);
    __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_sub_ps(n == 8 ? load8<T>(x, i) : load_tail<T>(x, i, n), mv), lv),
                               sv, bv);
    if (relu) v = _mm256_max_ps(v, zero);
    if (n == 8 && T == DType::Float32) _mm256_storeu_ps(static_cast<float*>(y) + i, v);
    else store_n<T>(y, i, v, n);
  }
}

template <DType T>
void apply_columns_t(const void* x, void* y, int64_t rows, int64_t cols, const float* mean, const float* mean_lo,
                     const float* scale, const float* beta, bool relu) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c = 0; c < cols; c += 8) {
    int64_t n = std::min<int64_t>(8, cols - c);
    const __m256 mv = load_tail<DType::Float32>(mean, c, n), lv = load_tail<DType::Float32>(mean_lo, c, n),
                 sv = load_tail<DType::Float32>(scale, c, n), bv = load_tail<DType::Float32>(beta, c, n);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t i = r * cols + c;
      __m256 v = _mm256_fmadd_ps(
          _mm256_sub_ps(_mm256_sub_ps(n == 8 ? load8<T>(x, i) : load_tail<T>(x, i, n), mv), lv), sv, bv);
      if (relu) v = _mm256_max_ps(v, zero);
      if (n == 8 && T == DType::Float32) _mm256_storeu_ps(static_cast<float*>(y) + i, v);
      else store_n<T>(y, i, v, n);
    }
  }
}

ShiftedSums sums_contiguous(const void* x, DType t, int64_t len) { XNORM_BY_FLOAT_DTYPE(sums_contiguous_t, t, x, len) }
void sums_columns(const void* x, DType t, int64_t rows, int64_t cols, int64_t ld, const void* shift, double* s1,
                  double* s2) {
  XNORM_BY_FLOAT_DTYPE(sums_columns_t, t, x, rows, cols, ld, shift, s1, s2)
}
void apply_contiguous(const void* x, void* y, DType t, int64_t len, float mean, float mean_lo, float scale, float beta,
                      bool relu) {
  XNORM_BY_FLOAT_DTYPE(apply_contiguous_t, t, x, y, len, mean, mean_lo, scale, beta, relu)
}
void apply_columns(const void* x, void* y, DType t, int64_t rows, int64_t cols, const float* mean,
                   const float* mean_lo, const float* scale, const float* beta, bool relu) {
  XNORM_BY_FLOAT_DTYPE(apply_columns_t, t, x, y, rows, cols, mean, mean_lo, scale, beta, relu)
}

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k{sums_contiguous, sums_columns, apply_contiguous, apply_columns};
  return k;
}

}  // namespace xnorm::bnstats
