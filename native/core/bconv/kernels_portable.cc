// Plain C++ kernels: the fallback on any CPU, and the model the SIMD versions follow.
#include "bconv.h"
#include "epilogue.h"
#include "kernels.h"
#include "sliced.h"

namespace xnorm::bconv {
namespace {

// Bit-slicing popcount: the baseline x86-64 target has no popcnt instruction.
inline uint32_t popc(uint32_t v) {
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  v = (v + (v >> 4)) & 0x0f0f0f0fu;
  return (v * 0x01010101u) >> 24;
}

void dense_panel(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                 const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep) {
  const int nc = half_panel(ch) ? kHalfPanel : kPanelWidth;
  for (int64_t i = 0; i < npix; ++i) {
    int32_t acc[1][kPanelWidth] = {};
    for (int64_t t = 0; t < taps; ++t) {
      const uint32_t* src = rows[i * taps + t] + off;
      for (int64_t j = 0; j < wg; ++j) {
        const uint32_t x = src[j], *wk = panel + (t * wg + j) * kPanelWidth;
        for (int c = 0; c < nc; ++c) acc[0][c] += int32_t(popc(x ^ wk[c]));
      }
    }
    finish_tile<1>(acc, ch, ep, i, p + i * ldp, ldc, ldp);
  }
}

void bit_rows(const uint32_t* at, int64_t ldat, int64_t kw, int64_t nb, uint64_t* rows) {
  for (int64_t w = 0; w < kw; ++w)
    for (int64_t j = 0; j < nb; ++j) {
      uint64_t r[32] = {};
      const uint32_t* px = at + w * ldat + 64 * j;
      for (int i = 0; i < 64; ++i)
        for (int b = 0; b < 32; ++b) r[b] |= uint64_t((px[i] >> b) & 1u) << i;
      for (int b = 0; b < 32; ++b) rows[(32 * w + b) * nb + j] = r[b];
    }
}

void sliced_edge(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                 const int32_t* parent, int32_t* child) {
  sliced_edge_any(rows, nb, pos, npos, zeros, parent, child, expand_scalar);
}

void pack_nhwc(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out, bool /*stream*/) {
  int64_t wc = (c + 31) / 32;
  for (int64_t i = 0; i < pixels; ++i) {
    const float* px = x + i * c;
    for (int64_t w = 0; w < wc; ++w) {
      uint32_t word = 0;
      int64_t c0 = w * 32, n = c - c0 < 32 ? c - c0 : 32;
      for (int64_t b = 0; b < n; ++b) word |= uint32_t(px[c0 + b] < thr[c0 + b]) << b;
      out[i * wc + w] = word;
    }
  }
}

void pack_nchw(const float* x, int64_t ld, int64_t count, int64_t c, const float* thr, uint32_t* out,
               bool /*stream*/) {
  int64_t wc = (c + 31) / 32;
  for (int64_t i = 0; i < count * wc; ++i) out[i] = 0;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* plane = x + ch * ld;
    uint32_t bit = 1u << (ch & 31);
    uint32_t* o = out + ch / 32;
    for (int64_t i = 0; i < count; ++i)
      if (plane[i] < thr[ch]) o[i * wc] |= bit;
  }
}

void distances(const uint32_t* row, const uint32_t* rows, int64_t n, int64_t kw, int32_t* hamming,
               int32_t* diff_words) {
  for (int64_t v = 0; v < n; ++v) {
    int32_t h = 0, dw = 0;
    for (int64_t k = 0; k < kw; ++k) {
      uint32_t x = row[k] ^ rows[v * kw + k];
      h += int32_t(popc(x));
      dw += x != 0;
    }
    hamming[v] = h;
    diff_words[v] = dw;
  }
}

void transpose(const uint32_t* src, int64_t rows, int64_t cols, int64_t lds, uint32_t* dst, int64_t ldd) {
  // 16 x 16 blocks keep both sides in L1 (a plain loop writes a new cache line on every store).
  for (int64_t rb = 0; rb < rows; rb += 16)
    for (int64_t cb = 0; cb < cols; cb += 16)
      for (int64_t r = rb; r < rows && r < rb + 16; ++r)
        for (int64_t c = cb; c < cols && c < cb + 16; ++c) dst[c * ldd + r] = src[r * lds + c];
}

void out_int32(const int32_t* v, int32_t k, int32_t m, int64_t n, int32_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = k + m * v[c];
}

void out_float(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
               int64_t n, float* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = output_value(k + m * v[c], scale[c], bias[c], clamp);
}

void out_bits(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
              int64_t n, uint32_t* out) {
  for (int64_t w = 0; w * 32 < n; ++w) {
    uint32_t word = 0;
    for (int64_t b = 0; b < 32 && w * 32 + b < n; ++b) {
      const int64_t c = w * 32 + b;
      word |= uint32_t(output_value(k + m * v[c], scale[c], bias[c], clamp) < 0.0f) << b;
    }
    out[w] = word;
  }
}

uint64_t popcount_loop(const uint32_t* data, int64_t reps) {
  uint64_t acc = 0;
  for (int64_t r = 0; r < reps; ++r)
    for (int k = 0; k < 256; ++k) acc += popc(data[k] ^ uint32_t(r));
  return acc;
}

}  // namespace

const Kernels& kernels_portable() {
  static const Kernels k{dense_panel, bit_rows, shifted_rows_any, sliced_edge, value_planes_scalar, sliced_child_any, pack_nhwc, pack_nchw, distances, transpose, out_int32, out_float, out_bits, nullptr, popcount_loop};
  return k;
}

}  // namespace xnorm::bconv
