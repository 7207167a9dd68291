// Conv + BatchNorm: Deploy's folding, Tune and Eval forward and backward.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../bnstats/bnstats.h"
#include "../common/thread_pool.h"
#include "convbn_internal.h"

namespace xnorm::convbn {
namespace {

// Per-output-channel sums, in double, of sum(a) or sum(a * b) over float32 tensors in the layout the
// backward passes read (backward_input).
void channel_sums(const ConvShape& g, const float* a, const float* b, double* out) {
  const int64_t ohw = g.oh * g.ow;
  if (backward_as_is(g)) {
    // [pixels, cout] rows: runs of rows (fixed by the sizes, never the thread count) summed with every
    // channel side by side, then the runs' partial sums in run order.
    const int64_t np = g.n * ohw, run = chunk_for(g.cout), runs = (np + run - 1) / run;
    std::vector<double> part(size_t(runs * g.cout), 0.0);
    parallel_for(runs, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        double* p = part.data() + r * g.cout;
        for (int64_t i = r * run; i < std::min(np, (r + 1) * run); ++i) {
          const float* ar = a + i * g.cout;
          if (b) {
            const float* br = b + i * g.cout;
            for (int64_t co = 0; co < g.cout; ++co) p[co] += double(ar[co]) * double(br[co]);
          } else {
            for (int64_t co = 0; co < g.cout; ++co) p[co] += ar[co];
          }
        }
      }
    });
    for (int64_t co = 0; co < g.cout; ++co) {
      double total = 0;
      for (int64_t r = 0; r < runs; ++r) total += part[size_t(r * g.cout + co)];
      out[co] = total;
    }
    return;
  }
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

// dy as float32 in this thread's dy workspace, in the layout the backward passes read (the callers modify
// it), with the ReLU mask (bits in y's element order) applied when given.
float* dy_copy(const ConvShape& g, DType dt, const void* dy, const uint32_t* relu_mask) {
  float* dst = workspace(kDy, g.y_size());
  const bool transpose = g.layout == Layout::NHWC && !backward_as_is(g);
  if (transpose && !relu_mask) {
    backward_convert(g, dt, dy, dst);
    return dst;
  }
  // The mask applies in y's own order: channels-last dy is masked before its transpose.
  float* own = transpose ? workspace(kConvOut, g.y_size()) : dst;
  convert_to_f32(dt, Layout::NCHW, dy, 1, 1, g.y_size(), own);
  if (relu_mask) {
    const Kernels& k = active_kernels();
    parallel_for((g.y_size() + 31) / 32, kTaskElements / 32, [&](int64_t b, int64_t e) {
      k.apply_mask(own + b * 32, std::min(g.y_size(), e * 32) - b * 32, relu_mask + b);
    });
  }
  if (transpose) convert_to_f32(DType::Float32, Layout::NHWC, own, g.n, g.cout, g.oh * g.ow, dst);
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

}  // namespace

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
  void* z = z_out ? z_out : workspace(kConvOut, (g.y_size() * dtype_bytes(dt) + 3) / 4);
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
  float* dy32 = dy_copy(g, dt, dy, relu_mask);
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
  float* dy32 = dy_copy(g, dt, dy, nullptr);
  const int64_t ohw = g.oh * g.ow;
  if (y) {  // ReLU backward from its saved output
    const float* y32 = backward_input(g, dt, y, kInput);
    parallel_for(g.y_size(), kTaskElements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        if (!(y32[i] > 0)) dy32[i] = 0;
    });
  }
  std::vector<double> sum_dy(size_t(g.cout)), sum_dyz(size_t(g.cout)), sum_dz(size_t(g.cout));
  if (out.dbeta || out.dgamma) channel_sums(g, dy32, nullptr, sum_dy.data());
  if (out.dgamma) {
    channel_sums(g, dy32, backward_input(g, dt, z, kInput), sum_dyz.data());
  }
  std::vector<float> scale(size_t(g.cout));
  for (int64_t co = 0; co < g.cout; ++co) {
    const double r = rstd(bn, co);
    scale[size_t(co)] = float((bn.gamma ? double(bn.gamma[co]) : 1.0) * r);
    if (out.dbeta) out.dbeta[co] = float(sum_dy[size_t(co)]);
    // sum(dy * (z - mean)) * rstd = (sum(dy * z) - mean * sum(dy)) * rstd
    if (out.dgamma) out.dgamma[co] = float((sum_dyz[size_t(co)] - double(bn.mean[co]) * sum_dy[size_t(co)]) * r);
  }
  // dz = dy * scale: the full-size intermediate Tune mode avoids. Rows of ohw pixels (NCHW) or of cout
  // channels (channels-last as it is).
  const bool rows_of_channels = backward_as_is(g);
  const int64_t rows = rows_of_channels ? g.n * ohw : g.n * g.cout, width = rows_of_channels ? g.cout : ohw;
  parallel_for(rows, chunk_for(width), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      float* d = dy32 + u * width;
      if (rows_of_channels) {
        for (int64_t i = 0; i < width; ++i) d[i] *= scale[size_t(i)];
      } else {
        const float sc = scale[size_t(u % g.cout)];
        for (int64_t i = 0; i < width; ++i) d[i] *= sc;
      }
    }
  });
  if (out.dbias) {
    channel_sums(g, dy32, nullptr, sum_dz.data());
    for (int64_t co = 0; co < g.cout; ++co) out.dbias[co] = float(sum_dz[size_t(co)]);
  }
  conv_grads(g, dt, x, w, nullptr, dy32, out.dx, out.dw);
}

}  // namespace xnorm::convbn
