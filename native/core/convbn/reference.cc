// Plain reference convolutions: direct loops over the definition, float64 accumulation, no threads,
// no SIMD, both layouts read in place. Tests hold every fast path against these.
#include <vector>

#include "convbn.h"

namespace xnorm::convbn {
namespace {

struct Index {
  const ConvShape& g;
  int64_t x(int64_t n, int64_t c, int64_t y, int64_t xx) const {
    return g.layout == Layout::NCHW ? ((n * g.c + c) * g.h + y) * g.w + xx : ((n * g.h + y) * g.w + xx) * g.c + c;
  }
  int64_t y(int64_t n, int64_t c, int64_t oy, int64_t ox) const {
    return g.layout == Layout::NCHW ? ((n * g.cout + c) * g.oh + oy) * g.ow + ox
                                    : ((n * g.oh + oy) * g.ow + ox) * g.cout + c;
  }
  int64_t w(int64_t co, int64_t ci, int64_t ky, int64_t kx) const { return ((co * g.cin_g() + ci) * g.kh + ky) * g.kw + kx; }
};

// Calls fn(input index, weight index, output index) for every tap that reads inside the input.
template <typename F>
void for_each_tap(const ConvShape& g, F&& fn) {
  Index ix{g};
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g();
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t co = 0; co < g.cout; ++co) {
      const int64_t gr = co / cout_g;
      for (int64_t oy = 0; oy < g.oh; ++oy)
        for (int64_t ox = 0; ox < g.ow; ++ox)
          for (int64_t ci = 0; ci < cin_g; ++ci)
            for (int64_t ky = 0; ky < g.kh; ++ky) {
              const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
              if (iy < 0 || iy >= g.h) continue;
              for (int64_t kx = 0; kx < g.kw; ++kx) {
                const int64_t jx = ox * g.sw - g.pw + kx * g.dw;
                if (jx < 0 || jx >= g.w) continue;
                fn(ix.x(n, gr * cin_g + ci, iy, jx), ix.w(co, ci, ky, kx), ix.y(n, co, oy, ox));
              }
            }
    }
}

}  // namespace

void conv_reference(const ConvShape& g, const float* x, const float* w, const float* bias, float* y) {
  std::vector<double> acc(size_t(g.y_size()), 0.0);
  for_each_tap(g, [&](int64_t i, int64_t k, int64_t o) { acc[size_t(o)] += double(x[i]) * double(w[k]); });
  Index ix{g};
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t co = 0; co < g.cout; ++co)
      for (int64_t oy = 0; oy < g.oh; ++oy)
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          int64_t o = ix.y(n, co, oy, ox);
          y[o] = float(acc[size_t(o)] + (bias ? double(bias[co]) : 0.0));
        }
}

void conv_backward_data_reference(const ConvShape& g, const float* dy, const float* w, float* dx) {
  std::vector<double> acc(size_t(g.x_size()), 0.0);
  for_each_tap(g, [&](int64_t i, int64_t k, int64_t o) { acc[size_t(i)] += double(dy[o]) * double(w[k]); });
  for (size_t i = 0; i < acc.size(); ++i) dx[i] = float(acc[i]);
}

void conv_backward_filter_reference(const ConvShape& g, const float* x, const float* dy, float* dw) {
  std::vector<double> acc(size_t(g.w_size()), 0.0);
  for_each_tap(g, [&](int64_t i, int64_t k, int64_t o) { acc[size_t(k)] += double(x[i]) * double(dy[o]); });
  for (size_t i = 0; i < acc.size(); ++i) dw[i] = float(acc[i]);
}

}  // namespace xnorm::convbn
