// BN statistics on the CPU: moments per channel / instance / group, and BN apply.
#pragma once
#include <cstdint>
#include <vector>

#include "../common/dtype.h"

namespace xnorm::bnstats {

enum class Layout { NCHW, NHWC };
enum class Over { Channel, Instance, Group };

// x viewed as [N, C, S] (nchw) or [N, S, C] (nhwc), S = product of the spatial dims (1 for rank 2).
struct Geometry {
  int64_t n = 0, c = 0, s = 0;
  Layout layout = Layout::NCHW;
};
Geometry geometry(const std::vector<int64_t>& shape, Layout layout);

struct Moments {
  double count = 0, mean = 0, m2 = 0;
};
// Chan et al.'s pairwise update: exact in exact arithmetic for any split of the data.
Moments merge(const Moments& a, const Moments& b);

// Number of output slots: C, N*C or N*groups.
int64_t moment_slots(const Geometry& g, Over over, int64_t groups);

// One pass over x. Writes mean and m2 (sum of squared deviations) per slot in double, so that merging
// many parts later loses nothing, and returns the element count per slot. Deterministic: the split
// into tasks depends only on the shape.
int64_t moments(const void* x, DType dtype, const Geometry& g, Over over, int64_t groups, double* mean_out,
                double* m2_out);

// y = act((x - mean) * scale + beta) with per-channel (stats_per_instance = false) or per-(n, c)
// coefficients, scale = gamma / sqrt(var + eps) computed by the caller in double, and the mean given
// as a float32 pair mean + mean_lo.
void apply(const void* x, void* y, DType dtype, const Geometry& g, bool stats_per_instance, const float* mean,
           const float* mean_lo, const float* scale, const float* beta, bool relu);

// The reference: double accumulation, two passes, no SIMD, no threads. Tests compare against it.
int64_t moments_reference(const void* x, DType dtype, const Geometry& g, Over over, int64_t groups,
                          double* mean_out, double* m2_out);

}  // namespace xnorm::bnstats
