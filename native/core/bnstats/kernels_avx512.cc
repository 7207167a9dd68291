// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma). Sums are
// accumulated in double: the values are widened first, so the shift subtraction is exact.
#include <immintrin.h>

#include <algorithm>

#include "../common/avx512_masked.h"
#include "kernels.h"

namespace xnorm::bnstats {
namespace {

template <DType T>
inline __m512 load16(const void* p, int64_t i, __mmask16 m) {
  if constexpr (T == DType::Float32) {
    return loadu_ps(m, static_cast<const float*>(p) + i);
  } else if constexpr (T == DType::Float16) {
    return _mm512_cvtph_ps(loadu_epi16(m, static_cast<const uint16_t*>(p) + i));
  } else {
    __m512i w = _mm512_cvtepu16_epi32(loadu_epi16(m, static_cast<const uint16_t*>(p) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
}

template <DType T>
inline void store16(void* p, int64_t i, __m512 v, __mmask16 m) {
  if constexpr (T == DType::Float32) {
    storeu_ps(static_cast<float*>(p) + i, m, v);
  } else if constexpr (T == DType::Float16) {
    storeu_epi16(static_cast<uint16_t*>(p) + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  } else {
    alignas(64) float tmp[16];
    _mm512_store_ps(tmp, v);
    auto* out = static_cast<uint16_t*>(p) + i;
    for (int l = 0; l < 16; ++l)
      if (m & (1u << l)) out[l] = float_to_bf16(tmp[l]);
  }
}

inline __mmask16 tail_mask(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
// Lanes of a vector starting at column `at` that hold columns [0, cols): a vector may start before
// column 0 (a realigned sweep, below) as well as end past the last column.
inline __mmask16 column_mask(int64_t at, int64_t cols) {
  return at >= 0 ? tail_mask(cols - at) : __mmask16(tail_mask(cols - at) & (0xffffu << -at));
}

inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// 16 values widened to two vectors of doubles. With Halves, float32 loads each half into its conversion,
// which spares the shuffle that extracts the upper half (one uop in ten per 16 values, on the FP pipes
// these loops keep busy): 3-5 % faster on data streaming through L1, 5 % slower on rows swept in runs,
// whose loads miss L1 (two loads per line instead of one).
template <DType T, bool Halves>
inline void load16_pd(const void* p, int64_t i, __mmask16 m, __m512d& lo, __m512d& hi) {
  if constexpr (T == DType::Float32 && Halves) {
    const float* f = static_cast<const float*>(p) + i;
    if (m == 0xffff) {
      lo = _mm512_cvtps_pd(_mm256_loadu_ps(f));
      hi = _mm512_cvtps_pd(_mm256_loadu_ps(f + 8));
    } else {
      lo = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(__mmask8(m), f));
      hi = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(__mmask8(m >> 8), f + 8));
    }
  } else {
    const __m512 v = load16<T>(p, i, m);
    lo = lo_pd(v);
    hi = hi_pd(v);
  }
}

template <DType T>
ShiftedSums sums_contiguous_t(const void* x, int64_t len) {
  float k = _mm512_cvtss_f32(load16<T>(x, 0, 1));
  const __m512d kd = _mm512_set1_pd(k);
  __m512d a1 = _mm512_setzero_pd(), b1 = a1, c1 = a1, d1 = a1;
  __m512d a2 = a1, b2 = a1, c2 = a1, d2 = a1;
  int64_t i = 0;
  for (; i + 32 <= len; i += 32) {
    __m512d ul, uh, vl, vh;
    load16_pd<T, true>(x, i, 0xffff, ul, uh);
    load16_pd<T, true>(x, i + 16, 0xffff, vl, vh);
    ul = _mm512_sub_pd(ul, kd), uh = _mm512_sub_pd(uh, kd);
    vl = _mm512_sub_pd(vl, kd), vh = _mm512_sub_pd(vh, kd);
    a1 = _mm512_add_pd(a1, ul); a2 = _mm512_fmadd_pd(ul, ul, a2);
    b1 = _mm512_add_pd(b1, uh); b2 = _mm512_fmadd_pd(uh, uh, b2);
    c1 = _mm512_add_pd(c1, vl); c2 = _mm512_fmadd_pd(vl, vl, c2);
    d1 = _mm512_add_pd(d1, vh); d2 = _mm512_fmadd_pd(vh, vh, d2);
  }
  for (; i < len; i += 16) {
    __mmask16 m = tail_mask(len - i);
    __m512 u = load16<T>(x, i, m);
    __m512d ul = _mm512_maskz_sub_pd(__mmask8(m), lo_pd(u), kd);
    __m512d uh = _mm512_maskz_sub_pd(__mmask8(m >> 8), hi_pd(u), kd);
    a1 = _mm512_add_pd(a1, ul); a2 = _mm512_fmadd_pd(ul, ul, a2);
    b1 = _mm512_add_pd(b1, uh); b2 = _mm512_fmadd_pd(uh, uh, b2);
  }
  ShiftedSums r;
  r.count = double(len);
  r.shift = k;
  r.s1 = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a1, b1), _mm512_add_pd(c1, d1)));
  r.s2 = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a2, b2), _mm512_add_pd(c2, d2)));
  return r;
}

inline __m512d load_pd(const double* p, __mmask8 m) { return m == 0xff ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd(m, p); }
inline void store_pd(double* p, __mmask8 m, __m512d v) {
  if (m == 0xff) _mm512_storeu_pd(p, v);
  else _mm512_mask_storeu_pd(p, m, v);
}

// V vectors (16 channels each) of a run of rows, the sums in registers from s1/s2 and back: with
// cols <= 64 every row is read in one sequential sweep, which keeps NHWC reads at streaming speed.
// Column c may be negative (a realigned sweep): the lanes before column 0 are masked off, and a masked
// lane neither faults nor reads, so the addresses before x, shift, s1 and s2 are never touched. Ahead:
// lines fetched per vector read while sweeping runs (below); 0 for the one sweep of narrow rows.
template <DType T, int V, int Ahead>
const char* sums_column_block(const void* x, int64_t rows, int64_t ld, int64_t c, int64_t cols, const void* shift,
                              double* s1, double* s2, const char* fetch) {
  __mmask16 m[V];
  __m512d kl[V], kh[V], s1l[V], s1h[V], s2l[V], s2h[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t at = c + 16 * v;
    m[v] = column_mask(at, cols);
    __m512 k = load16<T>(shift, at, m[v]);
    kl[v] = lo_pd(k);
    kh[v] = hi_pd(k);
    const __mmask8 ml = __mmask8(m[v]), mh = __mmask8(m[v] >> 8);
    s1l[v] = load_pd(s1 + at, ml), s1h[v] = load_pd(s1 + at + 8, mh);
    s2l[v] = load_pd(s2 + at, ml), s2h[v] = load_pd(s2 + at + 8, mh);
  }
  for (int64_t r = 0; r < rows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      if (Ahead > 0 && fetch) {
#pragma GCC unroll 2
        for (int a = 0; a < Ahead; ++a) _mm_prefetch(fetch + a * 16 * dtype_bytes(T), _MM_HINT_T0);
        fetch += Ahead * 16 * dtype_bytes(T);
      }
      __m512d l, h;
      load16_pd<T, Ahead == 0>(x, r * ld + c + 16 * v, m[v], l, h);
      l = _mm512_sub_pd(l, kl[v]), h = _mm512_sub_pd(h, kh[v]);
      s1l[v] = _mm512_add_pd(s1l[v], l);
      s2l[v] = _mm512_fmadd_pd(l, l, s2l[v]);
      s1h[v] = _mm512_add_pd(s1h[v], h);
      s2h[v] = _mm512_fmadd_pd(h, h, s2h[v]);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t at = c + 16 * v;
    const __mmask8 ml = __mmask8(m[v]), mh = __mmask8(m[v] >> 8);
    store_pd(s1 + at, ml, s1l[v]), store_pd(s1 + at + 8, mh, s1h[v]);
    store_pd(s2 + at, ml, s2l[v]), store_pd(s2 + at + 8, mh, s2h[v]);
  }
  return fetch;
}

// Rows wider than one 64-column block go in runs of rows swept block by block, the sums carried in
// s1/s2 (L1), each run fetching the next one ahead of use: such runs are too short for the hardware
// prefetchers to follow (C = 1024 read 256-byte pieces at a 4 KB stride). The fetches walk the next run
// in memory order, one line per vector read, so that memory sees one sequential stream (fetching the
// lines in the order they are read, 256 bytes per 4 KB row, was 15-25 % slower on one core at C = 1024).
// A run is at least kMinRun rows and kRunBytes, so that each block's sums load and store once per many
// rows (8-row runs left C = 512 ... 1000 20-25 % slower with two threads); the last run of a call
// fetches nothing (the next rows are the next task's, maybe on the other thread). Only the first run
// of a call is fetched before it is read, so it is short (kFirstRun rows) and the runs after it double
// up to the full length, each fetching twice its own bytes while it is read: a full first run fetched
// up front (1/8 of a C = 1024 task) left the core waiting on it.
// Where every row starts at the same offset in a vector's worth of bytes (ld a multiple of 16), the
// column blocks start `lead` columns before column 0 so that the vectors sit on whole 64-byte lines
// (32 for 16-bit types): a Float32Array from V8 starts 16 bytes into a line, and lines split by every
// load left C = 1024 7 % slower. Only lanes move; each column still sums its rows in order, same bits.
constexpr int64_t kRunBytes = 16 << 10, kMinRun = 32, kFirstRun = 4;

template <DType T, int Ahead>
const char* sums_column_run(const char* xr, int64_t nr, int64_t ld, int64_t lead, int64_t cols, const void* shift,
                            double* s1, double* s2, const char* fetch) {
  for (int64_t c = -lead; c < cols; c += 64) {
    const int64_t left = cols - c;
    if (left > 48) fetch = sums_column_block<T, 4, Ahead>(xr, nr, ld, c, cols, shift, s1, s2, fetch);
    else if (left > 32) fetch = sums_column_block<T, 3, Ahead>(xr, nr, ld, c, cols, shift, s1, s2, fetch);
    else if (left > 16) fetch = sums_column_block<T, 2, Ahead>(xr, nr, ld, c, cols, shift, s1, s2, fetch);
    else fetch = sums_column_block<T, 1, Ahead>(xr, nr, ld, c, cols, shift, s1, s2, fetch);
  }
  return fetch;
}

template <DType T>
void sums_columns_t(const void* x, int64_t rows, int64_t cols, int64_t ld, const void* shift, double* s1, double* s2) {
  const int64_t row_bytes = ld * dtype_bytes(T);
  if (cols <= 64) {  // one block: every row read in one sequential sweep
    sums_column_run<T, 0>(static_cast<const char*>(x), rows, ld, 0, cols, shift, s1, s2, nullptr);
    return;
  }
  const int64_t run = std::max(kMinRun, kRunBytes / row_bytes);
  const int64_t vector_bytes = 16 * dtype_bytes(T), misaligned = int64_t(reinterpret_cast<uintptr_t>(x) % vector_bytes);
  const int64_t lead = ld % 16 == 0 && misaligned % dtype_bytes(T) == 0 ? misaligned / dtype_bytes(T) : 0;
  int64_t nr = std::min(kFirstRun, rows);
  for (const char *p = static_cast<const char*>(x), *end = p + nr * row_bytes; p < end; p += 64)
    _mm_prefetch(p, _MM_HINT_T0);
  for (int64_t r0 = 0; r0 < rows; r0 += nr, nr = std::min(2 * nr, run)) {
    const char* xr = static_cast<const char*>(x) + r0 * row_bytes;
    nr = std::min(nr, rows - r0);
    const char* fetch = r0 + nr < rows ? xr + nr * row_bytes : nullptr;
    if (std::min(2 * nr, run) > nr) sums_column_run<T, 2>(xr, nr, ld, lead, cols, shift, s1, s2, fetch);
    else sums_column_run<T, 1>(xr, nr, ld, lead, cols, shift, s1, s2, fetch);
  }
}

template <DType T>
void apply_contiguous_t(const void* x, void* y, int64_t len, float mean, float mean_lo, float scale, float beta,
                        bool relu) {
  const __m512 mv = _mm512_set1_ps(mean), lv = _mm512_set1_ps(mean_lo), sv = _mm512_set1_ps(scale),
               bv = _mm512_set1_ps(beta);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < len; i += 16) {
    __mmask16 m = tail_mask(len - i);
    __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_sub_ps(load16<T>(x, i, m), mv), lv), sv, bv);
    if (relu) v = _mm512_max_ps(v, zero);
    store16<T>(y, i, v, m);
  }
}

template <DType T>
void apply_columns_t(const void* x, void* y, int64_t rows, int64_t cols, const float* mean, const float* mean_lo,
                     const float* scale, const float* beta, bool relu) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; c += 16) {
    __mmask16 m = tail_mask(cols - c);
    const __m512 mv = loadu_ps(m, mean + c), lv = loadu_ps(m, mean_lo + c),
                 sv = loadu_ps(m, scale + c), bv = loadu_ps(m, beta + c);
    for (int64_t r = 0; r < rows; ++r) {
      __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_sub_ps(load16<T>(x, r * cols + c, m), mv), lv), sv, bv);
      if (relu) v = _mm512_max_ps(v, zero);
      store16<T>(y, r * cols + c, v, m);
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

const Kernels& kernels_avx512() {
  static const Kernels k{sums_contiguous, sums_columns, apply_contiguous, apply_columns};
  return k;
}

}  // namespace xnorm::bnstats
