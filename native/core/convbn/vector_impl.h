// Part of kernels_impl.h (see there): VecF, a GCC/Clang vector of VW floats, so that one source becomes
// zmm, ymm or xmm code in each ISA's translation unit (the direct kernels and the Winograd transforms).
#pragma once
#include <cstdint>
#include <cstring>

namespace xnorm::convbn::XNORM_CONVBN_NS {

typedef float VecF __attribute__((vector_size(Micro::VW * sizeof(float))));

inline VecF loadu(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
