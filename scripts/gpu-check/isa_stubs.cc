// For the GPU check on hosts that are not x86-64 (e.g. Grace): the x86 SIMD kernel tables fall back
// to the portable ones, which is what the core's dispatch picks there anyway.
#include "../../native/core/bnstats/kernels.h"
#include "../../native/core/convbn/kernels.h"

namespace xnorm::bnstats {
const Kernels& kernels_avx2() { return kernels_portable(); }
const Kernels& kernels_avx512() { return kernels_portable(); }
}  // namespace xnorm::bnstats

namespace xnorm::convbn {
const Kernels& kernels_avx2() { return kernels_portable(); }
const Kernels& kernels_avx512() { return kernels_portable(); }
}  // namespace xnorm::convbn
