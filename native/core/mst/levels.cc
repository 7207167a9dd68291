// A plan's level tables, computed once when the plan is made: every executor and report reads these
// (the CUDA plugin runs one launch per level; lib/ reports the channels of each level).
#include "levels.h"

#include <algorithm>

#include "../common/error.h"

namespace xnorm::mst {

Levels levels(const std::vector<int32_t>& parent, const Built& b, const bconv::WeightShape& s) {
  Levels l;
  l.depth_of = depths(parent, s);
  for (int64_t c = 0; c < s.cout; ++c)
    if (parent[size_t(c)] < 0) l.roots.push_back(int32_t(c));
  // build_execution writes the edge records in level order (children sorted by depth).
  int32_t level = 0;
  for (int64_t i = 0, off = 0; i < b.nedges; ++i) {
    const int32_t child = int32_t(b.edges[size_t(off)]);
    const int32_t d = l.depth_of[size_t(child)];
    if (d < level) fail(ErrorCode::CorruptPlan, "plan: edge records out of level order");
    for (; level < d; ++level)
      if (level > 0) l.level_ends.push_back(i);
    l.edge_offsets.push_back(off);
    off += 4 + 3 * int64_t(b.edges[size_t(off) + 2]);
  }
  if (b.nedges > 0) l.level_ends.push_back(b.nedges);
  return l;
}

}  // namespace xnorm::mst
