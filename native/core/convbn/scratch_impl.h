// Part of kernels_impl.h (see there): per-thread scratch for the kernels.
#pragma once
#include <cstdlib>
#include <new>

namespace xnorm::convbn::XNORM_CONVBN_NS {

// Grow-only 64-byte aligned scratch, one per thread and purpose.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t count) {
    if (count > n) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64));
      n = p ? count : 0;
      if (!p) throw std::bad_alloc();
    }
    return p;
  }
};

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
