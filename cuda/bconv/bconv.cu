// Binary (XNOR/popcount) convolution on CUDA cores, bit-exact with the CPU core's conventions
// (native/include/xnorm_cuda.h, DESIGN.md "Binary").
//
// One warp computes 32 consecutive output channels of one output pixel: every lane reads the same input
// words (one transaction), its own channel's weights, and XORs and counts 32 channels at a time; 'bits'
// output packs the warp's 32 signs with one ballot. This is the portable baseline; the tensor-core
// version (1-bit MMA, AND+popc on sm_80+, XOR on sm_75) and MST plans are not written yet.
#include <cstdint>
#include <vector>

#include "../common.cuh"
#include "bconv.cuh"

namespace xnorm_cuda {
namespace {

constexpr int kThreads = 256;

struct Plan {
  int64_t n, h, w, wc;  // input NHWC, words per input pixel
  int64_t oh, ow, cout, cout_g, cin_g, kh, kw, wg, row_words, out_words;
  int64_t sh, sw, ph, pw, dh, dw;
  int32_t pad_zero, output, clamp;
  float lo, hi;
  uint32_t last_mask;  // the valid bits of a group's last word
};

// 32 input bits of one pixel starting at channel `bit0` (a group need not start on a word).
__device__ __forceinline__ uint32_t window(const uint32_t* px, int64_t wc, int64_t bit0) {
  int64_t i = bit0 >> 5;
  int s = int(bit0 & 31);
  uint32_t lo = __ldg(px + i);
  if (s == 0) return lo;
  uint32_t hi = i + 1 < wc ? __ldg(px + i + 1) : 0u;
  return (lo >> s) | (hi << (32 - s));
}

// y = float(dot) * scale + bias with two roundings (no FMA, like the CPU), then the clamp written as
// the CPU's std::max/std::min so that signed zeros come out the same.
__device__ __forceinline__ float transform(int32_t dot, float scale, float bias, const Plan& p) {
  float y = __fadd_rn(__fmul_rn(__int2float_rn(dot), scale), bias);
  if (p.clamp) {
    y = y < p.lo ? p.lo : y;
    y = p.hi < y ? p.hi : y;
  }
  return y;
}

__global__ void __launch_bounds__(kThreads) bconv_kernel(const uint32_t* __restrict__ x, const uint32_t* __restrict__ w,
                                                         Plan p, const float* __restrict__ scale,
                                                         const float* __restrict__ bias, void* out) {
  const int lane = threadIdx.x & 31;
  const int64_t tasks = p.n * p.oh * p.ow * p.out_words;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t task = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; task < tasks; task += nwarps) {
    const int64_t pix = task / p.out_words, cw = task % p.out_words;
    const int64_t co = cw * 32 + lane;
    const bool active = co < p.cout;
    const int64_t cc = active ? co : p.cout - 1;  // idle lanes compute a real channel and drop it
    const int64_t g = cc / p.cout_g;
    const int64_t ox = pix % p.ow, rest = pix / p.ow, oy = rest % p.oh, n = rest / p.oh;
    const uint32_t* wrow = w + cc * p.row_words;
    int32_t pop = 0, inside_taps = 0;
    for (int64_t ki = 0; ki < p.kh; ++ki) {
      const int64_t iy = oy * p.sh - p.ph + ki * p.dh;
      for (int64_t kj = 0; kj < p.kw; ++kj) {
        const int64_t ix = ox * p.sw - p.pw + kj * p.dw;
        const uint32_t* wt = wrow + (ki * p.kw + kj) * p.wg;
        if (iy >= 0 && iy < p.h && ix >= 0 && ix < p.w) {
          ++inside_taps;
          const uint32_t* px = x + ((n * p.h + iy) * p.w + ix) * p.wc;
          for (int64_t k = 0; k < p.wg; ++k) {
            uint32_t xv = window(px, p.wc, g * p.cin_g + 32 * k);
            if (k == p.wg - 1) xv &= p.last_mask;
            pop += __popc(xv ^ __ldg(wt + k));
          }
        } else if (!p.pad_zero) {  // a +1 input (bit 0) against the weights
          for (int64_t k = 0; k < p.wg; ++k) pop += __popc(__ldg(wt + k));
        }
      }
    }
    const int64_t taps = p.pad_zero ? inside_taps : p.kh * p.kw;
    const int32_t dot = int32_t(taps * p.cin_g) - 2 * pop;
    switch (p.output) {
      case XNORM_CUDA_OUT_INT32:
        if (active) static_cast<int32_t*>(out)[pix * p.cout + co] = dot;
        break;
      case XNORM_CUDA_OUT_FLOAT:
        if (active) static_cast<float*>(out)[pix * p.cout + co] = transform(dot, scale[co], bias[co], p);
        break;
      default: {
        bool neg = active && transform(dot, scale[cc], bias[cc], p) < 0.0f;
        uint32_t word = __ballot_sync(0xffffffffu, neg);
        if (lane == 0) static_cast<uint32_t*>(out)[pix * p.out_words + cw] = word;
      }
    }
  }
}

int64_t out_size(int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

}  // namespace

int32_t binary_conv2d(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* q,
                      const float* scale, const float* bias, void* out, xnorm_cuda_status* st) {
  if (!q) return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: parameters are NULL");
  const xnorm_cuda_bconv& a = *q;
  if (a.n < 1 || a.h < 1 || a.w < 1 || a.c < 1 || a.cout < 1 || a.cin_g < 1 || a.kh < 1 || a.kw < 1 || a.groups < 1 ||
      a.sh < 1 || a.sw < 1 || a.dh < 1 || a.dw < 1 || a.ph < 0 || a.pw < 0)
    return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: sizes, strides and dilations must be positive");
  if (a.cout % a.groups || a.cin_g * a.groups != a.c)
    return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: C = %lld and Cout = %lld do not match groups = %lld",
                  (long long)a.c, (long long)a.cout, (long long)a.groups);
  if (a.output < XNORM_CUDA_OUT_FLOAT || a.output > XNORM_CUDA_OUT_BITS)
    return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: unknown output kind %d", a.output);
  if (a.kh * a.kw * a.cin_g > (int64_t(1) << 30))
    return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: K = kh*kw*Cin/groups exceeds 2^30");
  Plan p{};
  p.n = a.n, p.h = a.h, p.w = a.w, p.wc = (a.c + 31) / 32;
  p.oh = out_size(a.h, a.ph, a.dh, a.kh, a.sh);
  p.ow = out_size(a.w, a.pw, a.dw, a.kw, a.sw);
  if (p.oh < 1 || p.ow < 1) return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: the output would be empty");
  p.cout = a.cout, p.cout_g = a.cout / a.groups, p.cin_g = a.cin_g, p.kh = a.kh, p.kw = a.kw;
  p.wg = (a.cin_g + 31) / 32, p.row_words = a.kh * a.kw * p.wg, p.out_words = (a.cout + 31) / 32;
  p.sh = a.sh, p.sw = a.sw, p.ph = a.ph, p.pw = a.pw, p.dh = a.dh, p.dw = a.dw;
  p.pad_zero = a.pad_zero != 0, p.output = a.output, p.clamp = a.clamp != 0, p.lo = a.lo, p.hi = a.hi;
  if (p.clamp && !(p.lo <= p.hi)) return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: clamp needs lo <= hi");
  p.last_mask = a.cin_g % 32 ? (1u << (a.cin_g % 32)) - 1u : 0xffffffffu;
  if (!x || !w || !out) return report(st, XNORM_CUDA_ARGUMENT, "binary_conv2d: NULL tensor");

  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  // The output transform's coefficients (1 and 0 when absent) go to the device with the launch.
  std::vector<float> coeffs(size_t(2 * a.cout));
  for (int64_t c = 0; c < a.cout; ++c) {
    coeffs[size_t(c)] = scale ? scale[c] : 1.0f;
    coeffs[size_t(a.cout + c)] = bias ? bias[c] : 0.0f;
  }
  Scratch k(*d);
  XNORM_CUDA_TRY(k.alloc(uint64_t(coeffs.size()) * sizeof(float), st));
  cudaError_t e = cudaMemcpyAsync(k.as<float>(), coeffs.data(), coeffs.size() * sizeof(float), cudaMemcpyHostToDevice,
                                  d->stream);
  if (e != cudaSuccess) return report_cuda(st, e, "binary_conv2d: coefficient upload");
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, bconv_kernel, kThreads, 0) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();
    per_sm = 1;
  }
  int64_t tasks = p.n * p.oh * p.ow * p.out_words;
  int64_t want = (tasks + kThreads / 32 - 1) / (kThreads / 32), cap = int64_t(d->multiprocessors) * per_sm;
  int grid = int(want < cap ? want : cap);
  const float* ks = k.as<float>();
  XNORM_LAUNCH(bconv_kernel, grid, kThreads, d->stream, x, w, p, ks, ks + a.cout, out);
  // `coeffs` must outlive the upload, and errors belong to this call: wait here.
  return finish(*d, st, "binary_conv2d");
}

}  // namespace xnorm_cuda
