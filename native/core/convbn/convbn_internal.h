// Internals shared by the files of the Conv + BN driver (not part of convbn.h).
#pragma once
#include <cstdint>
#include <vector>

#include "../common/dtype.h"
#include "convbn.h"
#include "kernels.h"

namespace xnorm::convbn {

// Elements per task for the memory-bound passes (conversion, masks, reductions).
constexpr int64_t kTaskElements = 1 << 15;

inline int64_t chunk_for(int64_t unit) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, unit)); }

// Per-thread scratch kept between calls (workspace.cc), one slot per purpose.
enum Slot { kColumns, kBatched, kWeightGrad, kDy, kInput, kOutput, kConvOut, kWeights, kExpanded, kSlots };
float* workspace(Slot slot, int64_t size);

// Activation conversion between the caller's (dtype, layout) and float32 NCHW (convert.cc); a converted
// copy lives in the workspace slot given.
void convert_to_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, float* dst);
const float* input_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, Slot slot);
float* output_f32(DType dt, Layout layout, void* dst, int64_t size, Slot slot);
void store_output(DType dt, Layout layout, const float* src, int64_t n, int64_t c, int64_t s, void* dst);

// Which path a convolution takes (algorithm.cc).
bool pointwise(const ConvShape& g);
bool direct(const ConvShape& g);
bool backward_as_is(const ConvShape& g);
bool winograd(const ConvShape& g);
// Output tile side of the Winograd path: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); 0 where it does not apply.
// raw_weights: W is transformed on this call (not prepared), which moves the choice (winograd_rows).
int winograd_tile(const ConvShape& g, bool raw_weights);
bool winograd_rows(const ConvShape& g, bool raw_weights);
// Backward-data of a stride-1 conv as the forward conv t of dy (algorithm.cc).
bool data_as_forward(const ConvShape& g, ConvShape& t);
bool span_images(const ConvShape& g);
// Channels-last forward without transposes: depthwise with one output channel per input channel, and
// every GEMM-path convolution (not Winograd).
bool nhwc_native(const ConvShape& g);
// Channels-last depthwise with a channel multiplier: forward_nhwc expands the input rows of each band of
// kMultiplierBand output rows; multiplier_band_rows(g) input rows of w * cout floats per thread.
constexpr int64_t kMultiplierBand = 16;
int64_t multiplier_band_rows(const ConvShape& g);
bool nhwc_multiplier(const ConvShape& g);
bool nchw_via_nhwc(const ConvShape& g);
bool nchw_x_as_is(const ConvShape& g);
bool nhwc_depthwise(const ConvShape& g);
bool direct_planes(const ConvShape& g);

// w [cout, cin_g, kh, kw] with each filter reordered to the K order of the channels-last GEMM
// (kNhwcBlock: channel blocks, each (ky, kx, ci); Operand::Im2colNhwc).
void weights_to_ohwi(const ConvShape& g, const float* w, float* dst);
// The channels-last GEMM with pixels as its M (few pixels: deep layers at small batch; prepared weights).
bool pixels_as_rows(const ConvShape& g);
// XNORM_DEBUG: logs the forward path, once per call shape (and whether the weights are prepared).
void debug_forward(const ConvShape& g, bool prepared);

// A tensor shaped like g's output (dy, y, z) as float32 in the layout the backward passes read: its own
// where backward_as_is(g), else NCHW (conv_passes.cc).
const float* backward_input(const ConvShape& g, DType dt, const void* t, Slot slot);
// That conversion into dst.
void backward_convert(const ConvShape& g, DType dt, const void* t, float* dst);

// dw = conv_backward_filter(x, dy32) and dx = conv_backward_data(dy32, w * w_scale) in the caller's dtype
// and layout, each when wanted (conv_passes.cc); dy32 as backward_input gives it. With `epi` (one per
// group), the GEMM paths run it on each finished block of dw and the result is true.
bool conv_grads(const ConvShape& g, DType dt, const void* x, const float* w, const float* w_scale, const float* dy32,
                void* dx, float* dw, const Epilogue* const* epi = nullptr);

}  // namespace xnorm::convbn
