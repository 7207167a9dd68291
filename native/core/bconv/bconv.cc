// The binary conv around the fast path (conv.cc): weight packing and panels, plan and geometry checks,
// the direct-loop reference, and bit packing of activations.
#include "bconv.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../common/checked.h"
#include "../common/cpu.h"
#include "../common/error.h"
#include "../common/thread_pool.h"
#include "bconv_internal.h"
#include "kernels.h"

namespace xnorm::bconv {

const Kernels& active_kernels() {
  switch (active_isa()) {
#if defined(__x86_64__)
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
#elif defined(__aarch64__)
    case Isa::Neon: return kernels_neon();
#endif
    default: return kernels_portable();
  }
}

namespace {

// The output transform of the reference, in this base translation unit (no FMA), so y*scale+bias is
// rounded twice, as the kernels' out_float does. 'bits' is its sign (bit 1 = -1 where y < 0), which is
// packBits of the float output by construction. Missing scale/bias act as 1 and 0.
inline float transform_value(int32_t dot, int64_t co, const Transform& t) {
  float y = float(dot) * (t.scale ? t.scale[co] : 1.0f) + (t.bias ? t.bias[co] : 0.0f);
  if (t.clamp) y = std::min(std::max(y, t.lo), t.hi);
  return y;
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
                     uint32_t* out, const uint32_t* virtual_group) {
  int64_t kw = s.row_words(), rec = panel_record_words(s), count = 0;
  size_t i = 0;
  while (i < channels.size()) {
    int64_t g = group_of(s, virtual_group, channels[i]);
    uint32_t* r = out ? out + count * rec : nullptr;
    if (r) {
      std::fill(r, r + rec, 0u);
      r[0] = uint32_t(g);
      std::fill(r + 1, r + 1 + kPanelWidth, kNoChannel);
    }
    for (int c = 0; c < kPanelWidth && i < channels.size() && group_of(s, virtual_group, channels[i]) == g; ++c, ++i) {
      if (!r) continue;
      r[1 + c] = channels[i];
      const uint32_t* row = words + int64_t(channels[i]) * kw;
      for (int64_t k = 0; k < kw; ++k) r[1 + kPanelWidth + k * kPanelWidth + c] = row[k];
    }
    ++count;
  }
  return count;
}

void sliced_steps(const uint32_t* edges, int64_t nedges, int64_t channels, int64_t cout_g, std::vector<uint32_t>& steps,
                  std::vector<uint32_t>& positions) {
  // Each channel's edge (its record's offset) and, per parent, its children in increasing order.
  std::vector<int64_t> record(size_t(channels), -1), first_child(size_t(channels) + 1, 0);
  std::vector<uint32_t> parent_of(size_t(channels), kNoChannel);
  for (int64_t i = 0, off = 0; i < nedges; ++i) {
    record[edges[off]] = off;
    parent_of[edges[off]] = edges[off + 1];
    ++first_child[edges[off + 1] + 1];
    off += 4 + 3 * int64_t(edges[off + 2]);
  }
  for (int64_t c = 0; c < channels; ++c) first_child[c + 1] += first_child[c];
  std::vector<uint32_t> children(static_cast<size_t>(nedges));
  std::vector<int64_t> fill(first_child.begin(), first_child.end() - 1);
  for (int64_t c = 0; c < channels; ++c)
    if (parent_of[c] != kNoChannel) children[fill[parent_of[c]]++] = uint32_t(c);
  steps.clear();
  positions.clear();
  auto add_step = [&](uint32_t c) {
    const uint32_t* r = edges + record[c];
    const uint32_t nw = r[2];
    const uint32_t flags = first_child[c + 1] > first_child[c] ? kStepHasChildren : 0u;
    steps.insert(steps.end(), {c, r[1], uint32_t(c / cout_g), r[3], 0u, flags});
    for (uint32_t parent_bit = 0; parent_bit < 2; ++parent_bit)
      for (uint32_t j = 0; j < nw; ++j) {
        const uint32_t k = r[4 + 3 * j], pb = r[6 + 3 * j];
        if (k >= uint64_t(kMaxPositionBits / 32))
          fail(ErrorCode::Shape, "mstPlan: reuse edges address at most " + num(kMaxPositionBits) + " weight bits per channel");
        for (uint32_t m = r[5 + 3 * j] & (parent_bit ? pb : ~pb); m; m &= m - 1) {
          positions.push_back((32 * k + uint32_t(__builtin_ctz(m))) << kPositionShift | parent_bit);
          steps.end()[-2] += 1 - parent_bit;
        }
      }
  };
  std::vector<uint32_t> stack;  // depth first from each root, children in increasing order
  for (int64_t root = 0; root < channels; ++root) {
    if (parent_of[root] != kNoChannel) continue;
    stack.assign(children.begin() + first_child[root], children.begin() + first_child[root + 1]);
    std::reverse(stack.begin(), stack.end());
    while (!stack.empty()) {
      const uint32_t c = stack.back();
      stack.pop_back();
      add_step(c);
      for (int64_t k = first_child[c + 1]; k-- > first_child[c];) stack.push_back(children[k]);
    }
  }
}

namespace {

[[noreturn]] void bad_execution(const std::string& m) { fail(ErrorCode::CorruptPlan, "execution plan: " + m); }

// Edge records over `channels` channels (output channels first, then majority channels of the groups
// in virtual_group), given which are computed before them (`done`, updated): each record computes an
// output channel not computed yet from a computed channel of its group, its words inside the record.
void check_records(const WeightShape& s, const uint32_t* edges, int64_t nedges, int64_t edge_words, int64_t channels,
                   const uint32_t* virtual_group, std::vector<uint8_t>& done) {
  const int64_t kw = s.row_words();
  int64_t off = 0;
  for (int64_t i = 0; i < nedges; ++i) {
    if (off + 4 > edge_words) bad_execution("edge list truncated");
    const uint32_t* r = edges + off;
    uint32_t child = r[0], parent = r[1], nw = r[2];
    if (child >= uint64_t(s.cout) || parent >= uint64_t(channels) ||
        group_of(s, virtual_group, child) != group_of(s, virtual_group, parent))
      bad_execution("edge " + num(i) + " joins channels " + num(child) + " and " + num(parent));
    if (!done[parent] || done[child]) bad_execution("edge " + num(i) + " is out of order or computes a channel twice");
    if (nw > uint64_t(kw) || off + 4 + 3 * int64_t(nw) > edge_words) bad_execution("edge " + num(i) + " has a bad size");
    int64_t d = 0;
    for (uint32_t j = 0; j < nw; ++j) {
      uint32_t k = r[4 + 3 * j], mask = r[5 + 3 * j], pb = r[6 + 3 * j];
      if (k >= uint64_t(kw) || (pb & ~mask)) bad_execution("edge " + num(i) + " has a bad word entry");
      d += popc(mask);
    }
    if (d != int64_t(r[3])) bad_execution("edge " + num(i) + " has a wrong bit count");
    done[child] = 1;
    off += 4 + 3 * int64_t(nw);
  }
  if (off != edge_words) bad_execution("trailing edge data");
  for (int64_t c = 0; c < channels; ++c)
    if (!done[size_t(c)]) bad_execution("channel " + num(c) + " is never computed");
}

}  // namespace

void validate_records(const WeightShape& s, const uint32_t* edges, int64_t nedges, int64_t edge_words) {
  std::vector<uint8_t> done(size_t(s.cout), 1);
  for (int64_t i = 0, off = 0; i < nedges && off + 4 <= edge_words; ++i) {
    if (edges[off] < uint64_t(s.cout)) done[edges[off]] = 0;
    off += 4 + 3 * int64_t(edges[off + 2]);
  }
  check_records(s, edges, nedges, edge_words, s.cout, nullptr, done);
}

void validate_execution(const WeightShape& s, const Execution& e) {
  const int64_t rec = panel_record_words(s), cog = s.cout_g(), kw = s.row_words(), channels = e.channels(s.cout);
  if (e.nvirtual < 0 || (e.nvirtual > 0 && !e.virtual_group)) bad_execution("bad majority channels");
  for (int64_t v = 0; v < e.nvirtual; ++v)
    if (e.virtual_group[v] >= uint64_t(s.groups)) bad_execution("majority channel " + num(v) + " has a bad group");
  std::vector<uint8_t> done(size_t(channels), 0);
  for (int64_t p = 0; p < e.npanels; ++p) {
    const uint32_t* r = e.panels + p * rec;
    if (r[0] >= uint64_t(s.groups)) bad_execution("panel " + num(p) + " names group " + num(r[0]));
    for (int c = 0; c < kPanelWidth; ++c) {
      uint32_t ch = r[1 + c];
      if (ch == kNoChannel) continue;
      if (ch >= uint64_t(channels) || group_of(s, e.virtual_group, ch) != r[0] || done[ch])
        bad_execution("panel " + num(p) + " lists channel " + num(ch) + " out of range, in another group, or twice");
      done[ch] = 1;
    }
  }
  check_records(s, e.edges, e.nedges, e.edge_words, channels, e.virtual_group, done);
  // A majority channel exists for its children (and only an execution with edges keeps the tile
  // channel-major, with rows for it).
  std::vector<uint8_t> has_child(size_t(e.nvirtual), 0);
  for (int64_t i = 0, off = 0; i < e.nedges; ++i) {
    if (e.edges[off + 1] >= uint64_t(s.cout)) has_child[e.edges[off + 1] - s.cout] = 1;
    off += 4 + 3 * int64_t(e.edges[off + 2]);
  }
  for (int64_t v = 0; v < e.nvirtual; ++v)
    if (!has_child[size_t(v)]) bad_execution("majority channel " + num(v) + " has no children");
  // The steps: each edge's child once, from the parent its record names, after that parent's own step,
  // with its record's D and positions in range, parent bit 0 first; flags true to the plan (a step never
  // reads planes that no step or root wrote).
  std::vector<uint32_t> parent_of(size_t(channels), kNoChannel), d_of(size_t(channels), 0);
  for (int64_t i = 0, off = 0; i < e.nedges; ++i) {
    parent_of[e.edges[off]] = e.edges[off + 1];
    d_of[e.edges[off]] = e.edges[off + 3];
    off += 4 + 3 * int64_t(e.edges[off + 2]);
  }
  std::vector<uint8_t> computed(static_cast<size_t>(channels)), planes(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) computed[size_t(c)] = planes[size_t(c)] = parent_of[size_t(c)] == kNoChannel;
  int64_t at = 0;
  for (int64_t i = 0; i < e.nedges; ++i) {
    const uint32_t* st = e.steps + i * kStepWords;
    const uint32_t child = st[0], parent = st[1], d = st[3], zeros = st[4], flags = st[5];
    if (child >= uint64_t(s.cout) || parent_of[child] != parent || computed[child] || !planes[parent] ||
        st[2] != child / cog || flags > kStepHasChildren)
      bad_execution("step " + num(i) + " computes channel " + num(child) + " from " + num(parent) + " out of order");
    if (d != d_of[child] || zeros > d || d > e.npositions - at) bad_execution("step " + num(i) + " has a bad size");
    for (uint32_t j = 0; j < d; ++j) {
      const uint32_t v = e.positions[at + j];
      if ((v >> kPositionShift) >= uint64_t(32 * kw) || (v & ((1u << kPositionShift) - 2)) != 0 ||
          (v & 1u) != uint32_t(j >= zeros))
        bad_execution("step " + num(i) + " has a bad position");
    }
    at += d;
    computed[child] = 1;
    planes[child] = flags & kStepHasChildren;
  }
  if (at != e.npositions) bad_execution("edge positions do not match the edges");
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

// Output bytes from which packBits streams its output (kernels.h, pack_nhwc).
constexpr int64_t kStreamBytes = int64_t(1) << 20;

void pack_bits(const float* x, bool nchw, int64_t n, int64_t c, int64_t s, const float* thr_c, float thr,
               uint32_t* out) {
  if (n < 1 || c < 1 || s < 1) fail(ErrorCode::Shape, "packBits: x: expected N, C and spatial size >= 1");
  const Kernels& kn = active_kernels();
  std::vector<float> th(size_t(c), thr);
  if (thr_c) std::copy(thr_c, thr_c + c, th.begin());
  int64_t wc = (c + 31) / 32;
  // An output past the per-core caches goes around them: it is written once, and its lines are then
  // not read in first (for C < 32 the output is up to a third of the bytes read).
  const bool stream = n * s * wc * 4 >= kStreamBytes;
  if (!nchw) {
    // ~256 KiB of floats per task: each task starts a new stream, which the prefetchers take a while to
    // follow (64 KiB tasks left C = 3 and 16 12-35 % slower); small enough to spread (32 MiB: 128 tasks).
    int64_t chunk = std::max<int64_t>(16, (int64_t(1) << 16) / c / 16 * 16);
    parallel_for(n * s, chunk, [&](int64_t b, int64_t e) { kn.pack_nhwc(x + b * c, e - b, c, th.data(), out + b * wc, stream); });
    return;
  }
  // ~256 KiB of floats per task; with more than 16 channels the kernel's word buffer bounds it.
  const int64_t chunk = c <= 16 ? std::max<int64_t>(kPackRun, (int64_t(1) << 16) / c / 16 * 16) : kPackRun;
  const int64_t per_image = (s + chunk - 1) / chunk;
  parallel_tasks(n * per_image, [&](int64_t task) {
    int64_t img = task / per_image, s0 = (task % per_image) * chunk, cnt = std::min(chunk, s - s0);
    kn.pack_nchw(x + img * c * s + s0, s, cnt, c, th.data(), out + (img * s + s0) * wc, stream);
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

}  // namespace xnorm::bconv
