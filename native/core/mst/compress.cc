// Version 2's weights section (docs/API.md "Serialized bytes"): the roots' canonical words verbatim, then
// one record per child, in level order, so a reader always has the parent's row before the child's. A
// child's record starts with two LEB128 varints: its channel, then a form m. m = 0: the child's row
// follows raw, as a root's is. m >= 1: the row differs from its parent's in n = m - 1 bits, whose
// positions (word * 32 + bit, increasing) follow as varint gaps from the previous position (the first
// from -1), so no gap is 0. The writer takes the raw form exactly when it is strictly shorter than the
// delta form (both counted from m on; a tie stays delta), and the reader refuses the other choice, so
// the form is never the writer's to pick, and a child never costs more than its raw row, one byte and
// its channel.
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

int64_t varint_size(uint64_t v) {
  int64_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// Bytes of a child's delta form, m included: its row against its parent's.
int64_t delta_size(const uint32_t* row, const uint32_t* prow, int64_t rw) {
  int64_t n = 0, gaps = 0, prev = -1;
  for (int64_t k = 0; k < rw; ++k)
    for (uint32_t m = row[k] ^ prow[k]; m; m &= m - 1) {
      const int64_t pos = 32 * k + __builtin_ctz(m);
      gaps += varint_size(uint64_t(pos - prev));
      prev = pos;
      ++n;
    }
  return varint_size(uint64_t(n) + 1) + gaps;
}

// Bytes of a child's raw form, m included.
int64_t raw_size(int64_t rw) { return 1 + 4 * rw; }

// The bits of row word k that hold weights: the tail of each tap's last word is padding (always 0).
uint32_t valid_bits(const WeightShape& s, int64_t k) {
  const int64_t bits = s.cin_g - 32 * (k % s.wg());
  return bits >= 32 ? ~0u : (1u << bits) - 1;
}

void put_row(std::vector<uint8_t>& out, const uint32_t* row, int64_t rw) {
  out.resize(out.size() + size_t(4 * rw));
  for (int64_t k = 0; k < rw; ++k) put32(out.data() + out.size() - 4 * (rw - k), row[k]);
}

// A row stored raw (a root's, or a child's in its raw form): rw words, no padding bit set.
void get_row(const uint8_t*& p, const WeightShape& s, uint32_t* row, const std::string& who) {
  for (int64_t k = 0; k < s.row_words(); ++k, p += 4) {
    const uint32_t w = get32(p);
    if (w & ~valid_bits(s, k)) corrupt("weights: " + who + " sets padding bits in word " + num(k));
    row[k] = w;
  }
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
    put_row(out, words + c * rw, rw);
  }
  std::sort(children.begin(), children.end());
  for (const auto& dc : children) {
    const uint32_t* row = words + int64_t(dc.second) * rw;
    const uint32_t* prow = words + int64_t(parent[size_t(dc.second)]) * rw;
    put_varint(out, uint64_t(dc.second));
    if (raw_size(rw) < delta_size(row, prow, rw)) {
      put_varint(out, 0);
      put_row(out, row, rw);
      continue;
    }
    int64_t n = 0;
    for (int64_t k = 0; k < rw; ++k) n += __builtin_popcount(row[k] ^ prow[k]);
    put_varint(out, uint64_t(n) + 1);
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
    get_row(p, s, words.data() + c * rw, "root channel " + num(c));
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
    const uint32_t* prow = words.data() + int64_t(par) * rw;
    const uint8_t* const form = p;
    const uint64_t m = get_varint(p, end, "record form");
    if (m == 0) {
      if (rw > (end - p) / 4) bad("truncated raw row");
      get_row(p, s, row, "channel " + num(c) + ": raw row");
      if (delta_size(row, prow, rw) <= raw_size(rw)) bad("stored raw, though its bit positions take no more bytes");
      decoded[size_t(c)] = 1;
      continue;
    }
    std::copy_n(prow, rw, row);
    const uint64_t n = m - 1;
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
    if (p - form > raw_size(rw)) bad("stored as bit positions, though its raw row takes fewer bytes");
    decoded[size_t(c)] = 1;
  }
  if (p != end) corrupt("weights: " + num(end - p) + " trailing bytes");
  return words;
}

}  // namespace xnorm::mst
