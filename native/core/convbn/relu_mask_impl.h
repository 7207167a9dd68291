// Part of kernels_impl.h (see there): the 1-bit ReLU state, written in forward and applied in backward,
// from the ISA's positive_bits and keep_bits.
#pragma once
#include <cstdint>

namespace xnorm::convbn::XNORM_CONVBN_NS {

void relu_mask(const float* y, int64_t n, uint32_t* mask) {
  const int64_t full = n / 32;
  for (int64_t w = 0; w < full; ++w) mask[w] = positive_bits(y + 32 * w);
  if (n % 32) {
    uint32_t bits = 0;
    for (int64_t i = full * 32; i < n; ++i) bits |= uint32_t(y[i] > 0) << (i % 32);
    mask[full] = bits;
  }
}

void apply_mask(float* x, int64_t n, const uint32_t* mask) {
  const int64_t full = n / 32;
  for (int64_t w = 0; w < full; ++w) keep_bits(x + 32 * w, mask[w]);
  for (int64_t i = full * 32; i < n; ++i)
    if (!((mask[full] >> (i % 32)) & 1u)) x[i] = 0;
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
