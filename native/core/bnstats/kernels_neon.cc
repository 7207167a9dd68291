// NEON (AArch64 Advanced SIMD) kernels. Same scheme as the AVX2 file with 4 float lanes: each value is
// widened to float64, shifted there, and summed (s1) and fused-multiply-added (s2) into float64x2
// accumulators; tails go through a small zero-padded buffer so the vector code handles every element.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace xnorm::bnstats {
namespace {

template <DType T>
inline float32x4_t load4(const void* p, int64_t i) {
  if constexpr (T == DType::Float32) {
    return vld1q_f32(static_cast<const float*>(p) + i);
  } else if constexpr (T == DType::Float16) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(static_cast<const uint16_t*>(p) + i)));
  } else {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(static_cast<const uint16_t*>(p) + i), 16));
  }
}

// Loads n < 4 elements, the rest zero.
template <DType T>
inline float32x4_t load_tail(const void* p, int64_t i, int64_t n) {
  alignas(16) uint8_t buf[16] = {};
  std::memcpy(buf, static_cast<const uint8_t*>(p) + i * dtype_bytes(T), size_t(n) * dtype_bytes(T));
  return load4<T>(buf, 0);
}

template <DType T>
inline void store_n(void* p, int64_t i, float32x4_t v, int64_t n) {
  alignas(16) float tmp[4];
  vst1q_f32(tmp, v);
  if constexpr (T == DType::Float32) {
    std::memcpy(static_cast<float*>(p) + i, tmp, size_t(n) * 4);
  } else if constexpr (T == DType::Float16) {
    alignas(8) uint16_t h[4];
    vst1_u16(h, vreinterpret_u16_f16(vcvt_f16_f32(v)));  // round to nearest even, as F16C's
    std::memcpy(static_cast<uint16_t*>(p) + i, h, size_t(n) * 2);
  } else {
    auto* out = static_cast<uint16_t*>(p) + i;
    for (int64_t l = 0; l < n; ++l) out[l] = float_to_bf16(tmp[l]);
  }
}

template <DType T>
inline void store4(void* p, int64_t i, float32x4_t v) {
  if constexpr (T == DType::Float32) vst1q_f32(static_cast<float*>(p) + i, v);
  else if constexpr (T == DType::Float16) vst1_u16(static_cast<uint16_t*>(p) + i, vreinterpret_u16_f16(vcvt_f16_f32(v)));
  else store_n<T>(p, i, v, 4);
}

inline float64x2_t lo_pd(float32x4_t v) { return vcvt_f64_f32(vget_low_f32(v)); }
inline float64x2_t hi_pd(float32x4_t v) { return vcvt_high_f64_f32(v); }

// Shifted sums of 4 lanes: a* for lanes 0-1, b* for lanes 2-3.
struct Acc4 {
  float64x2_t a1 = vdupq_n_f64(0), b1 = a1, a2 = a1, b2 = a1;
  inline void add(float32x4_t x, float64x2_t kl, float64x2_t kh) {
    const float64x2_t l = vsubq_f64(lo_pd(x), kl), h = vsubq_f64(hi_pd(x), kh);
    a1 = vaddq_f64(a1, l);
    a2 = vfmaq_f64(a2, l, l);
    b1 = vaddq_f64(b1, h);
    b2 = vfmaq_f64(b2, h, h);
  }
};

template <DType T>
ShiftedSums sums_contiguous_t(const void* x, int64_t len) {
  const float k = vgetq_lane_f32(load_tail<T>(x, 0, 1), 0);
  const float64x2_t kd = vdupq_n_f64(double(k));
  Acc4 p, q;
  int64_t i = 0;
  for (; i + 8 <= len; i += 8) {
    p.add(load4<T>(x, i), kd, kd);
    q.add(load4<T>(x, i + 4), kd, kd);
  }
  for (; i + 4 <= len; i += 4) p.add(load4<T>(x, i), kd, kd);
  ShiftedSums r;
  r.count = double(len);
  r.shift = k;
  r.s1 = vaddvq_f64(vaddq_f64(vaddq_f64(p.a1, p.b1), vaddq_f64(q.a1, q.b1)));
  r.s2 = vaddvq_f64(vaddq_f64(vaddq_f64(p.a2, p.b2), vaddq_f64(q.a2, q.b2)));
  for (; i < len; ++i) {  // scalar tail: fewer than 4 values
    const double d = double(vgetq_lane_f32(load_tail<T>(x, i, 1), 0)) - double(k);
    r.s1 += d;
    r.s2 += d * d;
  }
  return r;
}

// Two vectors (8 channels) of a run of rows, the sums in registers from s1/s2 and back (through a
// zero-padded buffer at the column tail), so that for small C each row is read in one sequential sweep.
template <DType T>
void sums_column_block(const void* x, int64_t rows, int64_t ld, int64_t c, int64_t cols, const void* shift,
                       double* s1, double* s2) {
  const int64_t n0 = std::min<int64_t>(4, cols - c), n1 = std::max<int64_t>(0, std::min<int64_t>(4, cols - c - 4));
  auto load_from = [&](const void* p, int64_t i, int64_t n) { return n == 4 ? load4<T>(p, i) : load_tail<T>(p, i, n); };
  const float32x4_t k0 = load_from(shift, c, n0), k1 = n1 ? load_from(shift, c + 4, n1) : vdupq_n_f32(0.f);
  const float64x2_t k0l = lo_pd(k0), k0h = hi_pd(k0), k1l = lo_pd(k1), k1h = hi_pd(k1);
  PaddedSums<8> sums(s1 + c, s2 + c, n0 + n1);
  double *a = sums.s1, *b = sums.s2;
  Acc4 p, q;
  p.a1 = vld1q_f64(a), p.b1 = vld1q_f64(a + 2), q.a1 = vld1q_f64(a + 4), q.b1 = vld1q_f64(a + 6);
  p.a2 = vld1q_f64(b), p.b2 = vld1q_f64(b + 2), q.a2 = vld1q_f64(b + 4), q.b2 = vld1q_f64(b + 6);
  for (int64_t r = 0; r < rows; ++r) {
    p.add(load_from(x, r * ld + c, n0), k0l, k0h);
    if (n1) q.add(load_from(x, r * ld + c + 4, n1), k1l, k1h);
  }
  vst1q_f64(a, p.a1), vst1q_f64(a + 2, p.b1), vst1q_f64(a + 4, q.a1), vst1q_f64(a + 6, q.b1);
  vst1q_f64(b, p.a2), vst1q_f64(b + 2, p.b2), vst1q_f64(b + 4, q.a2), vst1q_f64(b + 6, q.b2);
  sums.store(s1 + c, s2 + c);
}

// Rows wider than one block go in runs of 16 rows (the AVX-512 kernels size their runs and fetch ahead):
// a few sequential streams rather than one 32-byte piece per row at the row stride.
template <DType T>
void sums_columns_t(const void* x, int64_t rows, int64_t cols, int64_t ld, const void* shift, double* s1, double* s2) {
  const int64_t run = cols > 8 ? 16 : rows;
  for (int64_t r0 = 0; r0 < rows; r0 += run) {
    const void* xr = static_cast<const uint8_t*>(x) + r0 * ld * int64_t(dtype_bytes(T));
    for (int64_t c = 0; c < cols; c += 8) sums_column_block<T>(xr, std::min(run, rows - r0), ld, c, cols, shift, s1, s2);
  }
}

template <DType T>
void apply_contiguous_t(const void* x, void* y, int64_t len, float mean, float mean_lo, float scale, float beta,
                        bool relu) {
  const float32x4_t mv = vdupq_n_f32(mean), lv = vdupq_n_f32(mean_lo), sv = vdupq_n_f32(scale), bv = vdupq_n_f32(beta);
  const float32x4_t zero = vdupq_n_f32(0.f);
  for (int64_t i = 0; i < len; i += 4) {
    const int64_t n = std::min<int64_t>(4, len - i);
    float32x4_t v = vfmaq_f32(bv, vsubq_f32(vsubq_f32(n == 4 ? load4<T>(x, i) : load_tail<T>(x, i, n), mv), lv), sv);
    if (relu) v = vmaxq_f32(v, zero);
    if (n == 4) store4<T>(y, i, v);
    else store_n<T>(y, i, v, n);
  }
}

template <DType T>
void apply_columns_t(const void* x, void* y, int64_t rows, int64_t cols, const float* mean, const float* mean_lo,
                     const float* scale, const float* beta, bool relu) {
  const float32x4_t zero = vdupq_n_f32(0.f);
  for (int64_t c = 0; c < cols; c += 4) {
    const int64_t n = std::min<int64_t>(4, cols - c);
    const float32x4_t mv = load_tail<DType::Float32>(mean, c, n), lv = load_tail<DType::Float32>(mean_lo, c, n),
                      sv = load_tail<DType::Float32>(scale, c, n), bv = load_tail<DType::Float32>(beta, c, n);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * cols + c;
      float32x4_t v = vfmaq_f32(bv, vsubq_f32(vsubq_f32(n == 4 ? load4<T>(x, i) : load_tail<T>(x, i, n), mv), lv), sv);
      if (relu) v = vmaxq_f32(v, zero);
      if (n == 4) store4<T>(y, i, v);
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

const Kernels& kernels_neon() {
  static const Kernels k{sums_contiguous, sums_columns, apply_contiguous, apply_columns};
  return k;
}

}  // namespace xnorm::bnstats
