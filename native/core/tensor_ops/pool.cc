#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/thread_pool.h"
#include "tensor_ops.h"

namespace xnorm::tensor_ops {
namespace {

// Channels per task of the gradients, which scatter within one image: blocks of channels keep tasks
// independent (no two write the same element) and give batch 1 several tasks.
constexpr int64_t kChannelBlock = 64;

struct Window {
  int64_t y0, y1, x0, x1;  // clipped to the image, end exclusive
};

Window window(const PoolShape& g, int64_t oy, int64_t ox) {
  const int64_t ty = oy * g.sh - g.pad_top, tx = ox * g.sw - g.pad_left;
  const int64_t y0 = std::max<int64_t>(ty, 0), x0 = std::max<int64_t>(tx, 0);
  // A window wholly in the padding is empty (end = begin), not negative.
  return Window{y0, std::max(y0, std::min(ty + g.kh, g.h)), x0, std::max(x0, std::min(tx + g.kw, g.w))};
}

// Forward: one task per output row of one image; channels innermost, so the loops vectorize.
template <bool is_max>
void pool_forward(const PoolShape& g, const float* x, float* y) {
  parallel_tasks(g.n * g.oh, [&](int64_t task) {
    const int64_t n = task / g.oh, oy = task % g.oh;
    const float* img = x + n * g.h * g.w * g.c;
    for (int64_t ox = 0; ox < g.ow; ++ox) {
      const Window win = window(g, oy, ox);
      float* out = y + ((n * g.oh + oy) * g.ow + ox) * g.c;
      std::fill(out, out + g.c, is_max ? -std::numeric_limits<float>::infinity() : 0.0f);
      for (int64_t iy = win.y0; iy < win.y1; ++iy)
        for (int64_t ix = win.x0; ix < win.x1; ++ix) {
          const float* p = img + (iy * g.w + ix) * g.c;
          if (is_max)
            for (int64_t c = 0; c < g.c; ++c) out[c] = p[c] > out[c] ? p[c] : out[c];
          else
            for (int64_t c = 0; c < g.c; ++c) out[c] += p[c];
        }
      if (!is_max) {
        const float count = float((win.y1 - win.y0) * (win.x1 - win.x0));
        for (int64_t c = 0; c < g.c; ++c) out[c] /= count;
      }
    }
  });
}

// Gradients: per (image, channel block), dx zeroed, then each output's contribution scattered.
template <typename Scatter>
void pool_grad(const PoolShape& g, float* dx, Scatter scatter) {
  const int64_t blocks = (g.c + kChannelBlock - 1) / kChannelBlock;
  parallel_tasks(g.n * blocks, [&](int64_t task) {
    const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock, nc = std::min(kChannelBlock, g.c - c0);
    float* img = dx + n * g.h * g.w * g.c + c0;
    for (int64_t p = 0; p < g.h * g.w; ++p) std::fill(img + p * g.c, img + p * g.c + nc, 0.0f);
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) scatter(n, c0, nc, oy, ox, window(g, oy, ox), img);
  });
}

}  // namespace

void max_pool(const PoolShape& g, const float* x, float* y) { pool_forward<true>(g, x, y); }
void avg_pool(const PoolShape& g, const float* x, float* y) { pool_forward<false>(g, x, y); }

void max_pool_grad(const PoolShape& g, const float* x, const float* dy, float* dx) {
  pool_grad(g, dx, [&](int64_t n, int64_t c0, int64_t nc, int64_t oy, int64_t ox, const Window& win, float* img) {
    const float* src = x + n * g.h * g.w * g.c + c0;
    const float* grad = dy + ((n * g.oh + oy) * g.ow + ox) * g.c + c0;
    float best[kChannelBlock];
    int64_t at[kChannelBlock];
    std::fill(best, best + nc, -std::numeric_limits<float>::infinity());
    std::fill(at, at + nc, int64_t(-1));
    for (int64_t iy = win.y0; iy < win.y1; ++iy)
      for (int64_t ix = win.x0; ix < win.x1; ++ix) {
        const int64_t p = iy * g.w + ix;
        const float* v = src + p * g.c;
        for (int64_t c = 0; c < nc; ++c)
          if (v[c] > best[c]) best[c] = v[c], at[c] = p;
      }
    for (int64_t c = 0; c < nc; ++c)
      if (at[c] >= 0) img[at[c] * g.c + c] += grad[c];
  });
}

void avg_pool_grad(const PoolShape& g, const float* dy, float* dx) {
  pool_grad(g, dx, [&](int64_t n, int64_t c0, int64_t nc, int64_t oy, int64_t ox, const Window& win, float* img) {
    const float* grad = dy + ((n * g.oh + oy) * g.ow + ox) * g.c + c0;
    for (int64_t iy = win.y0; iy < win.y1; ++iy)
      for (int64_t ix = win.x0; ix < win.x1; ++ix) {
        float* d = img + (iy * g.w + ix) * g.c;
        for (int64_t c = 0; c < nc; ++c) d[c] += grad[c];
      }
  });
  const float scale = 1.0f / float(g.kh * g.kw);
  parallel_for(g.n * g.h * g.w * g.c, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx[i] *= scale;
  });
}

}  // namespace xnorm::tensor_ops
