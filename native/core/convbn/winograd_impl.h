// Part of kernels_impl.h (see there): Winograd F(2x2, 3x3) and F(4x4, 3x3) forward.
#pragma once
#include <algorithm>
#include <cstring>

#include "../common/thread_pool.h"
#include "gemm_impl.h"
#include "kernels.h"
#include "scratch_impl.h"
#include "vector_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

// y = A^T [(G g G^T) . (B^T d B)] A per m x m output tile (m = 2 or 4), d the (m+2)^2 input tile around
// it. The (m+2)^2 element-wise products, summed over input channels, are as many GEMMs U_xi [cout, c] x
// V_xi [c, tiles] run on the micro-kernel (16 for m = 2, 36 for m = 4). Tiles are numbered across images, p = (img * th + ty) * tw + tx, and cut
// into blocks of T tiles (whole NR panels). A task is one tile block and one block of output
// channels: it transforms its input tiles and its weights (or reads them, see wino_plan), runs the 16
// products into a local M [16][rows][T] and writes y from it through the output transform, with bias
// and ReLU. No float is summed in an order that depends on the thread count.

// The 1-D transforms of F(m, 3); the 2-D ones apply them to the rows, then the columns. V is float or
// VecF. kernel: G g of 3 taps; input: B^T d of A = m + 2 inputs; output: A^T m of A products.
template <int M>
struct WinoTf;

template <>
struct WinoTf<2> {  // points 0, 1, -1 and infinity
  static constexpr int A = 4;
  template <class V>
  static void kernel(V g0, V g1, V g2, V* u) {
    u[0] = g0;
    u[1] = 0.5f * (g0 + g1 + g2);
    u[2] = 0.5f * (g0 - g1 + g2);
    u[3] = g2;
  }
  template <class V>
  static void input(const V* d, V* v) {
    v[0] = d[0] - d[2];
    v[1] = d[1] + d[2];
    v[2] = d[2] - d[1];
    v[3] = d[1] - d[3];
  }
  template <class V>
  static void output(const V* m, V* y) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
};

// Points 0, 1, -1, 1/2, -2 and infinity: 2-3x lower worst-case error than the symmetric 0, +-1, +-2 (for
// 512 channels, 6.3e-6 of the output's largest value against 1.5e-5 measured; DESIGN.md).
template <>
struct WinoTf<4> {
  static constexpr int A = 6;
  template <class V>
  static void kernel(V g0, V g1, V g2, V* u) {
    const V a = g0 + g2;
    u[0] = g0;
    u[1] = (1.f / 3) * (a + g1);
    u[2] = (-1.f / 3) * (a - g1);
    u[3] = (-4.f / 15) * (4.f * g0 + 2.f * g1 + g2);
    u[4] = (1.f / 15) * (g0 - 2.f * g1 + 4.f * g2);
    u[5] = g2;
  }
  template <class V>
  static void input(const V* d, V* v) {
    const V q = d[3] - d[1], r = d[4] - d[2];
    v[0] = d[0] - d[2] + r + 1.5f * q;
    v[1] = d[4] - d[1] + 0.5f * d[2] + 2.5f * d[3];
    v[2] = d[4] + d[1] - 2.5f * d[2] + 0.5f * d[3];
    v[3] = r + 2.f * q;
    v[4] = r - 0.5f * q;
    v[5] = d[5] - d[3] - q + 1.5f * r;
  }
  template <class V>
  static void output(const V* m, V* y) {
    const V a = m[1] + m[2], b = m[1] - m[2];
    y[0] = m[0] + a + m[3] + m[4];
    y[1] = b + 0.5f * m[3] - 2.f * m[4];
    y[2] = a + 0.25f * m[3] + 4.f * m[4];
    y[3] = b + 0.125f * m[3] - 8.f * m[4] + m[5];
  }
};

struct WinoPlan {
  int64_t th, tw, tiles;  // tile grid per image, tiles in all
  int64_t npan, T, nb;    // NR panels per tile block, tiles per block, tile blocks
  int64_t cout_blk = 0, nbm = 0;  // output channels per task (whole MR panels), channel blocks
  int64_t cpad;           // cout rounded up to MR: rows of the packed U
  // Floats from U_xi to U_xi+1 and from V_xi to V_xi+1 in a block: a cache line more than their size, so
  // that the streams a transform writes do not all map to the same L1 set (4 KiB aliasing). With one
  // tile block, each task transforms the weights of its own channel block (blk_uxi apart) instead.
  int64_t uxi, vxi, blk_uxi;
};

// Above this many floats of V for a whole small map, the tile blocks stay small.
constexpr int64_t kWinoMaxAllTiles = int64_t(1) << 24;

// Floats of one tile block's V (A^2 * c * T) that stay in L2 next to its M and U.
constexpr int64_t kWinoBlockFloats = int64_t(1) << 16;
// U (the transformed taps of every channel pair) up to this many floats (256 KiB) counts as small.
constexpr int64_t kWinoSmallU = int64_t(1) << 16;

template <int M>
WinoPlan wino_plan(const WinogradProblem& P) {
  constexpr int NR = Micro::NR, N = WinoTf<M>::A * WinoTf<M>::A;
  WinoPlan q;
  q.th = (P.oh + M - 1) / M;
  q.tw = (P.ow + M - 1) / M;
  q.tiles = P.n * q.th * q.tw;
  q.npan = std::min<int64_t>(std::max<int64_t>(1, kWinoBlockFloats / (N * P.c * NR)), 4);
  q.npan = std::min(q.npan, (q.tiles + NR - 1) / NR);
  q.T = q.npan * NR;
  q.nb = (q.tiles + q.T - 1) / q.T;
  // Few tile blocks (small maps of deep layers, many channels): the output channels are split as well,
  // so that a pool has enough tasks, and V is transformed once, up front, not once per channel block.
  // Where V of the whole map is moderate and small beside U, one block holds every tile: each task
  // then reads its share of the weights once (raw weights: transforms it itself, while it is hot),
  // rather than all of U going through memory (16 MiB for 512 channels and F(2x2)). With more tiles,
  // every task would read all of V for a few channels: batch 8 128@28 under F(4x4), 8 MB of V read by
  // 16 tasks of 8 channels, ran 1.6-1.9x slower than in blocks. "Small": no more tiles than output
  // channels for raw weights, half as many for prepared ones, whose U blocks only read (prepared
  // 256@14 at batch 8, 144 tiles on 256 channels: 4.3-4.6 -> 3.5-3.8 ms in blocks; raw 128@28 at
  // batch 1, 96 on 128: 0.93-0.96 -> 1.0 ms in blocks, for U made once through memory).
  const int64_t all_pan = (q.tiles + NR - 1) / NR;
  q.cpad = padded_rows(P.cout);
  const int64_t most_tiles = P.u ? q.cpad / 2 : q.cpad;
  if (N * P.c * q.cpad <= kWinoSmallU) {
    // Small weights (a batch-1 layer of few channels): tasks split the tiles only. Each transforms its own
    // tiles and reads all of U, which stays in cache; no V is shared between threads (splitting the output
    // channels instead made two threads slower than one: the shared V crossed cores and was made serially).
    q.cout_blk = q.cpad;
    q.nbm = 1;
  } else if (q.nb < kMinTasks && all_pan * NR <= most_tiles && N * P.c * all_pan * NR <= kWinoMaxAllTiles) {
    q.npan = all_pan;
    q.T = q.npan * NR;
    q.nb = 1;
  }
  if (q.nbm == 0) {
    const int64_t parts = std::max<int64_t>(1, (kMinTasks + q.nb - 1) / q.nb);
    q.cout_blk = padded_rows((P.cout + parts - 1) / parts);
    q.nbm = (P.cout + q.cout_blk - 1) / q.cout_blk;
  }
  q.uxi = q.cpad * P.c + 16;
  q.vxi = q.npan * P.c * NR + 16;
  q.blk_uxi = q.cout_blk * P.c + 16;
  return q;
}

// Calls fn(img, ty, tx0, count, j) for each run of tiles [p0, p1) inside one tile row; j = first tile - p0.
template <typename Fn>
void wino_rows(const WinoPlan& q, int64_t p0, int64_t p1, Fn&& fn) {
  for (int64_t p = p0; p < p1;) {
    const int64_t img = p / (q.th * q.tw), rem = p % (q.th * q.tw), ty = rem / q.tw, tx = rem % q.tw;
    const int64_t count = std::min(q.tw - tx, p1 - p);
    fn(img, ty, tx, count, p - p0);
    p += count;
  }
}

// Weights j in [lo, hi) of `filters` filters (filter co at src + co * stride, times scale[co] when
// given) into rows of Lanes floats, filter co in lane co and zeros past `filters`: weight j's row at
// row_of(j). kTW x kTW register transposes where a row is one such block.
template <int Lanes, class RowOf>
void filter_rows(const float* src, int64_t stride, int64_t filters, const float* scale, int64_t lo, int64_t hi,
                 RowOf&& row_of) {
  int64_t j = lo;
#if defined(__AVX512F__) || defined(__AVX2__)
  if (Lanes == kTW)
    for (; j + kTW <= hi; j += kTW) {
      float* rows[kTW];
      for (int l = 0; l < kTW; ++l) rows[l] = row_of(j + l);
      transpose_filters<kTW>(src + j, stride, filters, scale, rows);
    }
#endif
  for (; j < hi; ++j) {
    float* d = row_of(j);
    for (int64_t co = 0; co < Lanes; ++co)
      d[co] = co >= filters ? 0.f : scale ? src[co * stride + j] * scale[co] : src[co * stride + j];
  }
}

// U = G g G^T of the channel pairs in a vector's lanes, from their taps g(tap) ([ky][kx] order):
// out(xi, U_xi) for xi = 0 .. A^2 - 1.
template <int M, class Taps, class Out>
inline void weight_transform(Taps&& g, Out&& out) {
  constexpr int A = WinoTf<M>::A;
  VecF t[A][3], u[A];
  for (int kx = 0; kx < 3; ++kx) {  // G g, down each column of the taps
    WinoTf<M>::kernel(g(kx), g(kx + 3), g(kx + 6), u);
    for (int k = 0; k < A; ++k) t[k][kx] = u[k];
  }
  for (int k = 0; k < A; ++k) {  // (G g) G^T, row by row
    WinoTf<M>::kernel(t[k][0], t[k][1], t[k][2], u);
    for (int l = 0; l < A; ++l) out(A * k + l, u[l]);
  }
}

// U = G g G^T of every (output, input) channel pair, with g = wt * w_scale rounded to float first (the
// values Deploy's folded weights hold), for the MR output channels from co0: one A panel of each of the
// A^2 GEMMs, U_xi's at dst + xi * uxi.
template <int M>
void wino_weight_panel(const WinogradProblem& P, int64_t co0, float* dst, int64_t uxi) {
  constexpr int MR = Micro::MR;
#if !defined(__AVX512F__)
  // The panel's MR filters in the lanes of NV vectors, so both passes of G g G^T run on whole vectors
  // and each U value of a channel pair lands with its panel row's others, MR floats at once (the scalar
  // pass below stores every value on its own: it was most of Tune's time on AVX2 at 512@7, batch 1).
  // AVX-512 keeps that pass until this one is measured there.
  constexpr int VW = Micro::VW, NV = (MR + VW - 1) / VW, LW = NV * VW;  // LW: lanes per panel row
  static_assert(MR % VW == 0 || NV == 1, "a panel row is whole vectors, or one partly used");
  constexpr int64_t kChunk = 32;  // input channels per pass: 9 * 32 taps of the panel's filters
  const int64_t c = P.c, filters = std::min<int64_t>(MR, P.cout - co0);
  const float* src = P.wt + co0 * c * 9;
  const float* sc = P.w_scale ? P.w_scale + co0 : nullptr;
  alignas(64) float taps[kChunk * 9 * LW];  // [ci * 9 + tap][filter], zeros past `filters`
  for (int64_t c0 = 0; c0 < c; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, c - c0), lo = c0 * 9, hi = (c0 + cn) * 9;
    filter_rows<LW>(src, c * 9, filters, sc, lo, hi, [&](int64_t j) { return taps + (j - lo) * LW; });
    for (int64_t i = 0; i < cn; ++i) {
      // Where MR < VW, whole vectors still: the lanes past MR spill into the next channel's rows,
      // written after these; the panel's last channel stores only its MR values (the next panel may
      // belong to another thread).
      float* d = dst + (c0 + i) * MR;
      const bool last = c0 + i + 1 == c;
      for (int v = 0; v < NV; ++v)
        weight_transform<M>([&](int tap) { return loadu(taps + (i * 9 + tap) * LW + v * VW); },
                            [&](int xi, VecF value) {
                              float* out = d + xi * uxi + v * VW;
                              if (MR < VW && last) std::memcpy(out, &value, MR * sizeof(float));
                              else storeu(out, value);
                            });
    }
  }
#else
  constexpr int A = WinoTf<M>::A;
  // Input channels per pass: the MR rows' U values of a pass fill whole cache lines of the A^2 panels
  // (uxi apart, so they do not share an L1 set) before those lines leave L1.
  constexpr int64_t kChunk = 32;
  const int64_t c = P.c;
  for (int64_t c0 = 0; c0 < c; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, c - c0);
    for (int r = 0; r < MR; ++r) {
      const int64_t co = co0 + r;
      if (co >= P.cout) {  // padding rows of the last panel
        for (int xi = 0; xi < A * A; ++xi)
          for (int64_t i = 0; i < cn; ++i) dst[xi * uxi + (c0 + i) * MR + r] = 0.f;
        continue;
      }
      const float s = P.w_scale ? P.w_scale[co] : 1.f;
      const float* w9 = P.wt + (co * c + c0) * 9;
      // G g on the taps as they lie, [channel][ky][kx]: every lane j computes rows of G g for the
      // kernel row that starts at j, and only lanes with j % 9 < 3 are used. Contiguous, so vectorised.
      const int64_t n9 = cn * 9;
      float g[kChunk * 9 + 8], t[A][kChunk * 9 + 8];
      for (int64_t j = 0; j < n9; ++j) g[j] = w9[j] * s;
      // The next chunk of this row: MR rows read in short bursts are streams a prefetcher misses.
      if (c0 + kChunk < c)
        for (int64_t j = 0; j < kChunk * 9; j += 16) __builtin_prefetch(w9 + kChunk * 9 + j);
      for (int64_t j = n9; j < n9 + 8; ++j) g[j] = 0.f;
      for (int64_t j = 0; j < n9; ++j) {
        float u[A];
        WinoTf<M>::kernel(g[j], g[j + 3], g[j + 6], u);
        for (int k = 0; k < A; ++k) t[k][j] = u[k];
      }
      for (int k = 0; k < A; ++k)  // (G g) G^T, row by row
        for (int64_t i = 0; i < cn; ++i) {
          const float* a = t[k] + 9 * i;
          float u[A];
          WinoTf<M>::kernel(a[0], a[1], a[2], u);
          float* d = dst + A * k * uxi + (c0 + i) * MR + r;
          for (int l = 0; l < A; ++l) d[l * uxi] = u[l];
        }
    }
  }
#endif
}

thread_local Scratch tls_wino_tmp, tls_wino_v, tls_wino_m;

// A 2-D transform of VW tiles side by side: f (a 1-D transform of A values into N) down each column of
// the A x A values at(r, c), then along each row of the result, into out[N][N].
template <int A, int N, class F, class At>
void wino_2d(F f, At at, VecF (&out)[N][N]) {
  VecF t[N][A];
  for (int j = 0; j < A; ++j) {
    VecF col[A], y[N];
    for (int r = 0; r < A; ++r) col[r] = at(r, j);
    f(col, y);
    for (int i = 0; i < N; ++i) t[i][j] = y[i];
  }
  for (int i = 0; i < N; ++i) f(t[i], out[i]);
}

// V of tiles [p0, p1) and input channels [c0, c1) into one block: V_xi (at V + xi * vxi) is npan B panels
// [c][NR] of the GEMMs; the columns of the last panel past p1 are zeros (later panels are not written).
// One panel at a time, channel by channel: the A^2 values d[r][c] of each of its tiles are gathered into
// lanes D[A r + c][tile] (tile rows of the input read front to back), then B^T d B runs VW tiles at a
// time and stores whole vectors into the panel: VW divides NR. NHWC: x is channels-last (a channel's
// pixels c apart), and the panel's pixels stay in cache from one channel to the next (all the block's
// channel by channel thrashed L2 where one block holds a whole map: batch 8 128@28, F(4x4)).
template <int M, bool NHWC>
void wino_input(const WinogradProblem& P, const WinoPlan& q, int64_t p0, int64_t p1, int64_t c0, int64_t c1, float* V) {
  constexpr int NR = Micro::NR, VW = Micro::VW, A = WinoTf<M>::A;
  const int64_t c = P.c, ps = NHWC ? c : 1;
  float* D = tls_wino_tmp.get(size_t(A * A * NR));
  for (int64_t k0p = 0; p0 + k0p < p1; k0p += NR) {
    const int64_t q0 = p0 + k0p, q1 = std::min(p1, q0 + NR);
    for (int64_t ci = c0; ci < c1; ++ci) {
      wino_rows(q, q0, q1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
        const float* plane = P.x + img * c * P.h * P.w + ci * (NHWC ? 1 : P.h * P.w);
        // Tile t reads input columns first + M t .. first + M t + A - 1; all exist for t in [lo, hi).
        const int64_t first = M * tx0 - P.pw;
        const int64_t lo = std::min(count, std::max<int64_t>(0, (M - 1 - first) / M));
        const int64_t hi = std::max(lo, std::min(count, (P.w - first - 2) / M));
        for (int r = 0; r < A; ++r) {
          float* d = D + A * r * NR + j;  // column k of the tile row at d + k * NR
          const int64_t iy = M * ty - P.ph + r;
          if (iy < 0 || iy >= P.h) {
            for (int k = 0; k < A; ++k)
              for (int64_t t = 0; t < count; ++t) d[k * NR + t] = 0.f;
            continue;
          }
          const float* row = plane + iy * P.w * ps;
          const auto at = [&](int64_t ix) { return ix >= 0 && ix < P.w ? row[ix * ps] : 0.f; };
          const auto edge = [&](int64_t t) {
            for (int k = 0; k < A; ++k) d[k * NR + t] = at(first + M * t + k);
          };
          for (int64_t t = 0; t < lo; ++t) edge(t);
          const float* src = row + first * ps;
          for (int64_t t = lo; t < hi; ++t)
            for (int k = 0; k < A; ++k) d[k * NR + t] = src[(M * t + k) * ps];
          for (int64_t t = hi; t < count; ++t) edge(t);
        }
      });
      for (int a = 0; a < A * A; ++a)
        for (int64_t t = q1 - q0; t < NR; ++t) D[a * NR + t] = 0.f;
      float* panel = V + ((k0p / NR) * c + ci) * NR;
      for (int64_t k0 = 0; k0 < NR; k0 += VW) {
        VecF v[A][A];  // B^T d B
        wino_2d<A, A>([](const VecF* in, VecF* out) { WinoTf<M>::input(in, out); },
                      [&](int r, int cc) { return loadu(D + (A * r + cc) * NR + k0); }, v);
        for (int i = 0; i < A; ++i)
          for (int l = 0; l < A; ++l) storeu(panel + (A * i + l) * q.vxi + k0, v[i][l]);
      }
    }
  }
}

// y for tiles [p0, p1) and output channels [co0, co1) from M [A^2][rows][T]: A^T m A plus bias, ReLU, one
// panel of NR tiles at a time (its M*M outputs per channel stay in L1 until written, however wide the
// block). NHWC (y channels-last): kGroup channels at a time, so that each output pixel gets a run of
// kGroup channels instead of kGroup stores a cache line apart.
template <int M, bool NHWC>
void wino_output(const WinogradProblem& P, const WinoPlan& q, const float* Mxi, int64_t rows, int64_t p0, int64_t p1,
                 int64_t co0, int64_t co1) {
  constexpr int NR = Micro::NR, VW = Micro::VW, A = WinoTf<M>::A;
  constexpr int64_t kGroup = NHWC ? 16 : 1;
  const int64_t stride = rows * q.T;
  float* tmp = tls_wino_tmp.get(size_t(M * M * NR * kGroup));  // [channel in group][M * M output positions][NR]
  const VecF zero{};
  for (int64_t k0p = 0; p0 + k0p < p1; k0p += NR) {
    const int64_t q0 = p0 + k0p, q1 = std::min(p1, q0 + NR);
    for (int64_t g0 = co0; g0 < co1; g0 += kGroup) {
      const int64_t gn = std::min(kGroup, co1 - g0);
      for (int64_t co = g0; co < g0 + gn; ++co) {
        const float bias = P.bias ? P.bias[co] : 0.f;
        const float* m = Mxi + (co - co0) * q.T + k0p;
        float* tile = tmp + (co - g0) * M * M * NR;
        for (int64_t k0 = 0; k0 < q1 - q0; k0 += VW) {
          VecF y[M][M];  // A^T m A
          wino_2d<A, M>([](const VecF* in, VecF* out) { WinoTf<M>::output(in, out); },
                        [&](int r, int j) { return loadu(m + (A * r + j) * stride + k0); }, y);
          for (int i = 0; i < M; ++i)
            for (int l = 0; l < M; ++l) {
              VecF v = y[i][l] + bias;
              if (P.relu) v = v > zero ? v : zero;
              storeu(tile + (M * i + l) * NR + k0, v);
            }
        }
      }
      wino_rows(q, q0, q1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
        for (int dy = 0; dy < M && M * ty + dy < P.oh; ++dy) {
          const int64_t oy = M * ty + dy;
          const float* a = tmp + M * dy * NR + j;  // channel g0's column dx at a + dx * NR; channel g0 + i's M * M * NR * i further
          if (NHWC) {
            float* yrow = P.y + (img * P.oh + oy) * P.ow * P.cout + g0;
            for (int64_t t = 0; t < count; ++t) {
              const int64_t ox = M * (tx0 + t), n = std::min<int64_t>(M, P.ow - ox);
              for (int64_t dx = 0; dx < n; ++dx) {
                float* d = yrow + (ox + dx) * P.cout;
                for (int64_t i = 0; i < gn; ++i) d[i] = a[i * M * M * NR + dx * NR + t];
              }
            }
          } else {
            float* yrow = P.y + ((img * P.cout + g0) * P.oh + oy) * P.ow;
            for (int64_t t = 0; t < count; ++t) {
              const int64_t ox = M * (tx0 + t), n = std::min<int64_t>(M, P.ow - ox);
              for (int64_t dx = 0; dx < n; ++dx) yrow[ox + dx] = a[dx * NR + t];
            }
          }
        }
      });
    }
  }
}

// U: of all channels, held by the calling thread (several tile blocks), or of one task's channel block,
// held by the thread that runs it (one tile block); never both in one call. V of every block: caller's.
thread_local Scratch tls_wino_u, tls_wino_vall;

// U of all output channels, U_xi's uxi floats apart (MR-row panels, c columns each).
template <int M>
void all_weight_panels(const WinogradProblem& P, float* u, int64_t uxi) {
  constexpr int MR = Micro::MR;
  parallel_for(padded_rows(P.cout) / MR, 1, [&](int64_t b, int64_t e) {
    for (int64_t panel = b; panel < e; ++panel) wino_weight_panel<M>(P, panel * MR, u + panel * MR * P.c, uxi);
  });
}

// The U winograd_forward reads as P.u: wino_plan's all-channel layout (uxi = padded cout * c + 16).
int64_t winograd_floats(int64_t cout, int64_t c, int tile) {
  return int64_t(tile + 2) * (tile + 2) * (padded_rows(cout) * c + 16);
}

void winograd_weights(const float* wt, int64_t cout, int64_t c, int tile, float* u) {
  WinogradProblem P;
  P.c = c, P.cout = cout, P.wt = wt;
  (tile == 4 ? all_weight_panels<4> : all_weight_panels<2>)(P, u, padded_rows(cout) * c + 16);
}

template <int M>
void winograd_forward_m(const WinogradProblem& P) {
  constexpr int MR = Micro::MR, NR = Micro::NR, N = WinoTf<M>::A * WinoTf<M>::A;
  const WinoPlan q = wino_plan<M>(P);
  const int64_t c = P.c, vblock = N * q.vxi;
  const float* Up = P.u;  // prepared: U of all channels, made by winograd_weights
  if (!Up && q.nb > 1) {  // U of all channels once, shared by the tile blocks
    float* u = tls_wino_u.get(size_t(N * q.uxi));
    all_weight_panels<M>(P, u, q.uxi);
    Up = u;
  }
  const auto input = P.x_nhwc ? wino_input<M, true> : wino_input<M, false>;
  float* Vall = nullptr;
  if (q.nbm > 1) {  // V of every block once, in channel chunks so that few blocks still make tasks
    constexpr int64_t kChunk = 32;
    const int64_t chunks = (c + kChunk - 1) / kChunk;
    Vall = tls_wino_vall.get(size_t(q.nb * vblock));
    parallel_tasks(q.nb * chunks, [&](int64_t t) {
      const int64_t b = t / chunks, c0 = (t % chunks) * kChunk;
      input(P, q, b * q.T, std::min(q.tiles, (b + 1) * q.T), c0, std::min(c, c0 + kChunk), Vall + b * vblock);
    });
  }
  parallel_tasks(q.nb * q.nbm, [&](int64_t t) {
    const int64_t b = t / q.nbm, p0 = b * q.T, p1 = std::min(q.tiles, p0 + q.T);
    const int64_t co0 = (t % q.nbm) * q.cout_blk, co1 = std::min(P.cout, co0 + q.cout_blk), rows = co1 - co0;
    const float* V = Vall ? Vall + b * vblock : nullptr;
    if (!V) {
      float* own = tls_wino_v.get(size_t(vblock));
      input(P, q, p0, p1, 0, c, own);
      V = own;
    }
    const float* U = Up ? Up + co0 * c : nullptr;
    int64_t uxi = q.uxi;
    if (!U) {
      float* own = tls_wino_u.get(size_t(N * q.blk_uxi));
      for (int64_t ir = 0; ir < rows; ir += MR) wino_weight_panel<M>(P, co0 + ir, own + ir * c, q.blk_uxi);
      U = own;
      uxi = q.blk_uxi;
    }
    float* Mxi = tls_wino_m.get(size_t(N * rows * q.T));
    const int64_t panels = (p1 - p0 + NR - 1) / NR;
    for (int xi = 0; xi < N; ++xi)
      for (int64_t ir = 0; ir < rows; ir += MR)
        for (int64_t jp = 0; jp < panels; ++jp)  // columns up to whole vectors: what wino_output reads
          Micro::run(c, U + xi * uxi + ir * c, V + xi * q.vxi + jp * c * NR, Mxi + (xi * rows + ir) * q.T + jp * NR,
                     q.T, int(std::min<int64_t>(MR, rows - ir)),
                     int(std::min<int64_t>(NR, round_up(p1 - p0 - jp * NR, Micro::VW))), false, nullptr, false);
    (P.y_nhwc ? wino_output<M, true> : wino_output<M, false>)(P, q, Mxi, rows, p0, p1, co0, co1);
  });
}

void winograd_forward(const WinogradProblem& P) { (P.tile == 4 ? winograd_forward_m<4> : winograd_forward_m<2>)(P); }

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
