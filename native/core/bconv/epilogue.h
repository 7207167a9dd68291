// Scalar form of the fused output (kernels.h, Epilogue) for the kernels without a vector one, and the
// end of a dense tile that every kernel shares.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace xnorm::bconv {
// Internal linkage: each kernels_<isa>.cc compiles these with its own instruction set, and one shared
// inline copy, kept by the linker from an AVX2 unit, would be called by the portable kernels too.
namespace {

// float(dot) * scale + bias with the product rounded on its own (the reference rounds twice; the
// compiler may not fuse an FMA), clamped to [clamp[0], clamp[1]] when clamp is not null.
inline float output_value(int32_t dot, float scale, float bias, const float* clamp) {
  float y = float(dot) * scale;
  __asm__("" : "+x"(y));
  y += bias;
  if (clamp) {
    y = y < clamp[0] ? clamp[0] : y;  // = std::min(std::max(y, lo), hi)
    y = clamp[1] < y ? clamp[1] : y;
  }
  return y;
}

// One pixel's popcounts pc[0, n) of channels ch0 .. ch0 + n - 1: to the output, or to `raw_row`
// (its pixel-major popcount row) when the pixel is raw.
inline void finish_pixel(const int32_t* pc, int n, const Epilogue& ep, int64_t pix, int64_t ch0, int32_t* raw_row) {
  if (ep.raw && ep.raw[pix]) {
    for (int c = 0; c < n; ++c) raw_row[ch0 + c] = pc[c];
    return;
  }
  if (ep.kind == Output::Int32) {
    int32_t* out = static_cast<int32_t*>(ep.out) + pix * ep.ldo + ch0;
    for (int c = 0; c < n; ++c) out[c] = ep.k - 2 * pc[c];
    return;
  }
  uint32_t word = 0;
  float* out = static_cast<float*>(ep.out) + pix * ep.ldo + ch0;
  for (int c = 0; c < n; ++c) {
    const float y = output_value(ep.k - 2 * pc[c], ep.scale[ch0 + c], ep.bias[ch0 + c], ep.clamp);
    if (ep.kind == Output::Float) out[c] = y;
    word |= uint32_t(y < 0.0f) << c;
  }
  if (ep.kind == Output::Bits) static_cast<uint32_t*>(ep.out)[pix * ep.ldo + ch0 / 32] = word;
}

// Consecutive channels from ch[0] in a panel (0 when they are not): the fused output's precondition.
inline int consecutive_channels(const uint32_t* ch) {
  int n = 0;
  while (n < kPanelWidth && ch[n] != kNoChannel && ch[n] == ch[0] + uint32_t(n)) ++n;
  for (int c = n; c < kPanelWidth; ++c)
    if (ch[c] != kNoChannel) return 0;
  return n;
}

// The popcounts of a tile of MR pixels, buf[r][c] for pixel pix0 + r and panel column c, to
// P[ch[c] * ldc + r * ldp] for every listed channel.
template <int MR>
inline void scatter_tile(const int32_t (*buf)[kPanelWidth], const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp) {
  for (int c = 0; c < kPanelWidth; ++c) {
    if (ch[c] == kNoChannel) continue;
    int32_t* dst = p + int64_t(ch[c]) * ldc;
    for (int r = 0; r < MR; ++r) dst[r * ldp] = buf[r][c];
  }
}

// The end of such a tile in the kernels without a vector epilogue: the fused output with `ep`, else
// the scatter.
template <int MR>
inline void finish_tile(const int32_t (*buf)[kPanelWidth], const uint32_t* ch, const Epilogue* ep, int64_t pix0,
                        int32_t* p, int64_t ldc, int64_t ldp) {
  if (ep) {
    const int n = consecutive_channels(ch);
    for (int r = 0; r < MR; ++r) finish_pixel(buf[r], n, *ep, pix0 + r, ch[0], p + r * ldp);
    return;
  }
  scatter_tile<MR>(buf, ch, p, ldc, ldp);
}

}  // namespace
}  // namespace xnorm::bconv
