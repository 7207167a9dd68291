// The timed trial that keeps or drops the edges of an 'auto' plan (plan_pays, mst_internal.h).
#include "mst.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../common/debug.h"
#include "mst_internal.h"

namespace xnorm::mst {

// The final word for 'auto': the plan against the dense weights on a synthetic input of this layer's
// shape (two 16 x 16 images: above kAutoMinPixels, where 'auto' plans run their edges; float output, the
// slower of the plan's output passes), interleaved, best of five each. The edges stay only if they are
// clearly faster. The cost model chose them from per-bit costs; this sees what it cannot for this shape
// (cache effects, the output pass a plan cannot fuse) and a calibration skewed by a busy machine.
constexpr double kTrialMargin = 0.95;

bool plan_pays(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent) {
  bconv::ConvParams p;
  p.n = 2;
  p.h = std::max<int64_t>(16, s.kh);
  p.w = std::max<int64_t>(16, s.kw);
  p.c = s.cin_g * s.groups;
  p.ph = s.kh / 2;
  p.pw = s.kw / 2;
  const int64_t wc = (p.c + 31) / 32, pixels = p.n * p.h * p.w;
  uint32_t seed = 2024;
  std::vector<uint32_t> x(size_t(pixels * wc));
  for (int64_t i = 0; i < pixels * wc; ++i) {
    seed = seed * 1664525u + 1013904223u;
    x[size_t(i)] = i % wc == wc - 1 && p.c % 32 ? seed & ((1u << (p.c % 32)) - 1) : seed;  // tail bits 0
  }
  const Built dense = build_execution(words, s, std::vector<int32_t>(size_t(s.cout), -1));
  const Built plan = build_execution(words, s, parent);
  std::vector<float> out(size_t(p.n * bconv::out_size(p.h, p.ph, 1, s.kh, 1) * bconv::out_size(p.w, p.pw, 1, s.kw, 1) * s.cout));
  bconv::Transform t;
  auto run = [&](const Built& b) {
    bconv::conv(x.data(), words, s, b.execution(), p, t, out.data());
  };
  double dense_s = 1e30, plan_s = 1e30;
  for (int round = 0; round < 5; ++round) {
    dense_s = std::min(dense_s, best_window([&] { run(dense); }, 1e-3));
    plan_s = std::min(plan_s, best_window([&] { run(plan); }, 1e-3));
  }
  const bool pays = plan_s < kTrialMargin * dense_s;
  if (debug_enabled()) {
    int64_t edges = 0;
    for (int32_t q : parent) edges += q >= 0;
    char line[256];
    snprintf(line, sizeof line,
             "MST trial, %lld channels (%lld from a parent), %lldx%lldx%lld per channel: plan %.1f us vs dense %.1f us: %s",
             (long long)s.cout, (long long)edges, (long long)s.cin_g, (long long)s.kh, (long long)s.kw, plan_s * 1e6,
             dense_s * 1e6, pays ? "edges kept" : "edges dropped (needs < 0.95x dense)");
    debug_log(line);
  }
  return pays;
}

}  // namespace xnorm::mst
