// Binary convolution on the GPU: the entry point of the function table (see native/include/xnorm_cuda.h).
#pragma once
#include "../../native/include/xnorm_cuda.h"

namespace xnorm_cuda {

int32_t binary_conv2d(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* p,
                      const float* scale, const float* bias, void* out, xnorm_cuda_status* st);
int32_t binary_conv2d_mst(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* p,
                          xnorm_cuda_mst* plan, const float* scale, const float* bias, void* out, xnorm_cuda_status* st);
int32_t pack_bits(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g, const float* thresholds,
                  float threshold, uint32_t* out, xnorm_cuda_status* st);
int32_t unpack_bits(int32_t device, const uint32_t* b, const xnorm_cuda_geometry* g, float* out, xnorm_cuda_status* st);

}  // namespace xnorm_cuda
