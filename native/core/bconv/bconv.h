// Binary (XNOR/popcount) convolution on bit-packed ±1 tensors.
//
// Conventions (docs/DESIGN.md "Binary packing"): bit 1 = -1, bit 0 = +1; channels packed innermost (NHWC) in 32-bit
// words, tail bits 0. The dot product of K = kh*kw*Cin_per_group values is K - 2*popcount(x XOR w).
//
// Weights have two forms. The canonical one, [Cout][kh][kw][wg] words (wg = ceil(Cin_g / 32)), is what
// MST plans are built from and checked against. The execution one is a list of "panels": 32 output
// channels of one group side by side, word-major ([Kw][32], Kw = kh*kw*wg), so the kernel broadcasts
// one input word and XORs it with 32 channels' words in one vector.
#pragma once
#include <cstdint>
#include <vector>

namespace xnorm::bconv {

constexpr int kPanelWidth = 32;
constexpr uint32_t kNoChannel = 0xffffffffu;

struct WeightShape {
  int64_t cout = 0, cin_g = 0, kh = 0, kw = 0, groups = 1;
  int64_t wg() const { return (cin_g + 31) / 32; }          // words per tap
  int64_t taps() const { return kh * kw; }
  int64_t row_words() const { return taps() * wg(); }      // Kw: words per output channel
  int64_t k() const { return taps() * cin_g; }              // K: true dot-product length
  int64_t cout_g() const { return cout / groups; }
};
// Rejects non-positive sizes, Cout not divisible by groups, and sizes that overflow.
void check_weight_shape(const WeightShape& s);

// Panel record: [group, ch[32], data[Kw * 32]] words; `ch` holds global output channels or kNoChannel.
int64_t panel_record_words(const WeightShape& s);

// float [Cout, Cin_g, kh, kw] -> canonical words (bit = w < 0; NaN and 0 are +1).
void pack_weights(const float* w, const WeightShape& s, uint32_t* words);
// Panels covering `channels` (global ids, grouped by group in increasing group order): for each group,
// its listed channels in blocks of 32. Returns the number of records written to `out` (nullptr: count only).
// Channels from Cout on are an execution's majority channels (Execution): their rows follow the Cout
// rows in `words`, their groups are virtual_group[c - Cout].
int64_t build_panels(const uint32_t* words, const WeightShape& s, const std::vector<uint32_t>& channels,
                     uint32_t* out, const uint32_t* virtual_group = nullptr);

// Reuse edges of an MST plan, in level order. Record: [child, parent, nwords, D, then nwords triples
// (word index, mask = w_parent ^ w_child, parent bits & mask)]. The CPU's bit-sliced executor reads the
// same edges as steps (sliced_steps()), depth first: each root's subtrees one after another, a child
// right after its parent or its parent's earlier children's subtrees, so the planes a child starts from
// were written moments before. Step: [child, parent, group, D, zeros, flags], and per step its D
// positions k << kPositionShift | the parent's bit at k (k = 32 * word index + bit), the `zeros` of
// parent bit 0 first. (k << 6 is the byte offset of bit row k in 512-pixel tiles: a position of parent
// bit 0 addresses its row as it is.)
constexpr int kStepWords = 6;
constexpr int kPositionShift = 6;
// Bits per channel an MST execution can address (positions are 32-bit).
constexpr int64_t kMaxPositionBits = int64_t(1) << (32 - kPositionShift);
constexpr uint32_t kStepHasChildren = 1;  // flags: later steps read the child's planes
struct Execution {
  const uint32_t* panels = nullptr;
  int64_t npanels = 0;
  const uint32_t* edges = nullptr;  // may be null when nedges == 0
  int64_t nedges = 0;
  int64_t edge_words = 0;           // length of `edges` in words
  const uint32_t* steps = nullptr;      // nedges steps
  const uint32_t* positions = nullptr;  // the steps' D entries, in step order
  int64_t npositions = 0;
  // Majority channels (docs/DESIGN.md "MST plans"): channels Cout, Cout + 1, ... computed densely as
  // roots (in the panels) for children to start from, never written to the output; virtual_group[i]
  // is channel Cout + i's group.
  int64_t nvirtual = 0;
  const uint32_t* virtual_group = nullptr;
  int64_t channels(int64_t cout) const { return cout + nvirtual; }
};
// The group of channel c among Cout output channels and the majority channels of virtual_group's groups
// (c < Cout + the number of majority channels; virtual_group non-null when c >= Cout).
inline int64_t group_of(const WeightShape& s, const uint32_t* virtual_group, uint64_t c) {
  return c < uint64_t(s.cout) ? int64_t(c) / s.cout_g() : int64_t(virtual_group[c - uint64_t(s.cout)]);
}
// The steps and positions (see Execution) of edge records as build_execution writes them, on `channels`
// channels (Cout and the majority channels; children are output channels, cout_g per group).
void sliced_steps(const uint32_t* edges, int64_t nedges, int64_t channels, int64_t cout_g, std::vector<uint32_t>& steps,
                  std::vector<uint32_t>& positions);
// Checks that the panels and edges compute every output channel exactly once, parents before children,
// inside array bounds; fails with CorruptPlan otherwise. Cost O(Cout + edge words).
void validate_execution(const WeightShape& s, const Execution& e);
// The same checks for edge records alone (a plan's tree as the GPU runs it): channels no record
// computes are the roots.
void validate_records(const WeightShape& s, const uint32_t* edges, int64_t nedges, int64_t edge_words);

struct ConvParams {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input NHWC
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  bool pad_zero = false;  // padValue 'zero' (true zero padding) instead of 'one' (+1)
};
// Output size along one axis (valid only after check_conv).
inline int64_t out_size(int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}
// Validates geometry against the weights (channels, output size >= 1, overflow); fills nothing.
void check_conv(const ConvParams& p, const WeightShape& s);

enum class Output { Float, Int32, Bits };
// The output kind as the API spells it, for log lines: float, int32, 'bits'.
inline const char* output_name(Output kind) {
  return kind == Output::Bits ? "'bits'" : kind == Output::Int32 ? "int32" : "float";
}
struct Transform {
  Output kind = Output::Float;
  const float* scale = nullptr;  // per Cout, null = 1
  const float* bias = nullptr;   // per Cout, null = 0
  bool clamp = false;
  float lo = 0, hi = 0;
};

// Whether a call with MST edges keeps its children's counts bit-sliced to the output bit: 'bits' output,
// no 'zero' padding, every scale and bias finite (else the counts are expanded as for int32 output).
bool sliced_bits_output(const ConvParams& p, const Transform& t, int64_t cout);
// out: float [N, OH, OW, Cout], int32 likewise, or bits [N, OH, OW, ceil(Cout/32)] words. `e` must have
// passed validate_execution when it was made (mst::build_execution checks what it builds): a check per
// call would cost as much as a small layer's edges.
void conv(const uint32_t* x, const uint32_t* words, const WeightShape& s, const Execution& e, const ConvParams& p,
          const Transform& t, void* out);
// Direct loops over ±1 values: the oracle the fast path is tested against.
void conv_reference(const uint32_t* x, const uint32_t* words, const WeightShape& s, const ConvParams& p,
                    const Transform& t, void* out);

// float -> bits. NHWC: x is [pixels, C]; NCHW: x is [N, C, S]. bit = x < threshold (per channel, or one value).
void pack_bits(const float* x, bool nchw, int64_t n, int64_t c, int64_t s, const float* threshold_per_channel,
               float threshold, uint32_t* out);
// bits [N, S, C] -> float ±1, in NHWC or NCHW order.
void unpack_bits(const uint32_t* b, bool nchw, int64_t n, int64_t c, int64_t s, float* out);

}  // namespace xnorm::bconv
