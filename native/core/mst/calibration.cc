// The per-pixel cost model of MST reuse (Costs, mst.h), measured once per process on this CPU.
#include "mst.h"

#include <algorithm>
#include <vector>

#include "mst_internal.h"

namespace xnorm::mst {
namespace {

// Calibration times the real executor on a synthetic 3x3 layer (Cin 256, Cout 128, 4 x 16 x 16) with
// different mixes of roots and edges, so everything a plan adds (the word-major copy, the channel-major
// tile and its transpose, the edge records, cache effects) is measured where it happens, with the
// threads a real call uses. Configurations are interleaved and each keeps its best time: another
// process only ever adds time.
Costs calibrate() {
  uint32_t seed = 12345;
  auto rnd = [&] { return seed = seed * 1664525u + 1013904223u; };
  WeightShape s;
  s.cout = 128;
  s.cin_g = 256;
  s.kh = s.kw = 3;
  const int64_t kw = s.row_words(), half = s.cout / 2, quarter = s.cout / 4;
  std::vector<uint32_t> words(size_t(s.cout * kw));
  for (auto& v : words) v = rnd();
  bconv::ConvParams p;
  p.n = 4;
  p.h = p.w = 16;
  p.c = 256;
  p.ph = p.pw = 1;
  const int64_t pixels = p.n * p.h * p.w;
  std::vector<uint32_t> x(size_t(pixels * 8));
  for (auto& v : x) v = rnd();
  std::vector<int32_t> out(size_t(pixels * s.cout));
  bconv::Transform t;
  t.kind = bconv::Output::Int32;
  // The first `roots` channels dense, each other one from a random earlier channel over `nw` scattered
  // words (the masks are arbitrary: only the time is used).
  auto execution = [&](int64_t roots, int64_t nw, std::vector<uint32_t>& panels, std::vector<uint32_t>& edges) {
    std::vector<uint32_t> dense;
    for (int64_t i = 0; i < roots; ++i) dense.push_back(uint32_t(i));
    panels.resize(size_t(bconv::build_panels(words.data(), s, dense, nullptr) * bconv::panel_record_words(s)));
    int64_t np = bconv::build_panels(words.data(), s, dense, panels.data());
    edges.clear();
    for (int64_t ch = roots; ch < s.cout; ++ch) {
      size_t head = edges.size();
      edges.insert(edges.end(), {uint32_t(ch), rnd() % uint32_t(ch), uint32_t(nw), 0u});
      for (int64_t j = 0; j < nw; ++j) {
        uint32_t m = rnd() | 1u;
        edges.insert(edges.end(), {uint32_t((j * 71 + ch * 13) % kw), m, rnd() & m});
        edges[head + 3] += uint32_t(__builtin_popcount(m));
      }
    }
    return bconv::Execution{panels.data(), np, edges.data(), s.cout - roots, int64_t(edges.size())};
  };
  constexpr int64_t kFew = 8, kMany = 40;
  std::vector<uint32_t> pd, ed, p1, e1, p2, e2, p3, e3;
  const bconv::Execution all_dense = execution(s.cout, 0, pd, ed);
  const bconv::Execution few = execution(half, kFew, p1, e1);
  const bconv::Execution many = execution(half, kMany, p2, e2);
  const bconv::Execution fewer_edges = execution(s.cout - quarter, kFew, p3, e3);
  double m1 = 1e30, m2 = 1e30, m3 = 1e30, m4 = 1e30;
  auto run = [&](const bconv::Execution& e) { bconv::conv(x.data(), words.data(), s, e, p, t, out.data()); };
  for (int trial = 0; trial < 5; ++trial) {
    m1 = std::min(m1, best_window([&] { run(all_dense); }, 2e-3));
    m2 = std::min(m2, best_window([&] { run(few); }, 2e-3));
    m3 = std::min(m3, best_window([&] { run(many); }, 2e-3));
    m4 = std::min(m4, best_window([&] { run(fewer_edges); }, 2e-3));
  }
  const double P = double(pixels);
  Costs c;
  // Per pixel, with D the net saving of an edge of no words over computing its channel densely:
  //   m3 - m2 = half * (kMany - kFew) * c_w
  //   m4 - m2 = quarter * (D - kFew * c_w)
  //   m1 - m2 = half * (D - kFew * c_w) - (cost of having any edge)
  c.reuse_per_word = std::max(1e-15, (m3 - m2) / (P * double(half) * double(kMany - kFew)));
  const double net = (m4 - m2) / (P * double(quarter));
  c.dense_per_word = std::max(0.0, net + double(kFew) * c.reuse_per_word) / double(kw);  // D, per word
  c.reuse_per_edge = 0;                                                                   // folded into D
  c.transpose_per_word = std::max(0.0, double(half) * net - (m1 - m2) / P) / double(kw + s.cout);
  return c;
}

}  // namespace

const Costs& calibrated_costs() {
  static const Costs c = calibrate();  // plain data, measured once per process
  return c;
}

}  // namespace xnorm::mst
