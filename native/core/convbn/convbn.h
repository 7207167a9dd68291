// Convolution and fused Conv + BatchNorm (Tune, Eval and Deploy modes) on the CPU.
//
// Activations (x, y, dy, dx, the Eval-mode conv output z) are float32, float16 or bfloat16 in the
// caller's layout; weights, biases, BN parameters and parameter gradients are float32. Internally
// everything runs in float32 NCHW: half-precision or NHWC tensors are converted on the way in and out.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "../common/dtype.h"

namespace xnorm::convbn {

enum class Layout { NCHW, NHWC };

struct ConvShape {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t cout = 0, kh = 0, kw = 0;    // weight [cout, c / groups, kh, kw]
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  int64_t oh = 0, ow = 0;
  Layout layout = Layout::NCHW;

  int64_t cin_g() const { return c / groups; }
  int64_t cout_g() const { return cout / groups; }
  int64_t patch() const { return cin_g() * kh * kw; }  // GEMM K of the forward pass
  int64_t x_size() const { return n * c * h * w; }
  int64_t y_size() const { return n * cout * oh * ow; }
  int64_t w_size() const { return cout * patch(); }
  std::vector<int64_t> y_shape() const;
};

// Checks every size and returns the geometry; fails with ERR_XNORM_SHAPE / ERR_XNORM_ARGUMENT naming the
// offending argument. stride, padding, dilation are {h, w}.
ConvShape conv_shape(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape, const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2], int64_t groups, Layout layout);

// y = act(conv(x, w) + bias). bias may be null. relu_mask (optional, ceil(y_size/32) words) receives
// bit i = (y_i > 0) for the elements in y's storage order, the 1-bit state ReLU's backward needs.
// w_scale (optional, per output channel) multiplies the weights as they are packed for the GEMM (or
// transformed, on the Winograd path for 3x3 stride-1 layers).
void conv_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, bool relu, void* y,
                  uint32_t* relu_mask, const float* w_scale = nullptr);

// Weights prepared once for many forward convolutions (inference): a float32 copy, the GEMM panels of
// every group in the active micro-kernel's layout, and the Winograd-transformed weights, made on the
// first call that takes that path. A plain conv with them is bit-identical to one with the raw weights
// and repacks nothing (Winograd with the tiles as rows included: raw weights make the same panels per
// call, see winograd_rows in algorithm.cc). Calls may share one at once: nothing changes once made (the Winograd and
// channels-last parts are made once, under a lock).
class PreparedWeights {
 public:
  // w: float32 [cout, cin_g, kh, kw]; groups divides cout (conv_shape checks the rest against x).
  PreparedWeights(const float* w, int64_t cout, int64_t cin_g, int64_t kh, int64_t kw, int64_t groups);

  const int64_t cout, cin_g, kh, kw, groups;
  const float* weights() const { return w_.data(); }
  // Group gr's A panels; null where the conv runs direct loops (one input channel per group).
  const float* panels(int64_t group) const;
  // For winograd_forward (3x3, ungrouped) with output tiles tile x tile (2 or 4); made on the first call.
  const float* winograd(int tile) const;
  // Group gr's A panels for the channels-last GEMM (its K order, kNhwcBlock); made on the first call.
  const float* nhwc_panels(int64_t group) const;
  // The same weights as the B panels of the transposed channels-last GEMM (few pixels); made on first call.
  const float* nhwc_b_panels(int64_t group) const;
  // For winograd_rows_forward (3x3, ungrouped); made on the first call.
  const float* winograd_rows() const;
  // Host memory held now.
  int64_t bytes() const;

 private:
  std::vector<float> w_, panels_;
  int64_t group_floats_ = 0;
  mutable std::mutex lazy_mutex_;
  mutable std::vector<float> winograd_, winograd4_, winograd_rows_, nhwc_panels_, nhwc_b_panels_;
  // The weights in the channels-last GEMM's K order, which both channels-last forms are packed from: made
  // for the packing and dropped, not kept beside the packed forms.
  std::vector<float> ohwi() const;
};

struct BnParams {
  const float* mean = nullptr;
  const float* var = nullptr;
  const float* gamma = nullptr;  // null = ones
  const float* beta = nullptr;   // null = zeros
  double eps = 1e-5;
};

// y = act(conv(x, w) + bias) with prepared weights, whose shape and groups conv_shape gave g.
void conv_forward(const ConvShape& g, DType dt, const void* x, const PreparedWeights& w, const float* bias, bool relu,
                  void* y);

// Deploy-mode weights: s = gamma / sqrt(var + eps); w_out = w * s; b_out = (bias - mean) * s + beta.
// s_out (optional) receives s. bias may be null (zeros).
void fold(const ConvShape& g, const float* w, const float* bias, const BnParams& bn, float* w_out, float* b_out,
          float* s_out);

// Tune forward: fold s into the weights (while packing or Winograd-transforming them) and the bias, then
// one convolution with the folded bias and ReLU in the GEMM epilogue or the Winograd output transform.
void tune_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                  bool relu, void* y, float* s_out, uint32_t* relu_mask);

// Eval forward: z = conv(x, w) + bias, then a separate BN (+ReLU) pass. z_out (optional, y's size and
// dtype) keeps the conv output for Eval backward; otherwise z lives in scratch.
void eval_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                  bool relu, void* y, void* z_out);

// Gradient outputs; null = not wanted (its work is skipped). dx has x's dtype and layout, the rest are float32.
struct Grads {
  void* dx = nullptr;
  float* dw = nullptr;
  float* dbias = nullptr;
  float* dgamma = nullptr;
  float* dbeta = nullptr;
};

// Tune backward from the saved x and s (and the ReLU mask when relu was fused), by the formulas of docs/DESIGN.md "Conv and BN".
void tune_backward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                   const float* s, const uint32_t* relu_mask, const void* dy, const Grads& out);

// Eval backward through ReLU (from the saved output y; null when no ReLU), BN (from the saved conv output
// z) and the conv with the unfolded w.
void eval_backward(const ConvShape& g, DType dt, const void* x, const void* z, const void* y, const float* w,
                   const BnParams& bn, const void* dy, const Grads& out);

// Plain references: direct loops, float64 accumulation, no threads; float32 tensors in g.layout.
void conv_reference(const ConvShape& g, const float* x, const float* w, const float* bias, float* y);
void conv_backward_data_reference(const ConvShape& g, const float* dy, const float* w, float* dx);
void conv_backward_filter_reference(const ConvShape& g, const float* x, const float* dy, float* dw);

// Plain conv backward (conv2dBackward): dx = conv_backward_data(dy, w) and dw = conv_backward_filter(x, dy),
// each skipped when its output is null (x is read only for dw, w only for dx). dx has x's dtype and layout.
void conv_backward(const ConvShape& g, DType dt, const void* x, const float* w, const void* dy, void* dx, float* dw);

// The GEMM micro-tile in use, e.g. "8x48 avx512".
std::string micro_tile();

}  // namespace xnorm::convbn
