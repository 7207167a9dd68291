// Per-ISA kernels for BN statistics. Each *_<isa>.cc file fills one table; bnstats.cc picks one.
#pragma once
#include <cstdint>
#include <cstring>

#include "../common/dtype.h"

namespace xnorm::bnstats {

// Partial moments of a run of values, relative to a shift: s1 = sum(x - shift), s2 = sum((x - shift)^2).
// Shifting by a value of the data keeps s2 - s1^2/n well conditioned when the mean is large against
// the spread (1e6 + unit noise), where E[x^2] - E[x]^2 in float would be wrong.
struct ShiftedSums {
  double count = 0, shift = 0, s1 = 0, s2 = 0;
};

struct Kernels {
  // Sums over x[0..len) (len > 0), shifted by x[0].
  ShiftedSums (*sums_contiguous)(const void* x, DType dtype, int64_t len);
  // Per-column sums over rows [0, rows) of a row-major [rows, cols] block with row stride ld (elements),
  // shifted by `shift` (a row of cols values of the same dtype): adds sum(x - shift) to s1[c] and
  // sum((x - shift)^2) to s2[c], one row after another, so that rows summed in several calls give the
  // same bits as in one. Blocks summed with the same shift add up exactly, with no merge.
  void (*sums_columns)(const void* x, DType dtype, int64_t rows, int64_t cols, int64_t ld, const void* shift,
                       double* s1, double* s2);
  // y = max?(((x - mean) - mean_lo) * scale + beta) over a contiguous run with one set of coefficients.
  // The mean comes as a float32 pair (mean + mean_lo ~ the double mean): x - mean is exact for data
  // near the mean, so a large offset does not cost the result its precision.
  void (*apply_contiguous)(const void* x, void* y, DType dtype, int64_t len, float mean, float mean_lo, float scale,
                           float beta, bool relu);
  // Same over `rows` rows of `cols` channels (row stride = cols), per-column coefficients.
  void (*apply_columns)(const void* x, void* y, DType dtype, int64_t rows, int64_t cols, const float* mean,
                        const float* mean_lo, const float* scale, const float* beta, bool relu);
};

// The running sums of n <= N columns copied into zero-padded arrays and back: lets the AVX2 and NEON
// column kernels keep them in whole vectors at a column tail.
template <int N>
struct PaddedSums {
  alignas(32) double s1[N] = {}, s2[N] = {};
  size_t bytes;
  PaddedSums(const double* a, const double* b, int64_t n) : bytes(size_t(n) * sizeof(double)) {
    std::memcpy(s1, a, bytes);
    std::memcpy(s2, b, bytes);
  }
  void store(double* a, double* b) const {
    std::memcpy(a, s1, bytes);
    std::memcpy(b, s2, bytes);
  }
};

const Kernels& kernels_portable();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_neon();  // aarch64 builds only

}  // namespace xnorm::bnstats
