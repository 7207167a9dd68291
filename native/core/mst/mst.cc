#include "mst.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "../bconv/kernels.h"
#include "../common/checked.h"
#include "../common/error.h"
#include "../common/thread_pool.h"

namespace xnorm::mst {
namespace {

using bconv::WeightShape;

std::string num(int64_t v) { return std::to_string(v); }
[[noreturn]] void corrupt(const std::string& m) { fail(ErrorCode::CorruptPlan, "MstPlan: " + m); }

// Auto attaches a channel only when reuse costs at most this fraction of computing it densely: in
// real layers an edge's parent and child rows are scattered over the tile, which the calibration sees
// only in part, and timing noise must not turn into a slower layer.
constexpr double kAutoMargin = 0.6;

// Calibration times the real executor on a synthetic 3x3 layer (Cin 256, Cout 128, 4 x 16 x 16) with
// different mixes of roots and edges, so everything a plan adds (the word-major copy, the channel-major
// tile and its transpose, the edge records, cache effects) is measured where it happens, with the
// threads a real call uses. Configurations are interleaved and each keeps its best time: another
// process only ever adds time.
template <typename F>
double best_window(F&& fn, double window) {
  using clock = std::chrono::steady_clock;
  int64_t reps = 0;
  auto t0 = clock::now();
  double dt = 0;
  do {
    fn();
    ++reps;
    dt = std::chrono::duration<double>(clock::now() - t0).count();
  } while (dt < window);
  return dt / double(reps);
}

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

// Prim over one group's channels plus the virtual root; returns parents local to the group.
std::vector<int32_t> prim(const uint32_t* rows, int64_t n, const WeightShape& s, Reuse reuse) {
  const bconv::Kernels& kn = bconv::active_kernels();
  const int64_t kw = s.row_words();
  double root_cost;
  auto edge_cost = [&](int32_t ham, int32_t dw) {
    if (reuse == Reuse::Always) return double(ham);
    const Costs& c = calibrated_costs();
    return c.reuse_per_edge + c.reuse_per_word * dw;
  };
  if (reuse == Reuse::Always) root_cost = double(s.k());
  else root_cost = kAutoMargin * calibrated_costs().dense_per_word * double(kw);
  std::vector<double> key(size_t(n), root_cost);
  std::vector<int32_t> parent(static_cast<size_t>(n), -1), ham(static_cast<size_t>(n)), dw(static_cast<size_t>(n));
  std::vector<uint8_t> in(size_t(n), 0);
  for (int64_t it = 0; it < n; ++it) {
    int64_t u = -1;
    for (int64_t v = 0; v < n; ++v)
      if (!in[size_t(v)] && (u < 0 || key[size_t(v)] < key[size_t(u)])) u = v;
    in[size_t(u)] = 1;
    kn.distances(rows + u * kw, rows, n, kw, ham.data(), dw.data());
    for (int64_t v = 0; v < n; ++v) {
      if (in[size_t(v)]) continue;
      double c = edge_cost(ham[size_t(v)], dw[size_t(v)]);
      if (c < key[size_t(v)]) {
        key[size_t(v)] = c;
        parent[size_t(v)] = int32_t(u);
      }
    }
  }
  return parent;
}

uint64_t fnv1a(const uint32_t* words, int64_t n) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < n; ++i)
    for (int b = 0; b < 4; ++b) {
      h ^= (words[i] >> (8 * b)) & 0xffu;
      h *= 1099511628211ull;
    }
  return h;
}

uint32_t crc32(const uint8_t* p, int64_t n) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (int64_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

void put32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = uint8_t(v >> (8 * b));
}
uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

constexpr uint8_t kMagic[4] = {'X', 'N', 'M', 'S'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kHeader = 44;  // magic, version, reuse, maxDepth, 5 shape fields, 64-bit weights hash

// The final word for 'auto': the plan against the dense weights on a synthetic input of this layer's
// shape (one 16 x 16 image, float output), interleaved, best of five each. The edges stay only if they
// are clearly faster. The cost model chose them from per-word costs; this sees what it cannot for this
// shape (cache effects, the output pass a plan cannot fuse) and a calibration skewed by a busy machine.
constexpr double kTrialMargin = 0.95;

bool plan_pays(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent) {
  bconv::ConvParams p;
  p.n = 1;
  p.h = std::max<int64_t>(16, s.kh);
  p.w = std::max<int64_t>(16, s.kw);
  p.c = s.cin_g * s.groups;
  p.ph = s.kh / 2;
  p.pw = s.kw / 2;
  const int64_t wc = (p.c + 31) / 32, pixels = p.h * p.w;
  uint32_t seed = 2024;
  std::vector<uint32_t> x(size_t(pixels * wc));
  for (int64_t i = 0; i < pixels * wc; ++i) {
    seed = seed * 1664525u + 1013904223u;
    x[size_t(i)] = i % wc == wc - 1 && p.c % 32 ? seed & ((1u << (p.c % 32)) - 1) : seed;  // tail bits 0
  }
  const Built dense = build_execution(words, s, std::vector<int32_t>(size_t(s.cout), -1));
  const Built plan = build_execution(words, s, parent);
  std::vector<float> out(size_t(bconv::out_size(p.h, p.ph, 1, s.kh, 1) * bconv::out_size(p.w, p.pw, 1, s.kw, 1) * s.cout));
  bconv::Transform t;
  auto run = [&](const Built& b) {
    const bconv::Execution e{b.panels.data(), b.npanels, b.edges.data(), b.nedges, int64_t(b.edges.size())};
    bconv::conv(x.data(), words, s, e, p, t, out.data());
  };
  double dense_s = 1e30, plan_s = 1e30;
  for (int round = 0; round < 5; ++round) {
    dense_s = std::min(dense_s, best_window([&] { run(dense); }, 1e-3));
    plan_s = std::min(plan_s, best_window([&] { run(plan); }, 1e-3));
  }
  return plan_s < kTrialMargin * dense_s;
}

}  // namespace

const Costs& calibrated_costs() {
  static const Costs c = calibrate();  // plain data, measured once per process
  return c;
}

std::vector<int32_t> depths(const std::vector<int32_t>& parent, const WeightShape& s) {
  int64_t cog = s.cout_g();
  std::vector<int32_t> depth(size_t(s.cout), -1);
  std::vector<int64_t> chain;
  for (int64_t c = 0; c < s.cout; ++c) {
    int32_t p = parent[size_t(c)];
    if (p != -1 && (p < 0 || p >= s.cout || p / cog != c / cog || p == c))
      corrupt("parent[" + num(c) + "] = " + num(p) + " is not -1 or a channel of the same group");
  }
  for (int64_t c = 0; c < s.cout; ++c) {
    chain.clear();
    int64_t v = c;
    while (v >= 0 && depth[size_t(v)] < 0) {
      if (int64_t(chain.size()) > s.cout) corrupt("the parent array has a cycle through channel " + num(c));
      chain.push_back(v);
      v = parent[size_t(v)];
    }
    int32_t d = v >= 0 ? depth[size_t(v)] : -1;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) depth[size_t(*it)] = ++d;
  }
  return depth;
}

std::vector<int32_t> build_tree(const uint32_t* words, const WeightShape& s, Reuse reuse, int32_t max_depth) {
  bconv::check_weight_shape(s);
  std::vector<int32_t> parent(size_t(s.cout), -1);
  if (reuse == Reuse::Never) return parent;
  int64_t cog = s.cout_g(), kw = s.row_words();
  if (reuse == Reuse::Auto) calibrated_costs();  // measure before the pool is busy with the groups
  std::vector<std::vector<int32_t>> local(size_t(s.groups));
  parallel_tasks(s.groups, [&](int64_t g) { local[size_t(g)] = prim(words + g * cog * kw, cog, s, reuse); });
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t i = 0; i < cog; ++i) {
      int32_t p = local[size_t(g)][size_t(i)];
      parent[size_t(g * cog + i)] = p < 0 ? -1 : int32_t(g * cog + p);
    }
  // Depth bound: re-root every channel one level too deep; its subtree moves up with it. Repeat until
  // nothing is too deep (each pass shortens every over-deep chain).
  for (;;) {
    std::vector<int32_t> depth = depths(parent, s);
    bool changed = false;
    for (int64_t c = 0; c < s.cout; ++c)
      if (depth[size_t(c)] == max_depth + 1) {
        parent[size_t(c)] = -1;
        changed = true;
      }
    if (!changed) break;
  }
  if (reuse == Reuse::Auto) {
    // A plan with any edge pays, per pixel, for a word-major copy of the input words and for turning
    // the channel-major results back to pixel-major; keep the edges only if they save more.
    const Costs& c = calibrated_costs();
    double saved = 0;
    std::vector<int32_t> ham(1), dw(1);
    for (int64_t ch = 0; ch < s.cout; ++ch) {
      int32_t p = parent[size_t(ch)];
      if (p < 0) continue;
      bconv::active_kernels().distances(words + p * kw, words + ch * kw, 1, kw, ham.data(), dw.data());
      saved += c.dense_per_word * double(kw) - (c.reuse_per_edge + c.reuse_per_word * dw[0]);
    }
    if (saved <= c.transpose_per_word * double(s.groups * kw + s.cout) || !plan_pays(words, s, parent))
      std::fill(parent.begin(), parent.end(), -1);
  }
  return parent;
}

Built build_execution(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent) {
  bconv::check_weight_shape(s);
  if (int64_t(parent.size()) != s.cout) corrupt("parent: expected " + num(s.cout) + " entries");
  std::vector<int32_t> depth = depths(parent, s);
  Built b;
  int64_t kw = s.row_words();
  std::vector<uint32_t> roots;
  std::vector<std::pair<int32_t, int32_t>> children;  // (depth, channel): level order
  for (int64_t c = 0; c < s.cout; ++c) {
    if (parent[size_t(c)] < 0) roots.push_back(uint32_t(c));
    else children.push_back({depth[size_t(c)], int32_t(c)});
    b.depth = std::max(b.depth, depth[size_t(c)]);
  }
  std::sort(children.begin(), children.end());
  b.npanels = bconv::build_panels(words, s, roots, nullptr);
  b.panels.resize(size_t(checked_mul(b.npanels, bconv::panel_record_words(s), "plan")));
  bconv::build_panels(words, s, roots, b.panels.data());
  for (const auto& dc : children) {
    int64_t c = dc.second, p = parent[size_t(c)];
    size_t head = b.edges.size();
    b.edges.insert(b.edges.end(), {uint32_t(c), uint32_t(p), 0u, 0u});
    uint32_t nw = 0, d = 0;
    for (int64_t k = 0; k < kw; ++k) {
      uint32_t wp = words[p * kw + k], m = wp ^ words[c * kw + k];
      if (!m) continue;
      b.edges.insert(b.edges.end(), {uint32_t(k), m, wp & m});
      ++nw;
      d += uint32_t(__builtin_popcount(m));
    }
    b.edges[head + 2] = nw;
    b.edges[head + 3] = d;
    b.total_distance += d;
    ++b.nedges;
  }
  b.bits_processed = double(roots.size()) * double(s.k()) + double(b.total_distance);
  return b;
}

int64_t serialized_size(const WeightShape& s) { return kHeader + 4 * s.cout + 4; }

void serialize(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent, Reuse reuse,
               int32_t max_depth, uint8_t* out) {
  std::copy(kMagic, kMagic + 4, out);
  put32(out + 4, kVersion);
  put32(out + 8, uint32_t(reuse));
  put32(out + 12, uint32_t(max_depth));
  const int64_t dims[5] = {s.cout, s.cin_g, s.kh, s.kw, s.groups};
  for (int i = 0; i < 5; ++i) put32(out + 16 + 4 * i, uint32_t(dims[i]));
  uint64_t h = fnv1a(words, s.cout * s.row_words());
  put32(out + 36, uint32_t(h));
  put32(out + 40, uint32_t(h >> 32));
  for (int64_t c = 0; c < s.cout; ++c) put32(out + kHeader + 4 * c, uint32_t(parent[size_t(c)]));
  int64_t body = kHeader + 4 * s.cout;
  put32(out + body, crc32(out, body));
}

std::vector<int32_t> deserialize(const uint8_t* bytes, int64_t len, const uint32_t* words, const WeightShape& s,
                                 Reuse* reuse, int32_t* max_depth) {
  if (len < kHeader + 4) corrupt("truncated: " + num(len) + " bytes, a plan has at least " + num(kHeader + 4));
  if (!std::equal(kMagic, kMagic + 4, bytes)) corrupt("not an xnorm MST plan (bad magic)");
  if (get32(bytes + 4) != kVersion)
    corrupt("unsupported format version " + num(get32(bytes + 4)) + " (this build reads " + num(kVersion) + ")");
  int64_t cout = get32(bytes + 16);
  if (len != kHeader + 4 * cout + 4)
    corrupt("expected " + num(kHeader + 4 * cout + 4) + " bytes for Cout = " + num(cout) + ", received " + num(len));
  if (crc32(bytes, len - 4) != get32(bytes + len - 4)) corrupt("checksum mismatch: the bytes were altered");
  const int64_t want[5] = {s.cout, s.cin_g, s.kh, s.kw, s.groups};
  for (int i = 0; i < 5; ++i)
    if (int64_t(get32(bytes + 16 + 4 * i)) != want[i])
      corrupt("made for weights of another shape ([Cout, Cin/g, kh, kw, groups] field " + num(i) + " is " +
              num(get32(bytes + 16 + 4 * i)) + ", the weights have " + num(want[i]) + ")");
  uint64_t h = fnv1a(words, s.cout * s.row_words());
  if (get32(bytes + 36) != uint32_t(h) || get32(bytes + 40) != uint32_t(h >> 32))
    corrupt("made for other weights (weights hash mismatch)");
  uint32_t r = get32(bytes + 8), md = get32(bytes + 12);
  if (r > 2) corrupt("bad reuse mode " + num(r));
  if (md < 1 || md > 65535) corrupt("bad maxDepth " + num(md));
  std::vector<int32_t> parent(size_t(s.cout));
  for (int64_t c = 0; c < s.cout; ++c) parent[size_t(c)] = int32_t(get32(bytes + kHeader + 4 * c));
  std::vector<int32_t> depth = depths(parent, s);
  for (int64_t c = 0; c < s.cout; ++c) {
    if (depth[size_t(c)] > int32_t(md)) corrupt("channel " + num(c) + " is deeper than maxDepth " + num(md));
    if (r == uint32_t(Reuse::Never) && parent[size_t(c)] >= 0) corrupt("a 'never' plan has a reuse edge");
  }
  *reuse = Reuse(r);
  *max_depth = int32_t(md);
  return parent;
}

}  // namespace xnorm::mst
