// MST channel reuse: output channels whose binary weights are close are computed from a parent channel's
// popcounts plus a correction over the bits where they differ (docs/DESIGN.md "MST plans"):
//   popc(x ^ w_j) = popc(x ^ w_i) + |D| - 2 * sum_{k in D} (x_k ^ w_ik),
// counted bit-sliced on the CPU (bconv/sliced.h) and over the differing words on a GPU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../bconv/bconv.h"

namespace xnorm::mst {

enum class Reuse { Auto = 0, Always = 1, Never = 2 };

// Per-pixel costs (seconds) of the executor in use, measured once per process and output kind on this
// CPU by timing real convolutions (see calibrate() in calibration.cc). A channel is worth reusing when
// reuse_per_edge + reuse_per_bit * differing_bits < dense_per_word * words_per_channel.
struct Costs {
  double dense_per_word;      // computing one channel densely, per word of its weights
  double reuse_per_bit;       // one edge, per differing bit
  double reuse_per_edge;      // fixed part of an edge (the expansion of its sums, the parent add)
  double transpose_per_word;  // having any edge at all, per (input word + output channel) of a pixel
};
// Int32 (also float's: they expand a child's sums alike) or Bits (a child's sums stay bit-sliced).
const Costs& calibrated_costs(bconv::Output kind = bconv::Output::Int32);

// An 'auto' plan's edges are kept at build time only if a timed trial of two 16 x 16 images
// (kTrialPixels output pixels) runs them clearly faster than the dense weights, with float output
// (then every output kind runs them) or else, for a tree built on the 'bits' costs, with 'bits' output
// (then only 'bits' calls run them: Tree::bits_only); calls with at least as many output pixels run them.
// A smaller call has fewer pixels per tile and fewer tiles for the threads, so there the first call of
// each output pixel count (and output kind) times the edges against the dense weights on its own
// input, and that verdict holds for later calls of that size (Plan in the addon).
// 'always' plans run their edges on every call.
constexpr int64_t kTrialPixels = 512;

// The timed trial: the plan's execution against the dense one on input x with geometry p and output
// t.kind, interleaved. True when the plan is clearly faster (see kTrialMargin in trial.cc; own_call:
// the trial is of the call it decides, which must gain in the median too). `what` names the trial in
// the XNORM_DEBUG line.
bool edges_pay(const uint32_t* x, const uint32_t* words, const bconv::WeightShape& s, const bconv::Execution& plan,
               const bconv::Execution& dense, const bconv::ConvParams& p, const bconv::Transform& t, bool own_call,
               const std::string& what);

// parent[c] = -1 (computed densely) or a channel of the same group. Prim's algorithm per group over
// a virtual root whose edge cost is a channel's from-scratch cost; `Always` weighs edges by Hamming
// distance (root: K), `Auto` by the calibrated cost of an edge and its differing bits (root: the dense
// cost, less a margin so reuse is chosen only where it clearly pays), fills each group's roots up to a
// multiple of 16 (bconv::kHalfPanel) with the costliest children, and keeps the edges only if a timed
// trial on a synthetic input of this layer's shape runs the plan at least 5 % faster than the dense weights:
// first a tree on the int32 costs with float output, failing that one on the 'bits' costs with 'bits'
// output (bits_only). Depth > maxDepth is cut by re-rooting.
struct Tree {
  std::vector<int32_t> parent;
  bool bits_only = false;  // an 'auto' plan whose edges the CPU runs for 'bits' output only
};
Tree build_tree(const uint32_t* words, const bconv::WeightShape& s, Reuse reuse, int32_t max_depth);

// Checks a parent array: range, same group, no cycles; returns each channel's depth (roots 0).
// Fails with CorruptPlan.
std::vector<int32_t> depths(const std::vector<int32_t>& parent, const bconv::WeightShape& s);

// Every plan, however made (built, deserialized or adopted), passes this one check: depths() plus no
// channel deeper than max_depth and no edge in a 'never' plan. Returns the depths.
std::vector<int32_t> check_plan(const std::vector<int32_t>& parent, const bconv::WeightShape& s, Reuse reuse,
                                int32_t max_depth);

struct Built {
  std::vector<uint32_t> panels;  // panel records for the roots (bconv::build_panels)
  int64_t npanels = 0;
  std::vector<uint32_t> edges;   // the plan's edge records in level order (the GPU's)
  int64_t nedges = 0;
  // The CPU's form when it starts some stars from majority channels (build_execution): its own edge
  // records (level order), the majority channels' groups; empty otherwise (the CPU runs `edges`).
  std::vector<uint32_t> cpu_edges, virtual_group;
  int64_t cpu_nedges = 0;
  std::vector<uint32_t> steps, positions;  // the CPU's edges as it runs them (bconv::Execution)
  int32_t depth = 0;
  int64_t total_distance = 0;    // sum of Hamming distances on the plan's reuse edges
  double bits_processed = 0;     // what the CPU runs: roots (majority channels included) * K + their edges' bits

  bconv::Execution execution() const {
    const bool own = !virtual_group.empty();
    const std::vector<uint32_t>& e = own ? cpu_edges : edges;
    return {panels.data(), npanels, e.data(), own ? cpu_nedges : nedges, int64_t(e.size()), steps.data(),
            positions.data(), int64_t(positions.size()), int64_t(virtual_group.size()), virtual_group.data()};
  }
};
// The plan's records, and the CPU's: a root whose star (itself and its children) is closer to the
// star's bitwise majority than to it, by more than an edge's fixed cost in bits, runs the majority
// densely as an extra channel and the whole star from it (docs/DESIGN.md "MST plans").
Built build_execution(const uint32_t* words, const bconv::WeightShape& s, const std::vector<int32_t>& parent);

// Versioned, checksummed bytes (docs/API.md "Serialized bytes"): header, shape, a hash of the weights,
// the parent array; version 2 (with_weights) also the weights themselves, compressed along the tree.
std::vector<uint8_t> serialize(const uint32_t* words, const bconv::WeightShape& s, const Tree& tree, Reuse reuse,
                               int32_t max_depth, bool with_weights);

// What a plan's bytes hold; `words` (the decoded canonical words) only for version 2.
struct Serialized {
  bconv::WeightShape shape;
  Reuse reuse = Reuse::Auto;
  int32_t max_depth = 1;
  Tree tree;
  std::vector<uint32_t> words;
};
// Rejects (CorruptPlan) any byte string that is truncated, altered, or made for other weights or shapes.
// `words` and `s` are the weights the plan is for; with both null the bytes must bring their own weights
// (version 2; version 1 fails with Argument) and the shape is theirs.
Serialized deserialize(const uint8_t* bytes, int64_t len, const uint32_t* words, const bconv::WeightShape* s);

}  // namespace xnorm::mst
