// Convolution and fused Conv + BatchNorm on the GPU: the entry points of the function table (see
// native/include/xnorm_cuda.h).
#pragma once
#include "../../native/include/xnorm_cuda.h"

namespace xnorm_cuda {

int32_t conv_fold(int32_t device, int64_t cout, int64_t patch, const void* w, int32_t w_dtype, const float* bias,
                  const xnorm_cuda_bn* bn, float* w_out, float* b_out, float* s_out, xnorm_cuda_status* st);
int32_t conv_forward(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                     const float* bias, const xnorm_cuda_bn* bn, void* y, float* s_out, uint32_t* mask_out, void* z_out,
                     xnorm_cuda_status* st);
int32_t conv_backward(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                      const float* bias, const xnorm_cuda_bn* bn, const float* s, const uint32_t* mask, const void* z,
                      const void* y, const void* dy, const xnorm_cuda_conv_grads* out, xnorm_cuda_status* st);

}  // namespace xnorm_cuda
