// Part of kernels_impl.h (see there): Winograd F(2x2, 3x3) forward with the tiles as the GEMM's rows,
// for prepared weights on few tiles (a deep layer at batch 1: 512 channels on 7x7 are 16 tiles).
//
// winograd_forward (winograd_impl.h) puts the output channels on the micro-kernel's rows and the tiles
// on its NR-wide columns: 16 tiles fill a third of each column panel. Here the 16 products are 16
// ordinary GEMMs M_xi [tiles, cout] = V_xi [tiles, c] x U_xi [c, cout] run by gemm() as one job, with
// U_xi packed once, when the weights are prepared, as B panels; the tiles are the short M side, the way
// the channels-last GEMM runs pixels as rows. The transforms (winograd_impl.h's WinoTf<2> and wino_2d)
// work on VW channels at a time, reading channels-last x (the caller copies NCHW x: it is small, few
// tiles) and writing y in either layout.
#pragma once
#include <algorithm>

#include "../common/thread_pool.h"
#include "gemm_impl.h"
#include "kernels.h"
#include "scratch_impl.h"
#include "vector_impl.h"
#include "winograd_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

// Floats of U_xi in the prepared layout (B panels of gemm, K = c, N = cout).
inline int64_t rows_uxi(int64_t cout, int64_t c) { return packed_b_floats(c, cout); }

int64_t winograd_rows_floats(int64_t cout, int64_t c) { return 16 * rows_uxi(cout, c); }

// Raw weights wt [cout, c, 3, 3] (Tune's W * s: each weight times scale[co], when given, rounded once,
// as Deploy's fold rounds it) into the 16 U_xi slices of one B panel, output channels [j0, j0 + cols) and
// input channels [p0, p0 + kc): u + xi * ustride, row ci - p0, NR floats each (zeros past cols).
// Prepared weights are made by it too (winograd_rows_weights), so raw and prepared panels hold the same bits.
// VW output channels and kChunk input channels at a time: their taps, transposed to [tap][channel][VW]
// (AVX-512: 16 x 16 in registers, AVX2: 8 x 8), stay in L1 while the transform writes their U rows.
void rows_weights_slice(const float* wt, const float* scale, int64_t c, int64_t j0, int64_t cols, int64_t p0, int64_t kc,
                        int64_t ustride, float* u) {
  constexpr int NR = Micro::NR, VW = Micro::VW, NV = NR / VW;
  constexpr int64_t kChunk = 16;
  alignas(64) float taps[9 * kChunk * VW];
  // One vector of filters at a time over the whole slice: VW row streams read side by side. (All NR
  // filters per channel chunk were 48 streams 18 KiB apart on 512 channels, more than the prefetchers
  // follow: Tune's transform waited on memory for most of its time.)
  for (int v = 0; v < NV; ++v) {
    const int64_t f0 = v * VW, fn = cols - f0;  // the vector's filters (fn <= 0: all padding)
    const float* src = wt + (j0 + f0) * c * 9;
    const float* sc = scale ? scale + j0 + f0 : nullptr;
    for (int64_t ci0 = p0; ci0 < p0 + kc; ci0 += kChunk) {
      const int64_t width = std::min(kChunk, p0 + kc - ci0), lo = ci0 * 9, hi = (ci0 + width) * 9;
      const auto row_of = [&](int64_t j) { return taps + ((j % 9) * kChunk + (j / 9 - ci0)) * VW; };
      filter_rows<VW>(src, c * 9, fn, sc, lo, hi, row_of);
      for (int64_t ci = 0; ci < width; ++ci) {
        float* d = u + (ci0 + ci - p0) * NR + f0;
        weight_transform<2>([&](int tap) { return loadu(taps + (tap * kChunk + ci) * VW); },
                            [&](int xi, VecF value) { storeu(d + xi * ustride, value); });
      }
    }
  }
}

// U_xi = (G g G^T)[xi / 4][xi % 4] of every (output, input) channel pair, packed as gemm's B panels: each
// panel's U_xi over the whole K, which in the panel-major layout is one run of rows per xi.
void winograd_rows_weights(const float* wt, int64_t cout, int64_t c, float* u) {
  constexpr int NR = Micro::NR;
  parallel_tasks((cout + NR - 1) / NR, [&](int64_t q) {
    const int64_t j0 = q * NR;
    rows_weights_slice(wt, nullptr, c, j0, std::min<int64_t>(NR, cout - j0), 0, c, rows_uxi(cout, c), u + j0 * c);
  });
}

// n (<= VW) floats `stride` apart as one vector, zeros past them.
inline VecF gather(const float* p, int64_t stride, int64_t n) {
  if (stride == 1 && n == Micro::VW) return loadu(p);
  alignas(64) float v[Micro::VW] = {};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i * stride];
  return loadu(v);
}

inline void scatter(float* p, int64_t stride, int64_t n, VecF x) {
  if (stride == 1 && n == Micro::VW) return storeu(p, x);
  alignas(64) float v[Micro::VW];
  storeu(v, x);
  for (int64_t i = 0; i < n; ++i) p[i * stride] = v[i];
}

thread_local Scratch tls_rows_v, tls_rows_m, tls_rows_a, tls_rows_u;

// The 16 products M_xi = V_xi U_xi with U_xi made from raw weights per call (P.u null): one task per NR-wide
// panel of output channels, which per K slice (gemm's slices) transforms its 16 U_xi slices into
// L2-resident scratch and multiplies them at once, so each weight is read once and no U is written to
// memory. The micro-kernel calls, K slices and accumulation are gemm's on the prepared panels, so the
// sums are the same, in the same order: raw and prepared weights give the same bits. It drives the
// micro-kernel itself rather than through gemm because gemm packs each problem's B on its own, and here
// one read of a weight slice makes the B slices of all 16 products.
void rows_products_raw(const WinogradProblem& P, const float* V, int64_t tiles, float* M) {
  constexpr int MR = Micro::MR, NR = Micro::NR;
  const int64_t c = P.c, cout = P.cout, slice = k_slice(c), slices = (c + slice - 1) / slice, rows = padded_rows(tiles);
  // V_xi packed as gemm packs A: K slice p0 of product xi at xi * c * rows + p0 * rows.
  float* A = tls_rows_a.get(size_t(16 * c * rows));
  // U_xi slices one cache line more than a multiple of 4 KiB apart: the transform writes all 16 at once.
  const int64_t ustride = round_up(slice * NR, 1024) + 16;
  parallel_tasks(16 * slices, [&](int64_t t) {
    const int64_t xi = t / slices, p0 = t % slices * slice;
    Operand a;
    a.p = V + xi * tiles * c, a.rs = c, a.cs = 1;
    pack_a(a, 0, tiles, p0, std::min(slice, c - p0), A + xi * c * rows + p0 * rows);
  });
  parallel_tasks((cout + NR - 1) / NR, [&](int64_t q) {
    const int64_t j0 = q * NR, cols = std::min<int64_t>(NR, cout - j0);
    float* u = tls_rows_u.get(size_t(16 * ustride));
    for (int64_t p0 = 0; p0 < c; p0 += slice) {
      const int64_t kc = std::min(slice, c - p0);
      rows_weights_slice(P.wt, P.w_scale, c, j0, cols, p0, kc, ustride, u);
      for (int xi = 0; xi < 16; ++xi)
        for (int64_t ir = 0; ir < tiles; ir += MR)
          Micro::run(kc, A + xi * c * rows + p0 * rows + ir * kc, u + xi * ustride, M + xi * tiles * cout + ir * cout + j0,
                     cout, int(std::min<int64_t>(MR, tiles - ir)), int(cols), p0 > 0, nullptr, false);
    }
  });
}

// Transform units (one tile, VW channels: 16 vectors in, 16 out) per parallel chunk.
constexpr int64_t kTransformChunk = 16;

void winograd_rows_forward(const WinogradProblem& P) {
  constexpr int64_t VW = Micro::VW;
  const int64_t th = (P.oh + 1) / 2, tw = (P.ow + 1) / 2, tiles = P.n * th * tw, c = P.c, cout = P.cout;
  const int64_t image = c * P.h * P.w;
  // Output channel co of pixel (img, oy, ox) is at y + img * oimage + (oy * ow + ox) * opixel + co * ochannel.
  const int64_t opixel = P.y_nhwc ? cout : 1, ochannel = P.y_nhwc ? 1 : P.oh * P.ow, oimage = cout * P.oh * P.ow;
  const int64_t vxi = tiles * c, mxi = tiles * cout, cvec = (c + VW - 1) / VW, ovec = (cout + VW - 1) / VW;
  float* V = tls_rows_v.get(size_t(16 * vxi));
  float* M = tls_rows_m.get(size_t(16 * mxi));
  const auto tile_at = [&](int64_t p, int64_t& img, int64_t& ty, int64_t& tx) {
    img = p / (th * tw), ty = p % (th * tw) / tw, tx = p % tw;
  };
  // V_xi [tile][c] = (B^T d B)[xi / 4][xi % 4], d the 4x4 input around the tile (zeros off the map).
  parallel_for(tiles * cvec, kTransformChunk, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t img, ty, tx;
      tile_at(u / cvec, img, ty, tx);
      const int64_t c0 = u % cvec * VW, cn = std::min(VW, c - c0);
      VecF v[4][4];
      wino_2d<4, 4>([](const VecF* in, VecF* o) { WinoTf<2>::input(in, o); },
                    [&](int r, int col) {
                      const int64_t iy = 2 * ty - P.ph + r, ix = 2 * tx - P.pw + col;
                      return iy >= 0 && iy < P.h && ix >= 0 && ix < P.w
                                 ? gather(P.x + img * image + (iy * P.w + ix) * c + c0, 1, cn)
                                 : VecF{};
                    },
                    v);
      float* out = V + (u / cvec) * c + c0;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) scatter(out + (4 * i + j) * vxi, 1, cn, v[i][j]);
    }
  });
  if (P.u) {  // prepared U_xi: 16 GEMMs on its B panels, one job
    GemmProblem prob[16];
    const int64_t uxi = rows_uxi(cout, c);
    for (int xi = 0; xi < 16; ++xi) {
      GemmProblem& G = prob[xi];
      G.m = tiles, G.n = cout, G.k = c;
      G.a.p = V + xi * vxi, G.a.rs = c, G.a.cs = 1;
      G.b.packed = P.u + xi * uxi;
      G.c = M + xi * mxi, G.ldc = cout;
    }
    gemm(prob, 16);
  } else {
    rows_products_raw(P, V, tiles, M);
  }
  // y = A^T m A + bias per tile (m_xi = M_xi's row of the tile), ReLU; the 2x2 outputs inside the map.
  const VecF zero{};
  // NCHW y: a chunk of units is one channel block over consecutive tiles, so that threads write different
  // channel planes (tile by tile, neighbouring tiles' pixels share each plane's cache lines across threads).
  parallel_for(tiles * ovec, kTransformChunk, [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t tile = P.y_nhwc ? u / ovec : u % tiles, co0 = (P.y_nhwc ? u % ovec : u / tiles) * VW;
      const int64_t cn = std::min(VW, cout - co0);
      int64_t img, ty, tx;
      tile_at(tile, img, ty, tx);
      const float* m = M + tile * cout + co0;
      const VecF bias = P.bias ? gather(P.bias + co0, 1, cn) : zero;
      VecF s[2][2];
      wino_2d<4, 2>([](const VecF* in, VecF* o) { WinoTf<2>::output(in, o); },
                    [&](int r, int j) { return gather(m + (4 * r + j) * mxi, 1, cn); }, s);
      for (int i = 0; i < 2 && 2 * ty + i < P.oh; ++i) {
        VecF a = s[i][0] + bias, b2 = s[i][1] + bias;
        if (P.relu) {
          a = a > zero ? a : zero;
          b2 = b2 > zero ? b2 : zero;
        }
        float* row = P.y + img * oimage + ((2 * ty + i) * P.ow + 2 * tx) * opixel + co0 * ochannel;
        scatter(row, ochannel, cn, a);
        if (2 * tx + 1 < P.ow) scatter(row + opixel, ochannel, cn, b2);
      }
    }
  });
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
