// The level tables of an MST plan: which channels are roots, each channel's depth, and where each level
// of reuse edges starts and ends in the plan's edge records. Each level reads only earlier ones.
#pragma once
#include <cstdint>
#include <vector>

#include "mst.h"

namespace xnorm::mst {

struct Levels {
  std::vector<int32_t> roots;         // channels computed densely (depth 0), in increasing order
  std::vector<int32_t> depth_of;      // per output channel
  std::vector<int64_t> edge_offsets;  // word offset of each edge record in Built::edges
  std::vector<int64_t> level_ends;    // the edges of level d (1..depth) are [level_ends[d-2], level_ends[d-1])
};

// From a checked parent array and its execution (build_execution of the same parent array).
Levels levels(const std::vector<int32_t>& parent, const Built& b, const bconv::WeightShape& s);

}  // namespace xnorm::mst
