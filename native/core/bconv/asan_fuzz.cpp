// Sanitizer fuzz of the binary-conv core, outside Node: random shapes (groups, strides, dilation,
// padding modes, channel tails), random MST forests, all three output kinds, fast path vs dense vs the
// direct-loop reference, plus plan-byte corruption. Not part of the addon (sources.js takes *.cc only).
// Build and run from the repository root (each ISA level in turn):
//   N=native/core F="-O1 -g -fsanitize=address,undefined -std=c++17 -I$N"
//   g++ $F -c $N/bconv/kernels_avx512.cc -o /tmp/k512.o -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vpopcntdq -mavx2 -mfma -mpopcnt
//   g++ $F -c $N/bconv/kernels_avx2.cc -o /tmp/k2.o -mavx2 -mfma -mpopcnt
//   g++ $F $N/bconv/asan_fuzz.cpp $N/bconv/bconv.cc $N/bconv/conv.cc $N/bconv/kernels_portable.cc $N/mst/*.cc $N/common/cpu.cc \
//       $N/common/thread_pool.cc $N/common/debug.cc /tmp/k512.o /tmp/k2.o -o /tmp/bconv_fuzz -pthread
//   for isa in avx512 avx2 portable; do XNORM_ISA=$isa /tmp/bconv_fuzz; done
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "../common/error.h"
#include "../mst/mst.h"
#include "bconv.h"

using namespace xnorm;

// The plan bytes' CRC-32 (serialize.cc), to alter a plan under a valid checksum.
static void fix_crc(std::vector<uint8_t>& b) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i + 4 < b.size(); ++i) {
    c ^= b[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
  }
  c ^= 0xffffffffu;
  for (int k = 0; k < 4; ++k) b[b.size() - 4 + k] = uint8_t(c >> (8 * k));
}

int main() {
  std::mt19937 rng(1);
  int fails = 0, with_majority = 0, iter = 0;
  // Reads plan bytes back (the first len of them): where `valid`, they must be read and pass `right`;
  // otherwise they must be refused. Counts and reports a failure as `what` otherwise.
  const auto expect_read = [&](const std::vector<uint8_t>& bytes, int64_t len, const uint32_t* given,
                               const bconv::WeightShape* shape, bool valid, const auto& right, const char* what) {
    try {
      const mst::Serialized back = mst::deserialize(bytes.data(), len, given, shape);
      if (!valid || !right(back)) {
        ++fails;
        printf("%s: %s, iter %d\n", what, valid ? "read back wrong" : "accepted", iter);
      }
    } catch (const Error&) {
      if (valid) {
        ++fails;
        printf("%s: refused, iter %d\n", what, iter);
      }
    }
  };
  const auto refused = [](const mst::Serialized&) { return false; };
  for (; iter < 300; ++iter) {
    bconv::WeightShape s;
    s.groups = 1 + rng() % 3;
    s.cin_g = 1 + rng() % 70;
    s.cout = s.groups * (1 + rng() % 40);
    s.kh = 1 + rng() % 3; s.kw = 1 + rng() % 3;
    bconv::ConvParams p;
    p.n = 1 + rng() % 2; p.c = s.cin_g * s.groups;
    p.sh = 1 + rng() % 2; p.sw = 1 + rng() % 2; p.dh = 1 + rng() % 2; p.dw = 1 + rng() % 2;
    p.ph = rng() % 3; p.pw = rng() % 3; p.pad_zero = rng() % 2;
    p.h = s.kh * p.dh + rng() % 12; p.w = s.kw * p.dw + rng() % 12;
    std::vector<float> wf(s.cout * s.cin_g * s.kh * s.kw);
    for (auto& v : wf) v = (rng() % 2) ? 1.f : -1.f;
    // Odd iterations: channels close to an earlier one (each bit flipped with probability 1/16), so the
    // version-2 bytes mix children stored as bit positions and children stored raw.
    const int64_t per = s.cin_g * s.kh * s.kw;
    if (iter % 2)
      for (int64_t c = 1; c < s.cout; ++c) {
        const int64_t from = rng() % c;
        for (int64_t i = 0; i < per; ++i) wf[c * per + i] = wf[from * per + i] * (rng() % 16 ? 1.f : -1.f);
      }
    std::vector<uint32_t> words(s.cout * s.row_words());
    bconv::pack_weights(wf.data(), s, words.data());
    int64_t wc = (p.c + 31) / 32;
    std::vector<float> xf(p.n * p.h * p.w * p.c);
    for (auto& v : xf) v = float(int(rng() % 3) - 1);
    std::vector<uint32_t> x(p.n * p.h * p.w * wc);
    bconv::pack_bits(xf.data(), false, 1, p.c, p.n * p.h * p.w, nullptr, 0.f, x.data());
    // A random valid forest: each channel's parent is an earlier channel of its group, or none.
    std::vector<int32_t> parent(s.cout, -1);
    int64_t cog = s.cout / s.groups;
    for (int64_t c = 0; c < s.cout; ++c) {
      int64_t g0 = c / cog * cog;
      if (c > g0 && rng() % 3) parent[c] = int32_t(g0 + rng() % (c - g0));
    }
    auto b = mst::build_execution(words.data(), s, parent);
    with_majority += !b.virtual_group.empty();
    {
      // Every output channel dense plus a majority channel no edge starts from must be refused: without
      // edges the tile is pixel-major, with no row for it.
      std::vector<uint32_t> all(words), roots, groups{0};
      all.insert(all.end(), words.begin(), words.begin() + s.row_words());
      for (int64_t c = 0; c <= s.cout; ++c) roots.push_back(uint32_t(c));
      std::vector<uint32_t> panels(size_t(bconv::build_panels(all.data(), s, roots, nullptr, groups.data()) *
                                          bconv::panel_record_words(s)));
      bconv::Execution lone;
      lone.panels = panels.data();
      lone.npanels = bconv::build_panels(all.data(), s, roots, panels.data(), groups.data());
      lone.nvirtual = 1;
      lone.virtual_group = groups.data();
      try {
        bconv::validate_execution(s, lone);
        ++fails;
        printf("accepted a majority channel without children, iter %d\n", iter);
      } catch (const Error&) {
      }
    }
    {
      // The random forest written with the 'bits'-output-only flag: read back as such on an 'auto' plan
      // with an edge, refused as 'always' or 'never', or without edges.
      const bool has_edge = std::count(parent.begin(), parent.end(), -1) < s.cout;
      for (int r = 0; r < 3; ++r) {
        const mst::Reuse reuse = mst::Reuse(r);
        const bool valid = reuse == mst::Reuse::Auto && has_edge;
        const std::vector<uint8_t> bytes = mst::serialize(words.data(), s, mst::Tree{parent, true}, reuse, 65535, r == 0);
        expect_read(bytes, int64_t(bytes.size()), words.data(), &s, valid,
                    [&](const mst::Serialized& back) { return back.tree.bits_only && back.tree.parent == parent; },
                    "a forest with the 'bits'-only flag");
      }
    }
    const bconv::Execution e = b.execution();
    int64_t oh = bconv::out_size(p.h, p.ph, p.dh, s.kh, p.sh), ow = bconv::out_size(p.w, p.pw, p.dw, s.kw, p.sw);
    std::vector<float> scale(s.cout), bias(s.cout);
    for (auto& v : scale) v = float(int(rng() % 200) - 100) / 37.f;
    for (auto& v : bias) v = float(int(rng() % 200) - 100) / 13.f;
    for (int kind = 0; kind < 3; ++kind) {
      bconv::Transform t;
      t.kind = kind == 0 ? bconv::Output::Int32 : kind == 1 ? bconv::Output::Float : bconv::Output::Bits;
      if (kind) { t.scale = scale.data(); t.bias = bias.data(); }
      int64_t len = kind == 2 ? p.n * oh * ow * ((s.cout + 31) / 32) : p.n * oh * ow * s.cout;
      std::vector<uint32_t> o1(len), o2(len), o3(len);
      bconv::conv(x.data(), words.data(), s, e, p, t, o1.data());
      bconv::conv_reference(x.data(), words.data(), s, p, t, o2.data());
      auto d = mst::build_execution(words.data(), s, std::vector<int32_t>(s.cout, -1));
      const bconv::Execution de = d.execution();
      bconv::conv(x.data(), words.data(), s, de, p, t, o3.data());
      if (o1 != o2 || o3 != o2) { ++fails; printf("mismatch iter %d kind %d\n", iter, kind); }
    }
    for (int r = 0; r < 6; ++r) {
      // Odd r: version 2 (the weights in the bytes), read back without the weights.
      const bool with_weights = r % 2;
      auto tree = mst::build_tree(words.data(), s, mst::Reuse(r / 2), 1 + rng() % 4);
      std::vector<uint8_t> bytes = mst::serialize(words.data(), s, tree, mst::Reuse(r / 2), 4, with_weights);
      const uint32_t* given = with_weights ? nullptr : words.data();
      const bconv::WeightShape* given_shape = with_weights ? nullptr : &s;
      expect_read(bytes, int64_t(bytes.size()), given, given_shape, true,
                  [&](const mst::Serialized& back) {
                    return back.tree.parent == tree.parent && back.tree.bits_only == tree.bits_only &&
                           (!with_weights || back.words == words);
                  },
                  "round trip");
      // The 'bits'-output-only flag (bit 8 of the reuse field) under a valid checksum: read back on an
      // 'auto' plan with edges, refused on any other.
      {
        auto bb = bytes;
        bb[9] ^= 1;
        fix_crc(bb);
        const bool valid = mst::Reuse(r / 2) == mst::Reuse::Auto && std::count(tree.parent.begin(), tree.parent.end(), -1) < s.cout;
        expect_read(bb, int64_t(bb.size()), given, given_shape, valid,
                    [&](const mst::Serialized& f) { return f.tree.bits_only != tree.bits_only; }, "the 'bits'-only flag flipped");
      }
      for (int f = 0; f < 20; ++f) {  // every mutation here changes the bytes: it must be refused
        auto bb = bytes;
        int64_t len = bb.size();
        if (f % 2) len = rng() % bb.size(); else bb[rng() % bb.size()] ^= 1 + rng() % 255;
        expect_read(bb, len, given, given_shape, false, refused, "a corrupt plan");
      }
      // Version 2 under a valid checksum: a changed byte of the weights section, or the section cut
      // short, must still be refused (the field checks, or the weights hash: one encoding per plan).
      const size_t section = 44 + 4 * size_t(s.cout);
      for (int f = 0; with_weights && f < 40; ++f) {
        auto bb = bytes;
        if (f % 2) {
          bb[section + rng() % (bb.size() - 4 - section)] ^= 1 + rng() % 255;
        } else {
          bb.erase(bb.begin() + int64_t(section + rng() % (bb.size() - 4 - section)), bb.end() - 4);
        }
        fix_crc(bb);
        expect_read(bb, int64_t(bb.size()), nullptr, nullptr, false, refused, "altered weights under a valid checksum");
      }
    }
  }
  printf("done fails=%d (executions with majority channels: %d)\n", fails, with_majority);
  return fails != 0;
}
