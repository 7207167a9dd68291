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

// Auto attaches a channel only when reuse costs at most this fraction of computing it densely, so
// timing noise in the calibration cannot turn into a slower layer.
constexpr double kAutoMargin = 0.8;

// Best of five timings of fn(), each repeated (in batches of 16, so reading the clock does not count)
// until it has run for ~2 ms. The best, not the mean: other processes only ever add time.
template <typename F>
double seconds_per_call(F&& fn) {
  using clock = std::chrono::steady_clock;
  double best = 1e30;
  for (int trial = 0; trial < 5; ++trial) {
    int64_t reps = 0;
    auto t0 = clock::now();
    double dt = 0;
    do {
      for (int i = 0; i < 16; ++i) fn();
      reps += 16;
      dt = std::chrono::duration<double>(clock::now() - t0).count();
    } while (dt < 2e-3);
    best = std::min(best, dt / double(reps));
  }
  return best;
}

Costs calibrate() {
  const bconv::Kernels& kn = bconv::active_kernels();
  constexpr int64_t kPix = 64, kWords = 64, kEdgeWords = 16;
  std::vector<uint32_t> a(kPix * kWords), panel(kWords * bconv::kPanelWidth), at(kWords * kPix), ch(32);
  uint32_t seed = 12345;
  auto rnd = [&] { return seed = seed * 1664525u + 1013904223u; };
  for (auto& v : a) v = rnd();
  for (auto& v : panel) v = rnd();
  for (int c = 0; c < 32; ++c) ch[size_t(c)] = uint32_t(c);
  std::vector<int32_t> p(32 * kPix), child(kPix);  // p: a pixel-major tile, as the dense path uses
  std::vector<uint32_t> edge(3 * kEdgeWords);
  for (int64_t j = 0; j < kEdgeWords; ++j) {
    uint32_t m = rnd() | 1u;
    edge[size_t(3 * j)] = uint32_t(j * 3);
    edge[size_t(3 * j + 1)] = m;
    edge[size_t(3 * j + 2)] = rnd() & m;
  }
  Costs c;
  c.dense_per_word = seconds_per_call([&] { kn.dense_panel(a.data(), kWords, kPix, panel.data(), kWords, ch.data(), p.data(), 1, 32); }) /
                     double(kPix * 32 * kWords);
  double full = seconds_per_call([&] { kn.reuse_edge(at.data(), kPix, kPix, edge.data(), kEdgeWords, 7, p.data(), child.data()); });
  double empty = seconds_per_call([&] { kn.reuse_edge(at.data(), kPix, kPix, edge.data(), 0, 7, p.data(), child.data()); });
  c.reuse_per_edge = empty / double(kPix);
  c.reuse_per_word = std::max(0.0, full - empty) / double(kPix * kEdgeWords);
  c.transpose_per_word = seconds_per_call([&] { bconv::transpose_tile(a.data(), kPix, kWords, kWords, at.data(), kPix); }) /
                         double(kPix * kWords);
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
    // A plan with any edge pays for a word-major copy of each tile; keep the edges only if they save more.
    const Costs& c = calibrated_costs();
    double saved = 0;
    std::vector<int32_t> ham(1), dw(1);
    for (int64_t ch = 0; ch < s.cout; ++ch) {
      int32_t p = parent[size_t(ch)];
      if (p < 0) continue;
      bconv::active_kernels().distances(words + p * kw, words + ch * kw, 1, kw, ham.data(), dw.data());
      saved += c.dense_per_word * double(kw) - (c.reuse_per_edge + c.reuse_per_word * dw[0]);
    }
    if (saved <= c.transpose_per_word * double(s.groups * kw)) std::fill(parent.begin(), parent.end(), -1);
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
