// packBits / unpackBits on the GPU, bit-exact with the CPU core (native/core/bconv pack_bits, unpack_bits):
// bit = float(x) < threshold, channel i at bit i%32 of word i/32, tail bits 0; unpacking writes -1 for a 1.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <vector>

#include "../common.cuh"
#include "bconv.cuh"

namespace xnorm_cuda {
namespace {

constexpr int kThreads = 256;

// Element loads as float (the exact widening the CPU does before it compares).
struct F32 {
  using raw = float;
  static __device__ __forceinline__ float get(const raw* p) { return __ldg(p); }
};
struct F16 {
  using raw = uint16_t;
  static __device__ __forceinline__ float get(const raw* p) { return __half2float(__ushort_as_half(__ldg(p))); }
};
struct BF16 {
  using raw = uint16_t;
  static __device__ __forceinline__ float get(const raw* p) { return __bfloat162float(__ushort_as_bfloat16(__ldg(p))); }
};

// NHWC: one warp per output word; the 32 lanes read 32 consecutive channels of a pixel (one
// transaction) and one ballot packs them.
template <typename E>
__global__ void __launch_bounds__(kThreads) pack_nhwc(const typename E::raw* __restrict__ x, int64_t pixels, int64_t c,
                                                      const float* __restrict__ thr, uint32_t* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t wc = (c + 31) / 32, tasks = pixels * wc;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; t < tasks; t += nwarps) {
    const int64_t px = t / wc, ch = (t % wc) * 32 + lane;
    const bool bit = ch < c && E::get(x + px * c + ch) < thr[ch];
    const uint32_t word = __ballot_sync(0xffffffffu, bit);
    if (lane == 0) out[t] = word;
  }
}

// NCHW: one thread per output word, tasks ordered [n][word][s] so that neighbouring threads read
// neighbouring positions of each channel plane.
template <typename E>
__global__ void __launch_bounds__(kThreads) pack_nchw(const typename E::raw* __restrict__ x, int64_t n, int64_t c,
                                                      int64_t s, const float* __restrict__ thr, uint32_t* __restrict__ out) {
  const int64_t wc = (c + 31) / 32, tasks = n * wc * s;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < tasks; t += step) {
    const int64_t sp = t % s, rest = t / s, w = rest % wc, img = rest / wc;
    const int64_t c0 = w * 32, count = c - c0 < 32 ? c - c0 : 32;
    const typename E::raw* px = x + (img * c + c0) * s + sp;
    uint32_t word = 0;
    for (int64_t b = 0; b < count; ++b) word |= uint32_t(E::get(px + b * s) < thr[c0 + b]) << b;
    out[(img * s + sp) * wc + w] = word;
  }
}

// One thread per float written, in output order (coalesced stores).
__global__ void __launch_bounds__(kThreads) unpack_kernel(const uint32_t* __restrict__ b, int64_t n, int64_t c, int64_t s,
                                                          int32_t nchw, float* __restrict__ out) {
  const int64_t wc = (c + 31) / 32, total = n * c * s;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    int64_t px, ch;
    if (nchw) {
      const int64_t sp = e % s, rest = e / s;
      ch = rest % c;
      px = rest / c * s + sp;
    } else {
      px = e / c;
      ch = e % c;
    }
    out[e] = (__ldg(b + px * wc + (ch >> 5)) >> (ch & 31)) & 1u ? -1.0f : 1.0f;
  }
}

// Enough blocks to cover `threads` threads, at most a few waves' worth (the kernels loop).
int grid_for(const Device& d, int64_t threads) {
  const int64_t want = (threads + kThreads - 1) / kThreads, cap = int64_t(d.multiprocessors) * 16;
  return int(want < 1 ? 1 : want < cap ? want : cap);
}

int32_t check_geometry(const xnorm_cuda_geometry* g, xnorm_cuda_status* st, const char* op) {
  if (!g) return report(st, XNORM_CUDA_ARGUMENT, "%s: geometry is NULL", op);
  if (g->n < 1 || g->c < 1 || g->s < 1) return report(st, XNORM_CUDA_ARGUMENT, "%s: N, C and S must be positive", op);
  if (g->layout != XNORM_CUDA_NCHW && g->layout != XNORM_CUDA_NHWC)
    return report(st, XNORM_CUDA_ARGUMENT, "%s: unknown layout %d", op, g->layout);
  return XNORM_CUDA_OK;
}

template <typename E>
void launch_pack(const Device& d, const void* x, const xnorm_cuda_geometry& g, const float* thr, uint32_t* out) {
  const auto* xs = static_cast<const typename E::raw*>(x);
  const int64_t wc = (g.c + 31) / 32;
  if (g.layout == XNORM_CUDA_NHWC)
    XNORM_LAUNCH(pack_nhwc<E>, grid_for(d, g.n * g.s * wc * 32), kThreads, d.stream, xs, g.n * g.s, g.c, thr, out);
  else
    XNORM_LAUNCH(pack_nchw<E>, grid_for(d, g.n * g.s * wc), kThreads, d.stream, xs, g.n, g.c, g.s, thr, out);
}

}  // namespace

int32_t pack_bits(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g, const float* thresholds,
                  float threshold, uint32_t* out, xnorm_cuda_status* st) {
  XNORM_CUDA_TRY(check_geometry(g, st, "pack_bits"));
  if (dtype != XNORM_CUDA_FLOAT32 && dtype != XNORM_CUDA_FLOAT16 && dtype != XNORM_CUDA_BFLOAT16)
    return report(st, XNORM_CUDA_ARGUMENT, "pack_bits: unknown dtype %d", dtype);
  if (!x || !out) return report(st, XNORM_CUDA_ARGUMENT, "pack_bits: NULL tensor");
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  // One threshold per channel on the device, as the CPU core expands a single value.
  std::vector<float> thr(size_t(g->c), threshold);
  if (thresholds) thr.assign(thresholds, thresholds + g->c);
  Scratch k(*d);
  XNORM_CUDA_TRY(k.alloc(uint64_t(thr.size()) * sizeof(float), st));
  cudaError_t e = cudaMemcpyAsync(k.as<float>(), thr.data(), thr.size() * sizeof(float), cudaMemcpyHostToDevice, d->stream);
  if (e != cudaSuccess) return report_cuda(st, e, "pack_bits: threshold upload");
  if (dtype == XNORM_CUDA_FLOAT32)
    launch_pack<F32>(*d, x, *g, k.as<float>(), out);
  else if (dtype == XNORM_CUDA_FLOAT16)
    launch_pack<F16>(*d, x, *g, k.as<float>(), out);
  else
    launch_pack<BF16>(*d, x, *g, k.as<float>(), out);
  // `thr` must outlive the upload, and errors belong to this call: wait here.
  return finish(*d, st, "pack_bits");
}

int32_t unpack_bits(int32_t device, const uint32_t* b, const xnorm_cuda_geometry* g, float* out, xnorm_cuda_status* st) {
  XNORM_CUDA_TRY(check_geometry(g, st, "unpack_bits"));
  if (!b || !out) return report(st, XNORM_CUDA_ARGUMENT, "unpack_bits: NULL tensor");
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  XNORM_LAUNCH(unpack_kernel, grid_for(*d, g->n * g->c * g->s), kThreads, d->stream, b, g->n, g->c, g->s,
               int32_t(g->layout == XNORM_CUDA_NCHW), out);
  return finish(*d, st, "unpack_bits");
}

}  // namespace xnorm_cuda
