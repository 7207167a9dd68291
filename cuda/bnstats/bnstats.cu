// BN-statistic moments and BN apply on the GPU.
//
// Moments run in two launches. Stage 1 splits x into work items that each belong to one (image,
// channel) plane (NCHW: a contiguous piece of a plane, one warp per item, 16-byte loads) or to one
// column tile of a run of rows (NHWC: one block per item, each thread owns a column). Threads keep
// Welford/Chan accumulators in float over values shifted by the item's first value, so a large mean
// against a small spread costs no precision; the item's threads are merged with Chan's formula in a
// fixed tree and the item's partial (count, mean, m2) goes out in double. Stage 2 merges the partials
// of each output slot in double, one warp per slot, again in a fixed order. Which thread handles which
// element depends only on the shape, so results are bit-identical from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../common.cuh"
#include "bnstats.cuh"

namespace xnorm_cuda {
namespace {

constexpr int kThreads = 256;
// Work items are sized so that there are about kWaves times as many as the GPU runs at once (enough to
// balance and to keep memory busy), but no smaller than needed to amortise each item's merge, and
// no larger than kPlaneItemMax elements for a warp.
constexpr int64_t kWaves = 4;
constexpr int64_t kPlaneItemMin = 2048, kPlaneItemMax = 16384;  // elements per NCHW item (one warp)
constexpr int kBlocksPerSm = 8;  // for sizing work items: 8 x 256 threads fill an SM
constexpr int64_t kRowsPerThreadMax = 1 << 16;  // float accumulators stay exact counters and accurate

// Element formats, handled through their raw bits so unions and vector loads stay trivial.
struct F32 {
  using raw = uint32_t;
  static __device__ __forceinline__ float get(raw u) { return __uint_as_float(u); }
  static __device__ __forceinline__ raw put(float f) { return __float_as_uint(f); }
};
struct F16 {
  using raw = uint16_t;
  static __device__ __forceinline__ float get(raw u) { return __half2float(__ushort_as_half(u)); }
  static __device__ __forceinline__ raw put(float f) { return __half_as_ushort(__float2half_rn(f)); }
};
struct BF16 {
  using raw = uint16_t;
  static __device__ __forceinline__ float get(raw u) { return __bfloat162float(__ushort_as_bfloat16(u)); }
  static __device__ __forceinline__ raw put(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
};

template <typename E>
union Pack {
  static constexpr int V = 16 / sizeof(typename E::raw);
  uint4 u;
  typename E::raw e[V];
};

// Running moments of shifted values in float. Plain (no initialisers) so it can live in shared memory.
struct Acc {
  float n, mean, m2;
};

__device__ __forceinline__ void add1(Acc& a, float x) {
  a.n += 1.0f;
  float d = x - a.mean;
  a.mean += __fdividef(d, a.n);
  a.m2 = fmaf(d, x - a.mean, a.m2);
}

// Four values at once: their own mean and m2 (exact enough in registers), then one Chan merge, so the
// division is paid once per four elements.
__device__ __forceinline__ void add4(Acc& a, float x0, float x1, float x2, float x3) {
  float m = ((x0 + x1) + (x2 + x3)) * 0.25f;
  float d0 = x0 - m, d1 = x1 - m, d2 = x2 - m, d3 = x3 - m;
  float q = fmaf(d0, d0, fmaf(d1, d1, fmaf(d2, d2, d3 * d3)));
  float n = a.n + 4.0f;
  float delta = m - a.mean;
  float wb = __fdividef(4.0f, n);
  a.mean = fmaf(delta, wb, a.mean);
  a.m2 += q + delta * delta * (a.n * wb);
  a.n = n;
}

// Chan's merge in float; either side may be empty.
__device__ __forceinline__ Acc merge(const Acc& a, const Acc& b) {
  float n = a.n + b.n;
  if (n == 0.0f) return a;
  float d = b.mean - a.mean;
  float wb = __fdividef(b.n, n);
  Acc r;
  r.n = n;
  r.mean = fmaf(d, wb, a.mean);
  r.m2 = a.m2 + b.m2 + d * d * (a.n * wb);
  return r;
}

template <typename E>
__device__ __forceinline__ void add_pack(Acc& a, uint4 r, float shift) {
  Pack<E> p;
  p.u = r;
#pragma unroll
  for (int i = 0; i < Pack<E>::V; i += 4)
    add4(a, E::get(p.e[i]) - shift, E::get(p.e[i + 1]) - shift, E::get(p.e[i + 2]) - shift, E::get(p.e[i + 3]) - shift);
}

// Fixed-shape tree over the warp; the result is in lane 0. M is Acc (float) or DMom (double).
template <typename M>
__device__ __forceinline__ M warp_merge(M a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    M o;
    o.n = __shfl_down_sync(0xffffffffu, a.n, off);
    o.mean = __shfl_down_sync(0xffffffffu, a.mean, off);
    o.m2 = __shfl_down_sync(0xffffffffu, a.m2, off);
    a = merge(a, o);
  }
  return a;
}

// Partials of stage 1, structure of arrays in double.
struct Partials {
  double* n;
  double* mean;
  double* m2;
};

__device__ __forceinline__ void put_partial(const Partials& p, int64_t i, const Acc& a, float shift) {
  p.n[i] = a.n;
  p.mean[i] = double(shift) + double(a.mean);
  p.m2[i] = a.m2;
}

// Items of `len` <= L elements along planes of S contiguous elements: item = plane * K + piece.
struct PlanePlan {
  int64_t planes, s, k, l;
};

template <typename E>
__global__ void __launch_bounds__(kThreads) moments_planes(const typename E::raw* __restrict__ x, PlanePlan pl,
                                                           Partials out) {
  using R = typename E::raw;
  constexpr int V = Pack<E>::V;
  const int lane = threadIdx.x & 31;
  const int64_t items = pl.planes * pl.k;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; item < items; item += nwarps) {
    const int64_t plane = item / pl.k, off = (item % pl.k) * pl.l;
    const int64_t len = min(pl.l, pl.s - off);
    const R* p = x + plane * pl.s + off;
    const float shift = E::get(__ldg(p));
    Acc a = {0.0f, 0.0f, 0.0f};
    // Scalar head up to the first 16-byte boundary, 16-byte vectors, scalar tail.
    const int64_t head = min(int64_t((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / int64_t(sizeof(R)), len);
    if (lane < head) add1(a, E::get(__ldg(p + lane)) - shift);
    const int64_t nvec = (len - head) / V;
    const uint4* pv = reinterpret_cast<const uint4*>(p + head);
    int64_t v = lane;
    for (; v + 96 < nvec; v += 128) {  // four loads in flight per lane
      uint4 r0 = __ldg(pv + v), r1 = __ldg(pv + v + 32), r2 = __ldg(pv + v + 64), r3 = __ldg(pv + v + 96);
      add_pack<E>(a, r0, shift);
      add_pack<E>(a, r1, shift);
      add_pack<E>(a, r2, shift);
      add_pack<E>(a, r3, shift);
    }
    for (; v < nvec; v += 32) add_pack<E>(a, __ldg(pv + v), shift);
    for (int64_t i = head + nvec * V + lane; i < len; i += 32) add1(a, E::get(__ldg(p + i)) - shift);
    a = warp_merge(a);
    if (lane == 0) put_partial(out, item, a, shift);
  }
}

// Rows of C values grouped in `segs` segments of seg_rows rows (one segment per image when the slots
// are per image, else one for the whole tensor). Item = (seg * K + chunk) * tiles + tile; a block
// covers `width` columns and `rpass` rows per pass (thread t: row lane t / width, column t % width).
struct RowPlan {
  int64_t c, segs, seg_rows, k, chunk_rows, tiles;
  int width, rpass;
};

RowPlan row_plan(const Device& d, int64_t c, int64_t segs, int64_t seg_rows) {
  RowPlan p;
  p.c = c;
  p.segs = segs;
  p.seg_rows = seg_rows;
  p.width = int(c <= kThreads ? c : kThreads);
  p.rpass = kThreads / p.width;
  p.tiles = (c + p.width - 1) / p.width;
  // Chunks per segment: enough items for kWaves waves of resident blocks, each item at least one pass.
  int64_t want = kWaves * d.multiprocessors * kBlocksPerSm;
  int64_t k = (want + segs * p.tiles - 1) / (segs * p.tiles);
  int64_t min_k = (seg_rows + p.rpass * kRowsPerThreadMax - 1) / (p.rpass * kRowsPerThreadMax);
  int64_t max_k = (seg_rows + p.rpass - 1) / p.rpass;
  k = k < min_k ? min_k : k;
  k = k < 1 ? 1 : k > max_k ? max_k : k;
  p.chunk_rows = (seg_rows + k - 1) / k;
  p.k = (seg_rows + p.chunk_rows - 1) / p.chunk_rows;
  return p;
}

template <typename E>
__global__ void __launch_bounds__(kThreads) moments_rows(const typename E::raw* __restrict__ x, RowPlan pl,
                                                         Partials out) {
  using R = typename E::raw;
  __shared__ Acc sh[kThreads];
  const int t = threadIdx.x, j = t / pl.width, cl = t % pl.width;
  const int64_t items = pl.segs * pl.k * pl.tiles;
  int lanes = 1;  // smallest power of two >= rpass
  while (lanes < pl.rpass) lanes <<= 1;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t tile = item % pl.tiles, chunk = (item / pl.tiles) % pl.k, seg = item / (pl.tiles * pl.k);
    const int64_t col = tile * pl.width + cl;
    const bool active = j < pl.rpass && col < pl.c;
    const int64_t r0 = chunk * pl.chunk_rows, r1 = min(r0 + pl.chunk_rows, pl.seg_rows);
    Acc a = {0.0f, 0.0f, 0.0f};
    float shift = 0;
    if (active) {
      const R* base = x + seg * pl.seg_rows * pl.c + col;
      const int64_t step = pl.rpass;
      shift = E::get(__ldg(base + r0 * pl.c));
      int64_t r = r0 + j;
      for (; r + 7 * step < r1; r += 8 * step) {  // eight loads in flight per thread
        R v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) v[u] = __ldg(base + (r + u * step) * pl.c);
        add4(a, E::get(v[0]) - shift, E::get(v[1]) - shift, E::get(v[2]) - shift, E::get(v[3]) - shift);
        add4(a, E::get(v[4]) - shift, E::get(v[5]) - shift, E::get(v[6]) - shift, E::get(v[7]) - shift);
      }
      for (; r < r1; r += step) add1(a, E::get(__ldg(base + r * pl.c)) - shift);
    }
    sh[t] = a;
    __syncthreads();
    for (int h = lanes >> 1; h > 0; h >>= 1) {
      if (active && j < h && j + h < pl.rpass) sh[t] = merge(sh[t], sh[t + h * pl.width]);
      __syncthreads();
    }
    if (active && j == 0) put_partial(out, (seg * pl.k + chunk) * pl.c + col, sh[t], shift);
    __syncthreads();
  }
}

struct DMom {
  double n = 0, mean = 0, m2 = 0;
};

// Chan's merge in double, the same formula as the CPU core's bnstats::merge.
__device__ __forceinline__ DMom merge(const DMom& a, const DMom& b) {
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  DMom r;
  r.n = a.n + b.n;
  double d = b.mean - a.mean;
  r.mean = a.mean + d * (b.n / r.n);
  r.m2 = a.m2 + b.m2 + d * d * (a.n * b.n / r.n);
  return r;
}

// Which partials feed slot `slot`: entry j of its list, for partials laid out by plane (NCHW) or by
// row chunk (NHWC).
struct SlotPlan {
  int32_t rows, over;  // rows: partials from moments_rows; over: xnorm_cuda_over
  int64_t n, c, k, cg, groups, len;
};

__device__ __forceinline__ int64_t partial_index(const SlotPlan& p, int64_t slot, int64_t j) {
  if (!p.rows) {
    switch (p.over) {
      case XNORM_CUDA_CHANNEL: return ((j / p.k) * p.c + slot) * p.k + j % p.k;
      case XNORM_CUDA_INSTANCE: return slot * p.k + j;
      default: {
        int64_t n = slot / p.groups, g = slot % p.groups;
        return (n * p.c + g * p.cg + j / p.k) * p.k + j % p.k;
      }
    }
  }
  switch (p.over) {
    case XNORM_CUDA_CHANNEL: return j * p.c + slot;
    case XNORM_CUDA_INSTANCE: return ((slot / p.c) * p.k + j) * p.c + slot % p.c;
    default: {
      int64_t n = slot / p.groups, g = slot % p.groups;
      return (n * p.k + j / p.cg) * p.c + g * p.cg + j % p.cg;
    }
  }
}

__global__ void __launch_bounds__(kThreads) merge_slots(Partials in, SlotPlan pl, int64_t slots, double* mean,
                                                        double* m2, float* mean_f32, float* m2_f32) {
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t slot = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; slot < slots; slot += nwarps) {
    DMom m;
    int64_t j = lane;
    for (; j + 96 < pl.len; j += 128) {  // four partials in flight per lane, merged in order
      DMom o[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        int64_t i = partial_index(pl, slot, j + 32 * u);
        o[u].n = in.n[i];
        o[u].mean = in.mean[i];
        o[u].m2 = in.m2[i];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) m = merge(m, o[u]);
    }
    for (; j < pl.len; j += 32) {
      int64_t i = partial_index(pl, slot, j);
      DMom o;
      o.n = in.n[i];
      o.mean = in.mean[i];
      o.m2 = in.m2[i];
      m = merge(m, o);
    }
    m = warp_merge(m);
    if (lane == 0) {
      double q = m.m2 > 0 ? m.m2 : 0.0;
      mean[slot] = m.mean;
      m2[slot] = q;
      if (mean_f32) mean_f32[slot] = float(m.mean);
      if (m2_f32) m2_f32[slot] = float(q);
    }
  }
}

// BN apply over NCHW planes: one warp per piece of a plane, scalar coefficients per plane.
struct Coeffs {
  const float* mean;
  const float* mean_lo;
  const float* scale;
  const float* beta;
};

__device__ __forceinline__ float bn(float x, float m, float mlo, float sc, float b, bool relu) {
  float v = fmaf((x - m) - mlo, sc, b);
  return relu ? fmaxf(v, 0.0f) : v;
}

template <typename E>
__global__ void __launch_bounds__(kThreads) apply_planes(const typename E::raw* x, typename E::raw* y, PlanePlan pl,
                                                         int64_t c, bool per_instance, Coeffs k, bool relu) {
  using R = typename E::raw;
  constexpr int V = Pack<E>::V;
  const int lane = threadIdx.x & 31;
  const int64_t items = pl.planes * pl.k;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  // Vector path only when x and y share their alignment (always so for the plugin's own buffers).
  const bool vec_ok = ((reinterpret_cast<uintptr_t>(x) ^ reinterpret_cast<uintptr_t>(y)) & 15) == 0;
  for (int64_t item = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; item < items; item += nwarps) {
    const int64_t plane = item / pl.k, off = (item % pl.k) * pl.l;
    const int64_t len = min(pl.l, pl.s - off);
    const int64_t slot = per_instance ? plane : plane % c;
    const float m = k.mean[slot], mlo = k.mean_lo[slot], sc = k.scale[slot], b = k.beta[slot];
    const R* p = x + plane * pl.s + off;
    R* q = y + plane * pl.s + off;
    int64_t head = vec_ok ? min(int64_t((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / int64_t(sizeof(R)), len)
                          : len;
    for (int64_t i = lane; i < head; i += 32) q[i] = E::put(bn(E::get(p[i]), m, mlo, sc, b, relu));
    const int64_t nvec = (len - head) / V;
    const uint4* pv = reinterpret_cast<const uint4*>(p + head);
    uint4* qv = reinterpret_cast<uint4*>(q + head);
    for (int64_t v = lane; v < nvec; v += 32) {
      Pack<E> pk;
      pk.u = pv[v];
#pragma unroll
      for (int i = 0; i < V; ++i) pk.e[i] = E::put(bn(E::get(pk.e[i]), m, mlo, sc, b, relu));
      qv[v] = pk.u;
    }
    for (int64_t i = head + nvec * V + lane; i < len; i += 32) q[i] = E::put(bn(E::get(p[i]), m, mlo, sc, b, relu));
  }
}

// BN apply over rows of C values: segments are images when the coefficients are per instance.
template <typename E>
__global__ void __launch_bounds__(kThreads) apply_rows(const typename E::raw* x, typename E::raw* y, RowPlan pl,
                                                       bool per_instance, Coeffs k, bool relu) {
  const int t = threadIdx.x, j = t / pl.width, cl = t % pl.width;
  const int64_t items = pl.segs * pl.k * pl.tiles;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t tile = item % pl.tiles, chunk = (item / pl.tiles) % pl.k, seg = item / (pl.tiles * pl.k);
    const int64_t col = tile * pl.width + cl;
    if (j >= pl.rpass || col >= pl.c) continue;
    const int64_t slot = (per_instance ? seg * pl.c : 0) + col;
    const float m = k.mean[slot], mlo = k.mean_lo[slot], sc = k.scale[slot], b = k.beta[slot];
    const int64_t r0 = chunk * pl.chunk_rows, r1 = min(r0 + pl.chunk_rows, pl.seg_rows);
    const int64_t base = seg * pl.seg_rows * pl.c + col;
#pragma unroll 4
    for (int64_t r = r0 + j; r < r1; r += pl.rpass) {
      int64_t i = base + r * pl.c;
      y[i] = E::put(bn(E::get(x[i]), m, mlo, sc, b, relu));
    }
  }
}

// Grid size: one block per `per_block` units of work, at most as many blocks as the GPU holds at once
// for this kernel (the rest is grid-stride), so no partial second wave.
template <typename Kernel>
int blocks_for(const Device& d, Kernel kernel, int64_t per_block, int64_t units) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();
    per_sm = 1;
  }
  int64_t want = (units + per_block - 1) / per_block;
  int64_t cap = int64_t(d.multiprocessors) * per_sm;
  return int(want < 1 ? 1 : want < cap ? want : cap);
}

PlanePlan plane_plan(const Device& d, int64_t planes, int64_t s) {
  PlanePlan p;
  p.planes = planes;
  p.s = s;
  // Item length: the tensor spread over kWaves waves of resident warps, within [min, max].
  int64_t warps = kWaves * d.multiprocessors * kBlocksPerSm * (kThreads / 32);
  int64_t len = (planes * s + warps - 1) / warps;
  len = len < kPlaneItemMin ? kPlaneItemMin : len > kPlaneItemMax ? kPlaneItemMax : len;
  p.k = (s + len - 1) / len;
  p.l = (s + p.k - 1) / p.k;
  p.l = (p.l + 7) / 8 * 8;  // pieces start on whole vectors relative to the plane
  p.k = (s + p.l - 1) / p.l;
  return p;
}

int32_t check_geometry(const xnorm_cuda_geometry* g, int32_t dtype, xnorm_cuda_status* st, const char* op) {
  if (!g) return report(st, XNORM_CUDA_ARGUMENT, "%s: geometry is NULL", op);
  if (dtype < XNORM_CUDA_FLOAT32 || dtype > XNORM_CUDA_BFLOAT16)
    return report(st, XNORM_CUDA_ARGUMENT, "%s: unsupported dtype %d", op, dtype);
  if (g->layout != XNORM_CUDA_NCHW && g->layout != XNORM_CUDA_NHWC)
    return report(st, XNORM_CUDA_ARGUMENT, "%s: unsupported layout %d", op, g->layout);
  if (g->n < 0 || g->c < 1 || g->s < 0)
    return report(st, XNORM_CUDA_ARGUMENT, "%s: bad geometry n=%lld c=%lld s=%lld", op, (long long)g->n,
                  (long long)g->c, (long long)g->s);
  return XNORM_CUDA_OK;
}

template <typename E>
void launch_moments(const Device& d, const void* x, bool rows, const PlanePlan& pp, const RowPlan& rp,
                    const Partials& part) {
  using R = typename E::raw;
  const R* xr = static_cast<const R*>(x);
  if (rows) {
    int grid = blocks_for(d, moments_rows<E>, 1, rp.segs * rp.k * rp.tiles);
    XNORM_LAUNCH(moments_rows<E>, grid, kThreads, d.stream, xr, rp, part);
  } else {
    int grid = blocks_for(d, moments_planes<E>, kThreads / 32, pp.planes * pp.k);
    XNORM_LAUNCH(moments_planes<E>, grid, kThreads, d.stream, xr, pp, part);
  }
}

template <typename E>
void launch_apply(const Device& d, const void* x, void* y, bool rows, const PlanePlan& pp, const RowPlan& rp,
                  int64_t c, bool per_instance, const Coeffs& k, bool relu) {
  using R = typename E::raw;
  const R* xr = static_cast<const R*>(x);
  R* yr = static_cast<R*>(y);
  if (rows) {
    int grid = blocks_for(d, apply_rows<E>, 1, rp.segs * rp.k * rp.tiles);
    XNORM_LAUNCH(apply_rows<E>, grid, kThreads, d.stream, xr, yr, rp, per_instance, k, relu);
  } else {
    int grid = blocks_for(d, apply_planes<E>, kThreads / 32, pp.planes * pp.k);
    XNORM_LAUNCH(apply_planes<E>, grid, kThreads, d.stream, xr, yr, pp, c, per_instance, k, relu);
  }
}

}  // namespace

int32_t bnstats_moments(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g, int32_t over,
                        int64_t groups, double* mean_host, double* m2_host, float* mean_f32, float* m2_f32,
                        int64_t* count_out, xnorm_cuda_status* st) {
  XNORM_CUDA_TRY(check_geometry(g, dtype, st, "moments"));
  if (over < XNORM_CUDA_CHANNEL || over > XNORM_CUDA_GROUP)
    return report(st, XNORM_CUDA_ARGUMENT, "moments: unsupported reduction %d", over);
  if (over != XNORM_CUDA_GROUP) groups = 1;
  if (groups < 1 || g->c % groups != 0)
    return report(st, XNORM_CUDA_ARGUMENT, "moments: groups %lld does not divide C = %lld", (long long)groups,
                  (long long)g->c);
  const int64_t cg = g->c / groups;
  const int64_t count = over == XNORM_CUDA_CHANNEL ? g->n * g->s : over == XNORM_CUDA_INSTANCE ? g->s : cg * g->s;
  if (count < 1) return report(st, XNORM_CUDA_ARGUMENT, "moments: the reduction has no elements");
  if (g->n * g->c * g->s == 0) return report(st, XNORM_CUDA_ARGUMENT, "moments: x has no elements");
  if (!x || !mean_host || !m2_host || !count_out) return report(st, XNORM_CUDA_ARGUMENT, "moments: NULL pointer");
  const int64_t slots = over == XNORM_CUDA_CHANNEL ? g->c : over == XNORM_CUDA_INSTANCE ? g->n * g->c : g->n * groups;

  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  // NCHW with one value per plane has the memory order of NHWC with S = 1.
  const bool rows = g->layout == XNORM_CUDA_NHWC || g->s == 1;
  PlanePlan pp{};
  RowPlan rp{};
  SlotPlan sp{};
  int64_t items;
  if (rows) {
    bool whole = over == XNORM_CUDA_CHANNEL;  // slots span images: chunks may cross image boundaries
    rp = row_plan(*d, g->c, whole ? 1 : g->n, whole ? g->n * g->s : g->s);
    items = rp.segs * rp.k * g->c;
    sp.k = rp.k;
    sp.len = over == XNORM_CUDA_GROUP ? rp.k * cg : rp.k;
  } else {
    pp = plane_plan(*d, g->n * g->c, g->s);
    items = pp.planes * pp.k;
    sp.k = pp.k;
    sp.len = over == XNORM_CUDA_CHANNEL ? g->n * pp.k : over == XNORM_CUDA_INSTANCE ? pp.k : cg * pp.k;
  }
  sp.rows = rows;
  sp.over = over;
  sp.n = g->n;
  sp.c = g->c;
  sp.cg = cg;
  sp.groups = groups;

  Scratch scratch(*d);
  XNORM_CUDA_TRY(scratch.alloc(uint64_t(3 * items + 2 * slots) * sizeof(double), st));
  double* base = scratch.as<double>();
  Partials part{base, base + items, base + 2 * items};
  double* out = base + 3 * items;

  switch (dtype) {
    case XNORM_CUDA_FLOAT16: launch_moments<F16>(*d, x, rows, pp, rp, part); break;
    case XNORM_CUDA_BFLOAT16: launch_moments<BF16>(*d, x, rows, pp, rp, part); break;
    default: launch_moments<F32>(*d, x, rows, pp, rp, part);
  }
  int grid = blocks_for(*d, merge_slots, kThreads / 32, slots);
  XNORM_LAUNCH(merge_slots, grid, kThreads, d->stream, part, sp, slots, out, out + slots, mean_f32, m2_f32);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpyAsync(mean_host, out, size_t(slots) * sizeof(double), cudaMemcpyDeviceToHost, d->stream);
  if (e == cudaSuccess) e = cudaMemcpyAsync(m2_host, out + slots, size_t(slots) * sizeof(double), cudaMemcpyDeviceToHost, d->stream);
  if (e != cudaSuccess) return report_cuda(st, e, "moments");
  XNORM_CUDA_TRY(finish(*d, st, "moments"));
  *count_out = count;
  return XNORM_CUDA_OK;
}

int32_t bnstats_batch_norm(int32_t device, const void* x, void* y, int32_t dtype, const xnorm_cuda_geometry* g,
                           int32_t per_instance, const float* mean, const float* mean_lo, const float* scale,
                           const float* beta, int32_t relu, xnorm_cuda_status* st) {
  XNORM_CUDA_TRY(check_geometry(g, dtype, st, "batch_norm"));
  if (!mean || !mean_lo || !scale || !beta) return report(st, XNORM_CUDA_ARGUMENT, "batch_norm: NULL coefficients");
  const int64_t size = g->n * g->c * g->s;
  if (size == 0) return XNORM_CUDA_OK;
  if (!x || !y) return report(st, XNORM_CUDA_ARGUMENT, "batch_norm: NULL tensor");
  const int64_t slots = per_instance ? g->n * g->c : g->c;

  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  Scratch coeffs(*d);
  XNORM_CUDA_TRY(coeffs.alloc(uint64_t(4 * slots) * sizeof(float), st));
  float* k = coeffs.as<float>();
  const float* host[4] = {mean, mean_lo, scale, beta};
  for (int i = 0; i < 4; ++i) {
    cudaError_t e = cudaMemcpyAsync(k + i * slots, host[i], size_t(slots) * sizeof(float), cudaMemcpyHostToDevice, d->stream);
    if (e != cudaSuccess) return report_cuda(st, e, "batch_norm: coefficient upload");
  }
  Coeffs c{k, k + slots, k + 2 * slots, k + 3 * slots};
  const bool rows = g->layout == XNORM_CUDA_NHWC || g->s == 1;
  PlanePlan pp{};
  RowPlan rp{};
  if (rows) rp = row_plan(*d, g->c, per_instance ? g->n : 1, per_instance ? g->s : g->n * g->s);
  else pp = plane_plan(*d, g->n * g->c, g->s);
  switch (dtype) {
    case XNORM_CUDA_FLOAT16: launch_apply<F16>(*d, x, y, rows, pp, rp, g->c, per_instance, c, relu); break;
    case XNORM_CUDA_BFLOAT16: launch_apply<BF16>(*d, x, y, rows, pp, rp, g->c, per_instance, c, relu); break;
    default: launch_apply<F32>(*d, x, y, rows, pp, rp, g->c, per_instance, c, relu);
  }
  // The host coefficient arrays must outlive the upload, and errors belong to this call: wait here.
  return finish(*d, st, "batch_norm");
}

}  // namespace xnorm_cuda
