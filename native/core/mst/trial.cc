// The timed trials that keep or drop the edges of an 'auto' plan (edges_pay, mst.h; plan_pays,
// mst_internal.h).
#include "mst.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <vector>

#include "../common/debug.h"
#include "../common/thread_pool.h"
#include "mst_internal.h"

namespace xnorm::mst {
namespace {

// The edges stay only if they run at least 5 % faster than dense at their best, and in the median of
// the rounds (each round's plan time over its dense time) are not slower (the build-time trial, a proxy
// for every call of at least kTrialPixels: larger calls fill their tiles and gain more) or also 5 %
// faster (a small call's own trial: a server sees the median, and near break-even the dense path is
// better, being exactly what runs without edges): the cost model chose them
// from per-bit costs; a trial sees what it cannot (cache effects, the output pass a plan cannot fuse,
// few pixels per tile) and a calibration skewed by a busy machine.
constexpr double kTrialMargin = 0.95;

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::vector<std::vector<double>> timed_rounds(const std::vector<std::function<void()>>& fns, int min_rounds,
                                              double budget) {
  // One timing at a time in the process: two (plans built concurrently, a calibration beside a trial)
  // would each see the other's load, and a skewed calibration stays for the process's life.
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  double (*now)() = num_threads() == 1 ? thread_seconds : wall_seconds;
  std::vector<std::vector<double>> times(fns.size());
  const double start = wall_seconds();
  for (int round = 0; round < 200 && (round < min_rounds || wall_seconds() - start < budget); ++round)
    for (size_t i = 0; i < fns.size(); ++i) {
      const double t0 = now();
      fns[i]();
      times[i].push_back(now() - t0);
    }
  return times;
}

bool edges_pay(const uint32_t* x, const uint32_t* words, const WeightShape& s, const bconv::Execution& plan,
               const bconv::Execution& dense, const bconv::ConvParams& p, const bconv::Transform& t, bool own_call,
               const std::string& what) {
  const int64_t pixels = p.n * bconv::out_size(p.h, p.ph, p.dh, s.kh, p.sh) * bconv::out_size(p.w, p.pw, p.dw, s.kw, p.sw);
  std::vector<uint32_t> out(size_t(pixels * s.cout));  // 4 bytes per output, the most any kind needs
  auto run = [&](const bconv::Execution& e) { return [&, e] { bconv::conv(x, words, s, e, p, t, out.data()); }; };
  // 21 rounds at least, more while they take under 20 ms
  const std::vector<std::vector<double>> times = timed_rounds({run(plan), run(dense)}, 21, 20e-3);
  std::vector<double> ratios;
  for (size_t r = 0; r < times[0].size(); ++r) ratios.push_back(times[0][r] / times[1][r]);
  std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2, ratios.end());
  const double plan_s = fastest(times[0]), dense_s = fastest(times[1]), median = ratios[ratios.size() / 2];
  const bool pays = plan_s < kTrialMargin * dense_s && median < (own_call ? kTrialMargin : 1.0);
  if (debug_enabled()) {
    char line[320];
    snprintf(line, sizeof line, "%s: plan %.1f us vs dense %.1f us (best of %zu; median ratio %.2f): %s", what.c_str(),
             plan_s * 1e6, dense_s * 1e6, ratios.size(), median,
             pays ? "edges kept" : own_call ? "edges dropped (needs < 0.95x dense, best and median)"
                                         : "edges dropped (needs < 0.95x dense at best, < 1x median)");
    debug_log(line);
  }
  return pays;
}

// At build time: a synthetic input of this layer's shape, two 16 x 16 images (kTrialPixels output
// pixels), output `kind` (float: the slowest of the plan's output passes), against `dense`.
bool plan_pays(const uint32_t* words, const WeightShape& s, const Built& plan, const Built& dense, bconv::Output kind) {
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
  const int64_t edges = plan.nedges;
  char what[200];
  snprintf(what, sizeof what, "MST trial, %s output, %lld channels (%lld edges), %lldx%lldx%lld per channel",
           bconv::output_name(kind), (long long)s.cout, (long long)edges, (long long)s.cin_g,
           (long long)s.kh, (long long)s.kw);
  bconv::Transform t;
  t.kind = kind;
  return edges_pay(x.data(), words, s, plan.execution(), dense.execution(), p, t, false, what);
}

}  // namespace xnorm::mst
