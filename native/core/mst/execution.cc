// Building the executor's records from a parent array: panels for the roots, reuse edges in level order.
#include "mst.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "../common/checked.h"
#include "mst_internal.h"

namespace xnorm::mst {

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
  bconv::sliced_steps(b.edges.data(), b.nedges, s.cout, s.cout_g(), b.steps, b.positions);
  bconv::validate_execution(s, b.execution());
  b.bits_processed = double(roots.size()) * double(s.k()) + double(b.total_distance);
  return b;
}

}  // namespace xnorm::mst
