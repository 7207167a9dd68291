// Part of kernels_impl.h (see there): between input planes and the im2col matrix: the gather of one
// patch-matrix row (the GEMM operands read the matrix through it, never materialised) and col2im.
#pragma once
#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

// Output pixels ox in [lo, hi) read input columns ix = ox * sw + off inside [0, w).
inline void valid_range(int64_t off, int64_t sw, int64_t w, int64_t ow, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
  hi = off > w - 1 ? 0 : std::min(ow, (w - 1 - off) / sw + 1);
  if (hi < lo) hi = lo;
}

// Row k = (channel, ky, kx) of the im2col matrix, for output pixels [p, p + count) (numbered across
// images, see Window::image_stride).
void patch_row(const Window& g, const float* x, int64_t k, int64_t p, int64_t count, float* out) {
  const int64_t opix = g.oh * g.ow;
  if (g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0) {
    // 1x1 stride 1 (a pointwise GEMM spanning the batch): each image's plane of channel k is one run.
    for (int64_t o = 0; o < count;) {
      const int64_t img = (p + o) / opix, at = (p + o) % opix, run = std::min(opix - at, count - o);
      std::memcpy(out + o, x + img * g.image_stride + k * opix + at, size_t(run) * sizeof(float));
      o += run;
    }
    return;
  }
  int64_t taps = g.kh * g.kw, ci = k / taps, r = k % taps, ky = r / g.kw, kx = r % g.kw;
  const int64_t off = kx * g.dw - g.pw;
  int64_t img = p / opix, oy = (p % opix) / g.ow, ox = p % g.ow;
  int64_t lo, hi;
  valid_range(off, g.sw, g.w, g.ow, lo, hi);
  for (int64_t o = 0; o < count;) {
    int64_t run = std::min(g.ow - ox, count - o);
    int64_t iy = oy * g.sh - g.ph + ky * g.dh;
    float* dst = out + o - ox;  // dst[ox'] is output pixel (oy, ox')
    if (iy < 0 || iy >= g.h) {
      std::memset(out + o, 0, size_t(run) * sizeof(float));
    } else {
      const float* row = x + img * g.image_stride + (ci * g.h + iy) * g.w + off;
      int64_t a = std::max(ox, lo), b = std::min(ox + run, hi);
      if (b < a) b = a = ox + run;  // no valid column in this run
      for (int64_t t = ox; t < a; ++t) dst[t] = 0;
      if (g.sw == 1) {
        for (int64_t t = a; t < b; ++t) dst[t] = row[t];  // short runs: a loop beats a memcpy call
      } else if (g.sw == 2) {  // stride-2 downsampling layers: a constant stride vectorises (permutes)
        for (int64_t t = a; t < b; ++t) dst[t] = row[2 * t];
      } else {
        for (int64_t t = a; t < b; ++t) dst[t] = row[t * g.sw];
      }
      for (int64_t t = b; t < ox + run; ++t) dst[t] = 0;
    }
    o += run;
    ox = 0;
    if (++oy == g.oh) oy = 0, ++img;
  }
}

// Column p (output pixel, numbered across images) of the Im2colNhwc matrix, rows [k0, k0 + count): the
// pixel's taps as runs of contiguous channels, zeros where a tap falls in the padding.
void patch_col_nhwc(const Window& g, const float* x, int64_t p, int64_t k0, int64_t count, float* out) {
  const int64_t opix = g.oh * g.ow, img = p / opix, oy = (p % opix) / g.ow, ox = p % g.ow;
  for (int64_t k = k0; k < k0 + count;) {
    int64_t tap, ci, run;
    nhwc_k(k, g.c, g.kh * g.kw, tap, ci, run);
    const int64_t ky = tap / g.kw, kx = tap % g.kw;
    run = std::min(run, k0 + count - k);
    const int64_t iy = oy * g.sh - g.ph + ky * g.dh, ix = ox * g.sw - g.pw + kx * g.dw;
    float* d = out + (k - k0);
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
      std::memset(d, 0, size_t(run) * sizeof(float));
    } else {
      const float* s = x + img * g.image_stride + (iy * g.w + ix) * g.pixel_stride + ci;
      for (int64_t i = 0; i < run; ++i) d[i] = s[i];
    }
    k += run;
  }
}

void col2im(const float* dcol, int64_t ld, float* dx, const Window& g, int64_t c0, int64_t c1) {
  for (int64_t ci = c0; ci < c1; ++ci) {
    float* plane = dx + ci * g.h * g.w;
    std::memset(plane, 0, size_t(g.h * g.w) * sizeof(float));
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float* src = dcol + ((ci * g.kh + ky) * g.kw + kx) * ld;
        int64_t off = kx * g.dw - g.pw, lo, hi;
        valid_range(off, g.sw, g.w, g.ow, lo, hi);
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          int64_t iy = oy * g.sh - g.ph + ky * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          float* xrow = plane + iy * g.w + off;
          const float* srow = src + oy * g.ow;
          for (int64_t ox = lo; ox < hi; ++ox) xrow[ox * g.sw] += srow[ox];
        }
      }
  }
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
