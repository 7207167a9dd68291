// Portable convolution kernels: a 4x16 tile of plain loops that any compiler can vectorise.
#include <cstdint>

#define XNORM_CONVBN_NS portable

namespace xnorm::convbn::portable {

struct Micro {
  static constexpr int MR = 4, NR = 16, VW = 4;  // VW: floats per vector
  static constexpr int64_t KC = 256, MC = 128, NC = 512;

  static void run(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, bool add,
                  const float* bias, bool relu) {
    float acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; ++k) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
      a += MR;
      b += NR;
    }
    for (int i = 0; i < mr; ++i) {
      float* row = c + i * ldc;
      for (int j = 0; j < nr; ++j) {
        float v = acc[i][j];
        if (add) v += row[j];
        if (bias) v += bias[i];
        if (relu && !(v > 0)) v = 0;
        row[j] = v;
      }
    }
  }
};

// Bit i of the result = (y[i] > 0), for 32 values.
inline uint32_t positive_bits(const float* y) {
  uint32_t bits = 0;
  for (int i = 0; i < 32; ++i) bits |= uint32_t(y[i] > 0) << i;
  return bits;
}

// x[i] = 0 where bit i of `bits` is clear, for 32 values.
inline void keep_bits(float* x, uint32_t bits) {
  for (int i = 0; i < 32; ++i)
    if (!((bits >> i) & 1u)) x[i] = 0;
}

double fma_loop(int64_t iters) {
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = float(i) * 1e-3f;
  for (int64_t t = 0; t < iters; ++t)
    for (int i = 0; i < 32; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < 32; ++i) s += acc[i];
  volatile float sink = s;
  (void)sink;
  return double(iters) * 32 * 2;
}

}  // namespace xnorm::convbn::portable

#include "kernels_impl.h"

namespace xnorm::convbn {
const Kernels& kernels_portable() { return portable::table(); }
}  // namespace xnorm::convbn
