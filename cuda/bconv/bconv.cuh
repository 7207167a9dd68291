// Binary convolution on the GPU: the entry point of the function table (see native/include/xnorm_cuda.h).
#pragma once
#include "../../native/include/xnorm_cuda.h"

namespace xnorm_cuda {

int32_t binary_conv2d(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* p,
                      const float* scale, const float* bias, void* out, xnorm_cuda_status* st);

}  // namespace xnorm_cuda
