// C entry points to the CPU core's kernels (BN statistics, Conv + BN) for the GPU check
// (scripts/gpu-check/gpu_check.py loads them with ctypes), so every CUDA result is compared with the
// same code the addon runs on the CPU.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

#include "../../native/core/bnstats/bnstats.h"
#include "../../native/core/convbn/convbn.h"

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

// The core's conv geometry from the plugin's struct layout (xnorm_cuda_conv without the trailing int32 fields):
// geo = {n, c, h, w, cout, kh, kw, groups, sh, sw, ph, pw, dh, dw}, layout 0 NCHW / 1 NHWC.
xnorm::convbn::ConvShape conv_shape(const int64_t* geo, int32_t layout) {
  const int64_t stride[2] = {geo[8], geo[9]}, padding[2] = {geo[10], geo[11]}, dilation[2] = {geo[12], geo[13]};
  const auto l = layout == 0 ? xnorm::convbn::Layout::NCHW : xnorm::convbn::Layout::NHWC;
  const std::vector<int64_t> xs = layout == 0 ? std::vector<int64_t>{geo[0], geo[1], geo[2], geo[3]}
                                              : std::vector<int64_t>{geo[0], geo[2], geo[3], geo[1]};
  return xnorm::convbn::conv_shape(xs, {geo[4], geo[1] / geo[7], geo[5], geo[6]}, stride, padding, dilation, geo[7], l);
}

xnorm::convbn::BnParams bn_params(const float* mean, const float* var, const float* gamma, const float* beta, double eps) {
  xnorm::convbn::BnParams bn;
  bn.mean = mean, bn.var = var, bn.gamma = gamma, bn.beta = beta, bn.eps = eps;
  return bn;
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

// Conv forward as the addon runs it on the CPU: mode 0 conv2d (+ bias, ReLU), 1 Tune, 2 Eval; the weight
// and the per-channel parameters are float32. Returns 0, or -1 (message on stderr).
__attribute__((visibility("default"))) int32_t core_conv_forward(const int64_t* geo, int32_t layout, int32_t dtype,
                                                                 int32_t mode, const void* x, const float* w,
                                                                 const float* bias, const float* mean, const float* var,
                                                                 const float* gamma, const float* beta, double eps,
                                                                 int32_t relu, void* y) {
  try {
    const auto g = conv_shape(geo, layout);
    const auto bn = bn_params(mean, var, gamma, beta, eps);
    if (mode == 0) xnorm::convbn::conv_forward(g, dtype_of(dtype), x, w, bias, relu != 0, y, nullptr);
    else if (mode == 1) xnorm::convbn::tune_forward(g, dtype_of(dtype), x, w, bias, bn, relu != 0, y, nullptr, nullptr);
    else xnorm::convbn::eval_forward(g, dtype_of(dtype), x, w, bias, bn, relu != 0, y, nullptr);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "core_conv_forward: %s\n", e.what());
    return -1;
  }
}

// Tune (mode 1) or Eval (mode 2) backward from a fresh forward pass on the CPU (its own s, mask or z), with
// relu; gradient outputs may be NULL.
__attribute__((visibility("default"))) int32_t core_conv_backward(const int64_t* geo, int32_t layout, int32_t dtype,
                                                                  int32_t mode, const void* x, const float* w,
                                                                  const float* bias, const float* mean,
                                                                  const float* var, const float* gamma,
                                                                  const float* beta, double eps, int32_t relu,
                                                                  const void* dy, void* dx, float* dw, float* dbias,
                                                                  float* dgamma, float* dbeta) {
  try {
    const auto g = conv_shape(geo, layout);
    const auto dt = dtype_of(dtype);
    const auto bn = bn_params(mean, var, gamma, beta, eps);
    const size_t ybytes = size_t(g.y_size()) * xnorm::dtype_bytes(dt);
    std::vector<uint8_t> y(ybytes), z(ybytes);
    std::vector<float> s(size_t(g.cout));
    std::vector<uint32_t> mask(size_t((g.y_size() + 31) / 32));
    xnorm::convbn::Grads out;
    out.dx = dx, out.dw = dw, out.dbias = dbias, out.dgamma = dgamma, out.dbeta = dbeta;
    if (mode == 1) {
      xnorm::convbn::tune_forward(g, dt, x, w, bias, bn, relu != 0, y.data(), s.data(), relu ? mask.data() : nullptr);
      xnorm::convbn::tune_backward(g, dt, x, w, bias, bn, s.data(), relu ? mask.data() : nullptr, dy, out);
    } else {
      xnorm::convbn::eval_forward(g, dt, x, w, bias, bn, relu != 0, y.data(), z.data());
      xnorm::convbn::eval_backward(g, dt, x, z.data(), relu ? y.data() : nullptr, w, bn, dy, out);
    }
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "core_conv_backward: %s\n", e.what());
    return -1;
  }
}

// Deploy fold: w_out = w * s, b_out = (bias - mean) * s + beta.
__attribute__((visibility("default"))) int32_t core_conv_fold(int64_t cout, int64_t patch, const float* w,
                                                              const float* bias, const float* mean, const float* var,
                                                              const float* gamma, const float* beta, double eps,
                                                              float* w_out, float* b_out) {
  try {
    xnorm::convbn::ConvShape g;  // only Cout and the patch size matter
    g.cout = cout, g.c = patch, g.kh = 1, g.kw = 1;
    xnorm::convbn::fold(g, w, bias, bn_params(mean, var, gamma, beta, eps), w_out, b_out, nullptr);
    return 0;
  } catch (const std::exception& e) {
    fprintf(stderr, "core_conv_fold: %s\n", e.what());
    return -1;
  }
}
}
