// A plan's bytes: versioned, checksummed, bound to the weights' shape and a hash of their bits. Version 2
// also carries the weights, compressed along the tree (compress.cc), so they can be rebuilt from it.
#include "mst.h"

#include <algorithm>
#include <vector>

#include "mst_internal.h"

namespace xnorm::mst {
namespace {

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

constexpr uint8_t kMagic[4] = {'X', 'N', 'M', 'S'};
constexpr uint32_t kTreeOnly = 1, kWithWeights = 2;  // the format versions
constexpr int64_t kHeader = 44;  // magic, version, reuse, maxDepth, 5 shape fields, 64-bit weights hash
constexpr uint32_t kBitsOnly = 0x100;  // in the reuse field: an 'auto' plan whose CPU edges are for 'bits' output only
constexpr int64_t kMaxDim = int64_t(1) << 30;  // K <= 2^30, so no factor of it is larger

// The shape version-2 bytes bring when no weights are given: bounded so that no product overflows, then
// the kernels' own check, reported as a corrupt plan.
void check_stored_shape(const WeightShape& s) {
  if (s.cin_g > kMaxDim || s.kh > kMaxDim || s.kw > kMaxDim) corrupt("stored shape: a dimension exceeds 2^30");
  try {
    bconv::check_weight_shape(s);
  } catch (const Error& e) {
    corrupt(std::string("stored shape: ") + e.what());
  }
}

}  // namespace

std::vector<uint8_t> serialize(const uint32_t* words, const WeightShape& s, const Tree& tree, Reuse reuse,
                               int32_t max_depth, bool with_weights) {
  const std::vector<int32_t>& parent = tree.parent;
  std::vector<uint8_t> out(size_t(kHeader + 4 * s.cout));
  std::copy(kMagic, kMagic + 4, out.data());
  put32(&out[4], with_weights ? kWithWeights : kTreeOnly);
  put32(&out[8], uint32_t(reuse) | (tree.bits_only ? kBitsOnly : 0u));
  put32(&out[12], uint32_t(max_depth));
  const int64_t dims[5] = {s.cout, s.cin_g, s.kh, s.kw, s.groups};
  for (int i = 0; i < 5; ++i) put32(&out[size_t(16 + 4 * i)], uint32_t(dims[i]));
  uint64_t h = fnv1a(words, s.cout * s.row_words());
  put32(&out[36], uint32_t(h));
  put32(&out[40], uint32_t(h >> 32));
  for (int64_t c = 0; c < s.cout; ++c) put32(&out[size_t(kHeader + 4 * c)], uint32_t(parent[size_t(c)]));
  if (with_weights) append_weights(words, s, parent, out);
  const size_t body = out.size();
  out.resize(body + 4);
  put32(&out[body], crc32(out.data(), int64_t(body)));
  return out;
}

Serialized deserialize(const uint8_t* bytes, int64_t len, const uint32_t* words, const WeightShape* s) {
  if (len < kHeader + 4) corrupt("truncated: " + num(len) + " bytes, a plan has at least " + num(kHeader + 4));
  if (!std::equal(kMagic, kMagic + 4, bytes)) corrupt("not an xnorm MST plan (bad magic)");
  const uint32_t version = get32(bytes + 4);
  if (version != kTreeOnly && version != kWithWeights)
    corrupt("unsupported format version " + num(version) + " (this build reads 1 and 2)");
  const int64_t cout = get32(bytes + 16), fixed = kHeader + 4 * cout + 4;
  if (version == kTreeOnly && len != fixed)
    corrupt("expected " + num(fixed) + " bytes for Cout = " + num(cout) + ", received " + num(len));
  if (version == kWithWeights && len < fixed)
    corrupt("truncated: " + num(len) + " bytes, a plan with weights for Cout = " + num(cout) + " has more than " + num(fixed));
  if (crc32(bytes, len - 4) != get32(bytes + len - 4)) corrupt("checksum mismatch: the bytes were altered");
  Serialized r;
  r.shape = {cout, get32(bytes + 20), get32(bytes + 24), get32(bytes + 28), get32(bytes + 32)};
  if (s) {
    const int64_t got[5] = {r.shape.cout, r.shape.cin_g, r.shape.kh, r.shape.kw, r.shape.groups};
    const int64_t want[5] = {s->cout, s->cin_g, s->kh, s->kw, s->groups};
    for (int i = 0; i < 5; ++i)
      if (got[i] != want[i])
        corrupt("made for weights of another shape ([Cout, Cin/g, kh, kw, groups] field " + num(i) + " is " +
                num(got[i]) + ", the weights have " + num(want[i]) + ")");
  } else if (version == kTreeOnly) {
    fail(ErrorCode::Argument, "MstPlan.deserialize: version-1 bytes carry no weights: pass the BinaryWeights the plan was made for");
  } else {
    check_stored_shape(r.shape);
  }
  const uint32_t reuse = get32(bytes + 8) & ~kBitsOnly, md = get32(bytes + 12);
  if (reuse > 2) corrupt("bad reuse mode " + num(get32(bytes + 8)));
  if (md < 1 || md > 65535) corrupt("bad maxDepth " + num(md));
  r.reuse = Reuse(reuse);
  r.max_depth = int32_t(md);
  std::vector<int32_t>& parent = r.tree.parent;
  parent.resize(size_t(cout));
  for (int64_t c = 0; c < cout; ++c) parent[size_t(c)] = int32_t(get32(bytes + kHeader + 4 * c));
  check_plan(parent, r.shape, r.reuse, r.max_depth);
  r.tree.bits_only = get32(bytes + 8) & kBitsOnly;
  if (r.tree.bits_only && (r.reuse != Reuse::Auto || std::count(parent.begin(), parent.end(), -1) == cout))
    corrupt("'bits'-output-only edges in a plan that is not 'auto' or has no edges");
  const uint64_t h = uint64_t(get32(bytes + 36)) | uint64_t(get32(bytes + 40)) << 32;
  const int64_t nwords = cout * r.shape.row_words();
  if (words && fnv1a(words, nwords) != h) corrupt("made for other weights (weights hash mismatch)");
  if (version == kWithWeights) {
    r.words = read_weights(bytes + kHeader + 4 * cout, bytes + len - 4, r.shape, parent);
    // A second check, past the CRC: the decoded words are the ones the plan was written for.
    if (fnv1a(r.words.data(), nwords) != h) corrupt("the decoded weights fail the weights hash");
    if (words && !std::equal(r.words.begin(), r.words.end(), words))
      corrupt("made for other weights (its stored weights differ)");
  }
  return r;
}

}  // namespace xnorm::mst
