// The three convolution passes (forward, backward-data, backward-filter) on float32 NCHW and on float32
// NHWC, and the public entry points that convert to and from the caller's dtype and layout around them.
#include <algorithm>
#include <vector>

#include "../common/debug.h"
#include "../common/thread_pool.h"
#include "convbn_internal.h"

namespace xnorm::convbn {
namespace {

// dst[i * M + j] = src[i] for j < M. A constant M lets the compiler vectorize the interleave (the
// runtime-m loop was a scalar store per value: most of a channel-multiplier depthwise conv's cost).
template <int M>
void repeat_each(const float* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i)
    for (int j = 0; j < M; ++j) dst[i * M + j] = src[i];
}

void repeat_each(const float* src, int64_t n, int64_t m, float* dst) {
  switch (m) {
    case 2: return repeat_each<2>(src, n, dst);
    case 3: return repeat_each<3>(src, n, dst);
    case 4: return repeat_each<4>(src, n, dst);
    case 6: return repeat_each<6>(src, n, dst);
    case 8: return repeat_each<8>(src, n, dst);
    default:
      for (int64_t i = 0; i < n; ++i) std::fill_n(dst + i * m, m, src[i]);
  }
}

// dst[i] = the sum of src[i * M + j] for j < M, in j order (its transpose: the multiplier's dx).
template <int M>
void sum_each(const float* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    float total = src[i * M];
    for (int j = 1; j < M; ++j) total += src[i * M + j];
    dst[i] = total;
  }
}

void sum_each(const float* src, int64_t n, int64_t m, float* dst) {
  switch (m) {
    case 2: return sum_each<2>(src, n, dst);
    case 3: return sum_each<3>(src, n, dst);
    case 4: return sum_each<4>(src, n, dst);
    case 6: return sum_each<6>(src, n, dst);
    case 8: return sum_each<8>(src, n, dst);
    default:
      for (int64_t i = 0; i < n; ++i) {
        float total = src[i * m];
        for (int64_t j = 1; j < m; ++j) total += src[i * m + j];
        dst[i] = total;
      }
  }
}

Window window_of(const ConvShape& g) {
  Window win;
  win.c = g.cin_g();
  win.h = g.h; win.w = g.w; win.kh = g.kh; win.kw = g.kw;
  win.sh = g.sh; win.sw = g.sw; win.ph = g.ph; win.pw = g.pw; win.dh = g.dh; win.dw = g.dw;
  win.oh = g.oh; win.ow = g.ow;
  return win;
}

// A channel-multiplier band (forward_nhwc, backward_multiplier_nhwc): the input rows [lo, hi) that output
// rows [oy0, oy1) read, and `win` shifted to run those rows as an image whose output rows are the band's
// (h, oh and ph moved, so that rows outside x are still skipped, not read as zeros).
struct RowBand {
  int64_t lo, hi;
  Window win;
};

RowBand row_band(const ConvShape& g, const Window& win, int64_t oy0, int64_t oy1) {
  const int64_t lo = std::max<int64_t>(0, oy0 * g.sh - g.ph);
  const int64_t hi = std::max(lo, std::min(g.h, (oy1 - 1) * g.sh - g.ph + (g.kh - 1) * g.dh + 1));
  Window band = win;
  band.h = hi - lo, band.oh = oy1 - oy0, band.ph = g.ph + lo - oy0 * g.sh;
  return {lo, hi, band};
}

// [n, cout, ohw] <-> [cout, n * ohw] (the layout of a batch-spanning GEMM operand or result).
void to_batched(const ConvShape& g, const float* src, float* dst, bool inverse) {
  const int64_t ohw = g.oh * g.ow, np = g.n * ohw;
  parallel_for(g.n * g.cout, chunk_for(ohw), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t img = u / g.cout, co = u % g.cout, bat = co * np + img * ohw;
      if (inverse) {
        std::copy(src + bat, src + bat + ohw, dst + u * ohw);
      } else {
        std::copy(src + u * ohw, src + u * ohw + ohw, dst + bat);
      }
    }
  });
}

// One output channel's taps, multiplied by its scale when there is one (into buf).
const float* scaled_taps(const float* w, const float* w_scale, int64_t co, int64_t K, float* buf) {
  if (!w_scale) return w + co * K;
  for (int64_t t = 0; t < K; ++t) buf[t] = w[co * K + t] * w_scale[co];
  return buf;
}

// The Winograd forward (winograd(g)) on float32 x and y in g's layout, with F(tile x tile, 3x3) tiles
// (the tiles-as-rows form, where winograd_rows, is always F(2x2)).
void winograd_f32(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* bias, bool relu,
                  float* y, const PreparedWeights* pre, int tile) {
  WinogradProblem P;
  P.n = g.n; P.c = g.c; P.h = g.h; P.w = g.w; P.ph = g.ph; P.pw = g.pw; P.oh = g.oh; P.ow = g.ow; P.cout = g.cout;
  P.x = x; P.wt = w; P.w_scale = w_scale; P.bias = bias; P.relu = relu; P.y = y;
  P.x_nhwc = P.y_nhwc = g.layout == Layout::NHWC;
  if (winograd_rows(g, pre == nullptr)) {
    if (!P.x_nhwc) {  // its input transform reads a pixel's channels as vectors
      float* xt = workspace(kColumns, g.x_size());
      store_output(DType::Float32, Layout::NHWC, x, g.n, g.c, g.h * g.w, xt);
      P.x = xt, P.x_nhwc = true;
    }
    P.u = pre ? pre->winograd_rows() : nullptr;
    active_kernels().winograd_rows_forward(P);
    return;
  }
  P.tile = tile;
  P.u = pre ? pre->winograd(P.tile) : nullptr;
  active_kernels().winograd_forward(P);
}

// y = act(conv(x, w * w_scale) + bias), all float32 NCHW; w_scale (per output channel) may be null.
// With `pre` (then w = pre->weights() and no w_scale), the GEMM and Winograd paths read its packed weights.
void forward_f32(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* bias, bool relu,
                 float* y, const PreparedWeights* pre = nullptr) {
  const Kernels& k = active_kernels();
  const Window win = window_of(g);
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
  if (direct_planes(g)) {
    // Tasks of kPlanes channels of one image (the kernel interleaves them into vector lanes) and a band
    // of output rows: about kBandWork multiply-adds each, so that large maps of few channels (dw 32@112
    // at batch 1: 2 channel blocks) still give every thread work. From the sizes only.
    constexpr int64_t kPlanes = 16, kBandWork = int64_t(1) << 18;
    const int64_t blocks = (g.cout + kPlanes - 1) / kPlanes, plane_work = kPlanes * ohw * K;
    const int64_t bands = std::max<int64_t>(1, std::min(g.oh, (plane_work + kBandWork - 1) / kBandWork));
    const int64_t band = std::max<int64_t>(1, (g.oh + bands - 1) / bands);
    const int64_t nbands = (g.oh + band - 1) / band;
    parallel_for(g.n * blocks * nbands, chunk_for(kPlanes * band * g.ow * K), [&](int64_t b, int64_t e) {
      float taps[kPlanes * 64], zeros[kPlanes] = {};
      for (int64_t u = b; u < e; ++u) {
        const int64_t img = u / (blocks * nbands), c0 = (u / nbands % blocks) * kPlanes, planes = std::min(kPlanes, g.cout - c0);
        const int64_t oy0 = u % nbands * band, oy1 = std::min(g.oh, oy0 + band);
        const float* wt = w + c0 * K;
        if (w_scale) {
          for (int64_t i = 0; i < planes; ++i) scaled_taps(w, w_scale, c0 + i, K, taps + i * K);
          wt = taps;
        }
        k.direct_forward_planes(x + img * g.c * hw, c0, cout_g, wt, bias ? bias + c0 : zeros, relu, y + (img * g.cout + c0) * ohw,
                                win, planes, oy0, oy1);
      }
    });
    return;
  }
  if (direct(g)) {
    parallel_for(g.n * g.cout, chunk_for(ohw * g.kh * g.kw), [&](int64_t b, int64_t e) {
      std::vector<float> taps(static_cast<size_t>(K));
      for (int64_t u = b; u < e; ++u) {
        int64_t img = u / g.cout, co = u % g.cout, ci = co / cout_g;
        k.direct_forward_plane(x + (img * g.c + ci) * hw, scaled_taps(w, w_scale, co, K, taps.data()),
                               bias ? bias[co] : 0.f, relu, y + u * ohw, win);
      }
    });
    return;
  }
  if (winograd(g)) {
    winograd_f32(g, x, w, w_scale, bias, relu, y, pre, winograd_tile(g, pre == nullptr));
    return;
  }
  if (span_images(g)) {
    const int64_t np = g.n * ohw;
    float* ybat = workspace(kBatched, g.y_size());
    std::vector<GemmProblem> probs(size_t(g.groups));
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = cout_g; P.n = np; P.k = K;
      P.a.p = w + gr * cout_g * K; P.a.rs = K; P.a.cs = 1;
      P.a.row_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      P.a.packed = pre ? pre->panels(gr) : nullptr;
      P.b.kind = Operand::Im2col; P.b.p = x + gr * cin_g * hw; P.b.win = win; P.b.win.image_stride = g.c * hw;
      P.c = ybat + gr * cout_g * np; P.ldc = np;
      P.bias_row = bias ? bias + gr * cout_g : nullptr;
      P.relu = relu;
    }
    k.gemm(probs.data(), g.groups);
    to_batched(g, ybat, y, true);
    return;
  }
  std::vector<GemmProblem> probs(size_t(g.n * g.groups));
  for (int64_t img = 0; img < g.n; ++img)
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(img * g.groups + gr)];
      P.m = cout_g; P.n = ohw; P.k = K;
      P.a.p = w + gr * cout_g * K; P.a.rs = K; P.a.cs = 1;
      P.a.row_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      P.a.packed = pre ? pre->panels(gr) : nullptr;
      const float* xg = x + (img * g.c + gr * cin_g) * hw;
      if (pointwise(g)) {
        P.b.p = xg; P.b.rs = hw; P.b.cs = 1;
      } else {
        P.b.kind = Operand::Im2col; P.b.p = xg; P.b.win = win;
      }
      P.c = y + (img * g.cout + gr * cout_g) * ohw; P.ldc = ohw;
      P.bias_row = bias ? bias + gr * cout_g : nullptr;
      P.relu = relu;
    }
  k.gemm(probs.data(), int64_t(probs.size()));
}

// The weights of data_as_forward's conv: W'[gr * cin_g + ci][co] = W[gr * cout_g + co][ci] * s[co] with
// its taps rotated 180 degrees ([c, cout_g, kh, kw]; w_scale may be null). Blocks of 16 input channels
// per task, so that each filter is read in runs of 16 channels' taps and W' written in 16 runs.
void data_weights(const ConvShape& g, const float* w, const float* w_scale, float* wt) {
  constexpr int64_t kBlock = 16;
  const int64_t taps = g.kh * g.kw, cin_g = g.cin_g(), cout_g = g.cout_g(), blocks = (cin_g + kBlock - 1) / kBlock;
  parallel_for(g.groups * blocks, chunk_for(kBlock * cout_g * taps), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t gr = u / blocks, c0 = u % blocks * kBlock, c1 = std::min(cin_g, c0 + kBlock);
      for (int64_t co = 0; co < cout_g; ++co) {
        const int64_t o = gr * cout_g + co;
        const float sc = w_scale ? w_scale[o] : 1.f;  // x 1 is exact
        for (int64_t ci = c0; ci < c1; ++ci) {
          const float* src = w + (o * cin_g + ci) * taps;
          float* dst = wt + ((gr * cin_g + ci) * cout_g + co) * taps;
          for (int64_t tap = 0; tap < taps; ++tap) dst[taps - 1 - tap] = src[tap] * sc;
        }
      }
    }
  });
}

// dx = conv_backward_data(dy, w * w_scale), float32 NCHW; w_scale (per output channel) may be null.
void backward_data_f32(const ConvShape& g, const float* dy, const float* w, const float* w_scale, float* dx) {
  const Kernels& k = active_kernels();
  const Window win = window_of(g);
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
  if (direct(g)) {
    parallel_for(g.n * g.c, chunk_for(ohw * g.kh * g.kw * cout_g), [&](int64_t b, int64_t e) {
      std::vector<float> taps(static_cast<size_t>(K));
      for (int64_t u = b; u < e; ++u) {
        int64_t img = u / g.c, ci = u % g.c;
        float* plane = dx + u * hw;
        std::fill(plane, plane + hw, 0.f);
        for (int64_t co = ci * cout_g; co < (ci + 1) * cout_g; ++co)
          k.direct_backward_data_plane(dy + (img * g.cout + co) * ohw, scaled_taps(w, w_scale, co, K, taps.data()), plane,
                                       win);
      }
    });
    return;
  }
  ConvShape t;
  if (data_as_forward(g, t) && winograd(t)) {  // see algorithm.cc (g is NCHW here: see backward_as_is)
    float* wt = workspace(kWeights, g.w_size());  // the forward Winograd of NCHW float32 leaves this slot alone
    data_weights(g, w, w_scale, wt);
    winograd_f32(t, dy, wt, nullptr, nullptr, false, dx, nullptr, 2);
    return;
  }
  // dcol = W_g^T dy_g per group (A = W_g read transposed), then col2im; 1x1 writes dx directly.
  std::vector<GemmProblem> probs(size_t(g.groups));
  if (span_images(g)) {
    const int64_t np = g.n * ohw;
    float* dybat = workspace(kBatched, g.y_size());
    float* dcol = workspace(kColumns, g.groups * K * np);
    to_batched(g, dy, dybat, false);
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = K; P.n = np; P.k = cout_g;
      P.a.p = w + gr * cout_g * K; P.a.rs = 1; P.a.cs = K;
      P.a.col_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      P.b.p = dybat + gr * cout_g * np; P.b.rs = np; P.b.cs = 1;
      P.c = dcol + gr * K * np; P.ldc = np;
    }
    k.gemm(probs.data(), g.groups);
    parallel_for(g.n * g.c, chunk_for(hw * g.kh * g.kw), [&](int64_t b, int64_t e) {
      for (int64_t u = b; u < e; ++u) {
        int64_t img = u / g.c, ci = u % g.c, gr = ci / cin_g, local = ci % cin_g;
        k.col2im(dcol + gr * K * np + img * ohw, np, dx + (img * g.c + gr * cin_g) * hw, win, local, local + 1);
      }
    });
    return;
  }
  float* dcol = pointwise(g) ? nullptr : workspace(kColumns, g.groups * K * ohw);
  for (int64_t img = 0; img < g.n; ++img) {
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = K; P.n = ohw; P.k = cout_g;
      P.a.p = w + gr * cout_g * K; P.a.rs = 1; P.a.cs = K;
      P.a.col_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      P.b.p = dy + (img * g.cout + gr * cout_g) * ohw; P.b.rs = ohw; P.b.cs = 1;
      if (pointwise(g)) {
        P.c = dx + (img * g.c + gr * cin_g) * hw; P.ldc = hw;
      } else {
        P.c = dcol + gr * K * ohw; P.ldc = ohw;
      }
    }
    k.gemm(probs.data(), g.groups);
    if (pointwise(g)) continue;
    float* dx_img = dx + img * g.c * hw;
    parallel_for(g.c, chunk_for(hw * g.kh * g.kw), [&](int64_t b, int64_t e) {
      for (int64_t ci = b; ci < e; ++ci) {
        int64_t gr = ci / cin_g, local = ci % cin_g;
        k.col2im(dcol + gr * K * ohw, ohw, dx_img + gr * cin_g * hw, win, local, local + 1);
      }
    });
  }
}

// dw = conv_backward_filter(x, dy). With `epi` (one per group, row numbers within the group), the GEMM
// paths run it on each finished block of dw and return true; the direct path and n = 0 return false.
bool backward_filter_f32(const ConvShape& g, const float* x, const float* dy, float* dw,
                         const Epilogue* const* epi = nullptr) {
  const Kernels& k = active_kernels();
  const Window win = window_of(g);
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
  if (direct(g)) {
    parallel_for(g.cout, chunk_for(g.n * ohw * K), [&](int64_t b, int64_t e) {
      std::vector<double> acc(static_cast<size_t>(K));
      for (int64_t co = b; co < e; ++co) {
        std::fill(acc.begin(), acc.end(), 0.0);
        int64_t ci = co / cout_g;
        for (int64_t img = 0; img < g.n; ++img)
          k.direct_backward_filter_plane(x + (img * g.c + ci) * hw, dy + (img * g.cout + co) * ohw, acc.data(), win);
        for (int64_t t = 0; t < K; ++t) dw[co * K + t] = float(acc[size_t(t)]);
      }
    });
    return false;
  }
  if (g.n == 0) {
    std::fill(dw, dw + g.w_size(), 0.f);
    return false;
  }
  // dW_g += dy_g (Cout_g x pixels) * im2col(x_g)^T (pixels x K), image after image in a fixed order.
  std::vector<GemmProblem> probs(size_t(g.groups));
  if (span_images(g)) {
    const int64_t np = g.n * ohw;
    float* dybat = workspace(kBatched, g.y_size());
    to_batched(g, dy, dybat, false);
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = cout_g; P.n = K; P.k = np;
      P.a.p = dybat + gr * cout_g * np; P.a.rs = np; P.a.cs = 1;
      P.b.kind = Operand::Im2colT; P.b.p = x + gr * cin_g * hw; P.b.win = win; P.b.win.image_stride = g.c * hw;
      P.c = dw + gr * cout_g * K; P.ldc = K;
      P.epilogue = epi ? epi[gr] : nullptr;
    }
    k.gemm(probs.data(), g.groups);
    return epi != nullptr;
  }
  for (int64_t img = 0; img < g.n; ++img) {
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = cout_g; P.n = K; P.k = ohw;
      P.a.p = dy + (img * g.cout + gr * cout_g) * ohw; P.a.rs = ohw; P.a.cs = 1;
      const float* xg = x + (img * g.c + gr * cin_g) * hw;
      if (pointwise(g)) {
        P.b.p = xg; P.b.rs = 1; P.b.cs = hw;
      } else {
        P.b.kind = Operand::Im2colT; P.b.p = xg; P.b.win = win;
      }
      P.c = dw + gr * cout_g * K; P.ldc = K;
      P.accumulate = img > 0;
      P.epilogue = epi && img == g.n - 1 ? epi[gr] : nullptr;
    }
    k.gemm(probs.data(), g.groups);
  }
  return epi != nullptr;
}

// Writes each finished block of the channels-last GEMM's C [cout_g, pixels of every image] into y while
// the block is in cache: transposed into NHWC y, or row pieces into NCHW y (pix pixels per image).
struct WriteY final : Epilogue {
  const float* c = nullptr;
  int64_t ldc = 0, cout = 0, co0 = 0, pix = 0;
  bool nchw = false;
  float* y = nullptr;
  void operator()(int64_t i0, int64_t rows, int64_t j0, int64_t cols) const override {
    if (nchw) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = j0; j < j0 + cols;) {
          const int64_t img = j / pix, p = j % pix, run = std::min(pix - p, j0 + cols - j);
          std::copy(c + (i0 + r) * ldc + j, c + (i0 + r) * ldc + j + run, y + (img * cout + co0 + i0 + r) * pix + p);
          j += run;
        }
      return;
    }
    for (int64_t j = j0; j < j0 + cols; ++j) {
      float* dst = y + j * cout + co0 + i0;
      const float* src = c + i0 * ldc + j;
      for (int64_t r = 0; r < rows; ++r) dst[r] = src[r * ldc];
    }
  }
};

// The finished blocks of the transposed GEMM's C [pixels, cout_g]: bias and ReLU, in place (C is NHWC
// y itself) or written transposed into NCHW y.
struct FinishPixelRows final : Epilogue {
  float* c = nullptr;
  int64_t ldc = 0, cout = 0, co0 = 0, pix = 0;
  const float* bias = nullptr;  // the group's, or null
  bool relu = false, nchw = false;
  float* y = nullptr;
  void operator()(int64_t i0, int64_t rows, int64_t j0, int64_t cols) const override {
    if (nchw) {
      // Through a small block read along C's rows and written per channel, so that each channel writes
      // its run of the block's pixels (one image's at a time) from contiguous floats: reading C down its
      // columns was an eighth of pw 1024@7's time at batch 1.
      constexpr int64_t kRows = 16, kCols = 64;
      float t[kCols][kRows];
      for (int64_t r0 = i0; r0 < i0 + rows;) {
        const int64_t img = r0 / pix, p0 = r0 % pix, run = std::min({i0 + rows - r0, pix - p0, kRows});
        for (int64_t jb = j0; jb < j0 + cols; jb += kCols) {
          const int64_t nj = std::min(kCols, j0 + cols - jb);
          for (int64_t r = 0; r < run; ++r) {
            const float* row = c + (r0 + r) * ldc + jb;
            for (int64_t j = 0; j < nj; ++j) {
              float v = bias ? row[j] + bias[jb + j] : row[j];
              t[j][r] = relu && !(v > 0.f) ? 0.f : v;
            }
          }
          for (int64_t j = 0; j < nj; ++j) {
            float* dst = y + (img * cout + co0 + jb + j) * pix + p0;
            for (int64_t r = 0; r < run; ++r) dst[r] = t[j][r];
          }
        }
        r0 += run;
      }
      return;
    }
    for (int64_t r = i0; r < i0 + rows; ++r) {
      float* row = c + r * ldc;
      for (int64_t j = j0; j < j0 + cols; ++j) {
        float v = bias ? row[j] + bias[j] : row[j];
        if (relu) v = v > 0.f ? v : 0.f;
        row[j] = v;
      }
    }
  }
};

// y = act(conv(x, w * w_scale) + bias) on float32 NHWC x and y (nhwc_native(g)). Winograd as it is in
// NCHW, its transforms reading and writing channels-last. Depthwise: direct loops
// over channel vectors. Otherwise one GEMM per group over the pixels of every image: weights (taps in
// (ky, kx, ci) order; `pre`'s panels when prepared) times the channels-last patches, its blocks
// transposed into y as they finish.
void forward_nhwc(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* bias, bool relu,
                  float* y, const PreparedWeights* pre, bool y_nchw = false, bool x_nchw = false) {
  const Kernels& k = active_kernels();
  Window win = window_of(g);
  win.image_stride = g.h * g.w * g.c;
  win.pixel_stride = g.c;
  const int64_t taps = g.kh * g.kw, np = g.n * g.oh * g.ow, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
  if (winograd(g)) {  // its transforms read and write the channels-last tensors as they are
    winograd_f32(g, x, w, w_scale, bias, relu, y, pre, winograd_tile(g, pre == nullptr));
    return;
  }
  if (direct(g)) {
    win.c = g.cout;
    float* wt = workspace(kWeights, (taps + 1) * g.cout);  // taps [tap][cout] (scaled as the plane kernel's), then the bias
    float* b = wt + taps * g.cout;
    for (int64_t co = 0; co < g.cout; ++co) {
      for (int64_t t = 0; t < taps; ++t) wt[t * g.cout + co] = w_scale ? w[co * taps + t] * w_scale[co] : w[co * taps + t];
      b[co] = bias ? bias[co] : 0.f;
    }
    if (g.cout == g.c) {
      parallel_for(g.n * g.oh, chunk_for(g.ow * g.c * taps), [&](int64_t r0, int64_t r1) {
        k.direct_forward_nhwc(x, wt, b, relu, y, win, r0, r1);
      });
      return;
    }
    // Channel multiplier m (output channel co reads input channel co / m): bands of up to kBand output
    // rows of one image; the input rows a band reads are expanded to m copies of each channel (rows of
    // cout values, in this thread's cache), and the same kernel runs on them as an image of those rows.
    constexpr int64_t kBand = kMultiplierBand;
    const int64_t m = g.cout / g.c, span = g.w * g.cout, bands = (g.oh + kBand - 1) / kBand;
    parallel_for(g.n * bands, chunk_for(kBand * (g.ow * g.cout * taps + g.sh * span)), [&](int64_t b0, int64_t b1) {
      float* rows = workspace(kExpanded, multiplier_band_rows(g) * span);
      for (int64_t u = b0; u < b1; ++u) {
        const int64_t img = u / bands, oy0 = u % bands * kBand, oy1 = std::min(g.oh, oy0 + kBand);
        const RowBand band = row_band(g, win, oy0, oy1);
        repeat_each(x + (img * g.h + band.lo) * g.w * g.c, (band.hi - band.lo) * g.w * g.c, m, rows);
        k.direct_forward_nhwc(rows, wt, b, relu, y + (img * g.oh + oy0) * g.ow * g.cout, band.win, 0, oy1 - oy0);
      }
    });
    return;
  }
  if (pixels_as_rows(g)) {
    // Few pixels (deep layers at batch 1): C^T = patches^T W^T, whose M (pixels) wastes at most a few
    // rows of a micro-tile where the usual N (pixels) would waste most of a 48-column one. Raw weights
    // (Tune: W * s) are B as they are ([cout, cin, kh, kw], Operand::WeightsT): each task packs its
    // panels a K slice at a time while they are in cache, reading each weight once (no channels-last
    // copy of W, no packed copy through memory).
    // NCHW y: C is scratch, its rows padded off multiples of 4 KiB (1024 channels put every row of a
    // micro-tile in one L1 set).
    const int64_t ldc = y_nchw ? (g.cout % 1024 == 0 ? g.cout + 16 : g.cout) : g.cout;
    float* cbuf = y_nchw ? workspace(kBatched, np * ldc) : y;
    std::vector<GemmProblem> probs(size_t(g.groups));
    std::vector<FinishPixelRows> epis(size_t(g.groups));
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      FinishPixelRows& e = epis[size_t(gr)];
      P.m = np; P.n = cout_g; P.k = K;
      if (pointwise(g)) {  // the patches are x itself, [pixels, c] (one NCHW image: [c, pixels]), packed as it is
        P.a.p = x + gr * cin_g * (x_nchw ? np : 1); P.a.rs = x_nchw ? 1 : g.c; P.a.cs = x_nchw ? np : 1;
      } else {
        P.a.kind = Operand::Im2colNhwc; P.a.p = x + gr * cin_g; P.a.win = win;
      }
      if (pre) {
        P.b.packed = pre->nhwc_b_panels(gr);
      } else {
        P.b.kind = Operand::WeightsT; P.b.p = w + gr * cout_g * K; P.b.cs = K; P.b.win = window_of(g);
        P.b.col_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      }
      P.c = cbuf + gr * cout_g; P.ldc = ldc;
      e.c = P.c; e.ldc = ldc; e.cout = g.cout; e.co0 = gr * cout_g; e.pix = g.oh * g.ow;
      e.bias = bias ? bias + gr * cout_g : nullptr; e.relu = relu; e.nchw = y_nchw; e.y = y;
      P.epilogue = &e;
    }
    k.gemm(probs.data(), g.groups);
    return;
  }
  const float* wk = w;
  if (!pre) {
    float* r = workspace(kWeights, g.w_size());
    weights_to_ohwi(g, w, r);
    wk = r;
  }
  float* cbuf = workspace(kBatched, g.y_size());
  std::vector<GemmProblem> probs(size_t(g.groups));
  std::vector<WriteY> epis(size_t(g.groups));
  for (int64_t gr = 0; gr < g.groups; ++gr) {
    GemmProblem& P = probs[size_t(gr)];
    WriteY& e = epis[size_t(gr)];
    P.m = cout_g; P.n = np; P.k = K;
    P.a.p = wk + gr * cout_g * K; P.a.rs = K; P.a.cs = 1;
    P.a.row_scale = w_scale ? w_scale + gr * cout_g : nullptr;
    P.a.packed = pre ? pre->nhwc_panels(gr) : nullptr;
    P.b.kind = Operand::Im2colNhwc; P.b.p = x + gr * cin_g; P.b.win = win;
    P.c = cbuf + gr * cout_g * np; P.ldc = np;
    P.bias_row = bias ? bias + gr * cout_g : nullptr;
    P.relu = relu;
    e.c = P.c; e.ldc = np; e.cout = g.cout; e.co0 = gr * cout_g; e.pix = g.oh * g.ow; e.nchw = y_nchw; e.y = y;
    P.epilogue = &e;
  }
  k.gemm(probs.data(), g.groups);
}

// The ReLU mask (bits in y's element order, channels-last) of a channels-last conv computed into a
// float32 NCHW y: the convs forward() runs on NCHW copies.
void build_mask_nhwc(const ConvShape& g, const float* y, uint32_t* mask) {
  const int64_t pix = g.oh * g.ow, size = g.y_size();
  parallel_for((size + 31) / 32, kTaskElements / 32, [&](int64_t b, int64_t e) {
    for (int64_t word = b; word < e; ++word) {
      const int64_t i0 = word * 32, i1 = std::min(size, i0 + 32);
      int64_t img = i0 / (g.cout * pix), p = (i0 / g.cout) % pix, co = i0 % g.cout;
      uint32_t bits = 0;
      for (int64_t i = i0; i < i1; ++i) {
        if (y[(img * g.cout + co) * pix + p] > 0) bits |= uint32_t(1) << (i - i0);
        if (++co == g.cout) {
          co = 0;
          if (++p == pix) p = 0, ++img;
        }
      }
      mask[word] = bits;
    }
  });
}

void build_mask(const float* y, int64_t size, uint32_t* mask) {
  const Kernels& k = active_kernels();
  parallel_for((size + 31) / 32, kTaskElements / 32, [&](int64_t b, int64_t e) {
    k.relu_mask(y + b * 32, std::min(size, e * 32) - b * 32, mask + b);
  });
}

// Both conv_forward forms: caller's dtype and layout around forward_f32, or around forward_nhwc, which
// keeps the layout and converts the dtype only.
void forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* w_scale, const PreparedWeights* pre,
             const float* bias, bool relu, void* y, uint32_t* relu_mask) {
  if (debug_enabled()) debug_forward(g, pre != nullptr);
  if (nhwc_native(g)) {
    const float* x32 = input_f32(dt, Layout::NCHW, x, 1, 1, g.x_size(), kInput);
    float* y32 = output_f32(dt, Layout::NCHW, y, g.y_size(), kOutput);
    if (g.n > 0) forward_nhwc(g, x32, w, w_scale, bias, relu, y32, pre);
    if (relu_mask) build_mask(y32, g.y_size(), relu_mask);
    store_output(dt, Layout::NCHW, y32, 1, 1, g.y_size(), y);
    return;
  }
  if (nchw_via_nhwc(g)) {  // see algorithm.cc: the channels-last GEMM on a channels-last copy of x
    const float* x32 = input_f32(dt, g.layout, x, g.n, g.c, g.h * g.w, kInput);
    const bool x_as_is = nchw_x_as_is(g);
    const float* xt = x32;
    if (!x_as_is) {
      float* copy = workspace(kColumns, g.x_size());
      store_output(DType::Float32, Layout::NHWC, x32, g.n, g.c, g.h * g.w, copy);
      xt = copy;
    }
    float* y32 = output_f32(dt, g.layout, y, g.y_size(), kOutput);
    ConvShape gt = g;
    gt.layout = Layout::NHWC;
    if (g.n > 0) forward_nhwc(gt, xt, w, w_scale, bias, relu, y32, pre, true, x_as_is);
    if (relu_mask) build_mask(y32, g.y_size(), relu_mask);
    store_output(dt, g.layout, y32, g.n, g.cout, g.oh * g.ow, y);
    return;
  }
  const float* x32 = input_f32(dt, g.layout, x, g.n, g.c, g.h * g.w, kInput);
  float* y32 = output_f32(dt, g.layout, y, g.y_size(), kOutput);
  if (g.n > 0) forward_f32(g, x32, w, w_scale, bias, relu, y32, pre);
  if (relu_mask && g.layout == Layout::NHWC) build_mask_nhwc(g, y32, relu_mask);
  else if (relu_mask) build_mask(y32, g.y_size(), relu_mask);
  store_output(dt, g.layout, y32, g.n, g.cout, g.oh * g.ow, y);
}

}  // namespace

void weights_to_ohwi(const ConvShape& g, const float* w, float* dst) {
  const int64_t taps = g.kh * g.kw, cin_g = g.cin_g(), K = g.patch();
  parallel_for(g.cout, chunk_for(K), [&](int64_t b, int64_t e) {
    for (int64_t co = b; co < e; ++co) {  // written in order; one filter's reads stay in L1
      const float* s = w + co * K;
      float* d = dst + co * K;
      for_each_nhwc_k(cin_g, taps, [&](int64_t i) { *d++ = s[i]; });
    }
  });
}

namespace {

// dx and dw of a channels-last 1x1 convolution (stride 1, no padding) on float32 NHWC x, dy and dx
// without transposes (either of dx, dw may be null): per group, dw = dy^T x and dx = dy (W * w_scale), x
// and dx being the patch matrices of their pixels as they are. With `epi`, the dw GEMM runs it on each
// finished block.
void backward_pointwise_nhwc(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* dy,
                             float* dx, float* dw, const Epilogue* const* epi) {
  const int64_t np = g.n * g.oh * g.ow, cin_g = g.cin_g(), cout_g = g.cout_g();
  std::vector<GemmProblem> probs(size_t(g.groups));
  if (dw && np == 0) std::fill(dw, dw + g.w_size(), 0.f);
  if (dw && np > 0) {
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = cout_g; P.n = cin_g; P.k = np;
      P.a.p = dy + gr * cout_g; P.a.rs = 1; P.a.cs = g.cout;
      P.b.p = x + gr * cin_g; P.b.rs = g.c; P.b.cs = 1;
      P.c = dw + gr * cout_g * cin_g; P.ldc = cin_g;
      P.epilogue = epi ? epi[gr] : nullptr;
    }
    active_kernels().gemm(probs.data(), g.groups);
  }
  if (!dx || np == 0) return;
  for (int64_t gr = 0; gr < g.groups; ++gr) {
    GemmProblem& P = probs[size_t(gr)];
    P = GemmProblem();
    P.m = np; P.n = cin_g; P.k = cout_g;
    P.a.p = dy + gr * cout_g; P.a.rs = g.cout; P.a.cs = 1;
    P.b.p = w + gr * cout_g * cin_g; P.b.rs = cin_g; P.b.cs = 1;
    P.b.row_scale = w_scale ? w_scale + gr * cout_g : nullptr;  // W' = W * s row by row, as the NCHW path's A
    P.c = dx + gr * cin_g; P.ldc = g.c;
  }
  active_kernels().gemm(probs.data(), g.groups);
}

// output_reading of each input column through each tap column, [ix * kw + kx]: the channels-last
// backward-data gathers' per-column lookup.
std::vector<int64_t> column_readers(const ConvShape& g) {
  std::vector<int64_t> readers(size_t(g.w * g.kw));
  for (int64_t ix = 0; ix < g.w; ++ix)
    for (int64_t kx = 0; kx < g.kw; ++kx) readers[size_t(ix * g.kw + kx)] = output_reading(ix, kx, g.pw, g.dw, g.sw, g.ow);
  return readers;
}

// dw of a channels-last conv (not 1x1, not depthwise) on float32 NHWC x and dy: per group, dW~ = dy^T
// patches with the pixels of every image as the GEMM's K (dy read down its channels, the patches as
// Operand::Im2colNhwcT rows: runs of contiguous channels), in the channels-last K order; then each row
// of dW~ reordered into dw's [cin_g, kh, kw] order, the group's epilogue (when given) run on that row
// while it is in cache. Where W is larger than x and dy together, backward_filter_f32 on NCHW copies
// instead. Returns whether it ran the epilogues.
bool backward_filter_nhwc(const ConvShape& g, const float* x, const float* dy, float* dw, const Epilogue* const* epi) {
  const int64_t np = g.n * g.oh * g.ow, K = g.patch(), taps = g.kh * g.kw, cin_g = g.cin_g(), cout_g = g.cout_g();
  if (np == 0) {
    std::fill(dw, dw + g.w_size(), 0.f);
    return false;
  }
  if (g.w_size() > g.x_size() + g.y_size()) {
    // Deep layers on few pixels: reordering dW~ costs more than NCHW copies of x and dy (512@7 batch 1:
    // dW 4.1 ms through the copies, 5.8 reordered). The backward-filter slots leave these two alone.
    float* xc = workspace(kColumns, g.x_size());
    float* dyc = workspace(kWeights, g.y_size());
    convert_to_f32(DType::Float32, Layout::NHWC, x, g.n, g.c, g.h * g.w, xc);
    convert_to_f32(DType::Float32, Layout::NHWC, dy, g.n, g.cout, g.oh * g.ow, dyc);
    ConvShape nchw = g;
    nchw.layout = Layout::NCHW;
    return backward_filter_f32(nchw, xc, dyc, dw, epi);
  }
  float* dwt = workspace(kColumns, g.w_size());
  Window win = window_of(g);
  win.image_stride = g.h * g.w * g.c;
  win.pixel_stride = g.c;
  std::vector<GemmProblem> probs(size_t(g.groups));
  for (int64_t gr = 0; gr < g.groups; ++gr) {
    GemmProblem& P = probs[size_t(gr)];
    P.m = cout_g; P.n = K; P.k = np;
    P.a.p = dy + gr * cout_g; P.a.rs = 1; P.a.cs = g.cout;
    P.b.kind = Operand::Im2colNhwcT; P.b.p = x + gr * cin_g; P.b.win = win;
    P.c = dwt + gr * cout_g * K; P.ldc = K;
  }
  active_kernels().gemm(probs.data(), g.groups);
  parallel_for(g.cout, chunk_for(K), [&](int64_t b, int64_t e) {
    for (int64_t co = b; co < e; ++co) {  // the inverse of weights_to_ohwi, row by row
      const float* src = dwt + co * K;
      float* d = dw + co * K;
      for_each_nhwc_k(cin_g, taps, [&](int64_t i) { d[i] = *src++; });
      if (epi) (*epi[co / cout_g])(co % cout_g, 1, 0, K);
    }
  });
  return epi != nullptr;
}

// dx of a channels-last conv (not 1x1, not depthwise) on float32 NHWC dy and dx. Stride 1 (and output
// channels per group > 1): data_as_forward's conv of dy, channels-last (F(2x2) Winograd where it
// applies). Otherwise, a few images at a time, the columns dC = dy (W * s) [pixels, K] (K in the
// channels-last order, W reordered to it) and then each input pixel gathers its taps' runs of channels
// from the columns of the output pixels that read it, in tap order.
void backward_data_nhwc(const ConvShape& g, const float* dy, const float* w, const float* w_scale, float* dx) {
  ConvShape t;
  if (data_as_forward(g, t) && !direct(t)) {
    float* wt = workspace(kColumns, g.w_size());  // slots forward_nhwc leaves alone
    data_weights(g, w, w_scale, wt);
    if (winograd(t)) winograd_f32(t, dy, wt, nullptr, nullptr, false, dx, nullptr, 2);
    else forward_nhwc(t, dy, wt, nullptr, nullptr, false, dx, nullptr);
    return;
  }
  const int64_t ohw = g.oh * g.ow, taps = g.kh * g.kw, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
  const int64_t ldc = g.groups * K, per = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, ohw * ldc));
  float* wo = workspace(kWeights, g.w_size());
  weights_to_ohwi(g, w, wo);
  float* cols = workspace(kColumns, std::min(per, g.n) * ohw * ldc);
  const std::vector<int64_t> readers = column_readers(g);
  std::vector<GemmProblem> probs(size_t(g.groups));
  for (int64_t img0 = 0; img0 < g.n; img0 += per) {
    const int64_t imgs = std::min(per, g.n - img0);
    for (int64_t gr = 0; gr < g.groups; ++gr) {
      GemmProblem& P = probs[size_t(gr)];
      P.m = imgs * ohw; P.n = K; P.k = cout_g;
      P.a.p = dy + img0 * ohw * g.cout + gr * cout_g; P.a.rs = g.cout; P.a.cs = 1;
      P.a.col_scale = w_scale ? w_scale + gr * cout_g : nullptr;
      P.b.p = wo + gr * cout_g * K; P.b.rs = K; P.b.cs = 1;
      P.c = cols + gr * K; P.ldc = ldc;
    }
    active_kernels().gemm(probs.data(), g.groups);
    parallel_for(imgs * g.h, chunk_for(g.w * g.c * taps), [&](int64_t b, int64_t e) {
      for (int64_t row = b; row < e; ++row) {
        const int64_t img = row / g.h, iy = row % g.h;
        float* drow = dx + ((img0 + img) * g.h + iy) * g.w * g.c;
        std::fill(drow, drow + g.w * g.c, 0.f);
        for (int64_t ky = 0; ky < g.kh; ++ky) {  // each pixel sums its taps in tap order
          const int64_t oy = output_reading(iy, ky, g.ph, g.dh, g.sh, g.oh);
          if (oy < 0) continue;
          const float* crow = cols + (img * ohw + oy * g.ow) * ldc;
          for (int64_t ix = 0; ix < g.w; ++ix)
            for (int64_t kx = 0; kx < g.kw; ++kx) {
              const int64_t ox = readers[size_t(ix * g.kw + kx)], tap = ky * g.kw + kx;
              if (ox < 0) continue;
              for (int64_t gr = 0; gr < g.groups; ++gr)
                for (int64_t c0 = 0; c0 < cin_g; c0 += kNhwcBlock) {
                  const int64_t width = std::min(kNhwcBlock, cin_g - c0);
                  const float* src = crow + ox * ldc + gr * K + c0 * taps + tap * width;
                  float* dst = drow + ix * g.c + gr * cin_g + c0;
                  for (int64_t i = 0; i < width; ++i) dst[i] += src[i];
                }
            }
        }
      }
    });
  }
}

// The channels-last depthwise weight gradients' split of the output rows (all images, n * oh of them) into
// a few contiguous parts of `per` rows, from the sizes only: enough tasks for the threads with few channel
// blocks, one image on large maps. Each part's sums are kept apart in double, then added in part order.
struct RowParts {
  int64_t rows, parts, per;
};

RowParts row_parts(const ConvShape& g, int64_t blocks) {
  const int64_t rows = g.n * g.oh, parts = std::max<int64_t>(1, std::min(rows, (8 + blocks - 1) / blocks));
  return {rows, parts, (rows + parts - 1) / parts};
}

// dw[ch * taps + t] = the parts' sums[part][t][ch] added in part order.
void sum_parts(const std::vector<double>& sums, int64_t parts, int64_t taps, int64_t channels, float* dw) {
  parallel_for(channels, chunk_for(parts * taps), [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch)
      for (int64_t t = 0; t < taps; ++t) {
        double total = 0;
        for (int64_t p = 0; p < parts; ++p) total += sums[size_t((p * taps + t) * channels + ch)];
        dw[ch * taps + t] = float(total);
      }
  });
}

// w [channels, 1, kh, kw] (times w_scale) as taps [tap][channel], in the kWeights workspace: the
// channels-last direct kernels' order.
const float* tap_major_weights(const float* w, const float* w_scale, int64_t channels, int64_t taps) {
  float* wt = workspace(kWeights, taps * channels);
  for (int64_t ch = 0; ch < channels; ++ch)
    for (int64_t t = 0; t < taps; ++t) wt[t * channels + ch] = w_scale ? w[ch * taps + t] * w_scale[ch] : w[ch * taps + t];
  return wt;
}

// dx and dw of a channels-last depthwise conv (nhwc_depthwise: one output channel per input channel) on
// float32 NHWC x, dy and dx, over channel vectors as its forward runs (either of dx, dw may be null).
// dw: per part of the output rows (row_parts) and 64-channel block.
void backward_depthwise_nhwc(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* dy,
                             float* dx, float* dw) {
  const Kernels& k = active_kernels();
  Window win = window_of(g);
  win.c = g.c;
  const int64_t taps = g.kh * g.kw, ohw = g.oh * g.ow;
  if (dw) {
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (g.c + kBlock - 1) / kBlock;
    const RowParts split = row_parts(g, blocks);
    const int64_t rows = split.rows, parts = split.parts, per = split.per;
    std::vector<double> sums(size_t(parts * taps * g.c), 0.0);
    parallel_for(parts * blocks, chunk_for(per * g.ow * kBlock * taps), [&](int64_t b, int64_t e) {
      for (int64_t u = b; u < e; ++u) {
        const int64_t part = u / blocks, c0 = u % blocks * kBlock, c1 = std::min(g.c, c0 + kBlock);
        for (int64_t r = part * per; r < std::min(rows, (part + 1) * per);) {  // one image's rows at a time
          const int64_t img = r / g.oh, oy0 = r % g.oh, oy1 = std::min(g.oh, oy0 + std::min(rows, (part + 1) * per) - r);
          k.direct_backward_filter_nhwc(x + img * g.h * g.w * g.c, dy + img * ohw * g.c, sums.data() + part * taps * g.c, win,
                                        c0, c1, oy0, oy1);
          r += oy1 - oy0;
        }
      }
    });
    sum_parts(sums, parts, taps, g.c, dw);
  }
  if (!dx) return;
  const float* wt = tap_major_weights(w, w_scale, g.c, taps);
  const std::vector<int64_t> readers = column_readers(g);
  parallel_for(g.n * g.h, chunk_for(g.w * g.c * taps), [&](int64_t r0, int64_t r1) {
    k.direct_backward_data_nhwc(dy, wt, readers.data(), dx, win, r0, r1);
  });
}

// dx and dw of a channels-last depthwise conv with a channel multiplier m (nhwc_multiplier) on float32
// NHWC x, dy and dx, through the multiplier-1 kernels on cout channels, band by band as its forward:
// dw reads each band's input rows expanded to m copies of each channel (only the channels of the task's
// block), in parts of the output rows as backward_depthwise_nhwc sums them; dx is the multiplier-1 pass's
// dx on bands of input rows, its m channels per input channel then summed.
void backward_multiplier_nhwc(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* dy,
                              float* dx, float* dw) {
  const Kernels& k = active_kernels();
  Window win = window_of(g);
  win.c = g.cout;
  constexpr int64_t kBand = kMultiplierBand;
  const int64_t taps = g.kh * g.kw, ohw = g.oh * g.ow, m = g.cout / g.c, span = g.w * g.cout;
  if (dw) {
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (g.cout + kBlock - 1) / kBlock;
    const RowParts split = row_parts(g, blocks);
    const int64_t rows = split.rows, parts = split.parts, per = split.per;
    std::vector<double> sums(size_t(parts * taps * g.cout), 0.0);
    parallel_for(parts * blocks, chunk_for(per * (g.ow * kBlock * taps + g.sh * g.w * kBlock)), [&](int64_t b, int64_t e) {
      float* expanded = workspace(kExpanded, multiplier_band_rows(g) * span);
      for (int64_t u = b; u < e; ++u) {
        const int64_t part = u / blocks, c0 = u % blocks * kBlock, c1 = std::min(g.cout, c0 + kBlock);
        const int64_t ci0 = c0 / m, ci1 = (c1 + m - 1) / m;  // the input channels the block reads
        const int64_t end = std::min(rows, (part + 1) * per);
        for (int64_t r = part * per; r < end;) {  // a band of one image's output rows at a time
          const int64_t img = r / g.oh, oy0 = r % g.oh, oy1 = std::min({g.oh, oy0 + kBand, oy0 + end - r});
          const RowBand band = row_band(g, win, oy0, oy1);
          const float* src = x + (img * g.h + band.lo) * g.w * g.c;
          for (int64_t p = 0; p < (band.hi - band.lo) * g.w; ++p)
            repeat_each(src + p * g.c + ci0, ci1 - ci0, m, expanded + p * g.cout + ci0 * m);
          k.direct_backward_filter_nhwc(expanded, dy + (img * g.oh + oy0) * g.ow * g.cout, sums.data() + part * taps * g.cout,
                                        band.win, c0, c1, 0, oy1 - oy0);
          r += oy1 - oy0;
        }
      }
    });
    sum_parts(sums, parts, taps, g.cout, dw);
  }
  if (!dx) return;
  const float* wt = tap_major_weights(w, w_scale, g.cout, taps);
  const std::vector<int64_t> readers = column_readers(g);
  const int64_t bands = (g.h + kBand - 1) / kBand;
  parallel_for(g.n * bands, chunk_for(kBand * span * taps), [&](int64_t b0, int64_t b1) {
    float* expanded = workspace(kExpanded, std::min(kBand, g.h) * span);
    for (int64_t u = b0; u < b1; ++u) {
      const int64_t img = u / bands, iy0 = u % bands * kBand, iy1 = std::min(g.h, iy0 + kBand);
      Window band = win;  // input rows [iy0, iy1) as an image of one, reading all of its image's dy
      band.h = iy1 - iy0, band.ph = g.ph + iy0;
      k.direct_backward_data_nhwc(dy + img * ohw * g.cout, wt, readers.data(), expanded, band, 0, iy1 - iy0);
      sum_each(expanded, (iy1 - iy0) * g.w * g.c, m, dx + (img * g.h + iy0) * g.w * g.c);
    }
  });
}

}  // namespace

const float* backward_input(const ConvShape& g, DType dt, const void* t, Slot slot) {
  return backward_as_is(g) ? input_f32(dt, Layout::NCHW, t, 1, 1, g.y_size(), slot)
                           : input_f32(dt, g.layout, t, g.n, g.cout, g.oh * g.ow, slot);
}

void backward_convert(const ConvShape& g, DType dt, const void* t, float* dst) {
  if (backward_as_is(g)) convert_to_f32(dt, Layout::NCHW, t, 1, 1, g.y_size(), dst);
  else convert_to_f32(dt, g.layout, t, g.n, g.cout, g.oh * g.ow, dst);
}

bool conv_grads(const ConvShape& g, DType dt, const void* x, const float* w, const float* w_scale, const float* dy32,
                void* dx, float* dw, const Epilogue* const* epi) {
  if (backward_as_is(g)) {  // channels-last as it is: only the dtype is converted
    const float* x32 = dw ? input_f32(dt, Layout::NCHW, x, 1, 1, g.x_size(), kInput) : nullptr;
    float* dx32 = dx ? output_f32(dt, Layout::NCHW, dx, g.x_size(), kOutput) : nullptr;
    bool fused = false;
    if (pointwise(g)) {
      backward_pointwise_nhwc(g, x32, w, w_scale, dy32, dx32, dw, epi);
      fused = dw && epi && g.n * g.oh * g.ow > 0;
    } else if (nhwc_depthwise(g)) {
      backward_depthwise_nhwc(g, x32, w, w_scale, dy32, dx32, dw);
    } else if (direct(g)) {
      backward_multiplier_nhwc(g, x32, w, w_scale, dy32, dx32, dw);
    } else {
      if (dw) fused = backward_filter_nhwc(g, x32, dy32, dw, epi);
      if (dx) backward_data_nhwc(g, dy32, w, w_scale, dx32);
    }
    if (dx) store_output(dt, Layout::NCHW, dx32, 1, 1, g.x_size(), dx);
    return fused;
  }
  bool fused = false;
  if (dw) {
    fused = backward_filter_f32(g, input_f32(dt, g.layout, x, g.n, g.c, g.h * g.w, kInput), dy32, dw, epi);
  }
  if (dx) {
    float* dx32 = output_f32(dt, g.layout, dx, g.x_size(), kOutput);
    backward_data_f32(g, dy32, w, w_scale, dx32);
    store_output(dt, g.layout, dx32, g.n, g.c, g.h * g.w, dx);
  }
  return fused;
}

void conv_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, bool relu, void* y,
                  uint32_t* relu_mask, const float* w_scale) {
  forward(g, dt, x, w, w_scale, nullptr, bias, relu, y, relu_mask);
}

void conv_forward(const ConvShape& g, DType dt, const void* x, const PreparedWeights& w, const float* bias, bool relu,
                  void* y) {
  forward(g, dt, x, w.weights(), nullptr, &w, bias, relu, y, nullptr);
}

void conv_backward(const ConvShape& g, DType dt, const void* x, const float* w, const void* dy, void* dx, float* dw) {
  conv_grads(g, dt, dw ? x : nullptr, w, nullptr, backward_input(g, dt, dy, kDy), dx, dw);
}

}  // namespace xnorm::convbn
