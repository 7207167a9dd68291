// Per-ISA kernels for convolution. Each kernels_<isa>.cc fills one table from the shared, ISA-neutral
// code in kernels_impl.h plus its own GEMM micro-kernel; active_kernels() picks a table with active_isa().
#pragma once
#include <cstdint>

namespace xnorm::convbn {

// Geometry of one image and one group as seen by the kernels: input planes [c, h, w] (NCHW, float32),
// kernel [kh, kw], output [oh, ow].
struct Window {
  int64_t c = 0, h = 0, w = 0, kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, oh = 0, ow = 0;
  // Elements from one image to the next. The im2col operands number output pixels across images
  // (pixel p is image p / (oh*ow)), so small feature maps of a whole batch make one wide GEMM.
  int64_t image_stride = 0;
  // Channels-last operands (Im2colNhwc): elements from one pixel to the next (the tensor's channels).
  int64_t pixel_stride = 0;
};

// The K order of the channels-last GEMM (Im2colNhwc, WeightsT, prepared channels-last weights): the
// channels in blocks of kNhwcBlock (the last one may be narrower), each block tap-major, k = (block, ky,
// kx, channel in block). A block's patch entries are runs of up to kNhwcBlock contiguous channels of x,
// and its weights one contiguous run of each [cin, kh, kw] filter, so that the weights can be packed a
// K slice at a time straight from w (Tune: W * s on every call) with each weight read once.
constexpr int64_t kNhwcBlock = 32;

// Row k of a channels-last K order over c channels and taps taps: its tap and channel, and how many
// rows from k on are the following channels of that tap (contiguous in x).
inline void nhwc_k(int64_t k, int64_t c, int64_t taps, int64_t& tap, int64_t& ci, int64_t& run) {
  if (taps == 1) {  // one tap: the blocks follow each other, one run to the last channel
    tap = 0, ci = k, run = c - k;
    return;
  }
  const int64_t c0 = k / (taps * kNhwcBlock) * kNhwcBlock, width = c - c0 < kNhwcBlock ? c - c0 : kNhwcBlock;
  const int64_t r = k - c0 * taps, cl = r % width;
  tap = r / width;
  ci = c0 + cl;
  run = width - cl;
}

// The inverse: the row of (tap, ci).
inline int64_t nhwc_row(int64_t tap, int64_t ci, int64_t c, int64_t taps) {
  const int64_t c0 = ci / kNhwcBlock * kNhwcBlock, width = c - c0 < kNhwcBlock ? c - c0 : kNhwcBlock;
  return c0 * taps + tap * width + (ci - c0);
}

// Visits one [cin, kh, kw] filter's entries in the channels-last K order: f(ci * taps + tap) for k = 0,
// 1, ... (weights_to_ohwi reads a filter so, and the channels-last dW's reorder writes one back).
template <typename F>
inline void for_each_nhwc_k(int64_t c, int64_t taps, F&& f) {
  for (int64_t c0 = 0; c0 < c; c0 += kNhwcBlock)
    for (int64_t tap = 0; tap < taps; ++tap)
      for (int64_t ci = c0; ci < c && ci < c0 + kNhwcBlock; ++ci) f(ci * taps + tap);
}

// The output row (or column) that reads input row i through tap row k, or -1 where none does: the
// gathers of the channels-last backward-data passes work these out per row and per column, not per pixel.
inline int64_t output_reading(int64_t i, int64_t k, int64_t pad, int64_t dil, int64_t stride, int64_t out) {
  const int64_t n = i + pad - k * dil;  // = o * stride for the output o that reads i
  return n < 0 || n % stride != 0 || n / stride >= out ? -1 : n / stride;
}

// A GEMM operand. Strided: element (r, k) at p[r * rs + k * cs]. The im2col kinds read the patch matrix
// of one image without materialising it: Im2col is [c*kh*kw, oh*ow] (row = (channel, ky, kx), column =
// output pixel), Im2colT is its transpose. x points at channel 0 of the image/group, planes h*w apart.
// Im2colNhwc is the patch matrix of a channels-last x, [kh*kw*c, pixels] with rows in the channels-last
// K order (kNhwcBlock), so that each pixel's column is runs of contiguous channels; as A it is read
// transposed, [pixels, kh*kw*c] (row scales do not apply). Im2colNhwcT (B only) is that transpose as B,
// [pixels, kh*kw*c]: row k is pixel k's patch (the channels-last weight gradient's operand). WeightsT (B only) is conv weights
// [n, c, kh, kw] (filters cs apart, c and kh, kw from win) read as [kh*kw*c, n] in that K order, column j
// multiplied by col_scale[j] when given.
struct Operand {
  enum Kind { Strided, Im2col, Im2colT, Im2colNhwc, Im2colNhwcT, WeightsT } kind = Strided;
  const float* p = nullptr;
  int64_t rs = 0, cs = 0;
  Window win;
  // A: element (r, k) is multiplied by row_scale[r] or col_scale[k] while packing; B: element (k, j) by
  // col_scale[j] (WeightsT) or row_scale[k] (Strided with cs = 1). Tune mode folds its per-channel BN scale
  // into the weights this way, without a folded copy of the weights.
  const float* row_scale = nullptr;
  const float* col_scale = nullptr;
  // The operand already packed (prepared conv weights): A by Kernels::pack_weights, B by
  // Kernels::pack_weights_b; gemm reads its panels as they are instead of packing p.
  const float* packed = nullptr;
};

// Caller's work on a finished block of C, rows [i0, i0 + rows) x columns [j0, j0 + cols), run by the
// thread that summed it right after its micro-kernels, while the block is in cache. Blocks are at most
// mr rows, never overlap, depend only on the sizes (never the thread count), and every j0 is a
// multiple of the micro-tile width nr. The block after one is usually rows [i0 + rows, ...), same columns.
struct Epilogue {
  virtual void operator()(int64_t i0, int64_t rows, int64_t j0, int64_t cols) const = 0;

 protected:
  ~Epilogue() = default;
};

// C[m, n] (row stride ldc) = A[m, k] * B[k, n], or C += when accumulate; then, only on the full sum,
// C += bias_row[i] per row, max(C, 0) when relu, then the epilogue. A must be Strided.
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  Operand a, b;
  float* c = nullptr;
  int64_t ldc = 0;
  const float* bias_row = nullptr;
  bool relu = false;
  bool accumulate = false;
  const Epilogue* epilogue = nullptr;
};

// Winograd F(m x m, 3x3) forward (m = tile: 2 or 4) of a 3x3, stride-1, dilation-1, ungrouped convolution, float32 NCHW (or NHWC):
// y [n, cout, oh, ow] = act(conv(x [n, c, h, w], wt * w_scale) + bias), wt [cout, c, 3, 3]; w_scale and
// bias (per output channel) may be null.
struct WinogradProblem {
  int64_t n = 0, c = 0, h = 0, w = 0, ph = 0, pw = 0, oh = 0, ow = 0, cout = 0;
  const float* x = nullptr;
  const float* wt = nullptr;
  const float* w_scale = nullptr;
  const float* bias = nullptr;
  bool relu = false;
  float* y = nullptr;
  // Output tile side m of F(m x m, 3x3): 2 or 4.
  int tile = 2;
  // Optional: wt already transformed by Kernels::winograd_weights for this tile (prepared conv weights, w_scale null).
  const float* u = nullptr;
  // x [n, h, w, c] and y [n, oh, ow, cout] channels-last instead of NCHW (winograd_rows_forward reads only
  // channels-last x).
  bool x_nhwc = false, y_nhwc = false;
};

struct Kernels {
  // Runs `count` independent problems as one parallel job over output tiles. Task boundaries depend
  // only on the problem sizes, and each C element is summed in a fixed order, so the result does not
  // depend on the thread count.
  void (*gemm)(const GemmProblem* problems, int64_t count);
  // The (m+2)^2 transformed-domain products run on the GEMM micro-kernel; bias and ReLU are applied in the
  // output transform. Task boundaries depend only on the sizes, as for gemm.
  void (*winograd_forward)(const WinogradProblem& P);
  // Prepared weights. pack_weights: w [m, k] (row-major) into the GEMM's A panels, the layout gemm packs
  // A into on every call (packed_floats(m, k) floats). winograd_weights: wt [cout, c, 3, 3] transformed
  // for winograd_forward with output tiles tile x tile (winograd_floats(cout, c, tile) floats).
  void (*pack_weights)(const float* w, int64_t m, int64_t k, float* dst);
  int64_t (*packed_floats)(int64_t m, int64_t k);
  // The same as a B operand in the channels-last K order: B [k, n] with element (nhwc_row(tap, ci), j)
  // = w[(j * cin + ci) * taps + tap] * scale[j] (w as given, [n, cin, kh, kw] with taps = kh * kw; scale
  // null: 1), in the panels gemm reads as Operand::packed (panel-major: columns from j0, K slice p0 at j0 * k + p0 * NR);
  // packed_b_floats(k, n). One parallel pass that reads w once (prepared weights; Tune packs W * s per
  // task instead, as Operand::WeightsT).
  void (*pack_weights_b)(const float* w, const float* scale, int64_t taps, int64_t k, int64_t n, float* dst);
  int64_t (*packed_b_floats)(int64_t k, int64_t n);
  void (*winograd_weights)(const float* wt, int64_t cout, int64_t c, int tile, float* u);
  int64_t (*winograd_floats)(int64_t cout, int64_t c, int tile);
  // The same Winograd forward with the tiles as the GEMM's rows (winograd_rows_impl.h): P.u made by
  // winograd_rows_weights (winograd_rows_floats(cout, c) floats, 64-byte aligned), or null: then U is
  // made from P.wt (times P.w_scale) per call, panel by panel, with the same bits.
  void (*winograd_rows_forward)(const WinogradProblem& P);
  void (*winograd_rows_weights)(const float* wt, int64_t cout, int64_t c, float* u);
  int64_t (*winograd_rows_floats)(int64_t cout, int64_t c);
  // Depthwise-style direct kernels (one input channel per group). One output plane of one image:
  // y[oh, ow] = act(bias + sum_{ky,kx} wt[ky, kx] * x[iy, ix]); x is one input plane.
  void (*direct_forward_plane)(const float* x, const float* wt, float bias, bool relu, float* y, const Window& g);
  // The same for `planes` output planes of one image, channels [c0, c0 + planes), output rows [oy0,
  // oy1): output channel co reads input plane co / m (m: the channel multiplier) of x, the image's
  // planes h*w apart; y planes oh*ow apart, wt [planes][kh*kw], bias [planes]. The same sums, made VW
  // planes at a time.
  void (*direct_forward_planes)(const float* x, int64_t c0, int64_t m, const float* wt, const float* bias, bool relu,
                                float* y, const Window& g, int64_t planes, int64_t oy0, int64_t oy1);
  // The same on channels-last float32 (depthwise: one input channel per output channel, c of them), for
  // output rows [r0, r1) of n * oh numbered across images: y[.., ch] = act(bias[ch] + sum over taps of
  // wt[tap * c + ch] * x[.., ch]), wt tap-major. Per element the same sum, in the same order, as the plane kernel.
  void (*direct_forward_nhwc)(const float* x, const float* wt, const float* bias, bool relu, float* y, const Window& g,
                              int64_t r0, int64_t r1);
  // dx_plane += sum over taps of wt * dy_plane scattered back (the transpose of the above).
  void (*direct_backward_data_plane)(const float* dy, const float* wt, float* dx, const Window& g);
  // dwt[ky, kx] += sum over pixels of dy * x (float accumulation per plane).
  void (*direct_backward_filter_plane)(const float* x, const float* dy, double* dwt, const Window& g);
  // The transpose of direct_forward_nhwc on channels-last dy and dx: dx rows [r0, r1) (n * h numbered
  // across images), each pixel's channels = the sum, tap by tap, of wt[tap * c + ch] * dy at the output
  // pixel reading it through that tap (overwrites dx). cols[ix * kw + kx]: output_reading of column ix
  // through tap column kx.
  void (*direct_backward_data_nhwc)(const float* dy, const float* wt, const int64_t* cols, float* dx, const Window& g,
                                    int64_t r0, int64_t r1);
  // The weight gradient on one channels-last image: dwt[tap * c + ch] += sum over its output rows [oy0,
  // oy1) of dy * x through that tap, for channels [c0, c1) (float per output row, double across rows).
  void (*direct_backward_filter_nhwc)(const float* x, const float* dy, double* dwt, const Window& g, int64_t c0, int64_t c1,
                                      int64_t oy0, int64_t oy1);
  // dx planes [c, h, w] = col2im(dcol) for channels [c0, c1) (overwrites dx). dcol holds this image's
  // [c*kh*kw, oh*ow] block with row stride ld.
  void (*col2im)(const float* dcol, int64_t ld, float* dx, const Window& g, int64_t c0, int64_t c1);
  // ReLU state: mask bit i = (y[i] > 0) over [0, n); and its use in backward: x[i] = 0 where bit i is clear.
  void (*relu_mask)(const float* y, int64_t n, uint32_t* mask);
  void (*apply_mask)(float* x, int64_t n, const uint32_t* mask);
  // Runs `iters` rounds of independent FMA chains; returns the float32 FLOPs done (2 per lane per FMA).
  double (*fma_loop)(int64_t iters);
  int mr, nr;  // micro-tile of the GEMM, for reports
};

const Kernels& kernels_portable();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_neon();  // aarch64 builds only
// The table for this CPU, by active_isa() (algorithm.cc).
const Kernels& active_kernels();

}  // namespace xnorm::convbn
