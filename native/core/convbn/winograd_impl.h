// Part of kernels_impl.h (see there): Winograd F(2x2, 3x3) forward.
#pragma once
#include <algorithm>

#include "../common/thread_pool.h"
#include "gemm_impl.h"
#include "kernels.h"
#include "scratch_impl.h"
#include "vector_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

// y = A^T [(G g G^T) . (B^T d B)] A per 2x2 output tile, d the 4x4 input tile around it. The 16
// element-wise products, summed over input channels, are 16 GEMMs U_xi [cout, c] x V_xi [c, tiles]
// run on the micro-kernel. Tiles are numbered across images, p = (img * th + ty) * tw + tx, and cut
// into blocks of T tiles (whole NR panels). A task is one tile block and one block of output
// channels: it transforms its input tiles and its weights (or reads them, see wino_plan), runs the 16
// products into a local M [16][rows][T] and writes y from it through the output transform, with bias
// and ReLU. No float is summed in an order that depends on the thread count.

struct WinoPlan {
  int64_t th, tw, tiles;  // tile grid per image, tiles in all
  int64_t npan, T, nb;    // NR panels per tile block, tiles per block, tile blocks
  int64_t cout_blk = 0, nbm = 0;  // output channels per task (whole MR panels), channel blocks
  int64_t cpad;           // cout rounded up to MR: rows of the packed U
  // Floats from U_xi to U_xi+1 and from V_xi to V_xi+1 in a block: a cache line more than their size, so
  // that the 16 streams a transform writes do not all map to the same L1 set (4 KiB aliasing). With one
  // tile block, each task transforms the weights of its own channel block (blk_uxi apart) instead.
  int64_t uxi, vxi, blk_uxi;
};

// Above this many floats of V for a whole small map, the tile blocks stay small.
constexpr int64_t kWinoMaxAllTiles = int64_t(1) << 24;

// Floats of one tile block's V (16 * c * T) that stay in L2 next to its M and U.
constexpr int64_t kWinoBlockFloats = int64_t(1) << 16;
// U (16 transformed taps of every channel pair) up to this many floats (256 KiB) counts as small.
constexpr int64_t kWinoSmallU = int64_t(1) << 16;

WinoPlan wino_plan(const WinogradProblem& P) {
  constexpr int NR = Micro::NR;
  WinoPlan q;
  q.th = (P.oh + 1) / 2;
  q.tw = (P.ow + 1) / 2;
  q.tiles = P.n * q.th * q.tw;
  q.npan = std::min<int64_t>(std::max<int64_t>(1, kWinoBlockFloats / (16 * P.c * NR)), 4);
  q.npan = std::min(q.npan, (q.tiles + NR - 1) / NR);
  q.T = q.npan * NR;
  q.nb = (q.tiles + q.T - 1) / q.T;
  // Few tile blocks (small maps of deep layers, many channels): the output channels are split as well,
  // so that a pool has enough tasks, and V is transformed once, up front, not once per channel block.
  // Where V of the whole map is moderate, one block holds every tile: each task then reads its share
  // of the weights once and transforms it itself, while it is hot, rather than all of U going through
  // memory (16 MiB for 512 channels).
  const int64_t all_pan = (q.tiles + NR - 1) / NR;
  if (16 * P.c * padded_rows(P.cout) <= kWinoSmallU) {
    // Small weights (a batch-1 layer of few channels): tasks split the tiles only. Each transforms its own
    // tiles and reads all of U, which stays in cache; no V is shared between threads (splitting the output
    // channels instead made two threads slower than one: the shared V crossed cores and was made serially).
    q.cout_blk = padded_rows(P.cout);
    q.nbm = 1;
  } else if (q.nb < kMinTasks && 16 * P.c * all_pan * NR <= kWinoMaxAllTiles) {
    q.npan = all_pan;
    q.T = q.npan * NR;
    q.nb = 1;
  }
  if (q.nbm == 0) {
    const int64_t parts = std::max<int64_t>(1, (kMinTasks + q.nb - 1) / q.nb);
    q.cout_blk = padded_rows((P.cout + parts - 1) / parts);
    q.nbm = (P.cout + q.cout_blk - 1) / q.cout_blk;
  }
  q.cpad = padded_rows(P.cout);
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

// U = G g G^T of every (output, input) channel pair, with g = wt * w_scale rounded to float first (the
// values Deploy's folded weights hold), for the MR output channels from co0: one A panel of each of the
// 16 GEMMs, U_xi's at dst + xi * uxi.
void wino_weight_panel(const WinogradProblem& P, int64_t co0, float* dst, int64_t uxi) {
  constexpr int MR = Micro::MR;
  // Input channels per pass: the MR rows' U values of a pass fill whole cache lines of the 16 panels
  // (uxi apart, so they do not share an L1 set) before those lines leave L1.
  constexpr int64_t kChunk = 32;
  const int64_t c = P.c;
  for (int64_t c0 = 0; c0 < c; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, c - c0);
    for (int r = 0; r < MR; ++r) {
      const int64_t co = co0 + r;
      if (co >= P.cout) {  // padding rows of the last panel
        for (int xi = 0; xi < 16; ++xi)
          for (int64_t i = 0; i < cn; ++i) dst[xi * uxi + (c0 + i) * MR + r] = 0.f;
        continue;
      }
      const float s = P.w_scale ? P.w_scale[co] : 1.f;
      const float* w9 = P.wt + (co * c + c0) * 9;
      // G g on the taps as they lie, [channel][ky][kx]: every lane j computes rows of G g for the
      // kernel row that starts at j, and only lanes with j % 9 < 3 are used. Contiguous, so vectorised.
      const int64_t n9 = cn * 9;
      float g[kChunk * 9 + 8], t[4][kChunk * 9 + 8];
      for (int64_t j = 0; j < n9; ++j) g[j] = w9[j] * s;
      // The next chunk of this row: MR rows read in short bursts are streams a prefetcher misses.
      if (c0 + kChunk < c)
        for (int64_t j = 0; j < kChunk * 9; j += 16) __builtin_prefetch(w9 + kChunk * 9 + j);
      for (int64_t j = n9; j < n9 + 8; ++j) g[j] = 0.f;
      for (int64_t j = 0; j < n9; ++j) {  // G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[j + 3] + g[j + 6]);
        t[2][j] = 0.5f * (g[j] - g[j + 3] + g[j + 6]);
        t[3][j] = g[j + 6];
      }
      for (int k = 0; k < 4; ++k)  // (G g) G^T, row by row
        for (int64_t i = 0; i < cn; ++i) {
          const float* a = t[k] + 9 * i;
          float* d = dst + 4 * k * uxi + (c0 + i) * MR + r;
          d[0] = a[0];
          d[uxi] = 0.5f * (a[0] + a[1] + a[2]);
          d[2 * uxi] = 0.5f * (a[0] - a[1] + a[2]);
          d[3 * uxi] = a[2];
        }
    }
  }
}

thread_local Scratch tls_wino_tmp, tls_wino_v, tls_wino_m;

// V of tiles [p0, p1) and input channels [c0, c1) into one block: V_xi (at V + xi * vxi) is npan B panels
// [c][NR] of the GEMMs; the columns past p1 are zeros. Per channel, the 16 values d[r][c] of every tile
// of the block are gathered into lanes D[4r + c][tile] (tile rows of the input read front to back), then
// B^T d B runs VW tiles at a time and stores whole vectors into the panels: VW divides NR. NHWC: x is
// channels-last (a channel's pixels c apart).
template <bool NHWC>
void wino_input(const WinogradProblem& P, const WinoPlan& q, int64_t p0, int64_t p1, int64_t c0, int64_t c1, float* V) {
  constexpr int NR = Micro::NR, VW = Micro::VW;
  const int64_t T = q.T, c = P.c, cols = p1 - p0, ps = NHWC ? c : 1;
  float* D = tls_wino_tmp.get(size_t(16 * T));
  for (int64_t ci = c0; ci < c1; ++ci) {
    wino_rows(q, p0, p1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
      const float* plane = P.x + img * c * P.h * P.w + ci * (NHWC ? 1 : P.h * P.w);
      // Tile t reads input columns first + 2t .. first + 2t + 3; all four exist for t in [lo, hi).
      const int64_t first = 2 * tx0 - P.pw;
      const int64_t lo = std::min(count, std::max<int64_t>(0, (1 - first) / 2));
      const int64_t hi = std::max(lo, std::min(count, (P.w - first - 2) / 2));
      for (int r = 0; r < 4; ++r) {
        float *d0 = D + 4 * r * T + j, *d1 = d0 + T, *d2 = d1 + T, *d3 = d2 + T;
        const int64_t iy = 2 * ty - P.ph + r;
        if (iy < 0 || iy >= P.h) {
          for (int64_t t = 0; t < count; ++t) d0[t] = d1[t] = d2[t] = d3[t] = 0.f;
          continue;
        }
        const float* row = plane + iy * P.w * ps;
        const auto at = [&](int64_t ix) { return ix >= 0 && ix < P.w ? row[ix * ps] : 0.f; };
        const auto edge = [&](int64_t t) {
          const int64_t ix = first + 2 * t;
          d0[t] = at(ix), d1[t] = at(ix + 1), d2[t] = at(ix + 2), d3[t] = at(ix + 3);
        };
        for (int64_t t = 0; t < lo; ++t) edge(t);
        const float* src = row + first * ps;
        for (int64_t t = lo; t < hi; ++t) {
          d0[t] = src[2 * t * ps];
          d1[t] = src[(2 * t + 1) * ps];
          d2[t] = src[(2 * t + 2) * ps];
          d3[t] = src[(2 * t + 3) * ps];
        }
        for (int64_t t = hi; t < count; ++t) edge(t);
      }
    });
    for (int a = 0; a < 16; ++a)
      for (int64_t t = cols; t < T; ++t) D[a * T + t] = 0.f;
    for (int64_t k0 = 0; k0 < T; k0 += VW) {
      VecF t[4][4];
      for (int cc = 0; cc < 4; ++cc) {  // B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3
        const float* col = D + cc * T + k0;
        const VecF d0 = loadu(col), d1 = loadu(col + 4 * T), d2 = loadu(col + 8 * T), d3 = loadu(col + 12 * T);
        t[0][cc] = d0 - d2;
        t[1][cc] = d1 + d2;
        t[2][cc] = d2 - d1;
        t[3][cc] = d1 - d3;
      }
      float* out = V + ((k0 / NR) * c + ci) * NR + k0 % NR;
      for (int i = 0; i < 4; ++i) {  // (B^T d) B, the same combination of columns
        float* o = out + 4 * i * q.vxi;
        storeu(o, t[i][0] - t[i][2]);
        storeu(o + q.vxi, t[i][1] + t[i][2]);
        storeu(o + 2 * q.vxi, t[i][2] - t[i][1]);
        storeu(o + 3 * q.vxi, t[i][1] - t[i][3]);
      }
    }
  }
}

// y for tiles [p0, p1) and output channels [co0, co1) from M [16][rows][T]: A^T m A plus bias, ReLU.
// NHWC (y channels-last): kGroup channels at a time, so that each output pixel gets a run of kGroup
// channels instead of kGroup stores a cache line apart.
template <bool NHWC>
void wino_output(const WinogradProblem& P, const WinoPlan& q, const float* M, int64_t rows, int64_t p0, int64_t p1,
                 int64_t co0, int64_t co1) {
  constexpr int VW = Micro::VW;
  constexpr int64_t kGroup = NHWC ? 16 : 1;
  const int64_t T = q.T, cols = p1 - p0, stride = rows * T;
  float* tmp = tls_wino_tmp.get(size_t(4 * T * kGroup));  // [channel in group][4 output positions][T]
  const VecF zero{};
  for (int64_t g0 = co0; g0 < co1; g0 += kGroup) {
    const int64_t gn = std::min(kGroup, co1 - g0);
    for (int64_t co = g0; co < g0 + gn; ++co) {
      const float bias = P.bias ? P.bias[co] : 0.f;
      const float* m = M + (co - co0) * T;
      float* t4 = tmp + (co - g0) * 4 * T;
      for (int64_t k0 = 0; k0 < cols; k0 += VW) {
        VecF s[2][4];
        for (int j = 0; j < 4; ++j) {  // A^T m: rows m0+m1+m2, m1-m2-m3
          const float* col = m + j * stride + k0;
          const VecF m0 = loadu(col), m1 = loadu(col + 4 * stride), m2 = loadu(col + 8 * stride), m3 = loadu(col + 12 * stride);
          s[0][j] = m0 + m1 + m2;
          s[1][j] = m1 - m2 - m3;
        }
        for (int i = 0; i < 2; ++i) {
          VecF a = s[i][0] + s[i][1] + s[i][2] + bias, b = s[i][1] - s[i][2] - s[i][3] + bias;
          if (P.relu) {
            a = a > zero ? a : zero;
            b = b > zero ? b : zero;
          }
          storeu(t4 + (2 * i) * T + k0, a);
          storeu(t4 + (2 * i + 1) * T + k0, b);
        }
      }
    }
    wino_rows(q, p0, p1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
      for (int dy = 0; dy < 2 && 2 * ty + dy < P.oh; ++dy) {
        const int64_t oy = 2 * ty + dy;
        const float *a = tmp + 2 * dy * T + j, *b = a + T;  // channel g0's; channel g0 + i's 4 * T * i further
        const int64_t pairs = std::min(count, P.ow / 2 - tx0);  // tiles whose both columns exist
        if (NHWC) {
          float* yrow = P.y + (img * P.oh + oy) * P.ow * P.cout + g0;
          const auto put = [&](int64_t ox, const float* src) {
            float* d = yrow + ox * P.cout;
            for (int64_t i = 0; i < gn; ++i) d[i] = src[i * 4 * T];
          };
          for (int64_t t = 0; t < pairs; ++t) {
            put(2 * (tx0 + t), a + t);
            put(2 * (tx0 + t) + 1, b + t);
          }
          if (pairs < count) put(2 * (tx0 + pairs), a + pairs);  // odd width: the last tile's left column
        } else {
          float* yrow = P.y + ((img * P.cout + g0) * P.oh + oy) * P.ow;
          for (int64_t t = 0; t < pairs; ++t) {
            yrow[2 * (tx0 + t)] = a[t];
            yrow[2 * (tx0 + t) + 1] = b[t];
          }
          if (pairs < count) yrow[2 * (tx0 + pairs)] = a[pairs];
        }
      }
    });
  }
}

// U: of all channels, held by the calling thread (several tile blocks), or of one task's channel block,
// held by the thread that runs it (one tile block); never both in one call. V of every block: caller's.
thread_local Scratch tls_wino_u, tls_wino_vall;

// U of all output channels, U_xi's uxi floats apart (MR-row panels, c columns each).
void all_weight_panels(const WinogradProblem& P, float* u, int64_t uxi) {
  constexpr int MR = Micro::MR;
  parallel_for(padded_rows(P.cout) / MR, 1, [&](int64_t b, int64_t e) {
    for (int64_t panel = b; panel < e; ++panel) wino_weight_panel(P, panel * MR, u + panel * MR * P.c, uxi);
  });
}

// The U winograd_forward reads as P.u: wino_plan's all-channel layout (uxi = padded cout * c + 16).
int64_t winograd_floats(int64_t cout, int64_t c) { return 16 * (padded_rows(cout) * c + 16); }

void winograd_weights(const float* wt, int64_t cout, int64_t c, float* u) {
  WinogradProblem P;
  P.c = c, P.cout = cout, P.wt = wt;
  all_weight_panels(P, u, padded_rows(cout) * c + 16);
}

void winograd_forward(const WinogradProblem& P) {
  constexpr int MR = Micro::MR, NR = Micro::NR;
  const WinoPlan q = wino_plan(P);
  const int64_t c = P.c, vblock = 16 * q.vxi;
  const float* Up = P.u;  // prepared: U of all channels, made by winograd_weights
  if (!Up && q.nb > 1) {  // U of all channels once, shared by the tile blocks
    float* u = tls_wino_u.get(size_t(16 * q.uxi));
    all_weight_panels(P, u, q.uxi);
    Up = u;
  }
  float* Vall = nullptr;
  if (q.nbm > 1) {  // V of every block once, in channel chunks so that few blocks still make tasks
    constexpr int64_t kChunk = 32;
    const int64_t chunks = (c + kChunk - 1) / kChunk;
    Vall = tls_wino_vall.get(size_t(q.nb * vblock));
    parallel_tasks(q.nb * chunks, [&](int64_t t) {
      const int64_t b = t / chunks, c0 = (t % chunks) * kChunk;
      (P.nhwc ? wino_input<true> : wino_input<false>)(P, q, b * q.T, std::min(q.tiles, (b + 1) * q.T), c0,
                                                      std::min(c, c0 + kChunk), Vall + b * vblock);
    });
  }
  parallel_tasks(q.nb * q.nbm, [&](int64_t t) {
    const int64_t b = t / q.nbm, p0 = b * q.T, p1 = std::min(q.tiles, p0 + q.T);
    const int64_t co0 = (t % q.nbm) * q.cout_blk, co1 = std::min(P.cout, co0 + q.cout_blk), rows = co1 - co0;
    const float* V = Vall ? Vall + b * vblock : nullptr;
    if (!V) {
      float* own = tls_wino_v.get(size_t(vblock));
      (P.nhwc ? wino_input<true> : wino_input<false>)(P, q, p0, p1, 0, c, own);
      V = own;
    }
    const float* U = Up ? Up + co0 * c : nullptr;
    int64_t uxi = q.uxi;
    if (!U) {
      float* own = tls_wino_u.get(size_t(16 * q.blk_uxi));
      for (int64_t ir = 0; ir < rows; ir += MR) wino_weight_panel(P, co0 + ir, own + ir * c, q.blk_uxi);
      U = own;
      uxi = q.blk_uxi;
    }
    float* M = tls_wino_m.get(size_t(16 * rows * q.T));
    const int64_t panels = (p1 - p0 + NR - 1) / NR;
    for (int xi = 0; xi < 16; ++xi)
      for (int64_t ir = 0; ir < rows; ir += MR)
        for (int64_t jp = 0; jp < panels; ++jp)  // columns up to whole vectors: what wino_output reads
          Micro::run(c, U + xi * uxi + ir * c, V + xi * q.vxi + jp * c * NR, M + (xi * rows + ir) * q.T + jp * NR,
                     q.T, int(std::min<int64_t>(MR, rows - ir)),
                     int(std::min<int64_t>(NR, round_up(p1 - p0 - jp * NR, Micro::VW))), false, nullptr, false);
    (P.nhwc ? wino_output<true> : wino_output<false>)(P, q, M, rows, p0, p1, co0, co1);
  });
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
