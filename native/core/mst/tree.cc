// The reuse forest: Prim's algorithm per group over a virtual root, the depth bound, and the parent
// array's checks.
#include "mst.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "../bconv/kernels.h"
#include "../common/debug.h"
#include "../common/thread_pool.h"
#include "mst_internal.h"

namespace xnorm::mst {
namespace {

// Auto attaches a channel only when reuse costs at most this fraction of computing it densely: in
// real layers an edge's parent and child rows are scattered over the tile, which the calibration sees
// only in part, and timing noise must not turn into a slower layer.
constexpr double kAutoMargin = 0.75;

// What a channel costs computed densely (a root) and from a parent `ham` bits away: 'always' counts
// bits (root: K), 'auto' the calibrated time of one output kind (root: the dense time less a margin).
struct CostModel {
  Reuse reuse;
  const Costs* costs;  // 'auto' only
  double root;
  CostModel(const WeightShape& s, Reuse r, const Costs* c) : reuse(r), costs(c) {
    root = r == Reuse::Always ? double(s.k()) : kAutoMargin * c->dense_per_word * double(s.row_words());
  }
  double edge(int64_t ham) const {
    if (reuse == Reuse::Always) return double(ham);
    return costs->reuse_per_edge + costs->reuse_per_bit * double(ham);
  }
};

// Prim over one group's channels plus the virtual root; returns parents local to the group.
std::vector<int32_t> prim(const uint32_t* rows, int64_t n, const WeightShape& s, const CostModel& cost) {
  const bconv::Kernels& kn = bconv::active_kernels();
  const int64_t kw = s.row_words();
  std::vector<double> key(size_t(n), cost.root);
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
      double c = cost.edge(ham[size_t(v)]);
      if (c < key[size_t(v)]) {
        key[size_t(v)] = c;
        parent[size_t(v)] = int32_t(u);
      }
    }
  }
  return parent;
}

// 'auto': channels that differ from one another in more bits than an edge pays for can still lie close
// to a common centre (copies of one filter with independent flips: twice as close to their majority as
// to each other). The CPU computes a star's majority as an extra dense channel when it is closer to the
// star than its root (mst::build_execution), so here clusters of the group (channels joined by
// distances up to twice what an edge pays for) whose majority makes them cheaper than Prim's forest
// does become stars: the member nearest the majority as the root, the members an edge from the
// majority pays for as its children.
void majority_stars(const uint32_t* rows, int64_t n, const WeightShape& s, const CostModel& cost,
                    std::vector<int32_t>& parent) {
  const bconv::Kernels& kn = bconv::active_kernels();
  const int64_t kw = s.row_words();
  const Costs& c = *cost.costs;
  const double pays = (cost.root - c.reuse_per_edge) / c.reuse_per_bit;  // bits an edge from the majority may differ in
  if (pays <= 0) return;
  std::vector<int32_t> ham(static_cast<size_t>(n)), dw(static_cast<size_t>(n));
  std::vector<int64_t> cluster_of(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) cluster_of[size_t(i)] = i;
  auto find = [&](int64_t i) {
    while (cluster_of[size_t(i)] != i) i = cluster_of[size_t(i)] = cluster_of[size_t(cluster_of[size_t(i)])];
    return i;
  };
  // Joined at most K / 4 apart, whatever the costs: unrelated filters lie about K / 2 apart, and one
  // cluster over several centres has no useful majority (under qemu the calibration let edges pay up
  // to ~K / 2, and single linkage chained whole groups together).
  const double link = std::min(2 * pays, double(s.k()) / 4);
  std::vector<double> now(static_cast<size_t>(n));  // each channel's cost in Prim's forest
  for (int64_t i = 0; i < n; ++i) {
    kn.distances(rows + i * kw, rows, n, kw, ham.data(), dw.data());
    for (int64_t j = i + 1; j < n; ++j)
      if (ham[size_t(j)] <= link) cluster_of[size_t(find(j))] = find(i);
    now[size_t(i)] = parent[size_t(i)] < 0 ? cost.root : cost.edge(ham[size_t(parent[size_t(i)])]);
  }
  std::vector<std::vector<int64_t>> clusters(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) clusters[size_t(find(i))].push_back(i);
  for (const std::vector<int64_t>& members : clusters) {
    if (members.size() < 3) continue;
    const std::vector<uint32_t> m = majority(rows, members, kw);
    // The members an edge from the majority pays for form the star, the nearest one its root. It is
    // taken if it makes the cluster cheaper than Prim's forest and the CPU will run it from its own
    // majority (star_majority, as build_execution decides).
    std::vector<std::pair<int32_t, int64_t>> near;  // (distance to the majority, member)
    double before = 0, after = cost.root;         // the majority: one more dense channel
    for (int64_t i : members) {
      int32_t d;
      kn.distances(m.data(), rows + i * kw, 1, kw, &d, dw.data());
      before += now[size_t(i)];
      after += std::min(cost.edge(d), cost.root);
      if (cost.edge(d) < cost.root) near.push_back({d, i});
    }
    if (near.size() < 3 || after >= before) continue;
    std::sort(near.begin(), near.end());
    std::vector<int64_t> star;
    for (const auto& di : near) star.push_back(di.second);
    if (star_majority(rows, star, kw).empty()) continue;
    for (int64_t i : members) parent[size_t(i)] = -1;
    for (size_t q = 1; q < star.size(); ++q) parent[size_t(star[q])] = int32_t(star[0]);
  }
}

// 'auto': the roots of a group run in panels of kPanelWidth channels whose dense cost does not depend
// on how many of their slots are used, beyond whether the second half has any (a half_panel costs
// half), so the free slots up to the next multiple of kHalfPanel take the children with the most
// differing bits (their edges cost the most; their subtrees stay attached to them).
void fill_root_panels(const uint32_t* words, const WeightShape& s, std::vector<int32_t>& parent) {
  const bconv::Kernels& kn = bconv::active_kernels();
  const int64_t cog = s.cout_g(), kw = s.row_words();
  std::vector<int32_t> ham(1), dw(1);
  for (int64_t g = 0; g < s.groups; ++g) {
    std::vector<std::pair<int32_t, int32_t>> children;  // (-distance, channel): most differing first
    int64_t roots = 0;
    for (int64_t c = g * cog; c < (g + 1) * cog; ++c) {
      const int32_t p = parent[size_t(c)];
      if (p < 0) {
        ++roots;
        continue;
      }
      kn.distances(words + p * kw, words + c * kw, 1, kw, ham.data(), dw.data());
      children.push_back({-ham[0], int32_t(c)});
    }
    if (roots == 0) continue;
    const int64_t free_slots = (roots + bconv::kHalfPanel - 1) / bconv::kHalfPanel * bconv::kHalfPanel - roots;
    const int64_t n = std::min<int64_t>(free_slots, int64_t(children.size()));
    std::partial_sort(children.begin(), children.begin() + n, children.end());
    for (int64_t i = 0; i < n; ++i) parent[size_t(children[size_t(i)].second)] = -1;
  }
}

}  // namespace

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

std::vector<int32_t> check_plan(const std::vector<int32_t>& parent, const WeightShape& s, Reuse reuse, int32_t max_depth) {
  if (int64_t(parent.size()) != s.cout) corrupt("parent: expected " + num(s.cout) + " entries");
  std::vector<int32_t> depth = depths(parent, s);
  for (int64_t c = 0; c < s.cout; ++c) {
    if (depth[size_t(c)] > max_depth) corrupt("channel " + num(c) + " is deeper than maxDepth " + num(max_depth));
    if (reuse == Reuse::Never && parent[size_t(c)] >= 0) corrupt("a 'never' plan has a reuse edge");
  }
  return depth;
}

namespace {

// One forest: Prim's per group ('auto': and its stars), the depth bound, and for 'auto' the roots'
// panels filled.
std::vector<int32_t> forest(const uint32_t* words, const WeightShape& s, const CostModel& cost, int32_t max_depth) {
  const int64_t cog = s.cout_g(), kw = s.row_words();
  std::vector<std::vector<int32_t>> local(size_t(s.groups));
  parallel_tasks(s.groups, [&](int64_t g) {
    const uint32_t* rows = words + g * cog * kw;
    local[size_t(g)] = prim(rows, cog, s, cost);
    if (cost.reuse == Reuse::Auto) majority_stars(rows, cog, s, cost, local[size_t(g)]);
  });
  std::vector<int32_t> parent(size_t(s.cout), -1);
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
  if (cost.reuse == Reuse::Auto) fill_root_panels(words, s, parent);
  return parent;
}

// Whether an 'auto' forest's edges pay with output `kind`. A plan with any edge pays, per pixel, for
// the tile's bit rows and for turning the channel-major results back to pixel-major. The calibrated
// figure for it is an upper bound (it also holds what root panels cost more stored channel-major, and
// what a busy machine adds), so only plans saving less than half of it go without a trial; the trial
// decides the rest on this layer's shape. (Counted on what the CPU runs: majority channels as roots,
// stars from them.)
// `dense` gives the trial's baseline, the weights without edges.
bool auto_edges_pay(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent, const Costs& c,
                    bconv::Output kind, const std::function<const Built&()>& dense) {
  const Built b = build_execution(words, s, parent);
  const int64_t edges = b.execution().nedges, roots = s.cout + int64_t(b.virtual_group.size()) - edges;
  const double bits = b.bits_processed - double(roots) * double(s.k());
  const double saved = double(s.cout - roots) * c.dense_per_word * double(s.row_words()) -
                       double(edges) * c.reuse_per_edge - bits * c.reuse_per_bit;
  const double overhead = 0.5 * c.transpose_per_word * double(s.groups * s.row_words() + s.cout);
  if (edges > 0 && saved > overhead) return plan_pays(words, s, b, dense(), kind);
  if (debug_enabled()) {
    char line[240];
    const char* name = bconv::output_name(kind);
    if (edges == 0)
      snprintf(line, sizeof line, "MST 'auto' tree for %s output, %lld channels: the cost model finds no edge that pays",
               name, (long long)s.cout);
    else
      snprintf(line, sizeof line, "MST 'auto' tree for %s output, %lld channels: the cost model saves %.2f ns per "
               "pixel, less than the plan's %.2f: no edges, no trial", name, (long long)s.cout, saved * 1e9, overhead * 1e9);
    debug_log(line);
  }
  return false;
}

}  // namespace

Tree build_tree(const uint32_t* words, const WeightShape& s, Reuse reuse, int32_t max_depth) {
  bconv::check_weight_shape(s);
  Tree t;
  t.parent.assign(size_t(s.cout), -1);
  if (reuse == Reuse::Never) return t;
  if (reuse == Reuse::Always) {
    t.parent = forest(words, s, CostModel(s, reuse, nullptr), max_depth);
    return t;
  }
  // Float output first: edges that pay there pay for every kind. Failing that, a tree on the 'bits'
  // costs (a child's sums stay bit-sliced, so edges pay up to more differing bits) for 'bits' calls.
  std::unique_ptr<Built> dense;  // both trees' trials time against it: built once, on the first
  const auto dense_once = [&]() -> const Built& {
    if (!dense) dense = std::make_unique<Built>(build_execution(words, s, std::vector<int32_t>(size_t(s.cout), -1)));
    return *dense;
  };
  for (bconv::Output kind : {bconv::Output::Float, bconv::Output::Bits}) {
    const Costs& c = calibrated_costs(kind);  // measured before the pool is busy with the groups
    std::vector<int32_t> parent = forest(words, s, CostModel(s, reuse, &c), max_depth);
    if (auto_edges_pay(words, s, parent, c, kind, dense_once)) {
      t.parent = std::move(parent);
      t.bits_only = kind == bconv::Output::Bits;
      break;
    }
  }
  return t;
}

}  // namespace xnorm::mst
