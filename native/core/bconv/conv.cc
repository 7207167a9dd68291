// The fast binary convolution (bconv::conv). The output is cut into tasks, each a tile of output
// pixels and a block of weight panels; a task builds its tile's indirection rows, runs its panels,
// applies the MST reuse edges, and writes whatever output the kernels did not write themselves.
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/checked.h"
#include "../common/thread_pool.h"
#include "bconv.h"
#include "bconv_internal.h"
#include "epilogue.h"
#include "kernels.h"

namespace xnorm::bconv {
namespace {

// Pixels per task tile. Depends only on the problem size (never on the thread count), so results
// and summation orders are the same for any setNumThreads.
int64_t tile_pixels(int64_t pixels, int64_t cout) {
  int64_t tp = 64;
  while (tp > 16 && (pixels + tp - 1) / tp < 8) tp /= 2;                   // enough tasks for the pool
  while (tp > 16 && cout * tp * int64_t(sizeof(int32_t)) > (512 << 10)) tp /= 2;  // accumulators stay in L2
  return tp;
}

// With MST edges: as many tiles as 512-pixel bit rows need, an even number (at least two) so two
// threads get equal work, their pixels spread evenly in multiples of 16 (a tile of 448 pixels next to
// one of 224 cost as much edge work and left one thread waiting for the other), then halved while the
// accumulators would leave L2.
int64_t mst_tile_pixels(int64_t pixels, int64_t cout) {
  const int64_t ntiles = std::max<int64_t>(2, ((pixels + 511) / 512 + 1) / 2 * 2);
  int64_t tp = std::max<int64_t>(16, (pixels + 16 * ntiles - 1) / (16 * ntiles) * 16);
  while (tp > 64 && cout * tp * int64_t(sizeof(int32_t)) > (512 << 10)) tp = (tp / 2 + 15) / 16 * 16;
  return tp;
}

// Copies (or, from nullptr, zeroes) a few words. Explicit cases for the common 1-4, 8 and 16 words per tap:
// a library memmove call per tap costs more than the copy itself.
inline void copy_words(const uint32_t* src, uint32_t* dst, int64_t n) {
  switch (src ? n : 0) {
    case 4: dst[3] = src[3]; [[fallthrough]];
    case 3: dst[2] = src[2]; [[fallthrough]];
    case 2: dst[1] = src[1]; [[fallthrough]];
    case 1: dst[0] = src[0]; return;
    case 0: if (!src) std::fill(dst, dst + n, 0u); return;
    case 8: std::memcpy(dst, src, 8 * sizeof(uint32_t)); return;     // 256 channels: one vector move
    case 16: std::memcpy(dst, src, 16 * sizeof(uint32_t)); return;
    default: std::copy(src, src + n, dst);
  }
}

// Input words of one group at one pixel: a view into x when groups start on word boundaries, otherwise
// a repacked copy [groups][pixels][wg] (channels of a group shifted down to bit 0).
struct GroupInput {
  const uint32_t* base;
  int64_t pixel_stride, group_stride;
  std::vector<uint32_t> repacked;
};

void make_group_input(const uint32_t* x, const ConvParams& p, const WeightShape& s, GroupInput& gi) {
  int64_t wc = (p.c + 31) / 32, wg = s.wg(), pixels = p.n * p.h * p.w;
  if (s.groups == 1 || s.cin_g % 32 == 0) {
    gi.base = x;
    gi.pixel_stride = wc;
    gi.group_stride = s.cin_g / 32;
    return;
  }
  gi.repacked.assign(size_t(checked_mul(checked_mul(s.groups, pixels, "x"), wg, "x")), 0u);
  parallel_for(pixels, 4096, [&](int64_t b, int64_t e) {
    for (int64_t px = b; px < e; ++px)
      for (int64_t g = 0; g < s.groups; ++g) {
        uint32_t* dst = gi.repacked.data() + (g * pixels + px) * wg;
        for (int64_t ci = 0; ci < s.cin_g; ++ci)
          if (bit_at(x + px * wc, g * s.cin_g + ci)) dst[ci >> 5] |= 1u << (ci & 31);
      }
  });
  gi.base = gi.repacked.data();
  gi.pixel_stride = wg;
  gi.group_stride = pixels * wg;
}

// 'zero' padding: a padded tap contributed dot(+1, w_tap) = Cin_g - 2*popc(w_tap) under 'one'; take it
// off. Stored tap-major so a border pixel subtracts whole rows.
std::vector<int32_t> zero_padding_corrections(const uint32_t* words, const WeightShape& s) {
  const int64_t taps = s.taps(), wg = s.wg(), kw = s.row_words();
  std::vector<int32_t> corr(size_t(taps * s.cout));
  for (int64_t co = 0; co < s.cout; ++co)
    for (int64_t tt = 0; tt < taps; ++tt) {
      int32_t pc = 0;
      for (int64_t j = 0; j < wg; ++j) pc += popc(words[co * kw + tt * wg + j]);
      corr[size_t(tt * s.cout + co)] = int32_t(s.cin_g) - 2 * pc;
    }
  return corr;
}

// Output channels split into blocks of whole panels: `count` blocks of `panels` panels (the last may
// have fewer).
struct ChannelBlocks {
  int64_t count, panels;
};

// Few pixel tiles (binaryLinear, small late layers): split the output channels too, in blocks of
// whole panels, when the panels cover the channels in order (plain weights, all-root plans) and, for
// 'bits', every block starts on a 32-channel word. Block count depends on the problem size only.
ChannelBlocks plan_channel_blocks(const Execution& e, int64_t rec, int64_t ntiles, bool pixel_major, Output kind) {
  ChannelBlocks b{1, e.npanels};
  if (!(pixel_major && ntiles < 8 && e.npanels > 1)) return b;
  bool ordered = true, word_aligned = true;
  uint32_t next = 0;
  for (int64_t q = 0; q < e.npanels && ordered; ++q) {
    const uint32_t* ch = e.panels + q * rec + 1;
    word_aligned = word_aligned && ch[0] % 32 == 0;
    for (int c = 0; c < kPanelWidth && ch[c] != kNoChannel; ++c) ordered = ordered && ch[c] == next++;
  }
  if (ordered && (kind != Output::Bits || word_aligned)) {
    b.count = std::min<int64_t>(e.npanels, (8 + ntiles - 1) / ntiles);
    b.panels = (e.npanels + b.count - 1) / b.count;
    b.count = (e.npanels + b.panels - 1) / b.panels;
  }
  return b;
}

// One conv call as its tasks see it: the sizes, choices and tables fixed before they start.
struct Layer {
  Layer(const Kernels& kn, const uint32_t* x, const uint32_t* words, const WeightShape& s, const Execution& e,
        const ConvParams& p, const Transform& t, void* out);
  Layer(const Layer&) = delete;  // fused_output.clamp points into it

  const WeightShape& s;
  const Execution& e;
  const ConvParams& p;
  const Transform& t;
  void* out;
  int64_t oh, ow, pixels, G, wg, taps, kw;
  int64_t channels;  // the output channels, then the execution's majority channels (tile rows only)
  int32_t K;
  int64_t tp, ntiles;      // pixels per tile, tiles
  // Row stride of channel-major tiles and of the word-major copy: the bit-sliced edges' width (a power
  // of two times 64 pixels, at least the tile) and a cache line more, so rows 2 KiB apart do not all
  // fall in the same few L1 sets.
  int64_t ld_rows;
  int64_t out_words, rec;  // output words per pixel ('bits'), words per panel record
  GroupInput gi;
  std::vector<int32_t> corr;       // 'zero' padding only
  std::vector<float> scale, bias;  // t's, with the missing ones as 1 and 0
  // Dense-only executions keep the tile pixel-major (the kernels store whole vectors, the output pass
  // reads rows); MST edges need it channel-major, so one pixel's parent values sit next to the next's.
  bool pixel_major;
  uint32_t tail;  // valid bits of a tap's last input word (groups == 1, Cin_g % 32 != 0), else ~0u
  // Direct: the kernels read the input words in place through the indirection rows (no im2col copy).
  // Needs groups on word boundaries and input tail bits that need no masking.
  bool direct;
  std::vector<uint32_t> zeros;  // the padding row, wide enough for any group offset
  ChannelBlocks blocks;
  std::vector<uint8_t> fusable;  // per panel: its output the kernel can write itself (consecutive
                                 // channels; for 'bits', whole words)
  float clamp_bounds[2];
  Epilogue fused_output;
  // MST tiles of stride-1 layers whose output is as large as their input: a tap reads the input pixel
  // tap_offset[t] away in pixel order (its padded taps masked), so the tile's tap-bit-major rows are
  // one transpose of the input's pixels and a shifted copy per tap (shifted_rows), not a transpose of
  // every tap's words.
  bool shifted_taps;
  std::vector<int64_t> tap_offset;
  int64_t first_offset, offset_span;  // the smallest tap_offset, and the largest less it
  // 'bits' output of MST tiles (without 'zero' padding, whose border pixels need the int32 values):
  // every channel's popcount less below[c] stays in nt bit planes (two's complement), children come
  // from their parents' planes with no int32 values at all (Kernels::sliced_child), and a channel's bit,
  // (popcount < below[c]) xor invert[c] (popcount_threshold), is its top plane xor invert[c].
  bool sliced_bits;
  int nt;
  std::vector<uint32_t> roots, below;
  std::vector<uint8_t> invert;
};

// The 'bits' output of one channel as a function of its popcount v in [0, K] is
// (v < below) xor invert. The value the output takes the sign of, clamp(float(K - 2 v) * scale + bias),
// is monotone in v when scale and bias are finite (float rounding, min and max are monotone; no NaN can
// arise), so the bit changes at most once; `below` is found with the kernels' own out_bits, which the
// dense path uses, so the two agree on every popcount.
void popcount_threshold(const Kernels& kn, int32_t k, float scale, float bias, const float* clamp, uint32_t& below,
                        uint8_t& invert) {
  float sc[32], bi[32];
  std::fill(sc, sc + 32, scale);
  std::fill(bi, bi + 32, bias);
  auto bits_at = [&](const int32_t* v, int n) {  // bit i: the output bit at popcount v[i]
    uint32_t w;
    kn.out_bits(v, k, -2, sc, bi, clamp, n, &w);
    return w;
  };
  const int32_t ends[2] = {0, k};
  const uint32_t at_ends = bits_at(ends, 2);
  const bool first = at_ends & 1u;
  below = 0, invert = first;
  if (first == bool(at_ends & 2u)) return;  // the same bit everywhere
  // The first popcount whose bit differs from popcount 0's lies in (lo, hi]: 32 candidates per step,
  // first around where the unrounded value crosses 0, then evenly spread.
  int64_t lo = 0, hi = k;
  const double guess = (double(k) + double(bias) / double(scale)) / 2;
  for (bool near = guess > 0 && guess < k; hi - lo > 1; near = false) {
    int32_t v[32];
    int n = 0;
    const int64_t start = near ? std::clamp<int64_t>(int64_t(guess) - 15, lo + 1, hi - 1) : lo + 1;
    const int64_t step = near ? 1 : std::max<int64_t>(1, (hi - lo) / 33);
    for (int64_t c = start; n < 32 && c < hi; c += step) v[n++] = int32_t(c);
    uint32_t differ = bits_at(v, n) ^ (first ? ~0u : 0u);
    if (n < 32) differ &= (1u << n) - 1;
    if (!differ) {
      lo = v[n - 1];
    } else {
      const int i = __builtin_ctz(differ);
      hi = v[i];
      if (i > 0) lo = v[i - 1];
    }
  }
  below = uint32_t(hi), invert = !first;
}

Layer::Layer(const Kernels& kn, const uint32_t* x, const uint32_t* words, const WeightShape& s_, const Execution& e_,
             const ConvParams& p_, const Transform& t_, void* out_)
    : s(s_), e(e_), p(p_), t(t_), out(out_) {
  oh = out_size(p.h, p.ph, p.dh, s.kh, p.sh);
  ow = out_size(p.w, p.pw, p.dw, s.kw, p.sw);
  pixels = p.n * oh * ow, G = s.groups, wg = s.wg(), taps = s.taps(), kw = s.row_words();
  K = int32_t(s.k());
  channels = e.channels(s.cout);
  pixel_major = e.nedges == 0;
  tp = pixel_major ? tile_pixels(pixels, s.cout) : mst_tile_pixels(pixels, s.cout);
  ntiles = (pixels + tp - 1) / tp;
  int64_t width = 64;
  while (width < tp) width *= 2;
  ld_rows = width + 16;
  out_words = (s.cout + 31) / 32, rec = panel_record_words(s);
  make_group_input(x, p, s, gi);
  if (p.pad_zero) corr = zero_padding_corrections(words, s);
  scale.assign(size_t(s.cout), 1.0f);
  bias.assign(size_t(s.cout), 0.0f);
  if (t.scale) std::copy(t.scale, t.scale + s.cout, scale.begin());
  if (t.bias) std::copy(t.bias, t.bias + s.cout, bias.begin());
  tail = G == 1 && s.cin_g % 32 ? (1u << (s.cin_g % 32)) - 1 : 0xffffffffu;
  direct = gi.repacked.empty() && tail == ~0u;
  zeros.assign(size_t(G * wg), 0u);
  blocks = plan_channel_blocks(e, rec, ntiles, pixel_major, t.kind);
  fusable.assign(size_t(e.npanels), 0);
  for (int64_t q = 0; q < e.npanels; ++q) {
    const uint32_t* ch = e.panels + q * rec + 1;
    fusable[size_t(q)] = pixel_major && consecutive_channels(ch) > 0 && (t.kind != Output::Bits || ch[0] % 32 == 0);
  }
  clamp_bounds[0] = t.lo;
  clamp_bounds[1] = t.hi;
  fused_output.kind = t.kind;
  fused_output.k = K;
  fused_output.scale = scale.data();
  fused_output.bias = bias.data();
  fused_output.clamp = t.clamp ? clamp_bounds : nullptr;
  fused_output.ldo = t.kind == Output::Bits ? out_words : s.cout;
  // Float outputs of 4 MiB and more (far past the L2s, on a 2 MiB boundary from lib/) are streamed:
  // A/B on 64->64 @56, batch 8, 2 threads: 16 % faster than plain stores after a write prefetch.
  fused_output.stream = t.kind == Output::Float && pixels * s.cout >= (int64_t(1) << 20);
  shifted_taps = !pixel_major && p.sh == 1 && p.sw == 1 && oh == p.h && ow == p.w;
  for (int64_t ki = 0; ki < s.kh; ++ki)
    for (int64_t kj = 0; kj < s.kw; ++kj) tap_offset.push_back((ki * p.dh - p.ph) * p.w + kj * p.dw - p.pw);
  first_offset = *std::min_element(tap_offset.begin(), tap_offset.end());
  offset_span = *std::max_element(tap_offset.begin(), tap_offset.end()) - first_offset;
  sliced_bits = !pixel_major && sliced_bits_output(p, t, s.cout);
  if (!sliced_bits) return;
  nt = 2;  // popcount - below lies in [-K, K]
  while ((int64_t(K) >> (nt - 1)) != 0) ++nt;
  below.assign(size_t(channels), 0);  // a majority channel's planes: its popcount, never an output bit
  invert.assign(size_t(channels), 0);
  for (size_t c = 0; c < size_t(s.cout); ++c) {
    if (c > 0 && scale[c] == scale[c - 1] && bias[c] == bias[c - 1]) {  // (no transform: all channels alike)
      below[c] = below[c - 1], invert[c] = invert[c - 1];
      continue;
    }
    popcount_threshold(kn, K, scale[c], bias[c], fused_output.clamp, below[c], invert[c]);
  }
  for (int64_t q = 0; q < e.npanels; ++q)
    for (int c = 0; c < kPanelWidth; ++c)
      if (e.panels[q * rec + 1 + c] != kNoChannel) roots.push_back(e.panels[q * rec + 1 + c]);
}

// One task: a tile of output pixels and a block of panels, with this thread's scratch for them.
struct Tile {
  int64_t p0, np;        // pixels [p0, p0 + np)
  int64_t q0, q1;        // panels [q0, q1)
  int64_t c0, c1;        // their output channels [c0, c1): all of them, or the block's run
  // Raw pointers into the scratch: every access through a thread_local would recompute its address
  // (__tls_get_addr).
  uint32_t* a;               // im2col rows per group: a[g][pixel][k] (not direct)
  const uint32_t** rows_of;  // indirection rows, [pixel][tap]
  int32_t* acc;              // popcounts, pixel-major or channel-major (Layer::pixel_major)
  uint8_t* pad_flag;         // [pixel][tap]: the tap reads padding
  uint8_t* border_flag;      // [pixel]: some tap reads padding
};

Tile tile_of(const Layer& L, int64_t task) {
  Tile tile;
  const int64_t t = task / L.blocks.count;
  tile.q0 = task % L.blocks.count * L.blocks.panels;
  tile.q1 = std::min(L.e.npanels, tile.q0 + L.blocks.panels);
  tile.c0 = 0, tile.c1 = L.s.cout;
  if (L.blocks.count > 1) {
    const uint32_t* last = L.e.panels + (tile.q1 - 1) * L.rec + 1;
    int c = kPanelWidth;
    while (last[c - 1] == kNoChannel) --c;
    tile.c0 = L.e.panels[tile.q0 * L.rec + 1];
    tile.c1 = int64_t(last[c - 1]) + 1;
  }
  tile.p0 = t * L.tp, tile.np = std::min(L.tp, L.pixels - tile.p0);
  // Per-thread scratch, reused across tiles and calls: no allocation or clearing in the hot loop.
  thread_local std::vector<uint32_t> a_buf;
  thread_local std::vector<const uint32_t*> ind;
  thread_local std::vector<int32_t> acc_buf;
  thread_local std::vector<uint8_t> padded, border;
  if (!L.direct) a_buf.resize(size_t(L.G * L.tp * L.kw));
  ind.resize(size_t(L.tp * L.taps));
  acc_buf.resize(size_t(L.channels * L.ld_rows));
  padded.assign(size_t(L.tp * L.taps), 0);
  border.assign(size_t(L.tp), 0);
  tile.a = a_buf.data();
  tile.acc = acc_buf.data();
  tile.rows_of = ind.data();
  tile.pad_flag = padded.data(), tile.border_flag = border.data();
  return tile;
}

// Indirection rows (and the im2col copy when not direct) by runs of pixels along an output row: per
// tap, the source advances by a fixed stride and the in-bounds pixels form one range.
void build_indirection(const Layer& L, const Tile& tile) {
  const ConvParams& p = L.p;
  const WeightShape& s = L.s;
  const GroupInput& gi = L.gi;
  const int64_t oh = L.oh, ow = L.ow, G = L.G, wg = L.wg, taps = L.taps, kw = L.kw, tp = L.tp;
  const int64_t p0 = tile.p0, np = tile.np;
  const uint32_t tail = L.tail;
  const bool direct = L.direct;
  // Locals: stores of pointers to rows_of could alias gi.base, L.zeros or the tile's pointers.
  const uint32_t* const input = gi.base;
  const uint32_t* const zero_row = L.zeros.data();
  uint32_t* const a = tile.a;
  const uint32_t** const rows_of = tile.rows_of;
  uint8_t *const pad_flag = tile.pad_flag, *const border_flag = tile.border_flag;
  for (int64_t i = 0; i < np;) {
    const int64_t pix = p0 + i, n = pix / (oh * ow), oy = pix / ow % oh, ox0 = pix % ow;
    const int64_t len = std::min(np - i, ow - ox0);
    for (int64_t ki = 0; ki < s.kh; ++ki) {
      const int64_t iy = oy * p.sh - p.ph + ki * p.dh;
      const bool row_ok = iy >= 0 && iy < p.h;
      for (int64_t kj = 0; kj < s.kw; ++kj) {
        const int64_t tt = ki * s.kw + kj, ix0 = ox0 * p.sw - p.pw + kj * p.dw;
        // Pixels i + q with q in [qlo, qhi) read inside the input row.
        int64_t qlo = 0, qhi = 0;
        if (row_ok) {
          // (Stride 1 without the divisions: two of them per tap and run cost ~8 % of a 64-channel layer.)
          const int64_t before = ix0 >= 0 ? 0 : p.sw == 1 ? -ix0 : (-ix0 + p.sw - 1) / p.sw;
          const int64_t inside = ix0 > p.w - 1 ? 0 : p.sw == 1 ? p.w - ix0 : (p.w - 1 - ix0) / p.sw + 1;
          qlo = std::min(len, before);
          qhi = std::max(qlo, std::min(len, inside));
        }
        // Word offset of pixel i + q's tap in the input (used only where it is inside).
        const int64_t off0 = ((n * p.h + iy) * p.w + ix0) * gi.pixel_stride, step = p.sw * gi.pixel_stride;
        // Padded taps read as +1 (all bits 0): 'one' padding; 'zero' is corrected in the output pass.
        auto mark_padded = [&](int64_t q) { pad_flag[(i + q) * taps + tt] = border_flag[i + q] = 1; };
        for (int64_t q = 0; q < qlo; ++q) mark_padded(q);
        for (int64_t q = qhi; q < len; ++q) mark_padded(q);
        const uint32_t** slot = rows_of + i * taps + tt;
        if (direct) {
          for (int64_t q = 0; q < qlo; ++q) slot[q * taps] = zero_row;
          for (int64_t q = qlo; q < qhi; ++q) slot[q * taps] = input + (off0 + q * step);
          for (int64_t q = qhi; q < len; ++q) slot[q * taps] = zero_row;
          continue;
        }
        for (int64_t q = 0; q < len; ++q) {
          const bool inside = q >= qlo && q < qhi;
          uint32_t* dst = a + (i + q) * kw + tt * wg;
          slot[q * taps] = dst;
          for (int64_t g = 0; g < G; ++g)
            copy_words(inside ? input + (off0 + q * step + g * gi.group_stride) : nullptr, dst + g * tp * kw, wg);
          if (inside && tail != ~0u) dst[wg - 1] &= tail;  // only groups == 1 sees the input's tail bits; callers may not clear them
        }
      }
    }
    i += len;
  }
}

// The block's panels over the tile, into acc. The kernels write this task's output themselves when
// all its panels allow it (then true: only raw pixels, border pixels under 'zero' padding, are left
// for the output pass).
bool run_panels(const Kernels& kn, const Layer& L, const Tile& tile) {
  const int64_t ldc = L.pixel_major ? 1 : L.ld_rows, ldp = L.pixel_major ? L.s.cout : 1;
  bool fused = true;
  for (int64_t q = tile.q0; q < tile.q1; ++q) fused = fused && L.fusable[size_t(q)];
  Epilogue ep = L.fused_output;
  ep.out = static_cast<char*>(L.out) + tile.p0 * ep.ldo * 4;  // every output element is 4 bytes
  ep.raw = L.p.pad_zero ? tile.border_flag : nullptr;
  for (int64_t q = tile.q0; q < tile.q1; ++q) {
    const uint32_t* r = L.e.panels + q * L.rec;
    const int64_t off = L.direct ? r[0] * L.gi.group_stride : r[0] * L.tp * L.kw;
    kn.dense_panel(tile.rows_of, L.taps, L.wg, off, tile.np, r + 1 + kPanelWidth, r + 1, tile.acc, ldc, ldp,
                   fused ? &ep : nullptr);
  }
#if defined(__x86_64__) || defined(__i386__)
  if (fused && L.fused_output.stream) _mm_sfence();  // streamed stores are visible before the task ends
#endif
  return fused;
}

// The tile's tap-bit-major rows (Kernels::bit_rows: [group][32 kw][nb]) from a word-major copy of
// each group's tile (columns np to 64 nb zero). Direct tiles gather the words through the indirection
// rows; the others transpose their im2col copy.
void tap_rows_by_transpose(const Kernels& kn, const Layer& L, const Tile& tile, int64_t nb, uint64_t* rows) {
  thread_local std::vector<uint32_t> at_buf, eight;
  const int64_t G = L.G, kw = L.kw, tp = L.tp, ld = L.ld_rows, np = tile.np, taps = L.taps, wg = L.wg;
  at_buf.resize(size_t(kw * ld));
  for (int64_t k = 0; k < kw; ++k) std::fill(at_buf.data() + k * ld + np, at_buf.data() + k * ld + 64 * nb, 0u);
  eight.resize(size_t(8 * kw));
  for (int64_t g = 0; g < G; ++g) {
    if (L.direct) {
      // Eight pixels' rows at a time through L1, then one transpose into the columns.
      for (int64_t i0 = 0; i0 < np; i0 += 8) {
        const int64_t n = std::min<int64_t>(8, np - i0);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t tt = 0; tt < taps; ++tt)
            copy_words(tile.rows_of[(i0 + i) * taps + tt] + g * L.gi.group_stride, eight.data() + i * kw + tt * wg, wg);
        kn.transpose(eight.data(), n, kw, kw, at_buf.data() + i0, ld);
      }
    } else {
      kn.transpose(tile.a + g * tp * kw, np, kw, kw, at_buf.data(), ld);
    }
    kn.bit_rows(at_buf.data(), ld, kw, nb, rows + g * 32 * kw * nb);
  }
}

// The same rows for Layer::shifted_taps: the bit rows of the input pixels the tile's taps read, from
// its first pixel plus first_offset on (zero outside the input), then per tap those rows shifted by
// its offset, its padded pixels and the pixels past the tile masked to 0 (padding reads as all bits 0,
// as in the dense kernels). A ninth of the transposing for 3 x 3 taps.
void tap_rows_by_shift(const Kernels& kn, const Layer& L, const Tile& tile, int64_t nb, uint64_t* rows) {
  thread_local std::vector<uint32_t> words;
  thread_local std::vector<uint64_t> input_rows, mask;
  const GroupInput& gi = L.gi;
  const int64_t np = tile.np, taps = L.taps, wg = L.wg, kw = L.kw;
  const int64_t nbx = nb + L.offset_span / 64 + 1, ldx = 64 * nbx + 16;  // input pixels per row: every shift's window
  mask.resize(size_t(taps * nb));
  for (int64_t j = 0; j < nb; ++j) {
    const int64_t n = std::clamp<int64_t>(np - 64 * j, 0, 64);
    for (int64_t tt = 0; tt < taps; ++tt) mask[size_t(tt * nb + j)] = n == 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
  }
  for (int64_t i = 0; i < np; ++i)  // only border pixels have padded taps
    if (tile.border_flag[i])
      for (int64_t tt = 0; tt < taps; ++tt)
        if (tile.pad_flag[i * taps + tt]) mask[size_t(tt * nb + i / 64)] &= ~(uint64_t(1) << (i % 64));
  // Input pixels [q0, q0 + 64 nbx), of which [qa, qb) exist.
  const int64_t q0 = tile.p0 + L.first_offset, qa = std::max<int64_t>(q0, 0), qb = std::min(q0 + 64 * nbx, L.pixels);
  words.resize(size_t(wg * ldx));
  input_rows.resize(size_t(32 * wg * nbx));
  for (int64_t g = 0; g < L.G; ++g) {
    for (int64_t k = 0; k < wg; ++k) {
      std::fill(words.data() + k * ldx, words.data() + k * ldx + (qa - q0), 0u);
      std::fill(words.data() + k * ldx + (qb - q0), words.data() + k * ldx + 64 * nbx, 0u);
    }
    kn.transpose(gi.base + g * gi.group_stride + qa * gi.pixel_stride, qb - qa, wg, gi.pixel_stride,
                 words.data() + (qa - q0), ldx);
    if (L.tail != ~0u)  // the input's bits past Cin (callers may not clear them)
      for (int64_t i = 0; i < 64 * nbx; ++i) words[size_t((wg - 1) * ldx + i)] &= L.tail;
    kn.bit_rows(words.data(), ldx, wg, nbx, input_rows.data());
    for (int64_t tt = 0; tt < taps; ++tt)
      kn.shifted_rows(input_rows.data(), nbx, 32 * wg, L.tap_offset[size_t(tt)] - L.first_offset,
                      mask.data() + tt * nb, nb, rows + (g * 32 * kw + 32 * tt * wg) * nb);
  }
}

// 64-pixel words per bit row of a tile of np pixels: a power of two covering them.
int64_t bit_row_words(int64_t np) {
  int64_t nb = 1;
  while (64 * nb < np) nb *= 2;
  return nb;
}

// The MST edges over the channel-major tile in acc, each child channel from its parent, bit-sliced
// over the tile's tap-bit-major rows, step by step (Execution::steps). With Layer::sliced_bits, returns
// every channel's output bits over the tile's pixels ([channel][nb] words; acc holds only the roots'
// values), else null.
const uint64_t* apply_reuse_edges(const Kernels& kn, const Layer& L, const Tile& tile) {
  thread_local std::vector<uint64_t> bit_rows, planes, signs;
  thread_local std::vector<int32_t> below_root;
  const int64_t ld = L.ld_rows, nb = bit_row_words(tile.np);
  const int64_t group_rows = 32 * L.kw * nb;
  bit_rows.resize(size_t(L.G * group_rows));
  if (L.shifted_taps) tap_rows_by_shift(kn, L, tile, nb, bit_rows.data());
  else tap_rows_by_transpose(kn, L, tile, nb, bit_rows.data());
  const uint32_t* pos = L.e.positions;
  const int64_t channel_planes = L.sliced_bits ? L.nt * nb : 0;
  if (L.sliced_bits) {
    // Each root's popcounts less its threshold in planes, and their signs.
    planes.resize(size_t(L.channels * channel_planes));
    signs.resize(size_t(L.channels * nb));
    below_root.resize(size_t(64 * nb));
    for (uint32_t c : L.roots) {
      const int32_t* v = tile.acc + c * ld;
      const int32_t below = int32_t(L.below[c]);
      for (int64_t i = 0; i < 64 * nb; ++i) below_root[size_t(i)] = v[i] - below;
      uint64_t* pl = planes.data() + c * channel_planes;
      kn.value_planes(below_root.data(), nb, L.nt, pl);
      for (int64_t j = 0; j < nb; ++j) signs[size_t(c * nb + j)] = pl[(L.nt - 1) * nb + j] ^ (L.invert[c] ? ~uint64_t(0) : 0);
    }
  }
  for (int64_t j = 0; j < L.e.nedges; ++j) {
    const uint32_t* st = L.e.steps + j * kStepWords;
    const uint32_t child = st[0], parent = st[1], d = st[3], zeros = st[4];
    const uint64_t* rows = bit_rows.data() + st[2] * group_rows;
    if (L.sliced_bits) {
      const uint32_t add = d + L.below[parent] - L.below[child];  // modulo 2^32: the kernel reads nt <= 32 bits
      kn.sliced_child(rows, nb, pos, d, zeros, add, planes.data() + parent * channel_planes, L.nt,
                      st[5] & kStepHasChildren ? planes.data() + child * channel_planes : nullptr, L.invert[child],
                      signs.data() + child * nb);
    } else {
      kn.sliced_edge(rows, nb, pos, d, zeros, tile.acc + parent * ld, tile.acc + child * ld);
    }
    pos += d;
  }
  return L.sliced_bits ? signs.data() : nullptr;
}

// Output pass for what the kernels did not write (all pixels of unfused tasks, raw pixels of fused
// ones), for the tile's pixels [i0, i1), one pixel row at a time, from their pixel-major popcounts prow.
void write_unfused_output(const Kernels& kn, const Layer& L, const Tile& tile, bool fused, int64_t i0, int64_t i1,
                          const int32_t* prow) {
  thread_local std::vector<int32_t> dot;
  const ConvParams& p = L.p;
  const WeightShape& s = L.s;
  const Transform& t = L.t;
  const int64_t c0 = tile.c0, nc = tile.c1 - tile.c0, taps = L.taps;
  dot.resize(size_t(nc));
  const float *sc = L.scale.data() + c0, *bi = L.bias.data() + c0;
  for (int64_t i = i0; i < i1; ++i) {
    const int32_t* pc = prow + (i - i0) * s.cout + c0;
    const int64_t pix = tile.p0 + i;
    // Interior pixels (and all of them under 'one' padding) go straight from popcounts to the output;
    // border pixels under 'zero' padding take their corrected dot products from `dot`.
    const bool corrected = p.pad_zero && tile.border_flag[i];
    if (fused && !corrected) continue;
    if (corrected) {
      kn.out_int32(pc, L.K, -2, nc, dot.data());
      for (int64_t tt = 0; tt < taps; ++tt)
        if (tile.pad_flag[i * taps + tt]) {
          const int32_t* cr = L.corr.data() + tt * s.cout + c0;
          for (int64_t j = 0; j < nc; ++j) dot[size_t(j)] -= cr[j];
        }
    }
    // Popcounts (k = K, m = -2) or corrected dot products (k = 0, m = 1).
    const int32_t* v = corrected ? dot.data() : pc;
    const int32_t vk = corrected ? 0 : L.K, vm = corrected ? 1 : -2;
    if (t.kind == Output::Int32)
      kn.out_int32(v, vk, vm, nc, static_cast<int32_t*>(L.out) + pix * s.cout + c0);
    else if (t.kind == Output::Float)
      kn.out_float(v, vk, vm, sc, bi, L.fused_output.clamp, nc, static_cast<float*>(L.out) + pix * s.cout + c0);
    else
      kn.out_bits(v, vk, vm, sc, bi, L.fused_output.clamp, nc, static_cast<uint32_t*>(L.out) + pix * L.out_words + c0 / 32);
  }
}

// 'bits' output of a channel-major tile without int32 transposes: each channel's signs over the
// tile's pixels as 32-pixel words [word][channel], whose bit transpose (bit_rows, channels in the role of
// pixels) is the output: bit c of row i is channel c of pixel i. Rows are as wide as the output's pixels
// when the output words come in pairs, so the tile's whole 32-pixel words go straight to the output;
// the rest (and every row otherwise) goes through a buffer.
// The signs come from acc (sign_bits), or with Layer::sliced_bits from apply_reuse_edges ([channel][nb]).
void write_channel_major_bits(const Kernels& kn, const Layer& L, const Tile& tile, const uint64_t* sliced_signs) {
  thread_local std::vector<uint32_t> signs;
  thread_local std::vector<uint64_t> rows, by_channel;
  // (Rows a cache line longer than the channels: at 1 KiB apart, the stores of one channel's words all
  // fell in the same few L1 sets.)
  const int64_t np = tile.np, cout = L.s.cout, words = (np + 31) / 32, nbc = (cout + 63) / 64, ld = 64 * nbc + 16;
  const int64_t nb = bit_row_words(np);
  // Each channel's words [channel][2 nb], then one word transpose into `signs` (channels past cout 0).
  // (Copied out word by word right after the kernel stored them as one vector, they stalled on the
  // store forwarding.)
  signs.resize(size_t(words * ld));
  for (int64_t w = 0; w < words; ++w) std::fill(signs.data() + w * ld + cout, signs.data() + w * ld + 64 * nbc, 0u);
  if (!sliced_signs) {
    by_channel.resize(size_t(cout * nb));
    for (int64_t c = 0; c < cout; ++c)
      kn.sign_bits(tile.acc + c * L.ld_rows, np, L.K, L.scale[size_t(c)], L.bias[size_t(c)], L.fused_output.clamp,
                   reinterpret_cast<uint32_t*>(by_channel.data() + c * nb));
  }
  kn.transpose(reinterpret_cast<const uint32_t*>(sliced_signs ? sliced_signs : by_channel.data()), cout, words, 2 * nb,
               signs.data(), ld);
  uint32_t* out = static_cast<uint32_t*>(L.out) + tile.p0 * L.out_words;
  const int64_t direct = L.out_words == 2 * nbc ? np / 32 : 0;  // whole words written in place
  if (direct) kn.bit_rows(signs.data(), ld, direct, nbc, reinterpret_cast<uint64_t*>(out));
  if (direct == words) return;
  rows.resize(size_t(32 * (words - direct) * nbc));
  kn.bit_rows(signs.data() + direct * ld, ld, words - direct, nbc, rows.data());
  const auto* bits = reinterpret_cast<const uint32_t*>(rows.data());
  for (int64_t i = 32 * direct; i < np; ++i) {
    const uint32_t* row = bits + (i - 32 * direct) * 2 * nbc;
    for (int64_t w = 0; w < L.out_words; ++w) out[i * L.out_words + w] = row[w];
  }
}

// The output of a channel-major tile (after MST edges): blocks of pixels turned pixel-major in an
// L1-sized buffer and written out before the next block.
void write_channel_major_output(const Kernels& kn, const Layer& L, const Tile& tile, const uint64_t* sliced_signs) {
  if (sliced_signs || (L.t.kind == Output::Bits && !L.p.pad_zero && kn.sign_bits))
    return write_channel_major_bits(kn, L, tile, sliced_signs);
  thread_local std::vector<int32_t> rows;
  constexpr int64_t kBlock = 16;
  rows.resize(size_t(kBlock * L.s.cout));
  for (int64_t i0 = 0; i0 < tile.np; i0 += kBlock) {
    const int64_t n = std::min(kBlock, tile.np - i0);
    kn.transpose(reinterpret_cast<const uint32_t*>(tile.acc + i0), L.s.cout, n, L.ld_rows,
                 reinterpret_cast<uint32_t*>(rows.data()), L.s.cout);
    write_unfused_output(kn, L, tile, false, i0, i0 + n, rows.data());
  }
}

}  // namespace

bool sliced_bits_output(const ConvParams& p, const Transform& t, int64_t cout) {
  if (t.kind != Output::Bits || p.pad_zero) return false;
  for (int64_t c = 0; c < cout; ++c)
    if ((t.scale && !std::isfinite(t.scale[c])) || (t.bias && !std::isfinite(t.bias[c]))) return false;
  return true;
}

void conv(const uint32_t* x, const uint32_t* words, const WeightShape& s, const Execution& e, const ConvParams& p,
          const Transform& t, void* out) {
  check_conv(p, s);
  check_transform(t, s.cout);
  const Kernels& kn = active_kernels();
  const Layer L(kn, x, words, s, e, p, t, out);
  parallel_tasks(L.ntiles * L.blocks.count, [&](int64_t task) {
    const Tile tile = tile_of(L, task);
    build_indirection(L, tile);
    const bool fused = run_panels(kn, L, tile);
    if (L.pixel_major) {
      write_unfused_output(kn, L, tile, fused, 0, tile.np, tile.acc);
    } else {
      write_channel_major_output(kn, L, tile, apply_reuse_edges(kn, L, tile));
    }
  });
}

}  // namespace xnorm::bconv
