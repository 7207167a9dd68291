// A C entry point to the CPU core's BN-statistic kernels for the GPU check (cuda/check/gpu_check.py
// loads it with ctypes), so every CUDA result is compared with the same code the addon runs on the CPU.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

#include "../../native/core/bnstats/bnstats.h"

namespace {

xnorm::DType dtype_of(int32_t d) {
  return d == 1 ? xnorm::DType::Float16 : d == 2 ? xnorm::DType::BFloat16 : xnorm::DType::Float32;
}

xnorm::bnstats::Geometry geometry(int64_t n, int64_t c, int64_t s, int32_t layout) {
  xnorm::bnstats::Geometry g;
  g.n = n;
  g.c = c;
  g.s = s;
  g.layout = layout == 0 ? xnorm::bnstats::Layout::NCHW : xnorm::bnstats::Layout::NHWC;
  return g;
}

}  // namespace

extern "C" {

// Same argument conventions as the plugin's moments (dtype/layout/over as in xnorm_cuda.h);
// reference != 0 runs the plain double-precision reference. Returns the count per slot, or -1.
__attribute__((visibility("default"))) int64_t core_moments(const void* x, int32_t dtype, int64_t n, int64_t c,
                                                            int64_t s, int32_t layout, int32_t over, int64_t groups,
                                                            double* mean, double* m2, int32_t reference) {
  try {
    auto o = over == 0 ? xnorm::bnstats::Over::Channel : over == 1 ? xnorm::bnstats::Over::Instance
                                                                   : xnorm::bnstats::Over::Group;
    auto g = geometry(n, c, s, layout);
    return reference ? xnorm::bnstats::moments_reference(x, dtype_of(dtype), g, o, groups, mean, m2)
                     : xnorm::bnstats::moments(x, dtype_of(dtype), g, o, groups, mean, m2);
  } catch (const std::exception& e) {
    fprintf(stderr, "core_moments: %s\n", e.what());
    return -1;
  }
}

__attribute__((visibility("default"))) int32_t core_batch_norm(const void* x, void* y, int32_t dtype, int64_t n,
                                                               int64_t c, int64_t s, int32_t layout,
                                                               int32_t per_instance, const float* mean,
                                                               const float* mean_lo, const float* scale,
                                                               const float* beta, int32_t relu) {
  try {
    xnorm::bnstats::apply(x, y, dtype_of(dtype), geometry(n, c, s, layout), per_instance != 0, mean, mean_lo, scale,
                          beta, relu != 0);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "core_batch_norm: %s\n", e.what());
    return -1;
  }
}
}
