// Convolution and fused Conv + BatchNorm on the GPU (docs/DESIGN.md "Conv and BN"; the CPU core's conventions,
// native/core/convbn/convbn.h).
//
// - The fold is a small kernel: s = gamma / sqrt(var + eps) in double rounded once to float32 (as on the CPU),
//   W' = W * s and b' = (bias - mean) * s + beta with separate float roundings.
// - Forward, backward-data and backward-filter are one implicit-GEMM kernel (igemm_kernel) with three operand
//   gathers: C[m, n] = sum_k A(m, k) B(k, n) per group, 64x64 tiles per 128-thread block, staged through
//   shared memory, on tensor cores: mma.m16n8k8 TF32 for float32 activations (operands rounded to TF32 as they
//   are staged), mma.m16n8k16 FP16 / BF16 for 16-bit ones, float32 accumulation. The epilogue runs on the
//   finished tile: bias + ReLU (+ the ReLU mask) for the forward pass; dW = dW' * s and the per-channel partial
//   sums of dW' * W (for dgamma) for the backward-filter pass, as the CPU does on its GEMM blocks. Tiles with a
//   long reduction (backward-filter) are split over several blocks; the last block to finish a tile adds the
//   partial tiles in split order, so results do not depend on scheduling.
// - Tune backward keeps no conv output: the gradient passes read x, s and the 1-bit ReLU mask.
// Not tuned: no asynchronous copies or double buffering, operand gathers recompute their indices, and groups
// (depthwise included) run as small GEMMs on the same kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../bnstats/bnstats.cuh"
#include "../common.cuh"
#include "convbn.cuh"

namespace xnorm_cuda {
namespace {

constexpr int kF32 = XNORM_CUDA_FLOAT32, kF16 = XNORM_CUDA_FLOAT16, kBF16 = XNORM_CUDA_BFLOAT16;

// ---- element access ------------------------------------------------------------------------------------

__device__ __forceinline__ float half_bits_to_float(int dt, uint32_t u) {
  return dt == kF16 ? __half2float(__ushort_as_half(uint16_t(u))) : __bfloat162float(__ushort_as_bfloat16(uint16_t(u)));
}

template <int DT>
__device__ __forceinline__ float load_act(const void* p, int64_t i) {
  if (DT == kF32) return static_cast<const float*>(p)[i];
  return half_bits_to_float(DT, static_cast<const uint16_t*>(p)[i]);
}

template <int DT>
__device__ __forceinline__ void store_act(void* p, int64_t i, float v) {
  if (DT == kF32) static_cast<float*>(p)[i] = v;
  else if (DT == kF16) static_cast<uint16_t*>(p)[i] = __half_as_ushort(__float2half_rn(v));
  else static_cast<uint16_t*>(p)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// A value of a runtime dtype (the weight's).
__device__ __forceinline__ float load_any(const void* p, int32_t dt, int64_t i) {
  return dt == kF32 ? static_cast<const float*>(p)[i] : half_bits_to_float(dt, static_cast<const uint16_t*>(p)[i]);
}

// float32 -> TF32 (10 mantissa bits), round to nearest with ties away from zero, as cvt.rna.tf32.f32.
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;  // Inf and NaN keep their bits
  return u & 0xffffe000u;
}

template <int DT>
__device__ __forceinline__ uint32_t to_half_bits(float v) {
  return DT == kF16 ? uint32_t(__half_as_ushort(__float2half_rn(v))) : uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(v)));
}

// ---- warp matrix multiply-accumulate -------------------------------------------------------------------
// D (16x8, float32) += A (16xK) B (Kx8); K = 8 TF32 values or 16 FP16 / BF16 values. Fragments (PTX ISA,
// lane = 4 * grp + q): A regs {(grp, kA), (grp + 8, kA), (grp, kB), (grp + 8, kB)} with kA = q, kB = q + 4 for
// TF32 and kA = 2q, 2q + 1 (low, high half), kB = kA + 8 for 16-bit; B regs {(kA, grp), (kB, grp)}; D regs
// {(grp, 2q), (grp, 2q + 1), (grp + 8, 2q), (grp + 8, 2q + 1)}.

template <int DT>
__device__ __forceinline__ float fragment_a(const uint32_t (&all)[32][6], int row, int k) {
  if (DT == kF32) return __uint_as_float(to_tf32(__uint_as_float(all[(row & 7) * 4 + (k & 3)][(row >> 3) + 2 * (k >> 2)])));
  const uint32_t w = all[(row & 7) * 4 + ((k & 7) >> 1)][(row >> 3) + 2 * (k >> 3)];
  return half_bits_to_float(DT, k & 1 ? w >> 16 : w & 0xffffu);
}

template <int DT>
__device__ __forceinline__ float fragment_b(const uint32_t (&all)[32][6], int k, int col) {
  if (DT == kF32) return __uint_as_float(to_tf32(__uint_as_float(all[col * 4 + (k & 3)][4 + (k >> 2)])));
  const uint32_t w = all[col * 4 + ((k & 7) >> 1)][4 + (k >> 3)];
  return half_bits_to_float(DT, k & 1 ? w >> 16 : w & 0xffffu);
}

// The MMA computed lane by lane from the fragment layout: the CPU emulation's tensor core, and the path of
// GPUs without the instruction (TF32 and BF16 before sm_80). Products of TF32 / FP16 / BF16 values are exact
// in float32, so only the order of the float32 additions can differ from the hardware.
template <int DT>
__device__ void mma_by_lanes(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  uint32_t all[32][6];  // every lane's six fragment words (A then B)
#ifdef __CUDACC__
  for (int src = 0; src < 32; ++src)
    for (int r = 0; r < 6; ++r) all[src][r] = __shfl_sync(0xffffffffu, mine[r], src);
#else
  xnorm_emu::warp_all_gather(int(threadIdx.x & 31), mine, sizeof mine, all);
#endif
  const int lane = int(threadIdx.x & 31), grp = lane >> 2, q = lane & 3;
  constexpr int K = DT == kF32 ? 8 : 16;
  for (int e = 0; e < 4; ++e) {
    const int row = grp + (e >> 1) * 8, col = 2 * q + (e & 1);
    float sum = d[e];
    for (int k = 0; k < K; ++k) sum = fmaf(fragment_a<DT>(all, row, k), fragment_b<DT>(all, k, col), sum);
    d[e] = sum;
  }
}

template <int DT>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if (DT == kF32)
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else if (DT == kF16)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
  if (DT == kF16) {  // sm_75 has m16n8k8 FP16: k 0-7 from regs {a0, a1} x b0, k 8-15 from {a2, a3} x b1
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[2]), "r"(a[3]), "r"(b[1]));
  } else {
    mma_by_lanes<DT>(d, a, b);
  }
#else
  mma_by_lanes<DT>(d, a, b);
#endif
}

// ---- geometry and the three GEMM problems --------------------------------------------------------------

struct Geo {
  int64_t n, c, h, w, cout, kh, kw, groups, sh, sw, ph, pw, dh, dw, oh, ow, cin_g, cout_g;
  int32_t nhwc;
  __device__ __forceinline__ int64_t xi(int64_t img, int64_t ch, int64_t y, int64_t x) const {
    return nhwc ? ((img * h + y) * w + x) * c + ch : ((img * c + ch) * h + y) * w + x;
  }
  __device__ __forceinline__ int64_t yi(int64_t img, int64_t co, int64_t y, int64_t x) const {
    return nhwc ? ((img * oh + y) * ow + x) * cout + co : ((img * cout + co) * oh + y) * ow + x;
  }
  __host__ __device__ int64_t patch() const { return cin_g * kh * kw; }
  __host__ __device__ int64_t y_size() const { return n * cout * oh * ow; }
};

// The staged operands come in runs of kRun consecutive k per thread: the gathers decode the first k of a run
// with divisions and step through the rest, since 64-bit divisions would otherwise dominate their cost.
constexpr int kRun = 8;

// (channel, ky, kx) of a patch index k = (channel * kh + ky) * kw + kx, stepped in k order.
struct TapCursor {
  int64_t ch;
  int ky, kx;
  __device__ TapCursor(int64_t k, int kh, int kw) {
    const int64_t taps = int64_t(kh) * kw;
    ch = k / taps;
    const int t = int(k - ch * taps);
    ky = t / kw;
    kx = t - ky * kw;
  }
  __device__ void next(int kh, int kw) {
    if (++kx == kw) {
      kx = 0;
      if (++ky == kh) ky = 0, ++ch;
    }
  }
};

// (image, oy, ox) of an output pixel index, stepped in index order.
struct PixelCursor {
  int64_t img;
  int oy, ox;
  __device__ PixelCursor(int64_t p, int oh, int ow) {
    const int64_t ohw = int64_t(oh) * ow;
    img = p / ohw;
    const int r = int(p - img * ohw);
    oy = r / ow;
    ox = r - oy * ow;
  }
  __device__ void next(int oh, int ow) {
    if (++ox == ow) {
      ox = 0;
      if (++oy == oh) oy = 0, ++img;
    }
  }
};

// Forward, per group: M = Cout/g output channels, N = n*oh*ow output pixels, K = Cin/g*kh*kw taps.
// A = the (folded) float32 weight, B = im2col(x). Epilogue: + bias, ReLU, the ReLU mask bit.
template <int DT>
struct ForwardGemm {
  Geo q;
  const float* w;
  const void* x;
  const float* bias;
  void* y;
  uint32_t* mask;
  int32_t relu;
  int64_t M, N, K;
  bool rows_fastest;  // NHWC output: neighbouring channels are neighbours in memory
  static constexpr bool kRowHook = false;
  struct Col {
    int64_t img, iy0, ix0, c0;
  };
  __device__ void a_run(int64_t g, int64_t m, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    const float* row = w + (g * q.cout_g + m) * K;
    for (int j = 0; j < kRun; ++j) v[j] = k + j < k_end ? row[k + j] : 0.0f;
  }
  __device__ Col col(int64_t g, int64_t n) const {
    const int64_t ohw = q.oh * q.ow, r = n % ohw;
    return Col{n / ohw, r / q.ow * q.sh - q.ph, r % q.ow * q.sw - q.pw, g * q.cin_g};
  }
  __device__ void b_run(const Col& c, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    TapCursor tap(k, int(q.kh), int(q.kw));
    for (int j = 0; j < kRun; ++j, tap.next(int(q.kh), int(q.kw))) {
      const int64_t iy = c.iy0 + tap.ky * q.dh, ix = c.ix0 + tap.kx * q.dw;
      const bool inside = k + j < k_end && iy >= 0 && iy < q.h && ix >= 0 && ix < q.w;
      v[j] = inside ? load_act<DT>(x, q.xi(c.img, c.c0 + tap.ch, iy, ix)) : 0.0f;
    }
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, float v) const {
    const int64_t co = g * q.cout_g + m, ohw = q.oh * q.ow, r = n % ohw;
    const int64_t i = q.yi(n / ohw, co, r / q.ow, r % q.ow);
    v = __fadd_rn(v, bias[co]);
    if (relu) v = v > 0.0f ? v : 0.0f;
    store_act<DT>(y, i, v);
    if (mask && v > 0.0f) atomicOr(mask + i / 32, 1u << (i % 32));
  }
  __device__ void row(int64_t, int64_t, int64_t, const float*, int64_t, int) const {}
};

// Backward-data, per group: M = Cin/g input channels, N = n*h*w input pixels, K = Cout/g*kh*kw.
// A = the (folded) weight read transposed, B = the output gradient at the output pixels each tap reaches.
template <int DT>
struct BackwardDataGemm {
  Geo q;
  const float* w;
  const float* dy;  // float32, y's layout
  void* dx;
  int64_t M, N, K;
  bool rows_fastest;
  static constexpr bool kRowHook = false;
  struct Col {
    int64_t img, ty0, tx0, co0;
  };
  __device__ void a_run(int64_t g, int64_t m, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    const int64_t taps = q.kh * q.kw;
    int64_t co = k / taps, t = k - co * taps;
    for (int j = 0; j < kRun; ++j) {
      v[j] = k + j < k_end ? w[((g * q.cout_g + co) * q.cin_g + m) * taps + t] : 0.0f;
      if (++t == taps) t = 0, ++co;
    }
  }
  __device__ Col col(int64_t g, int64_t n) const {
    const int64_t hw = q.h * q.w, r = n % hw;
    return Col{n / hw, r / q.w + q.ph, r % q.w + q.pw, g * q.cout_g};
  }
  __device__ void b_run(const Col& c, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    TapCursor tap(k, int(q.kh), int(q.kw));
    const int sh = int(q.sh), sw = int(q.sw);
    for (int j = 0; j < kRun; ++j, tap.next(int(q.kh), int(q.kw))) {
      v[j] = 0.0f;
      // The output pixel whose tap (ky, kx) reads this input pixel, if the strides land on one.
      const int ty = int(c.ty0 - tap.ky * q.dh), tx = int(c.tx0 - tap.kx * q.dw);
      if (k + j >= k_end || ty < 0 || tx < 0 || ty % sh || tx % sw) continue;
      const int oy = ty / sh, ox = tx / sw;
      if (oy < q.oh && ox < q.ow) v[j] = dy[q.yi(c.img, c.co0 + tap.ch, oy, ox)];
    }
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, float v) const {
    const int64_t hw = q.h * q.w, r = n % hw;
    store_act<DT>(dx, q.xi(n / hw, g * q.cin_g + m, r / q.w, r % q.w), v);
  }
  __device__ void row(int64_t, int64_t, int64_t, const float*, int64_t, int) const {}
};

// Backward-filter, per group: M = Cout/g, N = Cin/g*kh*kw weight taps, K = n*oh*ow output pixels.
// A = the output gradient, B = im2col(x) transposed. Epilogue: dW = dW' * s (tune) and, per finished row
// piece, sum(dW' * W) in double into its own slot (for dgamma).
template <int DT>
struct BackwardFilterGemm {
  Geo q;
  const float* dy;  // float32, y's layout
  const void* x;
  float* dw;            // NULL: dW is not wanted
  const float* s;       // NULL: dW = dW'
  const float* w;       // the unfolded float32 weight, for the ds partial sums
  double* partial;      // NULL: no ds sums; else [cout][n tiles]
  int64_t M, N, K, n_tiles;
  bool rows_fastest;
  static constexpr bool kRowHook = true;
  struct Col {
    int64_t c, ky, kx;
  };
  __device__ void a_run(int64_t g, int64_t m, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    PixelCursor px(k, int(q.oh), int(q.ow));
    for (int j = 0; j < kRun; ++j, px.next(int(q.oh), int(q.ow)))
      v[j] = k + j < k_end ? dy[q.yi(px.img, g * q.cout_g + m, px.oy, px.ox)] : 0.0f;
  }
  __device__ Col col(int64_t g, int64_t n) const {
    const int64_t taps = q.kh * q.kw, t = n % taps;
    return Col{g * q.cin_g + n / taps, t / q.kw * q.dh - q.ph, t % q.kw * q.dw - q.pw};
  }
  __device__ void b_run(const Col& c, int64_t k, int64_t k_end, float (&v)[kRun]) const {
    PixelCursor px(k, int(q.oh), int(q.ow));
    for (int j = 0; j < kRun; ++j, px.next(int(q.oh), int(q.ow))) {
      const int64_t iy = px.oy * q.sh + c.ky, ix = px.ox * q.sw + c.kx;
      const bool inside = k + j < k_end && iy >= 0 && iy < q.h && ix >= 0 && ix < q.w;
      v[j] = inside ? load_act<DT>(x, q.xi(px.img, c.c, iy, ix)) : 0.0f;
    }
  }
  __device__ void store(int64_t g, int64_t m, int64_t n, float v) const {
    const int64_t co = g * q.cout_g + m;
    if (dw) dw[co * N + n] = s ? __fmul_rn(v, s[co]) : v;
  }
  __device__ void row(int64_t g, int64_t m, int64_t tile, const float* vals, int64_t n0, int count) const {
    if (!partial) return;
    const int64_t co = g * q.cout_g + m;
    double acc = 0.0;
    for (int j = 0; j < count; ++j) acc += double(vals[j]) * double(w[co * N + n0 + j]);
    partial[co * n_tiles + tile] = acc;
  }
};

// ---- the implicit-GEMM kernel --------------------------------------------------------------------------

constexpr int kBM = 64, kBN = 64, kBK = 16, kGemmThreads = 128;
constexpr int kStageStride = kBK + 4;  // words per staged row; the padding spreads fragment reads over all banks
constexpr int kTileStride = kBN + 1;   // floats per row of the finished tile
constexpr int kSmemWords = 2 * kBM * kStageStride > kBM * kTileStride ? 2 * kBM * kStageStride : kBM * kTileStride;
static_assert(2 * kRun == kBK && kGemmThreads == 2 * kBM && kBM == kBN, "two runs of k per staged row or column");

// One block computes one 64x64 tile of C (for one group), or one split of its reduction. Four warps, each
// 32x32: 2 m16 x 4 n8 MMA tiles. Each thread stages 8 consecutive k of one A row and of one B column.
template <int DT, class P>
__global__ void __launch_bounds__(kGemmThreads) igemm_kernel(P p, int32_t splits, float* partials, uint32_t* counters) {
  __shared__ uint32_t smem[kSmemWords];
  __shared__ int last_split;
  uint32_t* As = smem;
  uint32_t* Bs = smem + kBM * kStageStride;
  const int t = int(threadIdx.x), lane = t & 31, warp = t >> 5, grp = lane >> 2, q = lane & 3;
  const int64_t m_tiles = (p.M + kBM - 1) / kBM, n_tiles = (p.N + kBN - 1) / kBN;
  int64_t id = blockIdx.x;
  const int64_t split = id % splits;
  id /= splits;
  const int64_t n_tile = id % n_tiles;
  id /= n_tiles;
  const int64_t m_tile = id % m_tiles, g = id / m_tiles;
  const int64_t m0 = m_tile * kBM, n0 = n_tile * kBN;
  const int64_t steps = (p.K + kBK - 1) / kBK, per_split = (steps + splits - 1) / splits;
  const int64_t k_begin = split * per_split * kBK;
  const int64_t k_stop = (split + 1) * per_split * kBK, k_end = k_stop < p.K ? k_stop : p.K;

  const int r = t % kBM, kq = t / kBM;  // staged row / column and which 8 of the 16 k
  const bool a_ok = m0 + r < p.M, b_ok = n0 + r < p.N;
  const typename P::Col column = p.col(g, b_ok ? n0 + r : 0);
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  float acc[2][4][4] = {};

  float av[kRun] = {}, bv[kRun] = {};
  const auto gather = [&](int64_t k0) {
    if (a_ok) p.a_run(g, m0 + r, k0 + kq * kRun, k_end, av);
    if (b_ok) p.b_run(column, k0 + kq * kRun, k_end, bv);
  };
  if (k_begin < k_end) gather(k_begin);
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
    __syncthreads();  // the previous step's fragments have been read
    if (DT == kF32) {
      for (int j = 0; j < 8; ++j) {
        As[r * kStageStride + kq * 8 + j] = to_tf32(av[j]);
        Bs[r * kStageStride + kq * 8 + j] = to_tf32(bv[j]);
      }
    } else {  // two k-neighbours per word, the lower k in the low half
      for (int j = 0; j < 4; ++j) {
        As[r * kStageStride + kq * 4 + j] = to_half_bits<DT>(av[2 * j]) | to_half_bits<DT>(av[2 * j + 1]) << 16;
        Bs[r * kStageStride + kq * 4 + j] = to_half_bits<DT>(bv[2 * j]) | to_half_bits<DT>(bv[2 * j + 1]) << 16;
      }
    }
    __syncthreads();
    if (k0 + kBK < k_end) gather(k0 + kBK);  // the next step's global loads overlap this step's MMAs
    // TF32: two k8 steps of 8 words; 16-bit: one k16 step of 8 words (word = 2 k).
    for (int ks = 0; ks < (DT == kF32 ? 16 : 8); ks += 8) {
      uint32_t af[2][4], bf[4][2];
      for (int i = 0; i < 2; ++i) {
        const int r0 = (wm + i * 16 + grp) * kStageStride + ks + q, r1 = r0 + 8 * kStageStride;
        af[i][0] = As[r0];
        af[i][1] = As[r1];
        af[i][2] = As[r0 + 4];
        af[i][3] = As[r1 + 4];
      }
      for (int j = 0; j < 4; ++j) {
        const int c0 = (wn + j * 8 + grp) * kStageStride + ks + q;
        bf[j][0] = Bs[c0];
        bf[j][1] = Bs[c0 + 4];
      }
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) mma<DT>(acc[i][j], af[i], bf[j]);
    }
  }

  // The finished tile (or this split's part of it) goes through shared memory to the epilogue.
  __syncthreads();
  float* tile = reinterpret_cast<float*>(smem);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 4; ++e)
        tile[(wm + i * 16 + grp + (e >> 1) * 8) * kTileStride + wn + j * 8 + 2 * q + (e & 1)] = acc[i][j][e];
  __syncthreads();
  if (splits > 1) {
    const int64_t tile_id = (g * m_tiles + m_tile) * n_tiles + n_tile;
    float* mine = partials + (tile_id * splits + split) * (kBM * kBN);
    for (int i = t; i < kBM * kBN; i += kGemmThreads) mine[i] = tile[(i / kBN) * kTileStride + i % kBN];
    __threadfence();
    __syncthreads();
    if (t == 0) last_split = atomicAdd(counters + tile_id, 1u) == uint32_t(splits - 1);
    __syncthreads();
    if (!last_split) return;
    __threadfence();
    const float* all = partials + tile_id * splits * (kBM * kBN);
    for (int i = t; i < kBM * kBN; i += kGemmThreads) {
      float v = 0.0f;
      for (int s = 0; s < splits; ++s) v += __ldcg(all + s * (kBM * kBN) + i);  // split order: deterministic
      tile[(i / kBN) * kTileStride + i % kBN] = v;
    }
    __syncthreads();
  }
  for (int i = t; i < kBM * kBN; i += kGemmThreads) {
    const int m = p.rows_fastest ? i % kBM : i / kBN, n = p.rows_fastest ? i / kBM : i % kBN;
    if (m0 + m < p.M && n0 + n < p.N) p.store(g, m0 + m, n0 + n, tile[m * kTileStride + n]);
  }
  if (P::kRowHook && t < kBM && m0 + t < p.M)
    p.row(g, m0 + t, n_tile, tile + t * kTileStride, n0, int(p.N - n0 < kBN ? p.N - n0 : kBN));
}

// ---- small kernels: fold, gradient preparation, per-channel sums ---------------------------------------

// Per-channel parameters uploaded together: mean, var, gamma, beta, bias (cout each).
enum Coef { kMean = 0, kVar, kGamma, kBeta, kBias, kCoefs };

constexpr int kThreads = 256;

// w_out = w * s (or w), w_plain = w as float32, b_out = (bias - mean) * s + beta (or bias), s_out = s, with
// s = s_in[co] when given, else from the BN statistics (bn != 0) as on the CPU, else 1.
__global__ void __launch_bounds__(kThreads) fold_kernel(const void* w, int32_t w_dtype, int64_t cout, int64_t patch,
                                                        const float* coef, double eps, int32_t bn, const float* s_in,
                                                        float* w_out, float* w_plain, float* b_out, float* s_out) {
  for (int64_t co = blockIdx.x; co < cout; co += gridDim.x) {
    const float* cf = coef;
    const float s = s_in ? s_in[co]
                    : bn ? float(double(cf[kGamma * cout + co]) * (1.0 / sqrt(double(cf[kVar * cout + co]) + eps)))
                         : 1.0f;
    for (int64_t k = threadIdx.x; k < patch; k += blockDim.x) {
      const float v = load_any(w, w_dtype, co * patch + k);
      if (w_out) w_out[co * patch + k] = bn ? __fmul_rn(v, s) : v;
      if (w_plain) w_plain[co * patch + k] = v;
    }
    if (threadIdx.x == 0) {
      const float bias = cf[kBias * cout + co];
      if (b_out)
        b_out[co] = bn ? __fadd_rn(__fmul_rn(__fsub_rn(bias, cf[kMean * cout + co]), s), cf[kBeta * cout + co]) : bias;
      if (s_out) s_out[co] = s;
    }
  }
}

// The output gradient through the activation: masked by the saved ReLU mask (tune) or by y > 0 (eval).
template <int DT>
__device__ __forceinline__ float masked_dy(const void* dy, const uint32_t* mask, const void* y, int64_t i) {
  const float d = load_act<DT>(dy, i);
  if (mask) return (mask[i / 32] >> (i % 32)) & 1u ? d : 0.0f;
  if (y) return load_act<DT>(y, i) > 0.0f ? d : 0.0f;
  return d;
}

__device__ __forceinline__ int64_t channel_of(const Geo& q, int64_t i) {
  return q.nhwc ? i % q.cout : i / (q.oh * q.ow) % q.cout;
}

// The GEMMs' output-gradient operand, float32 in y's layout: masked dy, times `scale` per channel (eval's dz).
template <int DT>
__global__ void __launch_bounds__(kThreads) prepare_dy_kernel(Geo q, const void* dy, const uint32_t* mask, const void* y,
                                                              const float* scale, float* out) {
  const int64_t size = q.y_size();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < size; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = masked_dy<DT>(dy, mask, y, i);
    out[i] = scale ? __fmul_rn(d, scale[channel_of(q, i)]) : d;
  }
}

// Per output channel, in double with a fixed reduction order: sums[0] = sum(d), sums[1] = sum(d * z) (when z),
// sums[2] = sum(float(d * scale)) (when scale), d the masked output gradient. Layout [3][cout].
template <int DT>
__global__ void __launch_bounds__(kThreads) channel_sums_kernel(Geo q, const void* dy, const uint32_t* mask, const void* y,
                                                                const void* z, const float* scale, double* sums) {
  __shared__ double red[3][kThreads];
  const int64_t ohw = q.oh * q.ow, per_channel = q.n * ohw;
  for (int64_t co = blockIdx.x; co < q.cout; co += gridDim.x) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    for (int64_t e = threadIdx.x; e < per_channel; e += blockDim.x) {
      const int64_t img = e / ohw, r = e % ohw, i = q.yi(img, co, r / q.ow, r % q.ow);
      const float d = masked_dy<DT>(dy, mask, y, i);
      s0 += d;
      if (z) s1 += double(d) * double(load_act<DT>(z, i));
      if (scale) s2 += __fmul_rn(d, scale[co]);
    }
    red[0][threadIdx.x] = s0;
    red[1][threadIdx.x] = s1;
    red[2][threadIdx.x] = s2;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (int(threadIdx.x) < half)
        for (int j = 0; j < 3; ++j) red[j][threadIdx.x] += red[j][threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0)
      for (int j = 0; j < 3; ++j) sums[j * q.cout + co] = red[j][0];
    __syncthreads();
  }
}

// The per-channel gradients from the sums (and, tune, the ds partial sums of the backward-filter epilogue).
// tune: db' = sum(d), dbias = db' * s, dbeta = db', dgamma = (sum(dW' * W) + db' * (bias - mean)) * rstd.
// eval: dbeta = sum(d), dgamma = (sum(d * z) - mean * sum(d)) * rstd, dbias = sum(dz).
__global__ void __launch_bounds__(kThreads) channel_grads_kernel(int64_t cout, int32_t tune, const double* sums,
                                                                 const double* partial, int64_t slots, const float* coef,
                                                                 double eps, const float* s, float* dbias, float* dgamma,
                                                                 float* dbeta) {
  for (int64_t co = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; co < cout; co += int64_t(gridDim.x) * blockDim.x) {
    const double sum = sums[co], rstd = 1.0 / sqrt(double(coef[kVar * cout + co]) + eps);
    const double mean = coef[kMean * cout + co];
    if (dbeta) dbeta[co] = float(sum);
    if (tune) {
      if (dbias) dbias[co] = float(sum * s[co]);
      if (dgamma) {
        double ds = sum * (double(coef[kBias * cout + co]) - mean);
        for (int64_t j = 0; j < slots; ++j) ds += partial[co * slots + j];
        dgamma[co] = float(ds * rstd);
      }
    } else {
      if (dbias) dbias[co] = float(sums[2 * cout + co]);
      if (dgamma) dgamma[co] = float((sums[cout + co] - mean * sum) * rstd);
    }
  }
}

// ---- host side -----------------------------------------------------------------------------------------

int grid_for(const Device& d, int64_t items, int threads) {
  const int64_t want = (items + threads - 1) / threads, cap = int64_t(d.multiprocessors) * 8;
  return int(want < 1 ? 1 : want < cap ? want : cap);
}

int32_t make_geo(const xnorm_cuda_conv* a, Geo* out, xnorm_cuda_status* st) {
  if (!a) return report(st, XNORM_CUDA_ARGUMENT, "conv: geometry is NULL");
  if (a->n < 0 || a->c < 1 || a->h < 1 || a->w < 1 || a->cout < 1 || a->kh < 1 || a->kw < 1 || a->groups < 1 ||
      a->sh < 1 || a->sw < 1 || a->dh < 1 || a->dw < 1 || a->ph < 0 || a->pw < 0)
    return report(st, XNORM_CUDA_ARGUMENT, "conv: sizes, strides and dilations must be positive");
  if (a->c % a->groups || a->cout % a->groups)
    return report(st, XNORM_CUDA_ARGUMENT, "conv: C = %lld and Cout = %lld must be divisible by groups = %lld",
                  (long long)a->c, (long long)a->cout, (long long)a->groups);
  for (int32_t dt : {a->dtype, a->w_dtype})
    if (dt < kF32 || dt > kBF16) return report(st, XNORM_CUDA_ARGUMENT, "conv: unknown dtype %d", dt);
  if (a->layout != XNORM_CUDA_NCHW && a->layout != XNORM_CUDA_NHWC)
    return report(st, XNORM_CUDA_ARGUMENT, "conv: unknown layout %d", a->layout);
  Geo q{};
  q.n = a->n, q.c = a->c, q.h = a->h, q.w = a->w, q.cout = a->cout, q.kh = a->kh, q.kw = a->kw, q.groups = a->groups;
  q.sh = a->sh, q.sw = a->sw, q.ph = a->ph, q.pw = a->pw, q.dh = a->dh, q.dw = a->dw;
  const int64_t eh = (q.kh - 1) * q.dh + 1, ew = (q.kw - 1) * q.dw + 1;
  if (eh > q.h + 2 * q.ph || ew > q.w + 2 * q.pw)
    return report(st, XNORM_CUDA_ARGUMENT, "conv: the dilated kernel is larger than the padded input");
  // The gathers step spatial coordinates and kernel taps in 32-bit integers.
  if (q.h + 2 * q.ph >= (int64_t(1) << 31) || q.w + 2 * q.pw >= (int64_t(1) << 31) || q.kh * q.kw >= (int64_t(1) << 31))
    return report(st, XNORM_CUDA_ARGUMENT, "conv: the padded input or the kernel exceeds 2^31 positions");
  q.oh = (q.h + 2 * q.ph - eh) / q.sh + 1, q.ow = (q.w + 2 * q.pw - ew) / q.sw + 1;
  q.cin_g = q.c / q.groups, q.cout_g = q.cout / q.groups, q.nhwc = a->layout == XNORM_CUDA_NHWC;
  *out = q;
  return XNORM_CUDA_OK;
}

// Runs one GEMM problem on `d`'s stream. A reduction much longer than the output (backward-filter) is split
// over blocks until there are about 4 blocks per SM, at least 4 k-steps each.
template <int DT, class P>
int32_t run_gemm(Device& d, const P& p, int64_t groups, xnorm_cuda_status* st) {
  const int64_t tiles = groups * ((p.M + kBM - 1) / kBM) * ((p.N + kBN - 1) / kBN);
  if (tiles == 0) return XNORM_CUDA_OK;
  const int64_t steps = (p.K + kBK - 1) / kBK, target = int64_t(d.multiprocessors) * 4;
  int64_t splits = tiles >= target ? 1 : (target + tiles - 1) / tiles;
  splits = std::min(std::min(splits, steps / 4), int64_t(64));
  if (splits < 1) splits = 1;
  if (tiles * splits > 0x7fffffff) return report(st, XNORM_CUDA_ARGUMENT, "conv: too many output tiles");
  Scratch partials(d), counters(d);
  if (splits > 1) {
    XNORM_CUDA_TRY(partials.alloc(uint64_t(tiles * splits) * kBM * kBN * sizeof(float), st));
    XNORM_CUDA_TRY(counters.alloc(uint64_t(tiles) * sizeof(uint32_t), st));
    cudaError_t e = cudaMemsetAsync(counters.as<uint32_t>(), 0, uint64_t(tiles) * sizeof(uint32_t), d.stream);
    if (e != cudaSuccess) return report_cuda(st, e, "conv: clearing the split counters");
  }
  void (*kernel)(P, int32_t, float*, uint32_t*) = igemm_kernel<DT, P>;
  XNORM_LAUNCH(kernel, int(tiles * splits), kGemmThreads, d.stream, p, int32_t(splits), partials.as<float>(),
               counters.as<uint32_t>());
  return XNORM_CUDA_OK;
}

// Host copies of the per-channel parameters in `Coef` order, uploaded to `dst` (kCoefs * cout floats).
int32_t upload_coefs(Device& d, int64_t cout, const float* bias, const xnorm_cuda_bn* bn, Scratch& dst,
                     std::vector<float>& host, xnorm_cuda_status* st) {
  host.assign(size_t(kCoefs * cout), 0.0f);
  for (int64_t co = 0; co < cout; ++co) {
    host[size_t(kVar * cout + co)] = bn ? bn->var[co] : 1.0f;
    host[size_t(kMean * cout + co)] = bn ? bn->mean[co] : 0.0f;
    host[size_t(kGamma * cout + co)] = bn && bn->gamma ? bn->gamma[co] : 1.0f;
    host[size_t(kBeta * cout + co)] = bn && bn->beta ? bn->beta[co] : 0.0f;
    host[size_t(kBias * cout + co)] = bias ? bias[co] : 0.0f;
  }
  XNORM_CUDA_TRY(dst.alloc(host.size() * sizeof(float), st));
  cudaError_t e = cudaMemcpyAsync(dst.as<float>(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, d.stream);
  return e == cudaSuccess ? XNORM_CUDA_OK : report_cuda(st, e, "conv: parameter upload");
}

int32_t check_bn(const xnorm_cuda_bn* bn, int64_t cout, const char* what, xnorm_cuda_status* st) {
  if (!bn || !bn->mean || !bn->var) return report(st, XNORM_CUDA_ARGUMENT, "%s: BN mean and var are needed", what);
  if (!(bn->eps >= 0)) return report(st, XNORM_CUDA_ARGUMENT, "%s: eps must be >= 0", what);
  for (int64_t co = 0; co < cout; ++co)
    if (!(double(bn->var[co]) + bn->eps > 0))
      return report(st, XNORM_CUDA_ARGUMENT, "%s: var[%lld] + eps must be > 0", what, (long long)co);
  return XNORM_CUDA_OK;
}

template <int DT>
int32_t forward_gemm(Device& d, const Geo& q, const float* w, const void* x, const float* bias, int32_t relu, void* y,
                     uint32_t* mask, xnorm_cuda_status* st) {
  ForwardGemm<DT> p{q, w, x, bias, y, mask, relu, q.cout_g, q.n * q.oh * q.ow, q.patch(), q.nhwc != 0};
  return run_gemm<DT>(d, p, q.groups, st);
}

template <int DT>
int32_t backward_gemms(Device& d, const Geo& q, const void* x, const float* dyp, const float* w_folded,
                       const float* w_plain, const float* s, double* partial, int64_t slots, const xnorm_cuda_conv_grads& out,
                       bool filter, xnorm_cuda_status* st) {
  if (filter) {
    BackwardFilterGemm<DT> p{q, dyp, x, out.dw, s, w_plain, partial, q.cout_g, q.patch(), q.n * q.oh * q.ow, slots, false};
    XNORM_CUDA_TRY(run_gemm<DT>(d, p, q.groups, st));
  }
  if (out.dx) {
    BackwardDataGemm<DT> p{q, w_folded, dyp, out.dx, q.cin_g, q.n * q.h * q.w, q.cout_g * q.kh * q.kw, q.nhwc != 0};
    XNORM_CUDA_TRY(run_gemm<DT>(d, p, q.groups, st));
  }
  return XNORM_CUDA_OK;
}

template <int DT>
void launch_prepare(Device& d, const Geo& q, const void* dy, const uint32_t* mask, const void* y, const void* z,
                    const float* scale, float* dyp, double* sums, bool want_sums) {
  if (q.y_size() > 0)
    XNORM_LAUNCH(prepare_dy_kernel<DT>, grid_for(d, q.y_size(), kThreads), kThreads, d.stream, q, dy, mask, y, scale, dyp);
  if (want_sums)
    XNORM_LAUNCH(channel_sums_kernel<DT>, int(std::min(q.cout, int64_t(d.multiprocessors) * 8)), kThreads, d.stream, q, dy,
                 mask, y, z, scale, sums);
}

int fold_grid(const Device& d, int64_t cout) { return int(std::min(cout, int64_t(d.multiprocessors) * 8)); }

}  // namespace

int32_t conv_fold(int32_t device, int64_t cout, int64_t patch, const void* w, int32_t w_dtype, const float* bias,
                  const xnorm_cuda_bn* bn, float* w_out, float* b_out, float* s_out, xnorm_cuda_status* st) {
  if (cout < 1 || patch < 1) return report(st, XNORM_CUDA_ARGUMENT, "conv_fold: cout and patch must be positive");
  if (w_dtype < kF32 || w_dtype > kBF16) return report(st, XNORM_CUDA_ARGUMENT, "conv_fold: unknown dtype %d", w_dtype);
  if (!w || !w_out || !b_out) return report(st, XNORM_CUDA_ARGUMENT, "conv_fold: NULL tensor");
  XNORM_CUDA_TRY(check_bn(bn, cout, "conv_fold", st));
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  Scratch coef(*d);
  std::vector<float> host;
  XNORM_CUDA_TRY(upload_coefs(*d, cout, bias, bn, coef, host, st));
  XNORM_LAUNCH(fold_kernel, fold_grid(*d, cout), kThreads, d->stream, w, w_dtype, cout, patch, coef.as<float>(), bn->eps, 1,
               static_cast<const float*>(nullptr), w_out, static_cast<float*>(nullptr), b_out, s_out);
  return finish(*d, st, "conv_fold");
}

int32_t conv_forward(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                     const float* bias, const xnorm_cuda_bn* bn, void* y, float* s_out, uint32_t* mask_out, void* z_out,
                     xnorm_cuda_status* st) {
  Geo q;
  XNORM_CUDA_TRY(make_geo(g, &q, st));
  if (mode < XNORM_CUDA_CONV_PLAIN || mode > XNORM_CUDA_CONV_EVAL)
    return report(st, XNORM_CUDA_ARGUMENT, "conv_forward: unknown mode %d", mode);
  if ((q.n > 0 && (!x || !y)) || !w) return report(st, XNORM_CUDA_ARGUMENT, "conv_forward: NULL tensor");
  const bool tune = mode == XNORM_CUDA_CONV_TUNE, eval = mode == XNORM_CUDA_CONV_EVAL;
  if (mode != XNORM_CUDA_CONV_PLAIN) XNORM_CUDA_TRY(check_bn(bn, q.cout, "conv_forward", st));
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  Scratch coef(*d), folded(*d), zbuf(*d);
  std::vector<float> host;
  XNORM_CUDA_TRY(upload_coefs(*d, q.cout, bias, tune || eval ? bn : nullptr, coef, host, st));
  // W' (or W as float32) and b' (or the bias), both in one scratch block.
  const int64_t wsize = q.cout * q.patch();
  XNORM_CUDA_TRY(folded.alloc(uint64_t(wsize + q.cout) * sizeof(float), st));
  float* wf = folded.as<float>();
  float* bf = wf + wsize;
  XNORM_LAUNCH(fold_kernel, fold_grid(*d, q.cout), kThreads, d->stream, w, g->w_dtype, q.cout, q.patch(), coef.as<float>(),
               bn ? bn->eps : 0.0, int32_t(tune), static_cast<const float*>(nullptr), wf, static_cast<float*>(nullptr), bf,
               tune ? s_out : static_cast<float*>(nullptr));
  void* out = y;
  if (eval) {
    out = z_out;
    if (!out) {
      XNORM_CUDA_TRY(zbuf.alloc(uint64_t(q.y_size()) * (g->dtype == kF32 ? 4 : 2), st));
      out = zbuf.as<void>();
    }
  }
  uint32_t* mask = tune && g->relu ? mask_out : nullptr;
  if (mask) {
    cudaError_t e = cudaMemsetAsync(mask, 0, uint64_t((q.y_size() + 31) / 32) * 4, d->stream);
    if (e != cudaSuccess) return report_cuda(st, e, "conv_forward: clearing the ReLU mask");
  }
  const int32_t relu = eval ? 0 : g->relu;
  int32_t rc = g->dtype == kF32   ? forward_gemm<kF32>(*d, q, wf, x, bf, relu, out, mask, st)
               : g->dtype == kF16 ? forward_gemm<kF16>(*d, q, wf, x, bf, relu, out, mask, st)
                                  : forward_gemm<kBF16>(*d, q, wf, x, bf, relu, out, mask, st);
  if (rc == XNORM_CUDA_OK && eval && q.n > 0) {
    // BN as its own pass (the BN-statistics plugin's apply), with the CPU's coefficients.
    std::vector<float> scale(size_t(q.cout)), beta(size_t(q.cout)), zeros(size_t(q.cout), 0.0f);
    for (int64_t co = 0; co < q.cout; ++co) {
      scale[size_t(co)] = float((bn->gamma ? double(bn->gamma[co]) : 1.0) * (1.0 / std::sqrt(double(bn->var[co]) + bn->eps)));
      beta[size_t(co)] = bn->beta ? bn->beta[co] : 0.0f;
    }
    xnorm_cuda_geometry bg{q.n, q.cout, q.oh * q.ow, g->layout, 0};
    rc = bnstats_batch_norm(device, out, y, g->dtype, &bg, 0, bn->mean, zeros.data(), scale.data(), beta.data(), g->relu, st);
  }
  const int32_t done = finish(*d, st, "conv_forward");
  return rc != XNORM_CUDA_OK ? rc : done;
}

int32_t conv_backward(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                      const float* bias, const xnorm_cuda_bn* bn, const float* s, const uint32_t* mask, const void* z,
                      const void* y, const void* dy, const xnorm_cuda_conv_grads* out, xnorm_cuda_status* st) {
  Geo q;
  XNORM_CUDA_TRY(make_geo(g, &q, st));
  if (mode != XNORM_CUDA_CONV_TUNE && mode != XNORM_CUDA_CONV_EVAL)
    return report(st, XNORM_CUDA_ARGUMENT, "conv_backward: mode must be tune or eval, received %d", mode);
  if (!out) return report(st, XNORM_CUDA_ARGUMENT, "conv_backward: gradients are NULL");
  const bool tune = mode == XNORM_CUDA_CONV_TUNE;
  const xnorm_cuda_conv_grads o = *out;
  if (!w || (q.n > 0 && (!x || !dy)) || (tune && !s) || (tune && g->relu && q.n > 0 && !mask) ||
      (!tune && q.n > 0 && (!z || (g->relu && !y))))
    return report(st, XNORM_CUDA_ARGUMENT, "conv_backward: NULL tensor");
  XNORM_CUDA_TRY(check_bn(bn, q.cout, "conv_backward", st));
  const bool want_channel = o.dbias || o.dgamma || o.dbeta;
  const bool filter = o.dw || (tune && o.dgamma);  // tune's dgamma needs dW' for its ds sums
  if (!o.dx && !filter && !want_channel) return XNORM_CUDA_OK;
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  Scratch coef(*d), weights(*d), dyp(*d), sums(*d), partial(*d), scale(*d);
  std::vector<float> host, host_scale;
  XNORM_CUDA_TRY(upload_coefs(*d, q.cout, bias, bn, coef, host, st));
  // tune: W' = W * s (saved s) for dx and W for the ds sums; eval: W for both.
  const int64_t wsize = q.cout * q.patch();
  XNORM_CUDA_TRY(weights.alloc(uint64_t(2 * wsize) * sizeof(float), st));
  float* w_folded = weights.as<float>();
  float* w_plain = w_folded + wsize;
  XNORM_LAUNCH(fold_kernel, fold_grid(*d, q.cout), kThreads, d->stream, w, g->w_dtype, q.cout, q.patch(), coef.as<float>(),
               bn->eps, int32_t(tune), tune ? s : static_cast<const float*>(nullptr), w_folded, w_plain,
               static_cast<float*>(nullptr), static_cast<float*>(nullptr));
  // eval: dz = dy * scale; the scale as the CPU computes it.
  if (!tune) {
    host_scale.resize(size_t(q.cout));
    for (int64_t co = 0; co < q.cout; ++co)
      host_scale[size_t(co)] = float((bn->gamma ? double(bn->gamma[co]) : 1.0) * (1.0 / std::sqrt(double(bn->var[co]) + bn->eps)));
    XNORM_CUDA_TRY(scale.alloc(uint64_t(q.cout) * sizeof(float), st));
    cudaError_t e = cudaMemcpyAsync(scale.as<float>(), host_scale.data(), host_scale.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, d->stream);
    if (e != cudaSuccess) return report_cuda(st, e, "conv_backward: scale upload");
  }
  XNORM_CUDA_TRY(dyp.alloc(uint64_t(q.y_size()) * sizeof(float), st));
  XNORM_CUDA_TRY(sums.alloc(uint64_t(3 * q.cout) * sizeof(double), st));
  const uint32_t* m = tune && g->relu ? mask : nullptr;
  const void* yr = !tune && g->relu ? y : nullptr;
  const void* zz = !tune && o.dgamma ? z : nullptr;
  const float* sc = scale.as<float>();
  const int64_t slots = (q.patch() + kBN - 1) / kBN;  // backward-filter column tiles: the ds partial slots
  double* part = nullptr;
  if (tune && o.dgamma) {
    XNORM_CUDA_TRY(partial.alloc(uint64_t(q.cout * slots) * sizeof(double), st));
    part = partial.as<double>();
  }
  xnorm_cuda_conv_grads gemm_out = o;
  const float* dw_scale = tune ? s : nullptr;
  int32_t rc = XNORM_CUDA_OK;
  switch (g->dtype) {
    case kF32:
      launch_prepare<kF32>(*d, q, dy, m, yr, zz, sc, dyp.as<float>(), sums.as<double>(), want_channel);
      rc = backward_gemms<kF32>(*d, q, x, dyp.as<float>(), w_folded, w_plain, dw_scale, part, slots, gemm_out, filter, st);
      break;
    case kF16:
      launch_prepare<kF16>(*d, q, dy, m, yr, zz, sc, dyp.as<float>(), sums.as<double>(), want_channel);
      rc = backward_gemms<kF16>(*d, q, x, dyp.as<float>(), w_folded, w_plain, dw_scale, part, slots, gemm_out, filter, st);
      break;
    default:
      launch_prepare<kBF16>(*d, q, dy, m, yr, zz, sc, dyp.as<float>(), sums.as<double>(), want_channel);
      rc = backward_gemms<kBF16>(*d, q, x, dyp.as<float>(), w_folded, w_plain, dw_scale, part, slots, gemm_out, filter, st);
  }
  if (rc == XNORM_CUDA_OK && want_channel)
    XNORM_LAUNCH(channel_grads_kernel, grid_for(*d, q.cout, kThreads), kThreads, d->stream, q.cout, int32_t(tune),
                 sums.as<double>(), static_cast<const double*>(part), slots, coef.as<float>(), bn->eps, s, o.dbias,
                 o.dgamma, o.dbeta);
  const int32_t done = finish(*d, st, "conv_backward");
  return rc != XNORM_CUDA_OK ? rc : done;
}

}  // namespace xnorm_cuda
