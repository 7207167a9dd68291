// A plan's bytes: versioned, checksummed, bound to the weights' shape and a hash of their bits.
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

void put32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = uint8_t(v >> (8 * b));
}
uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

constexpr uint8_t kMagic[4] = {'X', 'N', 'M', 'S'};
constexpr uint32_t kVersion = 1;
constexpr int64_t kHeader = 44;  // magic, version, reuse, maxDepth, 5 shape fields, 64-bit weights hash

}  // namespace

int64_t serialized_size(const WeightShape& s) { return kHeader + 4 * s.cout + 4; }

void serialize(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent, Reuse reuse,
               int32_t max_depth, uint8_t* out) {
  std::copy(kMagic, kMagic + 4, out);
  put32(out + 4, kVersion);
  put32(out + 8, uint32_t(reuse));
  put32(out + 12, uint32_t(max_depth));
  const int64_t dims[5] = {s.cout, s.cin_g, s.kh, s.kw, s.groups};
  for (int i = 0; i < 5; ++i) put32(out + 16 + 4 * i, uint32_t(dims[i]));
  uint64_t h = fnv1a(words, s.cout * s.row_words());
  put32(out + 36, uint32_t(h));
  put32(out + 40, uint32_t(h >> 32));
  for (int64_t c = 0; c < s.cout; ++c) put32(out + kHeader + 4 * c, uint32_t(parent[size_t(c)]));
  int64_t body = kHeader + 4 * s.cout;
  put32(out + body, crc32(out, body));
}

std::vector<int32_t> deserialize(const uint8_t* bytes, int64_t len, const uint32_t* words, const WeightShape& s,
                                 Reuse* reuse, int32_t* max_depth) {
  if (len < kHeader + 4) corrupt("truncated: " + num(len) + " bytes, a plan has at least " + num(kHeader + 4));
  if (!std::equal(kMagic, kMagic + 4, bytes)) corrupt("not an xnorm MST plan (bad magic)");
  if (get32(bytes + 4) != kVersion)
    corrupt("unsupported format version " + num(get32(bytes + 4)) + " (this build reads " + num(kVersion) + ")");
  int64_t cout = get32(bytes + 16);
  if (len != kHeader + 4 * cout + 4)
    corrupt("expected " + num(kHeader + 4 * cout + 4) + " bytes for Cout = " + num(cout) + ", received " + num(len));
  if (crc32(bytes, len - 4) != get32(bytes + len - 4)) corrupt("checksum mismatch: the bytes were altered");
  const int64_t want[5] = {s.cout, s.cin_g, s.kh, s.kw, s.groups};
  for (int i = 0; i < 5; ++i)
    if (int64_t(get32(bytes + 16 + 4 * i)) != want[i])
      corrupt("made for weights of another shape ([Cout, Cin/g, kh, kw, groups] field " + num(i) + " is " +
              num(get32(bytes + 16 + 4 * i)) + ", the weights have " + num(want[i]) + ")");
  uint64_t h = fnv1a(words, s.cout * s.row_words());
  if (get32(bytes + 36) != uint32_t(h) || get32(bytes + 40) != uint32_t(h >> 32))
    corrupt("made for other weights (weights hash mismatch)");
  uint32_t r = get32(bytes + 8), md = get32(bytes + 12);
  if (r > 2) corrupt("bad reuse mode " + num(r));
  if (md < 1 || md > 65535) corrupt("bad maxDepth " + num(md));
  std::vector<int32_t> parent(size_t(s.cout));
  for (int64_t c = 0; c < s.cout; ++c) parent[size_t(c)] = int32_t(get32(bytes + kHeader + 4 * c));
  check_plan(parent, s, Reuse(r), int32_t(md));
  *reuse = Reuse(r);
  *max_depth = int32_t(md);
  return parent;
}

}  // namespace xnorm::mst
