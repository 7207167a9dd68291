// Part of kernels_impl.h (see there): the direct (depthwise) plane kernels, forward and both gradients.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "im2col_impl.h"
#include "kernels.h"
#include "scratch_impl.h"
#include "vector_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

thread_local Scratch tls_padded, tls_row;

// The direct kernels work on zero-padded copies, wide enough that every output row is a whole number
// of vectors (VW floats): each tap is then one unaligned vector load and FMA with no bounds checks,
// also for the 7- and 14-wide rows of small feature maps.
struct Padded {
  int64_t h, w;  // padded extent
  float* p;
};

Padded padded_plane(const float* x, const Window& g) {
  const int64_t owp = round_up(g.ow, Micro::VW);
  Padded r{g.h + 2 * g.ph, std::max(g.w + 2 * g.pw, (owp - 1) * g.sw + (g.kw - 1) * g.dw + 1), nullptr};
  r.p = tls_padded.get(size_t(r.h * r.w));
  std::memset(r.p, 0, size_t(r.h * r.w) * sizeof(float));
  if (x)
    for (int64_t y = 0; y < g.h; ++y) {
      float* d = r.p + (y + g.ph) * r.w + g.pw;
      const float* src = x + y * g.w;
      for (int64_t i = 0; i < g.w; ++i) d[i] = src[i];  // short rows: a loop beats a memcpy call
    }
  return r;
}

// One output row, VW outputs at a time with every tap accumulated in a register. Full vectors may run
// past the row end into rows written later; the caller gives a scratch row where that is not allowed.
template <bool RELU>
void direct_row(const Padded& in, const float* wt, float bias, float* out, int64_t oy, int64_t owp, const Window& g) {
  constexpr int VW = Micro::VW;
  const VecF zero{};
  for (int64_t c0 = 0; c0 < owp; c0 += VW) {
    VecF acc = zero + bias;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const float* prow = in.p + (oy * g.sh + ky * g.dh) * in.w + c0 * g.sw;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float* src = prow + kx * g.dw;
        VecF v;
        if (g.sw == 1) {
          v = loadu(src);
        } else {
          for (int l = 0; l < VW; ++l) v[l] = src[l * g.sw];
        }
        acc += wt[ky * g.kw + kx] * v;
      }
    }
    if (RELU) acc = acc > zero ? acc : zero;
    storeu(out + c0, acc);
  }
}

void direct_forward_plane(const float* x, const float* wt, float bias, bool relu, float* y, const Window& g) {
  const Padded in = padded_plane(x, g);
  const int64_t owp = round_up(g.ow, Micro::VW), plane = g.oh * g.ow;
  float* tmp = tls_row.get(size_t(owp));
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    // Rows are written in order, so a row may spill into the next ones, but never past the plane.
    const bool direct = oy * g.ow + owp <= plane;
    float* out = direct ? y + oy * g.ow : tmp;
    relu ? direct_row<true>(in, wt, bias, out, oy, owp, g) : direct_row<false>(in, wt, bias, out, oy, owp, g);
    if (!direct)
      for (int64_t i = 0; i < g.ow; ++i) y[oy * g.ow + i] = tmp[i];
  }
}

// NCHW depthwise with one output per input channel (a row narrower than a vector wastes most of each
// one in direct_forward_plane, 7x7: 9 of 16 lanes): VW planes at a time, interleaved into the lanes of
// a zero-padded channels-last copy of the input band that output rows [oy0, oy1) read, so that each
// output pixel of VW planes is one vector. Per element the same sum, in the same order (bias, then
// every tap, padding included), as the plane kernel.
void direct_forward_planes(const float* x, int64_t c0, int64_t m, const float* wt, const float* bias, bool relu, float* y,
                           const Window& g, int64_t planes, int64_t oy0, int64_t oy1) {
  constexpr int VW = Micro::VW, kRun = 8;
  const int64_t h = g.h, w = g.w, ph = g.ph, pw = g.pw, kh = g.kh, kw = g.kw, dh = g.dh, dw = g.dw, sh = g.sh, sw = g.sw;
  const int64_t ow = g.ow, wp = w + 2 * pw, hw = h * w, ohw = g.oh * ow, taps = kh * kw, rows = oy1 - oy0;
  // The band: input rows [ib0, ib0 + hb), those outside the map zeros.
  const int64_t ib0 = oy0 * sh - ph, hb = (rows - 1) * sh + (kh - 1) * dh + 1;
  // Stride 1: output (oy0 + r, ox) is computed at q = r * wp + ox, from the band at q + ky * dh * wp + kx * dw,
  // so that runs of kRun outputs, the padding columns' included, are independent sums in registers.
  // The last run reads up to kRun - 1 + (kw - 1) * dw vectors past the band (zeros).
  const bool flat = sh == 1 && sw == 1;
  const int64_t qn = flat ? round_up(rows * wp, kRun) : rows * ow, in_size = (hb * wp + kRun + (kw - 1) * dw) * VW;
  const auto q_of = [&](int64_t i) { return flat ? i / ow * wp + i % ow : i; };  // band output pixel i in `out`
  float* in = tls_padded.get(size_t(in_size));
  float* out = tls_row.get(size_t(qn * VW));
  const VecF zero{};
  const auto at = [&](int64_t i) { return in + ((i / w - ib0) * wp + i % w + pw) * VW; };  // input pixel i
  const int64_t i0 = std::max<int64_t>(0, ib0) * w, i1 = std::min(h, ib0 + hb) * w;  // the band's pixels in the map
  for (int64_t p0 = 0; p0 < planes; p0 += VW) {
    const int64_t lanes = std::min<int64_t>(VW, planes - p0);
    const float* xs[VW];  // each lane's input plane
    for (int64_t l = 0; l < lanes; ++l) xs[l] = x + (c0 + p0 + l) / m * hw;
    float* ys = y + p0 * ohw + oy0 * ow;
    std::memset(in, 0, size_t(in_size) * sizeof(float));
    int64_t i = i0;
#if defined(__AVX512F__)
    if (VW == 16 && lanes == 16 && m == 1)  // 16 pixels of 16 consecutive planes at a time, transposed in registers
      for (; i + 16 <= i1; i += 16) {
        __m512 r[16];
        for (int l = 0; l < 16; ++l) r[l] = _mm512_loadu_ps(xs[l] + i);
        transpose16(r);
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(at(i + j), r[j]);
      }
#endif
    for (; i < i1; ++i)
      for (int64_t l = 0; l < lanes; ++l) at(i)[l] = xs[l][i];
    VecF wv[64], b = zero;
    int64_t off[64];
    for (int64_t t = 0; t < taps; ++t) {
      wv[t] = zero;
      for (int64_t l = 0; l < lanes; ++l) wv[t][l] = wt[(p0 + l) * taps + t];
      off[t] = ((t / kw) * dh * wp + (t % kw) * dw) * VW;
    }
    for (int64_t l = 0; l < lanes; ++l) b[l] = bias[p0 + l];
    if (flat) {
      for (int64_t q0 = 0; q0 < qn; q0 += kRun) {
        VecF acc[kRun];
        for (int j = 0; j < kRun; ++j) acc[j] = b;
        const float* src = in + q0 * VW;
        for (int64_t t = 0; t < taps; ++t)
          for (int j = 0; j < kRun; ++j) acc[j] += wv[t] * loadu(src + off[t] + j * VW);
        for (int j = 0; j < kRun; ++j) storeu(out + (q0 + j) * VW, relu ? (acc[j] > zero ? acc[j] : zero) : acc[j]);
      }
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t ox = 0; ox < ow; ++ox) {
          VecF acc = b;
          const float* src = in + (r * sh * wp + ox * sw) * VW;
          for (int64_t t = 0; t < taps; ++t) acc += wv[t] * loadu(src + off[t]);
          storeu(out + (r * ow + ox) * VW, relu ? (acc > zero ? acc : zero) : acc);
        }
    }
    const int64_t n_out = rows * ow;
    i = 0;
#if defined(__AVX512F__)
    if (VW == 16 && lanes == 16)
      for (; i + 16 <= n_out; i += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(out + q_of(i + j) * VW);
        transpose16(r);
        for (int l = 0; l < 16; ++l) _mm512_storeu_ps(ys + l * ohw + i, r[l]);
      }
#endif
    for (; i < n_out; ++i)
      for (int64_t l = 0; l < lanes; ++l) ys[l * ohw + i] = out[q_of(i) * VW + l];
  }
}

void direct_forward_nhwc(const float* x, const float* wt, const float* bias, bool relu, float* y, const Window& g,
                         int64_t r0, int64_t r1) {
  constexpr int VW = Micro::VW, kPix = 4;
  const int64_t c = g.c, full = c / VW * VW;
  const VecF zero{};
  // The taps inside the input of each of kPix output pixels; the plane kernel adds w * 0 for the
  // others, which changes no sum.
  const float* src[kPix][64];
  const float* tw[kPix][64];
  int nt[kPix];
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t img = row / g.oh, oy = row % g.oh;
    const float* xi = x + img * g.h * g.w * c;
    for (int64_t ox0 = 0; ox0 < g.ow; ox0 += kPix) {
      const int np = int(std::min<int64_t>(kPix, g.ow - ox0));
      for (int p = 0; p < np; ++p) {
        nt[p] = 0;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
          const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.kw; ++kx) {
            const int64_t ix = (ox0 + p) * g.sw - g.pw + kx * g.dw;
            if (ix < 0 || ix >= g.w) continue;
            src[p][nt[p]] = xi + (iy * g.w + ix) * c;
            tw[p][nt[p]++] = wt + (ky * g.kw + kx) * c;
          }
        }
      }
      float* out = y + (row * g.ow + ox0) * c;
      // Few channel vectors (dw 32@112: 2) make few independent FMA chains: then kPix pixels with as
      // many taps (inside the map) are summed side by side, each sum in the same order.
      const bool together = full < kPix * VW && np == kPix && nt[1] == nt[0] && nt[2] == nt[0] && nt[3] == nt[0];
      if (together) {
        for (int64_t c0 = 0; c0 < full; c0 += VW) {
          VecF acc[kPix];
          for (int p = 0; p < kPix; ++p) acc[p] = loadu(bias + c0);
          for (int t = 0; t < nt[0]; ++t)
            for (int p = 0; p < kPix; ++p) acc[p] += loadu(tw[p][t] + c0) * loadu(src[p][t] + c0);
          for (int p = 0; p < kPix; ++p) storeu(out + p * c + c0, relu ? (acc[p] > zero ? acc[p] : zero) : acc[p]);
        }
      } else {
        for (int p = 0; p < np; ++p)
          for (int64_t c0 = 0; c0 < full; c0 += VW) {
            VecF acc = loadu(bias + c0);
            for (int t = 0; t < nt[p]; ++t) acc += loadu(tw[p][t] + c0) * loadu(src[p][t] + c0);
            storeu(out + p * c + c0, relu ? (acc > zero ? acc : zero) : acc);
          }
      }
      for (int p = 0; p < np; ++p)
        for (int64_t ch = full; ch < c; ++ch) {
          float acc = bias[ch];
          for (int t = 0; t < nt[p]; ++t) acc += tw[p][t][ch] * src[p][t][ch];
          out[p * c + ch] = relu && !(acc > 0.f) ? 0.f : acc;
        }
    }
  }
}

void direct_backward_data_plane(const float* dy, const float* wt, float* dx, const Window& g) {
  constexpr int VW = Micro::VW;
  const Padded acc = padded_plane(nullptr, g);
  const int64_t owp = round_up(g.ow, VW);
  float* drow = tls_row.get(size_t(owp));
  std::fill(drow + g.ow, drow + owp, 0.f);  // lanes past the row scatter zeros into the padding
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    for (int64_t i = 0; i < g.ow; ++i) drow[i] = dy[oy * g.ow + i];
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      float* prow = acc.p + (oy * g.sh + ky * g.dh) * acc.w;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float wv = wt[ky * g.kw + kx];
        float* dst = prow + kx * g.dw;
        if (g.sw == 1) {
          for (int64_t c0 = 0; c0 < owp; c0 += VW) storeu(dst + c0, loadu(dst + c0) + wv * loadu(drow + c0));
        } else {
          for (int64_t ox = 0; ox < g.ow; ++ox) dst[ox * g.sw] += wv * drow[ox];
        }
      }
    }
  }
  for (int64_t y = 0; y < g.h; ++y) {
    const float* src = acc.p + (y + g.ph) * acc.w + g.pw;
    float* dst = dx + y * g.w;
    for (int64_t i = 0; i < g.w; ++i) dst[i] += src[i];
  }
}

void direct_backward_filter_plane(const float* x, const float* dy, double* dwt, const Window& g) {
  constexpr int VW = Micro::VW;
  const Padded in = padded_plane(x, g);
  const int64_t owp = round_up(g.ow, VW);
  // dy rows zero-padded to whole vectors, copied once: lanes past a row contribute nothing.
  float* drows = tls_row.get(size_t(g.oh * owp));
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    for (int64_t i = 0; i < g.ow; ++i) drows[oy * owp + i] = dy[oy * g.ow + i];
    std::fill(drows + oy * owp + g.ow, drows + (oy + 1) * owp, 0.f);
  }
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      double total = 0;
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const float* src = in.p + (oy * g.sh + ky * g.dh) * in.w + kx * g.dw;
        const float* drow = drows + oy * owp;
        VecF part{};  // one row in float lanes, rows summed in double
        for (int64_t c0 = 0; c0 < owp; c0 += VW) {
          VecF v;
          if (g.sw == 1) {
            v = loadu(src + c0);
          } else {
            for (int l = 0; l < VW; ++l) v[l] = src[(c0 + l) * g.sw];
          }
          part += loadu(drow + c0) * v;
        }
        float sum = 0;
        for (int l = 0; l < VW; ++l) sum += part[l];
        total += sum;
      }
      dwt[ky * g.kw + kx] += total;
    }
}

// The transpose of direct_forward_nhwc: each input pixel of rows [r0, r1) gathers, tap by tap, wt[tap]
// times dy at the output pixel that reads it through that tap (stride and dilation as they are).
void direct_backward_data_nhwc(const float* dy, const float* wt, const int64_t* cols, float* dx, const Window& g,
                               int64_t r0, int64_t r1) {
  constexpr int VW = Micro::VW;
  const int64_t c = g.c, full = c / VW * VW;
  int64_t rows_of[64];
  const float* src[64];
  const float* tw[64];
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t img = row / g.h, iy = row % g.h;
    const float* dyi = dy + img * g.oh * g.ow * c;
    for (int64_t ky = 0; ky < g.kh; ++ky) rows_of[ky] = output_reading(iy, ky, g.ph, g.dh, g.sh, g.oh);
    for (int64_t ix = 0; ix < g.w; ++ix) {
      int nt = 0;
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        if (rows_of[ky] < 0) continue;
        for (int64_t kx = 0; kx < g.kw; ++kx) {
          const int64_t ox = cols[ix * g.kw + kx];
          if (ox < 0) continue;
          src[nt] = dyi + (rows_of[ky] * g.ow + ox) * c;
          tw[nt++] = wt + (ky * g.kw + kx) * c;
        }
      }
      float* out = dx + (row * g.w + ix) * c;
      int64_t c0 = 0;
      for (; c0 + 4 * VW <= full; c0 += 4 * VW) {  // four vectors' FMA chains side by side
        VecF acc[4] = {};
        for (int t = 0; t < nt; ++t)
          for (int v = 0; v < 4; ++v) acc[v] += loadu(tw[t] + c0 + v * VW) * loadu(src[t] + c0 + v * VW);
        for (int v = 0; v < 4; ++v) storeu(out + c0 + v * VW, acc[v]);
      }
      for (; c0 < full; c0 += VW) {
        VecF acc{};
        for (int t = 0; t < nt; ++t) acc += loadu(tw[t] + c0) * loadu(src[t] + c0);
        storeu(out + c0, acc);
      }
      for (int64_t ch = full; ch < c; ++ch) {
        float acc = 0;
        for (int t = 0; t < nt; ++t) acc += tw[t][ch] * src[t][ch];
        out[ch] = acc;
      }
    }
  }
}

// direct_backward_filter_nhwc's sums for NVEC vectors of channels from cb (width of them real: the
// rest are skipped), rows [oy0, oy1): total[tap * NVEC * VW + l] += each row's sum (in float lanes).
// Fewer than 8 vectors: even and odd pixels in separate registers, for 8 FMA chains.
template <int NVEC>
void filter_sums_nhwc(const float* x, const float* dy, double* total, const Window& g, int64_t cb, int64_t width,
                      int64_t oy0, int64_t oy1) {
  constexpr int VW = Micro::VW, kWidth = NVEC * VW, kSplit = NVEC >= 8 ? 1 : 2;
  const int64_t c = g.c;
  for (int64_t oy = oy0; oy < oy1; ++oy)
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t off = kx * g.dw - g.pw;
        int64_t lo, hi;
        valid_range(off, g.sw, g.w, g.ow, lo, hi);
        alignas(64) float part[kWidth] = {};
        const float* d = dy + (oy * g.ow + lo) * c + cb;
        const float* xs = x + (iy * g.w + lo * g.sw + off) * c + cb;
        const int64_t xstep = g.sw * c;
        if (width == kWidth) {
          VecF acc[kSplit][NVEC] = {};
          int64_t ox = lo;
          for (; ox + kSplit <= hi; ox += kSplit, d += kSplit * c, xs += kSplit * xstep)
            for (int k = 0; k < kSplit; ++k)
              for (int v = 0; v < NVEC; ++v) acc[k][v] += loadu(d + k * c + v * VW) * loadu(xs + k * xstep + v * VW);
          if (ox < hi)
            for (int v = 0; v < NVEC; ++v) acc[0][v] += loadu(d + v * VW) * loadu(xs + v * VW);
          for (int v = 0; v < NVEC; ++v) storeu(part + v * VW, kSplit == 2 ? acc[0][v] + acc[kSplit - 1][v] : acc[0][v]);
        } else {
          for (int64_t ox = lo; ox < hi; ++ox, d += c, xs += xstep)
            for (int64_t l = 0; l < width; ++l) part[l] += d[l] * xs[l];
        }
        double* t = total + (ky * g.kw + kx) * kWidth;
        for (int64_t l = 0; l < width; ++l) t[l] += part[l];
      }
    }
}

// Output rows [oy0, oy1) of one image, channels [c0, c1): dwt[tap * c + ch] += sum over those rows'
// pixels of dy * x through the tap, 64 channels at a time (a cache line at a time for the rest), row by
// row so that the rows a tap reads stay in L1 (each row's sum in float lanes, the rows' in double, as
// the plane kernel sums).
void direct_backward_filter_nhwc(const float* x, const float* dy, double* dwt, const Window& g, int64_t c0, int64_t c1,
                                 int64_t oy0, int64_t oy1) {
  constexpr int VW = Micro::VW, kBlock = 64, kLine = VW >= 16 ? VW : 16;
  const int64_t c = g.c, taps = g.kh * g.kw;
  double total[64 * kBlock];
  for (int64_t cb = c0; cb < c1;) {
    const int64_t width = c1 - cb >= kBlock ? kBlock : std::min<int64_t>(kLine, c1 - cb);
    // One vector of channels left (AVX2: the last 8 of 24 channels) runs as one, not value by value.
    const bool one_vector = kLine > VW && width == VW;
    const int64_t stride = width == kBlock ? kBlock : one_vector ? VW : kLine;  // total's row length
    std::fill(total, total + taps * stride, 0.0);
    if (width == kBlock) filter_sums_nhwc<kBlock / VW>(x, dy, total, g, cb, width, oy0, oy1);
    else if (one_vector) filter_sums_nhwc<1>(x, dy, total, g, cb, width, oy0, oy1);
    else filter_sums_nhwc<kLine / VW>(x, dy, total, g, cb, width, oy0, oy1);
    for (int64_t tap = 0; tap < taps; ++tap)
      for (int64_t l = 0; l < width; ++l) dwt[tap * c + cb + l] += total[tap * stride + l];
    cb += width;
  }
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
