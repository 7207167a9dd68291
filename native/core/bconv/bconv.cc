#include "bconv.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <xmmintrin.h>

#include "../common/checked.h"
#include "../common/cpu.h"
#include "../common/error.h"
#include "../common/thread_pool.h"
#include "epilogue.h"
#include "kernels.h"

namespace xnorm::bconv {

const Kernels& active_kernels() {
  switch (active_isa()) {
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
    default: return kernels_portable();
  }
}

namespace {

inline int32_t popc(uint32_t v) { return int32_t(__builtin_popcount(v)); }
inline bool bit_at(const uint32_t* words, int64_t i) { return (words[i >> 5] >> (i & 31)) & 1u; }
std::string num(int64_t v) { return std::to_string(v); }

// Pixels per task tile. Depends only on the problem size (never on the thread count), so results
// and summation orders are the same for any setNumThreads. Multiple of 16: the MST kernels step by 16.
int64_t tile_pixels(int64_t pixels, int64_t cout) {
  int64_t tp = 64;
  while (tp > 16 && (pixels + tp - 1) / tp < 8) tp /= 2;                   // enough tasks for the pool
  while (tp > 16 && cout * tp * int64_t(sizeof(int32_t)) > (512 << 10)) tp /= 2;  // accumulators stay in L2
  return tp;
}

// The output transform of the reference, in this base translation unit (no FMA), so y*scale+bias is
// rounded twice, as the kernels' out_float does. 'bits' is its sign (bit 1 = -1 where y < 0), which is
// packBits of the float output by construction. Missing scale/bias act as 1 and 0.
inline float transform_value(int32_t dot, int64_t co, const Transform& t) {
  float y = float(dot) * (t.scale ? t.scale[co] : 1.0f) + (t.bias ? t.bias[co] : 0.0f);
  if (t.clamp) y = std::min(std::max(y, t.lo), t.hi);
  return y;
}

void check_transform(const Transform& t, int64_t cout) {
  for (int64_t c = 0; c < cout; ++c) {
    if (t.scale && !std::isfinite(t.scale[c]))
      fail(ErrorCode::Argument, "binaryConv2d: scale[" + num(c) + "]: expected a finite number");
    if (t.bias && !std::isfinite(t.bias[c]))
      fail(ErrorCode::Argument, "binaryConv2d: bias[" + num(c) + "]: expected a finite number");
  }
  if (t.clamp && !(t.lo <= t.hi))
    fail(ErrorCode::Argument, "binaryConv2d: clamp: expected [lo, hi] with lo <= hi");
}

// Writes output pixel `pix` for channel co from its dot product.
struct Writer {
  const Transform& t;
  int64_t cout, out_words;
  void* out;
  void put(int64_t pix, int64_t co, int32_t dot) const {
    switch (t.kind) {
      case Output::Int32: static_cast<int32_t*>(out)[pix * cout + co] = dot; break;
      case Output::Float: static_cast<float*>(out)[pix * cout + co] = transform_value(dot, co, t); break;
      case Output::Bits:
        if (transform_value(dot, co, t) < 0.0f) static_cast<uint32_t*>(out)[pix * out_words + (co >> 5)] |= 1u << (co & 31);
        break;
    }
  }
};

}  // namespace

void check_weight_shape(const WeightShape& s) {
  if (s.cout < 1 || s.cin_g < 1 || s.kh < 1 || s.kw < 1 || s.groups < 1)
    fail(ErrorCode::Shape, "weights: expected positive [Cout, Cin/groups, kh, kw] and groups, received [" +
                               num(s.cout) + ", " + num(s.cin_g) + ", " + num(s.kh) + ", " + num(s.kw) +
                               "], groups " + num(s.groups));
  if (s.cout % s.groups)
    fail(ErrorCode::Shape, "weights: Cout = " + num(s.cout) + " is not divisible by groups = " + num(s.groups));
  // Every count the kernels form (Cout * Kw words, panel data, K) must fit; int32 dot products too.
  checked_mul(checked_mul(s.cout, s.taps(), "weights"), s.wg() * 32, "weights");
  if (s.k() > (int64_t(1) << 30)) fail(ErrorCode::Shape, "weights: K = kh*kw*Cin/groups exceeds 2^30");
}

int64_t panel_record_words(const WeightShape& s) { return 1 + kPanelWidth + s.row_words() * kPanelWidth; }

void pack_weights(const float* w, const WeightShape& s, uint32_t* words) {
  int64_t kw = s.row_words(), wg = s.wg();
  std::fill(words, words + s.cout * kw, 0u);
  for (int64_t co = 0; co < s.cout; ++co)
    for (int64_t ci = 0; ci < s.cin_g; ++ci)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) {
          float v = w[((co * s.cin_g + ci) * s.kh + i) * s.kw + j];
          if (v < 0.0f) words[co * kw + (i * s.kw + j) * wg + ci / 32] |= 1u << (ci & 31);
        }
}

int64_t build_panels(const uint32_t* words, const WeightShape& s, const std::vector<uint32_t>& channels,
                     uint32_t* out) {
  int64_t kw = s.row_words(), rec = panel_record_words(s), cog = s.cout_g(), count = 0;
  size_t i = 0;
  while (i < channels.size()) {
    int64_t g = channels[i] / cog;
    uint32_t* r = out ? out + count * rec : nullptr;
    if (r) {
      std::fill(r, r + rec, 0u);
      r[0] = uint32_t(g);
      std::fill(r + 1, r + 1 + kPanelWidth, kNoChannel);
    }
    for (int c = 0; c < kPanelWidth && i < channels.size() && channels[i] / cog == g; ++c, ++i) {
      if (!r) continue;
      r[1 + c] = channels[i];
      const uint32_t* row = words + int64_t(channels[i]) * kw;
      for (int64_t k = 0; k < kw; ++k) r[1 + kPanelWidth + k * kPanelWidth + c] = row[k];
    }
    ++count;
  }
  return count;
}

void validate_execution(const WeightShape& s, const Execution& e) {
  auto bad = [](const std::string& m) { fail(ErrorCode::CorruptPlan, "execution plan: " + m); };
  int64_t rec = panel_record_words(s), cog = s.cout_g(), kw = s.row_words();
  std::vector<uint8_t> done(size_t(s.cout), 0);
  for (int64_t p = 0; p < e.npanels; ++p) {
    const uint32_t* r = e.panels + p * rec;
    if (r[0] >= uint64_t(s.groups)) bad("panel " + num(p) + " names group " + num(r[0]));
    for (int c = 0; c < kPanelWidth; ++c) {
      uint32_t ch = r[1 + c];
      if (ch == kNoChannel) continue;
      if (ch >= uint64_t(s.cout) || ch / cog != r[0] || done[ch])
        bad("panel " + num(p) + " lists channel " + num(ch) + " out of range, in another group, or twice");
      done[ch] = 1;
    }
  }
  int64_t off = 0;
  for (int64_t i = 0; i < e.nedges; ++i) {
    if (off + 4 > e.edge_words) bad("edge list truncated");
    const uint32_t* r = e.edges + off;
    uint32_t child = r[0], parent = r[1], nw = r[2];
    if (child >= uint64_t(s.cout) || parent >= uint64_t(s.cout) || child / cog != parent / cog)
      bad("edge " + num(i) + " joins channels " + num(child) + " and " + num(parent));
    if (!done[parent] || done[child]) bad("edge " + num(i) + " is out of order or computes a channel twice");
    if (nw > uint64_t(kw) || off + 4 + 3 * int64_t(nw) > e.edge_words) bad("edge " + num(i) + " has a bad size");
    int64_t d = 0;
    for (uint32_t j = 0; j < nw; ++j) {
      uint32_t k = r[4 + 3 * j], mask = r[5 + 3 * j], pb = r[6 + 3 * j];
      if (k >= uint64_t(kw) || (pb & ~mask)) bad("edge " + num(i) + " has a bad word entry");
      d += popc(mask);
    }
    if (d != int64_t(r[3])) bad("edge " + num(i) + " has a wrong bit count");
    done[child] = 1;
    off += 4 + 3 * int64_t(nw);
  }
  if (off != e.edge_words) bad("trailing edge data");
  for (int64_t c = 0; c < s.cout; ++c)
    if (!done[size_t(c)]) bad("channel " + num(c) + " is never computed");
}

void check_conv(const ConvParams& p, const WeightShape& s) {
  check_weight_shape(s);
  if (p.c != s.cin_g * s.groups)
    fail(ErrorCode::Shape, "x: expected C = Cin/groups * groups = " + num(s.cin_g * s.groups) + ", received " +
                               num(p.c));
  if (p.n < 1 || p.h < 1 || p.w < 1) fail(ErrorCode::Shape, "x: expected N, H, W >= 1");
  if (p.sh < 1 || p.sw < 1 || p.dh < 1 || p.dw < 1 || p.ph < 0 || p.pw < 0)
    fail(ErrorCode::Argument, "stride and dilation must be >= 1, padding >= 0");
  checked_mul(checked_mul(checked_mul(p.n, p.h, "x"), p.w, "x"), (p.c + 31) / 32, "x");
  int64_t eh = checked_mul(p.dh, s.kh - 1, "kernel extent") + 1, ew = checked_mul(p.dw, s.kw - 1, "kernel extent") + 1;
  if (p.h + 2 * p.ph < eh || p.w + 2 * p.pw < ew)
    fail(ErrorCode::Shape, "x: the padded input (" + num(p.h + 2 * p.ph) + " x " + num(p.w + 2 * p.pw) +
                               ") is smaller than the dilated kernel (" + num(eh) + " x " + num(ew) + ")");
  checked_mul(checked_mul(p.n, (p.h + 2 * p.ph - eh) / p.sh + 1, "output"), (p.w + 2 * p.pw - ew) / p.sw + 1,
              "output");
}

namespace {
// Copies (or, from nullptr, zeroes) a few words. Explicit cases for the common 1-4 words per tap:
// a library memmove call per tap costs more than the copy itself.
inline void copy_words(const uint32_t* src, uint32_t* dst, int64_t n) {
  switch (src ? n : 0) {
    case 4: dst[3] = src[3]; [[fallthrough]];
    case 3: dst[2] = src[2]; [[fallthrough]];
    case 2: dst[1] = src[1]; [[fallthrough]];
    case 1: dst[0] = src[0]; return;
    case 0: if (!src) std::fill(dst, dst + n, 0u); return;
    default: std::copy(src, src + n, dst);
  }
}
}  // namespace

namespace {

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

}  // namespace

void conv(const uint32_t* x, const uint32_t* words, const WeightShape& s, const Execution& e, const ConvParams& p,
          const Transform& t, void* out) {
  check_conv(p, s);
  validate_execution(s, e);
  check_transform(t, s.cout);
  const Kernels& kn = active_kernels();
  const int64_t oh = out_size(p.h, p.ph, p.dh, s.kh, p.sh), ow = out_size(p.w, p.pw, p.dw, s.kw, p.sw);
  const int64_t pixels = p.n * oh * ow, G = s.groups, wg = s.wg(), taps = s.taps(), kw = s.row_words();
  const int32_t K = int32_t(s.k());
  const int64_t tp = tile_pixels(pixels, s.cout), ntiles = (pixels + tp - 1) / tp;
  const int64_t out_words = (s.cout + 31) / 32, rec = panel_record_words(s);

  GroupInput gi;
  make_group_input(x, p, s, gi);

  // 'zero' padding: a padded tap contributed dot(+1, w_tap) = Cin_g - 2*popc(w_tap) under 'one'; take it
  // off. Stored tap-major so a border pixel subtracts whole rows.
  std::vector<int32_t> corr;
  if (p.pad_zero) {
    corr.resize(size_t(taps * s.cout));
    for (int64_t co = 0; co < s.cout; ++co)
      for (int64_t tt = 0; tt < taps; ++tt) {
        int32_t pc = 0;
        for (int64_t j = 0; j < wg; ++j) pc += popc(words[co * kw + tt * wg + j]);
        corr[size_t(tt * s.cout + co)] = int32_t(s.cin_g) - 2 * pc;
      }
  }
  std::vector<float> scale(size_t(s.cout), 1.0f), bias(size_t(s.cout), 0.0f);
  if (t.scale) std::copy(t.scale, t.scale + s.cout, scale.begin());
  if (t.bias) std::copy(t.bias, t.bias + s.cout, bias.begin());
  // Dense-only executions keep the tile pixel-major (the kernels store whole vectors, the output pass
  // reads rows); MST edges need it channel-major, so one pixel's parent values sit next to the next's.
  const bool pixel_major = e.nedges == 0;
  // Direct: the kernels read the input words in place through the indirection rows (no im2col copy).
  // Needs groups on word boundaries, input tail bits that need no masking, and no MST edges (they read
  // a word-major copy of the tile).
  const uint32_t tail = G == 1 && s.cin_g % 32 ? (1u << (s.cin_g % 32)) - 1 : 0xffffffffu;
  const bool direct = pixel_major && gi.repacked.empty() && tail == ~0u;
  const std::vector<uint32_t> zeros(size_t(G * wg), 0u);  // the padding row, wide enough for any group offset
  const uint32_t* zero_row = zeros.data();

  // Few pixel tiles (binaryLinear, small late layers): split the output channels too, in blocks of
  // whole panels, when the panels cover the channels in order (plain weights, all-root plans) and, for
  // 'bits', every block starts on a 32-channel word. Block count depends on the problem size only.
  int64_t cblocks = 1, panels_per_block = e.npanels;
  if (pixel_major && ntiles < 8 && e.npanels > 1) {
    bool ordered = true, word_aligned = true;
    uint32_t next = 0;
    for (int64_t q = 0; q < e.npanels && ordered; ++q) {
      const uint32_t* ch = e.panels + q * rec + 1;
      word_aligned = word_aligned && ch[0] % 32 == 0;
      for (int c = 0; c < kPanelWidth && ch[c] != kNoChannel; ++c) ordered = ordered && ch[c] == next++;
    }
    if (ordered && (t.kind != Output::Bits || word_aligned)) {
      cblocks = std::min<int64_t>(e.npanels, (8 + ntiles - 1) / ntiles);
      panels_per_block = (e.npanels + cblocks - 1) / cblocks;
      cblocks = (e.npanels + panels_per_block - 1) / panels_per_block;
    }
  }

  // Panels whose output the kernel can write itself (consecutive channels; for 'bits', whole words).
  std::vector<uint8_t> fusable(size_t(e.npanels), 0);
  for (int64_t q = 0; q < e.npanels; ++q) {
    const uint32_t* ch = e.panels + q * rec + 1;
    fusable[size_t(q)] = pixel_major && consecutive_channels(ch) > 0 && (t.kind != Output::Bits || ch[0] % 32 == 0);
  }
  const float clamp_bounds[2] = {t.lo, t.hi};
  Epilogue fused_output;
  fused_output.kind = t.kind;
  fused_output.k = K;
  fused_output.scale = scale.data();
  fused_output.bias = bias.data();
  fused_output.clamp = t.clamp ? clamp_bounds : nullptr;
  fused_output.ldo = t.kind == Output::Bits ? out_words : s.cout;
  // Float outputs of 4 MiB and more (far past the L2s, on a 2 MiB boundary from lib/) are streamed:
  // A/B on 64->64 @56, batch 8, 2 threads: 16 % faster than plain stores after a write prefetch.
  fused_output.stream = t.kind == Output::Float && pixels * s.cout >= (int64_t(1) << 20);

  parallel_tasks(ntiles * cblocks, [&](int64_t task) {
    const int64_t tile = task / cblocks, q0 = task % cblocks * panels_per_block;
    const int64_t q1 = std::min(e.npanels, q0 + panels_per_block);
    // This task's output channels [c0, c1): all of them, or its panels' run when channels are split.
    int64_t c0 = 0, c1 = s.cout;
    if (cblocks > 1) {
      const uint32_t* last = e.panels + (q1 - 1) * rec + 1;
      int c = kPanelWidth;
      while (last[c - 1] == kNoChannel) --c;
      c0 = e.panels[q0 * rec + 1];
      c1 = int64_t(last[c - 1]) + 1;
    }
    const int64_t nc = c1 - c0;
    const int64_t p0 = tile * tp, np = std::min(tp, pixels - p0), np16 = (np + 15) / 16 * 16;
    // Per-thread scratch, reused across tiles and calls: no allocation or clearing in the hot loop.
    thread_local std::vector<uint32_t> a_buf, at_buf;
    thread_local std::vector<const uint32_t*> ind;
    thread_local std::vector<int32_t> acc_buf, rows, dot;
    thread_local std::vector<uint8_t> padded, border;
    if (!direct) a_buf.resize(size_t(G * tp * kw));  // im2col rows per group: a[g][pixel][k]
    ind.resize(size_t(tp * taps));
    acc_buf.resize(size_t(s.cout * tp));
    padded.assign(size_t(tp * taps), 0);
    border.assign(size_t(tp), 0);
    // Raw pointers: every access through a thread_local would recompute its address (__tls_get_addr).
    uint32_t* a = a_buf.data();
    int32_t* acc = acc_buf.data();
    const uint32_t** rows_of = ind.data();
    uint8_t *pad_flag = padded.data(), *border_flag = border.data();
    const uint32_t* const input = gi.base;  // a local: stores of pointers to rows_of could alias gi.base
    // Indirection rows (and the im2col copy when not direct) by runs of pixels along an output row: per
    // tap, the source advances by a fixed stride and the in-bounds pixels form one range.
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
    const int64_t ldc = pixel_major ? 1 : tp, ldp = pixel_major ? s.cout : 1;
    // The kernels write this task's output themselves when all its panels allow it; only raw pixels
    // (border pixels under 'zero' padding) are left for the output pass below.
    bool fused = true;
    for (int64_t q = q0; q < q1; ++q) fused = fused && fusable[size_t(q)];
    Epilogue ep = fused_output;
    ep.out = static_cast<char*>(out) + p0 * ep.ldo * 4;  // every output element is 4 bytes
    ep.raw = p.pad_zero ? border_flag : nullptr;
    for (int64_t q = q0; q < q1; ++q) {
      const uint32_t* r = e.panels + q * rec;
      const int64_t off = direct ? r[0] * gi.group_stride : r[0] * tp * kw;
      kn.dense_panel(rows_of, taps, wg, off, np, r + 1 + kPanelWidth, r + 1, acc, ldc, ldp, fused ? &ep : nullptr);
    }
    if (fused && fused_output.stream) _mm_sfence();  // streamed stores are visible before the task ends
    const int32_t* prow = acc;
    if (!pixel_major) {
      // Word-major copy of the tile so one edge word is a contiguous run of pixels (columns past np
      // are zero, so the 16-pixel steps read defined values).
      at_buf.assign(size_t(G * kw * tp), 0u);
      for (int64_t g = 0; g < G; ++g) kn.transpose(a + g * tp * kw, np, kw, kw, at_buf.data() + g * kw * tp, tp);
      const uint32_t* r = e.edges;
      for (int64_t j = 0; j < e.nedges; ++j) {
        int64_t g = r[0] / s.cout_g();
        kn.reuse_edge(at_buf.data() + g * kw * tp, tp, np16, r + 4, r[2], int32_t(r[3]), acc + r[1] * tp,
                      acc + r[0] * tp);
        r += 4 + 3 * r[2];
      }
      rows.resize(size_t(np * s.cout));  // back to pixel-major for the output pass
      kn.transpose(reinterpret_cast<const uint32_t*>(acc), s.cout, np, tp, reinterpret_cast<uint32_t*>(rows.data()), s.cout);
      prow = rows.data();
    }
    // Output pass for what the kernels did not write (all pixels of unfused tasks, raw pixels of fused
    // ones), one pixel row at a time.
    dot.resize(size_t(nc));
    const float *sc = scale.data() + c0, *bi = bias.data() + c0;
    for (int64_t i = 0; i < np; ++i) {
      const int32_t* pc = prow + i * s.cout + c0;
      const int64_t pix = p0 + i;
      // Interior pixels (and all of them under 'one' padding) go straight from popcounts to the output;
      // border pixels under 'zero' padding take their corrected dot products from `dot`.
      const bool corrected = p.pad_zero && border_flag[i];
      if (fused && !corrected) continue;
      if (corrected) {
        kn.out_int32(pc, K, -2, nc, dot.data());
        for (int64_t tt = 0; tt < taps; ++tt)
          if (pad_flag[i * taps + tt]) {
            const int32_t* cr = corr.data() + tt * s.cout + c0;
            for (int64_t j = 0; j < nc; ++j) dot[size_t(j)] -= cr[j];
          }
      }
      // Popcounts (k = K, m = -2) or corrected dot products (k = 0, m = 1).
      const int32_t* v = corrected ? dot.data() : pc;
      const int32_t vk = corrected ? 0 : K, vm = corrected ? 1 : -2;
      if (t.kind == Output::Int32)
        kn.out_int32(v, vk, vm, nc, static_cast<int32_t*>(out) + pix * s.cout + c0);
      else if (t.kind == Output::Float)
        kn.out_float(v, vk, vm, sc, bi, fused_output.clamp, nc, static_cast<float*>(out) + pix * s.cout + c0);
      else
        kn.out_bits(v, vk, vm, sc, bi, fused_output.clamp, nc, static_cast<uint32_t*>(out) + pix * out_words + c0 / 32);
    }
  });
}

void conv_reference(const uint32_t* x, const uint32_t* words, const WeightShape& s, const ConvParams& p,
                    const Transform& t, void* out) {
  check_conv(p, s);
  check_transform(t, s.cout);
  const int64_t oh = out_size(p.h, p.ph, p.dh, s.kh, p.sh), ow = out_size(p.w, p.pw, p.dw, s.kw, p.sw);
  const int64_t wc = (p.c + 31) / 32, kw = s.row_words(), wg = s.wg(), out_words = (s.cout + 31) / 32;
  if (t.kind == Output::Bits) std::fill(static_cast<uint32_t*>(out), static_cast<uint32_t*>(out) + p.n * oh * ow * out_words, 0u);
  const Writer writer{t, s.cout, out_words, out};
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t co = 0; co < s.cout; ++co) {
          int64_t g = co / s.cout_g();
          int32_t dot = 0;
          for (int64_t ki = 0; ki < s.kh; ++ki)
            for (int64_t kj = 0; kj < s.kw; ++kj) {
              int64_t iy = oy * p.sh - p.ph + ki * p.dh, ix = ox * p.sw - p.pw + kj * p.dw;
              bool inside = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
              if (!inside && p.pad_zero) continue;
              const uint32_t* wt = words + co * kw + (ki * s.kw + kj) * wg;
              for (int64_t ci = 0; ci < s.cin_g; ++ci) {
                int xv = inside && bit_at(x + ((n * p.h + iy) * p.w + ix) * wc, g * s.cin_g + ci) ? -1 : 1;
                int wv = bit_at(wt, ci) ? -1 : 1;
                dot += xv * wv;
              }
            }
          writer.put((n * oh + oy) * ow + ox, co, dot);
        }
}

void pack_bits(const float* x, bool nchw, int64_t n, int64_t c, int64_t s, const float* thr_c, float thr,
               uint32_t* out) {
  if (n < 1 || c < 1 || s < 1) fail(ErrorCode::Shape, "packBits: x: expected N, C and spatial size >= 1");
  const Kernels& kn = active_kernels();
  std::vector<float> th(size_t(c), thr);
  if (thr_c) std::copy(thr_c, thr_c + c, th.begin());
  int64_t wc = (c + 31) / 32;
  if (!nchw) {
    // ~64 KiB of floats per task: big enough to stream, small enough to spread over the pool.
    int64_t chunk = std::max<int64_t>(16, (int64_t(1) << 14) / c / 16 * 16);
    parallel_for(n * s, chunk, [&](int64_t b, int64_t e) { kn.pack_nhwc(x + b * c, e - b, c, th.data(), out + b * wc); });
    return;
  }
  const int64_t chunk = kPackRun, per_image = (s + chunk - 1) / chunk;
  parallel_tasks(n * per_image, [&](int64_t task) {
    int64_t img = task / per_image, s0 = (task % per_image) * chunk, cnt = std::min(chunk, s - s0);
    kn.pack_nchw(x + img * c * s + s0, s, cnt, c, th.data(), out + (img * s + s0) * wc);
  });
}

void unpack_bits(const uint32_t* b, bool nchw, int64_t n, int64_t c, int64_t s, float* out) {
  int64_t wc = (c + 31) / 32;
  parallel_for(n * s, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t px = lo; px < hi; ++px) {
      int64_t img = px / s, sp = px % s;
      for (int64_t ch = 0; ch < c; ++ch) {
        float v = bit_at(b + px * wc, ch) ? -1.0f : 1.0f;
        out[nchw ? (img * c + ch) * s + sp : px * c + ch] = v;
      }
    }
  });
}

double popcount_peak(double seconds) {
  const Kernels& kn = active_kernels();
  alignas(64) uint32_t data[256];
  for (int i = 0; i < 256; ++i) data[i] = uint32_t(i) * 2654435761u;
  using clock = std::chrono::steady_clock;
  // Size the run from a short single-thread probe, then run every pool thread at once.
  int64_t reps = 1 << 12;
  for (;;) {
    auto t0 = clock::now();
    volatile uint64_t sink = kn.popcount_loop(data, reps);
    (void)sink;
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.01 || reps >= (int64_t(1) << 24)) {
      reps = std::min<int64_t>(int64_t(1) << 24, std::max<int64_t>(1, int64_t(double(reps) * seconds / dt)));
      break;
    }
    reps *= 4;
  }
  int threads = num_threads();
  std::vector<uint64_t> sinks(static_cast<size_t>(threads));
  auto t0 = clock::now();
  parallel_tasks(threads, [&](int64_t i) { sinks[size_t(i)] = kn.popcount_loop(data, reps); });
  double dt = std::chrono::duration<double>(clock::now() - t0).count();
  volatile uint64_t keep = sinks[0];
  (void)keep;
  return double(threads) * double(reps) * 256.0 * 32.0 / dt;
}

}  // namespace xnorm::bconv
