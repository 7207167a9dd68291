// BN statistics on the GPU: the entry points of the function table (see native/include/xnorm_cuda.h).
#pragma once
#include "../../native/include/xnorm_cuda.h"

namespace xnorm_cuda {

int32_t bnstats_moments(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g, int32_t over,
                        int64_t groups, double* mean_host, double* m2_host, float* mean_f32, float* m2_f32,
                        int64_t* count_out, xnorm_cuda_status* st);

int32_t bnstats_batch_norm(int32_t device, const void* x, void* y, int32_t dtype, const xnorm_cuda_geometry* g,
                           int32_t per_instance, const float* mean, const float* mean_lo, const float* scale,
                           const float* beta, int32_t relu, xnorm_cuda_status* st);

}  // namespace xnorm_cuda
