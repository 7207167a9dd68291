// Building the executor's records from a parent array: panels for the roots, reuse edges in level order,
// and the CPU's form with majority channels where they save bits.
#include "mst.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "../bconv/kernels.h"
#include "../common/checked.h"
#include "mst_internal.h"

namespace xnorm::mst {
namespace {

// What an edge costs beyond its differing bits, in bits: a child's fixed work (its adders' tail, the
// parent add and the sign) is worth tens of bits on the CPU ('bits' output; float output's expansion
// more), so a majority channel must save more than its star's one extra edge.
constexpr int64_t kEdgeBits = 64;

int64_t distance(const uint32_t* a, const uint32_t* b, int64_t kw) {
  int32_t bits, words;
  bconv::active_kernels().distances(a, b, 1, kw, &bits, &words);
  return bits;
}

// Appends the record of `child` from `parent` over rows of kw words; returns its bit count.
uint32_t append_record(std::vector<uint32_t>& edges, uint32_t child, uint32_t parent, const uint32_t* wc,
                       const uint32_t* wp, int64_t kw) {
  const size_t head = edges.size();
  edges.insert(edges.end(), {child, parent, 0u, 0u});
  uint32_t nw = 0, d = 0;
  for (int64_t k = 0; k < kw; ++k) {
    const uint32_t m = wp[k] ^ wc[k];
    if (!m) continue;
    edges.insert(edges.end(), {uint32_t(k), m, wp[k] & m});
    ++nw;
    d += uint32_t(__builtin_popcount(m));
  }
  edges[head + 2] = nw;
  edges[head + 3] = d;
  return d;
}

}  // namespace

std::vector<uint32_t> majority(const uint32_t* words, const std::vector<int64_t>& members, int64_t kw) {
  std::vector<uint32_t> m(static_cast<size_t>(kw));
  const int64_t n = int64_t(members.size());
  for (int64_t k = 0; k < kw; ++k) {
    uint32_t out = 0;
    for (int b = 0; b < 32; ++b) {
      int64_t ones = 0;
      for (int64_t c : members) ones += (words[c * kw + k] >> b) & 1u;
      const bool bit = 2 * ones == n ? (words[members[0] * kw + k] >> b) & 1u : 2 * ones > n;
      out |= uint32_t(bit) << b;
    }
    m[size_t(k)] = out;
  }
  return m;
}

std::vector<uint32_t> star_majority(const uint32_t* words, const std::vector<int64_t>& star, int64_t kw) {
  if (star.size() < 3) return {};  // of two, the majority is the root itself
  const int64_t r = star[0];
  std::vector<uint32_t> m = majority(words, star, kw);
  int64_t before = 0, after = kEdgeBits;
  for (int64_t c : star) {
    if (c != r) before += distance(words + c * kw, words + r * kw, kw);
    after += distance(words + c * kw, m.data(), kw);
  }
  if (after >= before) return {};
  return m;
}

Built build_execution(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent) {
  bconv::check_weight_shape(s);
  if (int64_t(parent.size()) != s.cout) corrupt("parent: expected " + num(s.cout) + " entries");
  std::vector<int32_t> depth = depths(parent, s);
  Built b;
  const int64_t kw = s.row_words(), cog = s.cout_g();
  std::vector<std::pair<int32_t, int32_t>> children;  // (depth, channel): level order
  std::vector<std::vector<int64_t>> star(size_t(s.cout));  // each root's star: itself, then its children
  for (int64_t c = 0; c < s.cout; ++c) {
    if (parent[size_t(c)] < 0) star[size_t(c)].push_back(c);
    else children.push_back({depth[size_t(c)], int32_t(c)});
    b.depth = std::max(b.depth, depth[size_t(c)]);
  }
  for (int64_t c = 0; c < s.cout; ++c)
    if (parent[size_t(c)] >= 0 && parent[size_t(parent[size_t(c)])] < 0) star[size_t(parent[size_t(c)])].push_back(c);
  std::sort(children.begin(), children.end());
  for (const auto& dc : children) {
    const int64_t c = dc.second, p = parent[size_t(c)];
    b.total_distance += append_record(b.edges, uint32_t(c), uint32_t(p), words + c * kw, words + p * kw, kw);
    ++b.nedges;
  }
  bconv::validate_records(s, b.edges.data(), b.nedges, int64_t(b.edges.size()));

  // The CPU's form: stars whose majority is closer to them than their root start from it.
  std::vector<uint32_t> all(words, words + s.cout * kw);  // the output channels' rows, then the majorities'
  std::vector<int64_t> cpu_parent(parent.begin(), parent.end());
  for (int64_t r = 0; r < s.cout; ++r) {
    const std::vector<int64_t>& st = star[size_t(r)];
    const std::vector<uint32_t> m = star_majority(words, st, kw);
    if (m.empty()) continue;
    const int64_t v = s.cout + int64_t(b.virtual_group.size());
    b.virtual_group.push_back(uint32_t(r / cog));
    all.insert(all.end(), m.begin(), m.end());
    for (int64_t c : st) cpu_parent[size_t(c)] = v;
  }
  const int64_t nvirtual = int64_t(b.virtual_group.size()), channels = s.cout + nvirtual;
  std::vector<uint32_t> roots;  // by group: the output channels computed densely, then the majorities
  for (int64_t g = 0; g < s.groups; ++g) {
    for (int64_t c = g * cog; c < (g + 1) * cog; ++c)
      if (cpu_parent[size_t(c)] < 0) roots.push_back(uint32_t(c));
    for (int64_t v = 0; v < nvirtual; ++v)
      if (b.virtual_group[size_t(v)] == uint64_t(g)) roots.push_back(uint32_t(s.cout + v));
  }
  b.npanels = bconv::build_panels(all.data(), s, roots, nullptr, b.virtual_group.data());
  b.panels.resize(size_t(checked_mul(b.npanels, bconv::panel_record_words(s), "plan")));
  bconv::build_panels(all.data(), s, roots, b.panels.data(), b.virtual_group.data());
  int64_t bits = 0;
  if (nvirtual > 0) {
    // A star's root moves to level 1 beside its children; deeper levels are unchanged.
    std::vector<std::pair<int32_t, int32_t>> cpu_children;
    for (int64_t c = 0; c < s.cout; ++c)
      if (cpu_parent[size_t(c)] >= 0) cpu_children.push_back({std::max(depth[size_t(c)], 1), int32_t(c)});
    std::sort(cpu_children.begin(), cpu_children.end());
    for (const auto& dc : cpu_children) {
      const int64_t c = dc.second, p = cpu_parent[size_t(c)];
      bits += append_record(b.cpu_edges, uint32_t(c), uint32_t(p), all.data() + c * kw, all.data() + p * kw, kw);
      ++b.cpu_nedges;
    }
  } else {
    bits = b.total_distance;
  }
  const bconv::Execution e = b.execution();
  bconv::sliced_steps(e.edges, e.nedges, channels, cog, b.steps, b.positions);
  bconv::validate_execution(s, b.execution());
  b.bits_processed = double(roots.size()) * double(s.k()) + double(bits);
  return b;
}

}  // namespace xnorm::mst
