// The per-pixel cost model of MST reuse (Costs, mst.h), measured once per process on this CPU.
#include "mst.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../common/debug.h"
#include "mst_internal.h"

namespace xnorm::mst {
namespace {

// Calibration times the real executor on synthetic 3x3 layers (Cin 256, 4 x 16 x 16) with different
// mixes of roots and edges, so everything a plan adds (the tile's bit rows, the channel-major tile
// and its output pass, the edge records, cache effects) is measured where it happens, with the
// threads a real call uses. Configurations are interleaved (timed_rounds) and each keeps its best
// time: another process only ever adds time.
Costs calibrate(bconv::Output kind) {
  uint32_t seed = 12345;
  auto rnd = [&] { return seed = seed * 1664525u + 1013904223u; };
  WeightShape s;
  s.cout = 128;
  s.cin_g = 256;
  s.kh = s.kw = 3;
  WeightShape s_half = s;  // the first 64 channels
  s_half.cout = s.cout / 2;
  const int64_t kw = s.row_words();
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
  std::vector<int32_t> out(size_t(pixels * s.cout));  // the most any kind writes
  bconv::Transform t;
  t.kind = kind;
  // The first `roots` channels of `sh` dense, each other one from a random earlier channel over
  // `nbits` scattered bits (the differences are arbitrary: only the time is used).
  auto execution = [&](const WeightShape& sh, int64_t roots, int64_t nbits) {
    Built b;
    std::vector<uint32_t> dense;
    for (int64_t i = 0; i < roots; ++i) dense.push_back(uint32_t(i));
    b.panels.resize(size_t(bconv::build_panels(words.data(), sh, dense, nullptr) * bconv::panel_record_words(sh)));
    b.npanels = bconv::build_panels(words.data(), sh, dense, b.panels.data());
    for (int64_t ch = roots; ch < sh.cout; ++ch) {
      std::vector<uint32_t> mask(size_t(kw), 0u);
      for (int64_t j = 0; j < nbits; ++j) {
        const int64_t k = (j * 257 + ch * 131) % (32 * kw);  // 257 is prime to 32 * kw: distinct bits
        mask[size_t(k / 32)] |= 1u << (k % 32);
      }
      const size_t head = b.edges.size();
      b.edges.insert(b.edges.end(), {uint32_t(ch), rnd() % uint32_t(ch), 0u, uint32_t(nbits)});
      for (int64_t k = 0; k < kw; ++k)
        if (mask[size_t(k)]) {
          b.edges.insert(b.edges.end(), {uint32_t(k), mask[size_t(k)], rnd() & mask[size_t(k)]});
          ++b.edges[head + 2];
        }
      ++b.nedges;
    }
    bconv::sliced_steps(b.edges.data(), b.nedges, sh.cout, sh.cout_g(), b.steps, b.positions);
    bconv::validate_execution(sh, b.execution());
    return b;
  };
  // One root panel each, so the edge runs differ from one another in edges only.
  constexpr int64_t kRoots = 32, kFew = 16, kMany = 512;
  const Built all_dense = execution(s, s.cout, 0), few = execution(s, kRoots, kFew), many = execution(s, kRoots, kMany),
              fewer_edges = execution(s_half, kRoots, kFew);
  auto run = [&](const WeightShape& sh, const Built& b) {
    return [&, sh = &sh, b = &b] { bconv::conv(x.data(), words.data(), *sh, b->execution(), p, t, out.data()); };
  };
  // 15 rounds at least, more while they take under 40 ms
  const std::vector<std::vector<double>> times =
      timed_rounds({run(s, all_dense), run(s, few), run(s, many), run(s_half, fewer_edges)}, 15, 40e-3);
  const double m1 = fastest(times[0]), m2 = fastest(times[1]), m3 = fastest(times[2]), m4 = fastest(times[3]);
  const double P = double(pixels), edges = double(s.cout - kRoots), more_edges = double(s.cout - s_half.cout);
  Costs c;
  // Per pixel, each run against another that differs in one thing:
  //   m3 - m2 = edges * (kMany - kFew) * reuse_per_bit       (the same edges, more differing bits)
  //   m2 - m4 = more_edges * (reuse_per_edge + kFew * bit)   (more channels, each from a parent)
  //   m1      = all channels dense
  //   m4 - m1 / 4 = what one root panel costs more in the MST executor, with everything a plan adds
  //                 per pixel (transpose_per_word), and its 32 edges.
  // No figure rests on a difference smaller than the edges it counts; a busy machine blurs them and
  // the timed trial has the last word.
  c.dense_per_word = m1 / (P * double(s.cout) * double(kw));
  c.reuse_per_bit = std::max(1e-15, (m3 - m2) / (P * edges * double(kMany - kFew)));
  const double few_bits = double(kFew) * c.reuse_per_bit;
  const double edge = std::max(few_bits, (m2 - m4) / (P * more_edges));
  c.reuse_per_edge = edge - few_bits;
  c.transpose_per_word =
      std::max(0.0, (m4 - m1 / 4) / P - double(s_half.cout - kRoots) * edge) / double(kw + s_half.cout);
  if (debug_enabled()) {
    char line[256];
    snprintf(line, sizeof line,
             "MST calibration, %s output (ns per pixel): reuse %.4f per differing bit + %.4f per edge, dense %.4f per weight word, "
             "transpose %.4f per word",
             bconv::output_name(kind), c.reuse_per_bit * 1e9, c.reuse_per_edge * 1e9, c.dense_per_word * 1e9, c.transpose_per_word * 1e9);
    debug_log(line);
  }
  return c;
}

}  // namespace

const Costs& calibrated_costs(bconv::Output kind) {
  // plain data, measured once per process, on first need
  if (kind == bconv::Output::Bits) {
    static const Costs bits_costs = calibrate(bconv::Output::Bits);
    return bits_costs;
  }
  static const Costs int32_costs = calibrate(bconv::Output::Int32);
  return int32_costs;
}

}  // namespace xnorm::mst
