// Plain C++ kernels: the fallback on any CPU, and the model the SIMD versions follow.
#include <algorithm>

#include "kernels.h"

namespace xnorm::bnstats {
namespace {

inline void store(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::Float16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

ShiftedSums sums_contiguous(const void* x, DType t, int64_t len) {
  ShiftedSums r;
  float k = float_at(x, t, 0);
  double s1 = 0, s2 = 0;
  for (int64_t i = 0; i < len; ++i) {
    double d = double(float_at(x, t, i)) - double(k);  // in double, as the SIMD kernels: exact for float data
    s1 += d;
    s2 += d * d;
  }
  r.count = double(len);
  r.shift = k;
  r.s1 = s1;
  r.s2 = s2;
  return r;
}

void sums_columns(const void* x, DType t, int64_t rows, int64_t cols, int64_t ld, const void* shift, double* s1,
                  double* s2) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double d = double(float_at(x, t, r * ld + c)) - double(float_at(shift, t, c));
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

inline float finish(float v, bool relu) { return relu ? std::max(v, 0.0f) : v; }

void apply_contiguous(const void* x, void* y, DType t, int64_t len, float mean, float mean_lo, float scale, float beta,
                      bool relu) {
  for (int64_t i = 0; i < len; ++i) store(y, t, i, finish(((float_at(x, t, i) - mean) - mean_lo) * scale + beta, relu));
}

void apply_columns(const void* x, void* y, DType t, int64_t rows, int64_t cols, const float* mean,
                   const float* mean_lo, const float* scale, const float* beta, bool relu) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      int64_t i = r * cols + c;
      store(y, t, i, finish(((float_at(x, t, i) - mean[c]) - mean_lo[c]) * scale[c] + beta[c], relu));
    }
}

}  // namespace

const Kernels& kernels_portable() {
  static const Kernels k{sums_contiguous, sums_columns, apply_contiguous, apply_columns};
  return k;
}

}  // namespace xnorm::bnstats
