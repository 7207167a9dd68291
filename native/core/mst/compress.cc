// Version 2's weights section (docs/API.md "Serialized bytes"): the roots' canonical words verbatim, then
// each child as the bits where it differs from its parent. Children come in level order, so a reader
// always has the parent's row before the child's. A child's record, all LEB128 varints: its channel, the
// number of differing bits, then their positions in the row (word * 32 + bit, increasing) as gaps from the
// previous position (the first from -1), so no gap is 0.
#include <algorithm>
#include <utility>
#include <vector>

#include "../common/checked.h"
#include "mst_internal.h"

namespace xnorm::mst {
namespace {

void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out.push_back(uint8_t(v | 0x80));
  out.push_back(uint8_t(v));
}

// One varint from [p, end), accepted only in its shortest form so that a plan has exactly one encoding.
uint64_t get_varint(const uint8_t*& p, const uint8_t* end, const char* what) {
  uint64_t v = 0;
  for (int shift = 0; p < end; shift += 7) {
    const uint8_t b = *p++;
    if (shift == 63 && b > 1) corrupt(std::string("weights: ") + what + ": varint overflows 64 bits");
    v |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (b == 0 && shift > 0) corrupt(std::string("weights: ") + what + ": varint not in its shortest form");
      return v;
    }
  }
  corrupt(std::string("weights: truncated in a ") + what);
}

// The bits of row word k that hold weights: the tail of each tap's last word is padding (always 0).
uint32_t valid_bits(const WeightShape& s, int64_t k) {
  const int64_t bits = s.cin_g - 32 * (k % s.wg());
  return bits >= 32 ? ~0u : (1u << bits) - 1;
}

}  // namespace

void append_weights(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent,
                    std::vector<uint8_t>& out) {
  const int64_t rw = s.row_words();
  const std::vector<int32_t> depth = depths(parent, s);
  std::vector<std::pair<int32_t, int32_t>> children;  // (depth, channel): level order
  for (int64_t c = 0; c < s.cout; ++c) {
    if (parent[size_t(c)] >= 0) {
      children.push_back({depth[size_t(c)], int32_t(c)});
      continue;
    }
    for (int64_t k = 0; k < rw; ++k) {
      out.resize(out.size() + 4);
      put32(out.data() + out.size() - 4, words[c * rw + k]);
    }
  }
  std::sort(children.begin(), children.end());
  for (const auto& dc : children) {
    const uint32_t* row = words + int64_t(dc.second) * rw;
    const uint32_t* prow = words + int64_t(parent[size_t(dc.second)]) * rw;
    int64_t n = 0;
    for (int64_t k = 0; k < rw; ++k) n += __builtin_popcount(row[k] ^ prow[k]);
    put_varint(out, uint64_t(dc.second));
    put_varint(out, uint64_t(n));
    int64_t prev = -1;
    for (int64_t k = 0; k < rw; ++k)
      for (uint32_t m = row[k] ^ prow[k]; m; m &= m - 1) {
        const int64_t pos = 32 * k + __builtin_ctz(m);
        put_varint(out, uint64_t(pos - prev));
        prev = pos;
      }
  }
}

std::vector<uint32_t> read_weights(const uint8_t* p, const uint8_t* end, const WeightShape& s,
                                   const std::vector<int32_t>& parent) {
  const int64_t rw = s.row_words(), row_bits = 32 * rw;
  const auto roots = int64_t(std::count_if(parent.begin(), parent.end(), [](int32_t v) { return v < 0; }));
  // The roots' rows are stored verbatim: the bytes must hold them before anything of the shape's size is
  // allocated (a checked parent array has a root in every group, so roots >= 1).
  if (rw > (end - p) / 4 / roots)
    corrupt("weights: truncated: " + num(roots) + " roots of " + num(rw) + " words need more than the " +
            num(end - p) + " bytes of the weights section");
  std::vector<uint32_t> words(size_t(checked_mul(s.cout, rw, "weights")));
  std::vector<uint8_t> decoded(size_t(s.cout));
  for (int64_t c = 0; c < s.cout; ++c) {
    if (parent[size_t(c)] >= 0) continue;
    for (int64_t k = 0; k < rw; ++k, p += 4) {
      const uint32_t w = get32(p);
      if (w & ~valid_bits(s, k)) corrupt("weights: root channel " + num(c) + " sets padding bits in word " + num(k));
      words[size_t(c * rw + k)] = w;
    }
    decoded[size_t(c)] = 1;
  }
  for (int64_t i = roots; i < s.cout; ++i) {
    const uint64_t id = get_varint(p, end, "child channel");
    if (id >= uint64_t(s.cout)) corrupt("weights: child channel " + std::to_string(id) + " out of range");
    const auto c = int64_t(id);
    const int32_t par = parent[size_t(c)];
    auto bad = [&](const std::string& m) { corrupt("weights: channel " + num(c) + ": " + m); };
    if (par < 0) bad("a root, stored as a child");
    if (decoded[size_t(c)]) bad("stored twice");
    if (!decoded[size_t(par)]) bad("stored before its parent " + num(par));
    uint32_t* row = words.data() + c * rw;
    std::copy_n(words.data() + int64_t(par) * rw, rw, row);
    const uint64_t n = get_varint(p, end, "bit count");
    if (n > uint64_t(s.k())) bad(std::to_string(n) + " differing bits, more than K = " + num(s.k()));
    // Each position takes a byte at least, so a count the bytes cannot hold stops here, not in the loop.
    if (n > uint64_t(end - p)) bad("truncated bit positions");
    int64_t pos = -1;
    for (uint64_t j = 0; j < n; ++j) {
      const uint64_t gap = get_varint(p, end, "bit position");
      if (gap == 0) bad("bit positions not increasing");
      if (gap >= uint64_t(row_bits - pos)) bad("bit position beyond the row's " + num(row_bits) + " bits");
      pos += int64_t(gap);
      const uint32_t bit = 1u << (pos % 32);
      if (!(valid_bits(s, pos / 32) & bit)) bad("bit position " + num(pos) + " is padding");
      row[pos / 32] ^= bit;
    }
    decoded[size_t(c)] = 1;
  }
  if (p != end) corrupt("weights: " + num(end - p) + " trailing bytes");
  return words;
}

}  // namespace xnorm::mst
