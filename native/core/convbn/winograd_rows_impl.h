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

// U_xi = (G g G^T)[xi / 4][xi % 4] of every (output, input) channel pair, packed as gemm's B panels.
void winograd_rows_weights(const float* wt, int64_t cout, int64_t c, float* u) {
  std::vector<float> plain(size_t(16 * cout * c));  // U_xi [cout][c], filter by filter as pack_weights_b reads
  const int64_t xi_floats = cout * c;
  parallel_for(cout, 1, [&](int64_t b, int64_t e) {
    for (int64_t co = b; co < e; ++co)
      for (int64_t ci = 0; ci < c; ++ci) {
        const float* g = wt + (co * c + ci) * 9;
        float t[4][3], u[4];
        for (int kx = 0; kx < 3; ++kx) {  // G g, down each column of the taps
          WinoTf<2>::kernel(g[kx], g[kx + 3], g[kx + 6], u);
          for (int k = 0; k < 4; ++k) t[k][kx] = u[k];
        }
        float* d = plain.data() + co * c + ci;
        for (int k = 0; k < 4; ++k) {  // (G g) G^T, row by row
          WinoTf<2>::kernel(t[k][0], t[k][1], t[k][2], u);
          for (int j = 0; j < 4; ++j) d[(4 * k + j) * xi_floats] = u[j];
        }
      }
  });
  for (int xi = 0; xi < 16; ++xi) pack_weights_b(plain.data() + xi * xi_floats, nullptr, 1, c, cout, u + xi * rows_uxi(cout, c));
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

thread_local Scratch tls_rows_v, tls_rows_m;

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
