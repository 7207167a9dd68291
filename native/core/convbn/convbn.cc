#include "convbn.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "../bnstats/bnstats.h"
#include "../common/checked.h"
#include "../common/cpu.h"
#include "../common/error.h"
#include "../common/thread_pool.h"
#include "kernels.h"

namespace xnorm::convbn {
namespace {

const Kernels& active_kernels() {
  switch (active_isa()) {
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
    default: return kernels_portable();
  }
}

// Elements per task for the memory-bound passes (conversion, masks, reductions).
constexpr int64_t kTaskElements = 1 << 15;

inline int64_t chunk_for(int64_t unit) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, unit)); }

inline float load_f(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::Float16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store_f(DType t, void* p, int64_t i, float v) {
  switch (t) {
    case DType::Float16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// A [n, c, s] activation in (dtype, layout) converted to float32 NCHW in dst.
void convert_to_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, float* dst) {
  parallel_for(n * c, chunk_for(s), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t img = u / c, ch = u % c;
      float* d = dst + u * s;
      if (layout == Layout::NCHW) {
        for (int64_t i = 0; i < s; ++i) d[i] = load_f(dt, src, u * s + i);
      } else {
        for (int64_t i = 0; i < s; ++i) d[i] = load_f(dt, src, (img * s + i) * c + ch);
      }
    }
  });
}

// A [n, c, s] activation as float32 NCHW: the caller's buffer itself when it already is one, else a
// converted copy in `buf`.
const float* input_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s,
                       std::vector<float>& buf) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return static_cast<const float*>(src);
  buf.resize(size_t(n * c * s));
  convert_to_f32(dt, layout, src, n, c, s, buf.data());
  return buf.data();
}

// Where a float32 NCHW result goes: straight into the caller's buffer when it has that form.
float* output_f32(DType dt, Layout layout, void* dst, int64_t size, std::vector<float>& buf) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return static_cast<float*>(dst);
  buf.resize(size_t(size));
  return buf.data();
}

void store_output(DType dt, Layout layout, const float* src, int64_t n, int64_t c, int64_t s, void* dst) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return;  // written in place
  if (layout == Layout::NCHW) {
    parallel_for(n * c * s, kTaskElements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) store_f(dt, dst, i, src[i]);
    });
    return;
  }
  parallel_for(n * s, chunk_for(c), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t img = u / s, i = u % s;
      const float* sp = src + img * c * s + i;
      for (int64_t ch = 0; ch < c; ++ch) store_f(dt, dst, u * c + ch, sp[ch * s]);
    }
  });
}

Window window_of(const ConvShape& g) {
  Window win;
  win.c = g.cin_g();
  win.h = g.h; win.w = g.w; win.kh = g.kh; win.kw = g.kw;
  win.sh = g.sh; win.sw = g.sw; win.ph = g.ph; win.pw = g.pw; win.dh = g.dh; win.dw = g.dw;
  win.oh = g.oh; win.ow = g.ow;
  return win;
}

// 1x1, stride 1, no padding: the input planes are the GEMM operand as they are.
bool pointwise(const ConvShape& g) { return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0; }
// One input channel per group (depthwise and its multipliers): K is tiny, so direct loops beat GEMM.
bool direct(const ConvShape& g) { return g.cin_g() == 1; }

// Winograd F(2x2, 3x3) needs 2.25x fewer multiplies than the GEMM for 3x3 stride-1 kernels. Its
// transforms cost per channel, so it pays from a few dozen channels on, and its GEMMs run over 2x2
// tiles (batch included), so it needs a few dozen tiles (measured: 512 channels on 7x7 lose at batch 1,
// win from batch 2). XNORM_CONV_ALGO=gemm|winograd forces a path where both apply (tests use it).
bool winograd(const ConvShape& g) {
  if (g.kh != 3 || g.kw != 3 || g.sh != 1 || g.sw != 1 || g.dh != 1 || g.dw != 1 || g.groups != 1) return false;
  const char* algo = std::getenv("XNORM_CONV_ALGO");
  if (algo && std::strcmp(algo, "gemm") == 0) return false;
  if (algo && std::strcmp(algo, "winograd") == 0) return true;
  return g.c >= 32 && g.cout >= 32 && g.n * ((g.oh + 1) / 2) * ((g.ow + 1) / 2) >= 32;
}

// Small feature maps are batched: one GEMM spans every image (N = images x pixels), which fills the
// vector tiles and packs each weight panel once instead of once per image. Capped so the batched
// im2col-sized scratch of the backward pass stays moderate.
bool span_images(const ConvShape& g) {
  return g.n > 1 && g.oh * g.ow < 256 && g.c * g.kh * g.kw * g.n * g.oh * g.ow <= (int64_t(1) << 24);
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

// Per-thread scratch that persists between calls: these buffers are as large as the activations, and
// allocating them afresh each call costs page faults and zero-filling. Each grows to the largest size
// this thread has needed; two purposes never share one.
enum Slot { kColumns, kBatched, kWeightGrad, kDy, kSlots };
thread_local std::vector<float> tls_workspace[kSlots];

float* workspace(Slot slot, int64_t size) {
  std::vector<float>& v = tls_workspace[slot];
  if (int64_t(v.size()) < size) v.resize(size_t(size));
  return v.data();
}

// One output channel's taps, multiplied by its scale when there is one (into buf).
const float* scaled_taps(const float* w, const float* w_scale, int64_t co, int64_t K, float* buf) {
  if (!w_scale) return w + co * K;
  for (int64_t t = 0; t < K; ++t) buf[t] = w[co * K + t] * w_scale[co];
  return buf;
}

// y = act(conv(x, w * w_scale) + bias), all float32 NCHW; w_scale (per output channel) may be null.
void forward_f32(const ConvShape& g, const float* x, const float* w, const float* w_scale, const float* bias, bool relu,
                 float* y) {
  const Kernels& k = active_kernels();
  const Window win = window_of(g);
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow, K = g.patch(), cin_g = g.cin_g(), cout_g = g.cout_g();
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
    WinogradProblem P;
    P.n = g.n; P.c = g.c; P.h = g.h; P.w = g.w; P.ph = g.ph; P.pw = g.pw; P.oh = g.oh; P.ow = g.ow; P.cout = g.cout;
    P.x = x; P.wt = w; P.w_scale = w_scale; P.bias = bias; P.relu = relu; P.y = y;
    k.winograd_forward(P);
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

void build_mask(const float* y, int64_t size, uint32_t* mask) {
  const Kernels& k = active_kernels();
  parallel_for((size + 31) / 32, kTaskElements / 32, [&](int64_t b, int64_t e) {
    k.relu_mask(y + b * 32, std::min(size, e * 32) - b * 32, mask + b);
  });
}

// Per-output-channel sums over an NCHW float32 tensor, in double: sum(a) or sum(a * b).
void channel_sums(const ConvShape& g, const float* a, const float* b, double* out) {
  const int64_t ohw = g.oh * g.ow;
  parallel_for(g.cout, chunk_for(g.n * ohw), [&](int64_t lo, int64_t hi) {
    for (int64_t co = lo; co < hi; ++co) {
      double total = 0;
      for (int64_t img = 0; img < g.n; ++img) {
        const int64_t off = (img * g.cout + co) * ohw;
        double s = 0;
        if (b) {
          for (int64_t i = 0; i < ohw; ++i) s += double(a[off + i]) * double(b[off + i]);
        } else {
          for (int64_t i = 0; i < ohw; ++i) s += a[off + i];
        }
        total += s;
      }
      out[co] = total;
    }
  });
}

// dy as float32 NCHW in this thread's dy workspace (the callers modify it).
float* dy_copy(const ConvShape& g, DType dt, const void* dy) {
  float* dst = workspace(kDy, g.y_size());
  convert_to_f32(dt, g.layout, dy, g.n, g.cout, g.oh * g.ow, dst);
  return dst;
}

inline double rstd(const BnParams& bn, int64_t c) { return 1.0 / std::sqrt(double(bn.var[c]) + bn.eps); }

// s = gamma / sqrt(var + eps), rounded once to float32: Tune, Eval and Deploy all use this value.
inline float scale_of(const BnParams& bn, int64_t c) { return float((bn.gamma ? double(bn.gamma[c]) : 1.0) * rstd(bn, c)); }

// Tune backward's per-weight work on dW' (in place): ds partial sums sum(dW' * W) per output channel
// (when dgamma is wanted) and dW = dW' * s (when dW is). Run by the backward-filter GEMM on each block
// while it is in cache, so dW' is not read back from memory. Each block's partial goes to its own slot
// (row, j0 / nr), summed in slot order afterwards: the result does not depend on the thread count.
struct TuneWeightEpilogue final : Epilogue {
  float* dwp = nullptr;
  const float* w = nullptr;
  const float* s = nullptr;  // null: dW is not wanted
  double* partial = nullptr;  // null: dgamma is not wanted; else [cout][slots]
  int64_t K = 0, co0 = 0, co_end = 0, nr = 1, slots = 1;  // co_end: the group's last row + 1
  void operator()(int64_t i0, int64_t rows, int64_t j0, int64_t cols) const override {
    // W's rows are read in short runs (cols floats, K apart) that the hardware prefetcher misses: those
    // of the next block are fetched now, to arrive while the GEMM computes that block.
    if (partial)
      for (int64_t co = co0 + i0 + rows; co < std::min(co0 + i0 + 2 * rows, co_end); ++co)
        for (int64_t j = 0; j < cols; j += 16) __builtin_prefetch(w + co * K + j0 + j);
    for (int64_t co = co0 + i0; co < co0 + i0 + rows; ++co) {
      float* c = dwp + co * K + j0;
      if (partial) {
        const float* wr = w + co * K + j0;
        double acc[8] = {};  // independent chains: a single running sum is add-latency bound
        int64_t j = 0;
        for (; j + 8 <= cols; j += 8)
          for (int l = 0; l < 8; ++l) acc[l] += double(c[j + l]) * double(wr[j + l]);
        for (; j < cols; ++j) acc[0] += double(c[j]) * double(wr[j]);
        partial[co * slots + j0 / nr] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      }
      if (s) {
        const float sc = s[co];
        for (int64_t j = 0; j < cols; ++j) c[j] *= sc;
      }
    }
  }
};

bool conv_grads(const ConvShape& g, DType dt, const void* x, const float* w, const float* w_scale, const float* dy32,
                void* dx, float* dw, const Epilogue* const* epi = nullptr) {
  bool fused = false;
  if (dw) {
    std::vector<float> xbuf;
    fused = backward_filter_f32(g, input_f32(dt, g.layout, x, g.n, g.c, g.h * g.w, xbuf), dy32, dw, epi);
  }
  if (dx) {
    std::vector<float> dxbuf;
    float* dx32 = output_f32(dt, g.layout, dx, g.x_size(), dxbuf);
    backward_data_f32(g, dy32, w, w_scale, dx32);
    store_output(dt, g.layout, dx32, g.n, g.c, g.h * g.w, dx);
  }
  return fused;
}

}  // namespace

std::vector<int64_t> ConvShape::y_shape() const {
  return layout == Layout::NCHW ? std::vector<int64_t>{n, cout, oh, ow} : std::vector<int64_t>{n, oh, ow, cout};
}

ConvShape conv_shape(const std::vector<int64_t>& xs, const std::vector<int64_t>& ws, const int64_t stride[2],
                     const int64_t padding[2], const int64_t dilation[2], int64_t groups, Layout layout) {
  if (xs.size() != 4)
    fail(ErrorCode::Shape, std::string("x: expected rank 4 (") + (layout == Layout::NCHW ? "[N, C, H, W]" : "[N, H, W, C]") +
                               "), received " + shape_str(xs));
  if (ws.size() != 4) fail(ErrorCode::Shape, "weight: expected rank 4 ([Cout, Cin/groups, kh, kw]), received " + shape_str(ws));
  for (int i = 0; i < 2; ++i) {
    const char* hw = i ? "[1] (width)" : "[0] (height)";
    if (stride[i] < 1) fail(ErrorCode::Argument, std::string("stride") + hw + ": expected an integer >= 1, received " + std::to_string(stride[i]));
    if (dilation[i] < 1) fail(ErrorCode::Argument, std::string("dilation") + hw + ": expected an integer >= 1, received " + std::to_string(dilation[i]));
    if (padding[i] < 0) fail(ErrorCode::Argument, std::string("padding") + hw + ": expected an integer >= 0, received " + std::to_string(padding[i]));
  }
  ConvShape g;
  g.layout = layout;
  g.n = xs[0];
  g.c = layout == Layout::NCHW ? xs[1] : xs[3];
  g.h = layout == Layout::NCHW ? xs[2] : xs[1];
  g.w = layout == Layout::NCHW ? xs[3] : xs[2];
  g.cout = ws[0]; g.kh = ws[2]; g.kw = ws[3];
  g.sh = stride[0]; g.sw = stride[1]; g.ph = padding[0]; g.pw = padding[1]; g.dh = dilation[0]; g.dw = dilation[1];
  if (groups < 1) fail(ErrorCode::Argument, "groups: expected an integer >= 1, received " + std::to_string(groups));
  g.groups = groups;
  if (g.c < 1 || g.h < 1 || g.w < 1) fail(ErrorCode::Shape, "x: expected C, H, W >= 1, received " + shape_str(xs));
  if (g.cout < 1 || g.kh < 1 || g.kw < 1 || ws[1] < 1) fail(ErrorCode::Shape, "weight: expected all dimensions >= 1, received " + shape_str(ws));
  if (g.c % groups != 0)
    fail(ErrorCode::Shape, "x: channel count " + std::to_string(g.c) + " is not divisible by groups = " + std::to_string(groups));
  if (g.cout % groups != 0)
    fail(ErrorCode::Shape, "weight: Cout = " + std::to_string(g.cout) + " is not divisible by groups = " + std::to_string(groups));
  if (ws[1] != g.c / groups)
    fail(ErrorCode::Shape, "weight: expected dimension 1 = Cin/groups = " + std::to_string(g.c / groups) + ", received " +
                               shape_str(ws));
  shape_size(xs, "x");
  shape_size(ws, "weight");
  // Extents below 2^53 and strides/paddings below 2^53 cannot overflow these sums in int64.
  int64_t eh = checked_mul(g.kh - 1, g.dh, "weight (dilated kernel height)") + 1;
  int64_t ew = checked_mul(g.kw - 1, g.dw, "weight (dilated kernel width)") + 1;
  int64_t ph2 = checked_mul(g.ph, 2, "padding[0]") + g.h, pw2 = checked_mul(g.pw, 2, "padding[1]") + g.w;
  if (eh > ph2 || ew > pw2)
    fail(ErrorCode::Shape, "weight: the dilated kernel (" + std::to_string(eh) + "x" + std::to_string(ew) +
                               ") is larger than the padded input (" + std::to_string(ph2) + "x" + std::to_string(pw2) + ")");
  g.oh = (ph2 - eh) / g.sh + 1;
  g.ow = (pw2 - ew) / g.sw + 1;
  // Every buffer the kernels index, including per-image im2col columns and NHWC transposes.
  shape_size({g.n, g.cout, g.oh, g.ow}, "y");
  shape_size({g.c, g.kh, g.kw, g.oh, g.ow}, "im2col columns");
  shape_size({g.cout, g.c / groups, g.kh, g.kw}, "weight");
  return g;
}

void conv_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, bool relu, void* y,
                  uint32_t* relu_mask, const float* w_scale) {
  std::vector<float> xbuf, ybuf;
  const float* x32 = input_f32(dt, g.layout, x, g.n, g.c, g.h * g.w, xbuf);
  float* y32 = output_f32(dt, g.layout, y, g.y_size(), ybuf);
  if (g.n > 0) forward_f32(g, x32, w, w_scale, bias, relu, y32);
  if (relu_mask) build_mask(y32, g.y_size(), relu_mask);
  store_output(dt, g.layout, y32, g.n, g.cout, g.oh * g.ow, y);
}

void fold(const ConvShape& g, const float* w, const float* bias, const BnParams& bn, float* w_out, float* b_out,
          float* s_out) {
  const int64_t K = g.patch();
  for (int64_t co = 0; co < g.cout; ++co) {
    const float s = scale_of(bn, co);
    for (int64_t i = 0; i < K; ++i) w_out[co * K + i] = w[co * K + i] * s;
    b_out[co] = ((bias ? bias[co] : 0.f) - bn.mean[co]) * s + (bn.beta ? bn.beta[co] : 0.f);
    if (s_out) s_out[co] = s;
  }
}

void tune_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                  bool relu, void* y, float* s_out, uint32_t* relu_mask) {
  // s and b' here; W' = W * s is formed while the GEMM packs W (or the Winograd path transforms it), so
  // no folded copy of W is written.
  std::vector<float> s(size_t(g.cout)), b(size_t(g.cout));
  for (int64_t co = 0; co < g.cout; ++co) {
    s[size_t(co)] = scale_of(bn, co);
    b[size_t(co)] = ((bias ? bias[co] : 0.f) - bn.mean[co]) * s[size_t(co)] + (bn.beta ? bn.beta[co] : 0.f);
    if (s_out) s_out[co] = s[size_t(co)];
  }
  conv_forward(g, dt, x, w, b.data(), relu, y, relu_mask, s.data());
}

void eval_forward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                  bool relu, void* y, void* z_out) {
  std::vector<uint8_t> zbuf;
  void* z = z_out;
  if (!z) {
    zbuf.resize(size_t(g.y_size() * dtype_bytes(dt)));
    z = zbuf.data();
  }
  conv_forward(g, dt, x, w, bias, false, z, nullptr);
  std::vector<float> scale(size_t(g.cout)), beta(size_t(g.cout));
  for (int64_t co = 0; co < g.cout; ++co) {
    scale[size_t(co)] = scale_of(bn, co);
    beta[size_t(co)] = bn.beta ? bn.beta[co] : 0.f;
  }
  if (g.n == 0) return;
  bnstats::Geometry bg;
  bg.n = g.n; bg.c = g.cout; bg.s = g.oh * g.ow;
  bg.layout = g.layout == Layout::NCHW ? bnstats::Layout::NCHW : bnstats::Layout::NHWC;
  const std::vector<float> mean_lo(size_t(g.cout), 0.f);  // our means are float32 already: no low part
  bnstats::apply(z, y, dt, bg, false, bn.mean, mean_lo.data(), scale.data(), beta.data(), relu);
}

void tune_backward(const ConvShape& g, DType dt, const void* x, const float* w, const float* bias, const BnParams& bn,
                   const float* s, const uint32_t* relu_mask, const void* dy, const Grads& out) {
  const bool want_wp = out.dw || out.dgamma, want_bp = out.dbias || out.dbeta || out.dgamma;
  if (!want_wp && !want_bp && !out.dx) return;
  float* dy32 = dy_copy(g, dt, dy);
  if (relu_mask) {
    const Kernels& k = active_kernels();
    parallel_for((g.y_size() + 31) / 32, kTaskElements / 32, [&](int64_t b, int64_t e) {
      k.apply_mask(dy32 + b * 32, std::min(g.y_size(), e * 32) - b * 32, relu_mask + b);
    });
  }
  const int64_t K = g.patch();
  std::vector<double> dbp(size_t(g.cout), 0.0);
  if (want_bp) channel_sums(g, dy32, nullptr, dbp.data());
  // dW' lands in dw itself when dW is wanted, and is scaled to dW = dW' * s in place after ds has read it.
  float* dwp = out.dw ? out.dw : want_wp ? workspace(kWeightGrad, g.w_size()) : nullptr;
  const int64_t nr = active_kernels().nr, slots = (K + nr - 1) / nr;
  std::vector<double> partial(out.dgamma ? size_t(g.cout * slots) : 0, 0.0);
  const int64_t cout_g = g.cout_g();
  std::vector<TuneWeightEpilogue> epis(size_t(want_wp ? g.groups : 0));
  std::vector<const Epilogue*> epi_ptrs;
  for (int64_t gr = 0; gr < int64_t(epis.size()); ++gr) {
    TuneWeightEpilogue& e = epis[size_t(gr)];
    e.dwp = dwp; e.w = w; e.s = out.dw ? s : nullptr; e.partial = out.dgamma ? partial.data() : nullptr;
    e.K = K; e.co0 = gr * cout_g; e.co_end = e.co0 + cout_g; e.nr = nr; e.slots = slots;
    epi_ptrs.push_back(&e);
  }
  if (want_wp && !conv_grads(g, dt, x, w, nullptr, dy32, nullptr, dwp, epi_ptrs.data())) {
    TuneWeightEpilogue whole = epis[0];  // paths without a GEMM: the same work, once over all of dW'
    whole.co0 = 0;
    whole.co_end = g.cout;
    parallel_for(g.cout, chunk_for(K), [&](int64_t lo, int64_t hi) { whole(lo, hi - lo, 0, K); });
  }
  parallel_for(g.cout, chunk_for(slots), [&](int64_t lo, int64_t hi) {
    for (int64_t co = lo; co < hi; ++co) {
      const double sc = s[co];
      if (out.dgamma) {
        double ds = dbp[size_t(co)] * (double(bias ? bias[co] : 0.f) - double(bn.mean[co]));
        for (int64_t t = 0; t < slots; ++t) ds += partial[size_t(co * slots + t)];
        out.dgamma[co] = float(ds * rstd(bn, co));
      }
      if (out.dbias) out.dbias[co] = float(dbp[size_t(co)] * sc);
      if (out.dbeta) out.dbeta[co] = float(dbp[size_t(co)]);
    }
  });
  if (out.dx) conv_grads(g, dt, x, w, s, dy32, out.dx, nullptr);  // with W' = W * s, scaled while packing
}

void eval_backward(const ConvShape& g, DType dt, const void* x, const void* z, const void* y, const float* w,
                   const BnParams& bn, const void* dy, const Grads& out) {
  float* dy32 = dy_copy(g, dt, dy);
  const int64_t ohw = g.oh * g.ow;
  if (y) {  // ReLU backward from its saved output
    std::vector<float> ybuf;
    const float* y32 = input_f32(dt, g.layout, y, g.n, g.cout, ohw, ybuf);
    parallel_for(g.y_size(), kTaskElements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        if (!(y32[i] > 0)) dy32[i] = 0;
    });
  }
  std::vector<double> sum_dy(size_t(g.cout)), sum_dyz(size_t(g.cout)), sum_dz(size_t(g.cout));
  if (out.dbeta || out.dgamma) channel_sums(g, dy32, nullptr, sum_dy.data());
  if (out.dgamma) {
    std::vector<float> zbuf;
    channel_sums(g, dy32, input_f32(dt, g.layout, z, g.n, g.cout, ohw, zbuf), sum_dyz.data());
  }
  std::vector<float> scale(size_t(g.cout));
  for (int64_t co = 0; co < g.cout; ++co) {
    const double r = rstd(bn, co);
    scale[size_t(co)] = float((bn.gamma ? double(bn.gamma[co]) : 1.0) * r);
    if (out.dbeta) out.dbeta[co] = float(sum_dy[size_t(co)]);
    // sum(dy * (z - mean)) * rstd = (sum(dy * z) - mean * sum(dy)) * rstd
    if (out.dgamma) out.dgamma[co] = float((sum_dyz[size_t(co)] - double(bn.mean[co]) * sum_dy[size_t(co)]) * r);
  }
  // dz = dy * scale: the full-size intermediate Tune mode avoids.
  parallel_for(g.n * g.cout, chunk_for(ohw), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const float sc = scale[size_t(u % g.cout)];
      for (int64_t i = 0; i < ohw; ++i) dy32[u * ohw + i] *= sc;
    }
  });
  if (out.dbias) {
    channel_sums(g, dy32, nullptr, sum_dz.data());
    for (int64_t co = 0; co < g.cout; ++co) out.dbias[co] = float(sum_dz[size_t(co)]);
  }
  conv_grads(g, dt, x, w, nullptr, dy32, out.dx, out.dw);
}

void conv_backward_data(const ConvShape& g, DType dt, const void* dy, const float* w, void* dx) {
  std::vector<float> dybuf;
  const float* dy32 = input_f32(dt, g.layout, dy, g.n, g.cout, g.oh * g.ow, dybuf);
  conv_grads(g, dt, nullptr, w, nullptr, dy32, dx, nullptr);
}

void conv_backward_filter(const ConvShape& g, DType dt, const void* x, const void* dy, float* dw) {
  std::vector<float> dybuf;
  const float* dy32 = input_f32(dt, g.layout, dy, g.n, g.cout, g.oh * g.ow, dybuf);
  conv_grads(g, dt, x, nullptr, nullptr, dy32, nullptr, dw);
}

double fma_peak_gflops(double seconds) {
  const Kernels& k = active_kernels();
  using clock = std::chrono::steady_clock;
  // Calibrate on one thread, then run every pool thread for about `seconds`.
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = clock::now();
    k.fma_loop(iters);
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02) {
      iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / dt));
      break;
    }
    iters *= 4;
  }
  const int threads = num_threads();
  std::vector<double> flops(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  auto t0 = clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { flops[size_t(t)] = k.fma_loop(iters); });
  for (auto& th : pool) th.join();
  double wall = std::chrono::duration<double>(clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / wall * 1e-9;
}

std::string micro_tile() {
  const Kernels& k = active_kernels();
  return std::to_string(k.mr) + "x" + std::to_string(k.nr) + " " + isa_name(active_isa());
}

}  // namespace xnorm::convbn
