// Scalar form of the fused output (kernels.h, Epilogue) for the kernels without a vector one.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace xnorm::bconv {

// One pixel's popcounts pc[0, n) of channels ch0 .. ch0 + n - 1: to the output, or to `raw_row`
// (its pixel-major popcount row) when the pixel is raw.
inline void finish_pixel(const int32_t* pc, int n, const Epilogue& ep, int64_t pix, int64_t ch0, int32_t* raw_row) {
  if (ep.raw && ep.raw[pix]) {
    for (int c = 0; c < n; ++c) raw_row[ch0 + c] = pc[c];
    return;
  }
  if (ep.kind == Output::Bits) {
    uint32_t word = 0;
    for (int c = 0; c < n; ++c) word |= uint32_t(pc[c] >= ep.pc_lo[ch0 + c] && pc[c] <= ep.pc_hi[ch0 + c]) << c;
    static_cast<uint32_t*>(ep.out)[pix * ep.ldo + ch0 / 32] = word;
  } else if (ep.kind == Output::Int32) {
    int32_t* out = static_cast<int32_t*>(ep.out) + pix * ep.ldo + ch0;
    for (int c = 0; c < n; ++c) out[c] = ep.k - 2 * pc[c];
  } else {
    float* out = static_cast<float*>(ep.out) + pix * ep.ldo + ch0;
    for (int c = 0; c < n; ++c) {
      float y = float(ep.k - 2 * pc[c]) * ep.scale[ch0 + c];
      __asm__("" : "+x"(y));  // keeps the product rounded: the compiler may not fuse it with the add
      y += ep.bias[ch0 + c];
      if (ep.clamp) {
        y = y < ep.clamp[0] ? ep.clamp[0] : y;  // = std::min(std::max(y, lo), hi)
        y = ep.clamp[1] < y ? ep.clamp[1] : y;
      }
      out[c] = y;
    }
  }
}

// Consecutive channels from ch[0] in a panel (0 when they are not): the fused output's precondition.
inline int consecutive_channels(const uint32_t* ch) {
  int n = 0;
  while (n < kPanelWidth && ch[n] != kNoChannel && ch[n] == ch[0] + uint32_t(n)) ++n;
  for (int c = n; c < kPanelWidth; ++c)
    if (ch[c] != kNoChannel) return 0;
  return n;
}

}  // namespace xnorm::bconv
