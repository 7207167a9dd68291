// ISA-neutral convolution kernels, gathered into one table: the GEMM driver and packing (gemm_impl.h),
// the im2col gather and col2im (im2col_impl.h), the direct plane kernels (direct_impl.h), Winograd
// (winograd_impl.h, winograd_rows_impl.h) and the ReLU masks (relu_mask_impl.h). Each kernels_<isa>.cc includes this file
// once, after defining, inside namespace xnorm::convbn::XNORM_CONVBN_NS, a `Micro` struct: the
// register-tiled micro-kernel and the blocking sizes (and positive_bits, keep_bits, fma_loop). The parts
// are therefore compiled once per instruction set (the plain loops get vectorised for that ISA) and each
// copy lives in its own namespace, so the linker never mixes them.
#include "kernels.h"
// In dependency order, which is also the construction order of the parts' thread_local scratch.
#include "gemm_impl.h"
#include "im2col_impl.h"
#include "direct_impl.h"
#include "winograd_impl.h"
#include "winograd_rows_impl.h"
#include "relu_mask_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

const Kernels& table() {
  static const Kernels k{gemm, winograd_forward, pack_weights, packed_floats, pack_weights_b, packed_b_floats, winograd_weights, winograd_floats,
                         winograd_rows_forward, winograd_rows_weights, winograd_rows_floats,
                         direct_forward_plane, direct_forward_planes, direct_forward_nhwc, direct_backward_data_plane, direct_backward_filter_plane,
                         direct_backward_data_nhwc, direct_backward_filter_nhwc,
                         col2im, relu_mask, apply_mask, fma_loop, Micro::MR, Micro::NR};
  return k;
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
