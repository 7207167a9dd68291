// ISA-neutral convolution kernels: GEMM driver and packing, im2col gathers, col2im and the direct
// (depthwise) plane kernels. Each kernels_<isa>.cc includes this file once, after defining, inside
// namespace xnorm::convbn::XNORM_CONVBN_NS, a `Micro` struct: the register-tiled micro-kernel and the
// blocking sizes. The code is therefore compiled once per instruction set (the plain loops get
// vectorised for that ISA) and each copy lives in its own namespace, so the linker never mixes them.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "../common/thread_pool.h"
#include "kernels.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

// Grow-only 64-byte aligned scratch, one per thread and purpose.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t count) {
    if (count > n) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64));
      n = p ? count : 0;
      if (!p) throw std::bad_alloc();
    }
    return p;
  }
};
thread_local Scratch tls_pack_b;

// Output pixels ox in [lo, hi) read input columns ix = ox * sw + off inside [0, w).
inline void valid_range(int64_t off, int64_t sw, int64_t w, int64_t ow, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
  hi = off > w - 1 ? 0 : std::min(ow, (w - 1 - off) / sw + 1);
  if (hi < lo) hi = lo;
}

// Row k = (channel, ky, kx) of the im2col matrix, for output pixels [p, p + count) (numbered across
// images, see Window::image_stride).
void patch_row(const Window& g, const float* x, int64_t k, int64_t p, int64_t count, float* out) {
  int64_t taps = g.kh * g.kw, ci = k / taps, r = k % taps, ky = r / g.kw, kx = r % g.kw;
  const int64_t opix = g.oh * g.ow, off = kx * g.dw - g.pw;
  int64_t img = p / opix, oy = (p % opix) / g.ow, ox = p % g.ow;
  int64_t lo, hi;
  valid_range(off, g.sw, g.w, g.ow, lo, hi);
  for (int64_t o = 0; o < count;) {
    int64_t run = std::min(g.ow - ox, count - o);
    int64_t iy = oy * g.sh - g.ph + ky * g.dh;
    float* dst = out + o - ox;  // dst[ox'] is output pixel (oy, ox')
    if (iy < 0 || iy >= g.h) {
      std::memset(out + o, 0, size_t(run) * sizeof(float));
    } else {
      const float* row = x + img * g.image_stride + (ci * g.h + iy) * g.w + off;
      int64_t a = std::max(ox, lo), b = std::min(ox + run, hi);
      if (b < a) b = a = ox + run;  // no valid column in this run
      for (int64_t t = ox; t < a; ++t) dst[t] = 0;
      if (g.sw == 1) {
        for (int64_t t = a; t < b; ++t) dst[t] = row[t];  // short runs: a loop beats a memcpy call
      } else {
        for (int64_t t = a; t < b; ++t) dst[t] = row[t * g.sw];
      }
      for (int64_t t = b; t < ox + run; ++t) dst[t] = 0;
    }
    o += run;
    ox = 0;
    if (++oy == g.oh) oy = 0, ++img;
  }
}

// A rows [i0, i0+mc) x cols [p0, p0+kc) into MR-row panels: panel[k * MR + r], zero-padded rows.
void pack_a(const Operand& A, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  constexpr int MR = Micro::MR;
  for (int64_t ir = 0; ir < mc; ir += MR) {
    int64_t rows = std::min<int64_t>(MR, mc - ir);
    float* d = dst + (ir / MR) * kc * MR;
    // The Tune-mode scales are applied as the values are copied, not in a second pass over the panel.
    float rsc[MR];
    for (int r = 0; r < MR; ++r) rsc[r] = A.row_scale && r < rows ? A.row_scale[i0 + ir + r] : 1.f;
    const auto csc = [&](int64_t k) { return A.col_scale ? A.col_scale[p0 + k] : 1.f; };
    if (A.cs == 1 && rows == MR) {
      // MR row streams read side by side, each panel column written contiguously.
      const float* src = A.p + (i0 + ir) * A.rs + p0;
      for (int64_t k = 0; k < kc; ++k) {
        const float ck = csc(k);
        for (int r = 0; r < MR; ++r) d[k * MR + r] = src[r * A.rs + k] * rsc[r] * ck;
      }
    } else if (A.cs == 1) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = A.p + (i0 + ir + r) * A.rs + p0;
        for (int64_t k = 0; k < kc; ++k) d[k * MR + r] = src[k] * rsc[r] * csc(k);
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A.p + (i0 + ir) * A.rs + (p0 + k) * A.cs;
        const float ck = csc(k);
        for (int64_t r = 0; r < rows; ++r) d[k * MR + r] = src[r * A.rs] * rsc[r] * ck;
      }
    }
    for (int64_t r = rows; r < MR; ++r)
      for (int64_t k = 0; k < kc; ++k) d[k * MR + r] = 0;
  }
}

// B rows [p0, p0+kc) x cols [j0, j0+nc) into NR-column panels: panel[k * NR + c], zero-padded columns.
// Operands read along k (transposed or Im2colT) gather one panel's columns into L1-resident scratch
// first, so the panel itself is written row by row rather than with a stride through L2.
void pack_b(const Operand& B, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  constexpr int NR = Micro::NR;
  constexpr int64_t kTmp = Micro::NC > NR * Micro::KC ? Micro::NC : NR * Micro::KC;
  alignas(64) float tmp[kTmp];
  const int64_t panels = (nc + NR - 1) / NR;
  if (B.kind == Operand::Im2col || (B.kind == Operand::Strided && B.cs == 1)) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = tmp;
      if (B.kind == Operand::Im2col) {
        patch_row(B.win, B.p, p0 + k, j0, nc, tmp);
      } else {
        src = B.p + (p0 + k) * B.rs + j0;
      }
      const int64_t full = nc / NR;
      for (int64_t q = 0; q < full; ++q) {
        float* d = dst + q * kc * NR + k * NR;
        const float* sq = src + q * NR;
        for (int c = 0; c < NR; ++c) d[c] = sq[c];  // fixed length: compiled to a few vector moves
      }
      if (full < panels) {
        float* d = dst + full * kc * NR + k * NR;
        const int64_t cols = nc - full * NR;
        for (int64_t c = 0; c < cols; ++c) d[c] = src[full * NR + c];
        for (int64_t c = cols; c < NR; ++c) d[c] = 0;
      }
    }
    return;
  }
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t cols = std::min<int64_t>(NR, nc - q * NR);
    for (int64_t c = 0; c < cols; ++c) {  // tmp[c * kc + k] = B(p0 + k, j0 + q * NR + c)
      const int64_t j = j0 + q * NR + c;
      if (B.kind == Operand::Im2colT) {
        patch_row(B.win, B.p, j, p0, kc, tmp + c * kc);
      } else {
        const float* src = B.p + j * B.cs + p0 * B.rs;
        for (int64_t k = 0; k < kc; ++k) tmp[c * kc + k] = src[k * B.rs];
      }
    }
    float* d = dst + q * kc * NR;
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t c = 0; c < cols; ++c) d[k * NR + c] = tmp[c * kc + k];
      for (int64_t c = cols; c < NR; ++c) d[k * NR + c] = 0;
    }
  }
}

// Equal K slices (576 = 2 x 288, not 256 + 256 + 64): every slice amortises its C load/store.
inline int64_t k_slice(int64_t k) {
  const int64_t slices = (k + Micro::KC - 1) / Micro::KC;
  return (k + slices - 1) / slices;
}

inline int64_t padded_cols(int64_t nc) { return (nc + Micro::NR - 1) / Micro::NR * Micro::NR; }

inline int64_t padded_rows(int64_t m) { return (m + Micro::MR - 1) / Micro::MR * Micro::MR; }

// One task: M blocks [b0, b1) of problem P against its N block jt. `pa_all` is P's A packed in advance
// (slice p0, block blk at pa_all + p0 * padded_rows(m) + blk * MC * kc). `pb_tile` is this N block of B
// packed in advance (slice p0 at pb_tile + p0 * padded_cols(nc)), or null: then B is packed here once
// per K slice and reused by every M block of the task.
void gemm_task(const GemmProblem& P, int64_t b0, int64_t b1, int64_t jt, int64_t tile_n, const float* pa_all,
               const float* pb_tile) {
  constexpr int MR = Micro::MR, NR = Micro::NR;
  const int64_t j0 = jt * tile_n, nc = std::min<int64_t>(tile_n, P.n - j0);
  float* own = pb_tile ? nullptr : tls_pack_b.get(size_t(Micro::NC) * Micro::KC);
  const int64_t slice = k_slice(P.k);
  for (int64_t p0 = 0; p0 < P.k; p0 += slice) {
    const int64_t kc = std::min<int64_t>(slice, P.k - p0);
    const bool last = p0 + kc >= P.k, add = p0 > 0 || P.accumulate;
    const float* pb = pb_tile ? pb_tile + p0 * padded_cols(nc) : own;
    if (!pb_tile) pack_b(P.b, p0, kc, j0, nc, own);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = blk * Micro::MC, mc = std::min<int64_t>(Micro::MC, P.m - i0);
      const float* pa = pa_all + p0 * padded_rows(P.m) + blk * Micro::MC * kc;
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const float* bias = last && P.bias_row ? P.bias_row + i0 + ir : nullptr;
        for (int64_t jr = 0; jr < nc; jr += NR)
          Micro::run(kc, pa + (ir / MR) * kc * MR, pb + (jr / NR) * kc * NR, P.c + (i0 + ir) * P.ldc + j0 + jr,
                     P.ldc, int(std::min<int64_t>(MR, mc - ir)), int(std::min<int64_t>(NR, nc - jr)), add, bias,
                     last && P.relu);
        if (last && P.epilogue) (*P.epilogue)(i0 + ir, std::min<int64_t>(MR, mc - ir), j0, nc);
      }
    }
  }
}

// Enough tasks to balance many cores, few enough that B is not repacked for every M block.
constexpr int64_t kTargetTasks = 32;
// Below this many tasks, N tiles are narrowed so that a few threads can share the work evenly.
constexpr int64_t kMinTasks = 16;
// Packing B once up front (instead of once per M-block task) is worth its memory up to this many floats.
constexpr int64_t kMaxPrepacked = int64_t(1) << 23;

// The caller's packed operands, kept between calls (see workspace.cc for why).
thread_local Scratch tls_packed_a, tls_packed_b;

// Runs fn(i, t) for the t-th of count(i) jobs of every problem i, as one parallel job.
template <typename Count, typename Fn>
void for_jobs(int64_t problems, Count&& count, Fn&& fn) {
  std::unique_ptr<int64_t[]> first(new int64_t[size_t(problems) + 1]);
  first[0] = 0;
  for (int64_t i = 0; i < problems; ++i) first[i + 1] = first[i] + count(i);
  const int64_t* f = first.get();
  parallel_tasks(f[problems], [&](int64_t t) {
    const int64_t i = std::upper_bound(f, f + problems + 1, t) - f - 1;
    fn(i, t - f[i]);
  });
}

void gemm(const GemmProblem* problems, int64_t count) {
  const auto live = [](const GemmProblem& P) { return P.m > 0 && P.n > 0 && P.k > 0; };
  const auto m_blocks = [](const GemmProblem& P) { return (P.m + Micro::MC - 1) / Micro::MC; };
  // N tile width: NC, narrowed (by halves, in whole panels) while the job has too few tasks to keep a
  // pool busy, e.g. 512 channels on a 7x7 map. Depends on the sizes only, never on the thread count.
  int64_t tile_n = Micro::NC;
  const auto tasks_with = [&](int64_t tn) {
    int64_t t = 0;
    for (int64_t i = 0; i < count; ++i)
      if (problems[i].m > 0 && problems[i].n > 0 && problems[i].k > 0)
        t += ((problems[i].m + Micro::MC - 1) / Micro::MC) * ((problems[i].n + tn - 1) / tn);
    return t;
  };
  while (tile_n >= 4 * Micro::NR && tasks_with(tile_n) < kMinTasks) tile_n = padded_cols(tile_n / 2);
  const auto n_tiles = [&](const GemmProblem& P) { return (P.n + tile_n - 1) / tile_n; };
  const auto slices = [](const GemmProblem& P) { return (P.k + k_slice(P.k) - 1) / k_slice(P.k); };
  const auto b_size = [&](const GemmProblem& P) {
    return P.k * (n_tiles(P) - 1) * tile_n + P.k * padded_cols(P.n - (n_tiles(P) - 1) * tile_n);
  };
  // A is packed once per distinct operand (the per-image problems of a forward pass share the weights).
  std::unique_ptr<int64_t[]> a_at(new int64_t[size_t(count)]), a_owner(new int64_t[size_t(count)]);
  int64_t a_floats = 0, all_blocks = 0, b_floats = 0;
  for (int64_t i = 0; i < count; ++i) {
    const GemmProblem& P = problems[i];
    a_owner[i] = i;
    for (int64_t j = 0; j < i; ++j) {
      const GemmProblem& Q = problems[j];
      if (a_owner[j] == j && live(Q) && Q.a.p == P.a.p && Q.a.rs == P.a.rs && Q.a.cs == P.a.cs && Q.m == P.m && Q.k == P.k &&
          Q.a.row_scale == P.a.row_scale && Q.a.col_scale == P.a.col_scale) {
        a_owner[i] = j;
        break;
      }
    }
    a_at[i] = a_owner[i] == i ? a_floats : a_at[a_owner[i]];
    if (a_owner[i] == i && live(P)) a_floats += P.k * padded_rows(P.m);
    if (!live(P)) continue;
    all_blocks += m_blocks(P) * n_tiles(P);
    if (m_blocks(P) > 1) b_floats += b_size(P);
  }
  float* pre_a = tls_packed_a.get(size_t(std::max<int64_t>(a_floats, 1)));
  for_jobs(count, [&](int64_t i) { return a_owner[i] == i && live(problems[i]) ? slices(problems[i]) * m_blocks(problems[i]) : 0; },
           [&](int64_t i, int64_t t) {
             const GemmProblem& P = problems[i];
             const int64_t slice = k_slice(P.k), p0 = (t / m_blocks(P)) * slice, kc = std::min(slice, P.k - p0);
             const int64_t blk = t % m_blocks(P), i0 = blk * Micro::MC, mc = std::min<int64_t>(Micro::MC, P.m - i0);
             pack_a(P.a, i0, mc, p0, kc, pre_a + a_at[i] + p0 * padded_rows(P.m) + blk * Micro::MC * kc);
           });
  // M blocks per task, from the sizes only (never the thread count), so the split is reproducible.
  const int64_t per_task = std::max<int64_t>(1, all_blocks / kTargetTasks);
  // With several M blocks per problem, B would be packed again by each of their tasks: pack it once.
  std::unique_ptr<int64_t[]> b_at(new int64_t[size_t(count)]);  // offset of problem i's packed B, or -1
  const bool prepack_b = b_floats > 0 && b_floats <= kMaxPrepacked;
  float* pre_b = prepack_b ? tls_packed_b.get(size_t(b_floats)) : nullptr;
  for (int64_t i = 0, off = 0; i < count; ++i) {
    const bool pre = prepack_b && live(problems[i]) && m_blocks(problems[i]) > 1;
    b_at[i] = pre ? off : -1;
    if (pre) off += b_size(problems[i]);
  }
  for_jobs(count, [&](int64_t i) { return b_at[i] >= 0 ? n_tiles(problems[i]) * slices(problems[i]) : 0; },
           [&](int64_t i, int64_t t) {
             const GemmProblem& P = problems[i];
             const int64_t jt = t / slices(P), p0 = (t % slices(P)) * k_slice(P.k), kc = std::min(k_slice(P.k), P.k - p0);
             const int64_t j0 = jt * tile_n, nc = std::min<int64_t>(tile_n, P.n - j0);
             pack_b(P.b, p0, kc, j0, nc, pre_b + b_at[i] + jt * P.k * tile_n + p0 * padded_cols(nc));
           });
  for_jobs(count, [&](int64_t i) { return live(problems[i]) ? ((m_blocks(problems[i]) + per_task - 1) / per_task) * n_tiles(problems[i]) : 0; },
           [&](int64_t i, int64_t t) {
             const GemmProblem& P = problems[i];
             const int64_t nt = n_tiles(P), mt = t / nt, jt = t % nt;
             const float* pb = b_at[i] >= 0 ? pre_b + b_at[i] + jt * P.k * tile_n : nullptr;
             gemm_task(P, mt * per_task, std::min(m_blocks(P), (mt + 1) * per_task), jt, tile_n, pre_a + a_at[i], pb);
           });
}

// The direct kernels work on zero-padded copies, wide enough that every output row is a whole number
// of vectors (VW floats): each tap is then one unaligned vector load and FMA with no bounds checks,
// also for the 7- and 14-wide rows of small feature maps. VecF is a GCC/Clang vector of VW floats,
// so this one source becomes zmm, ymm or xmm code in each ISA's translation unit.
typedef float VecF __attribute__((vector_size(Micro::VW * sizeof(float))));

inline VecF loadu(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu(float* p, VecF v) { std::memcpy(p, &v, sizeof v); }

thread_local Scratch tls_padded, tls_row;

struct Padded {
  int64_t h, w;  // padded extent
  float* p;
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

Padded padded_plane(const float* x, const Window& g) {
  const int64_t owp = round_up(g.ow, Micro::VW);
  Padded r{g.h + 2 * g.ph, std::max(g.w + 2 * g.pw, (owp - 1) * g.sw + (g.kw - 1) * g.dw + 1), nullptr};
  r.p = tls_padded.get(size_t(r.h * r.w));
  std::memset(r.p, 0, size_t(r.h * r.w) * sizeof(float));
  if (x)
    for (int64_t y = 0; y < g.h; ++y) {
      float* d = r.p + (y + g.ph) * r.w + g.pw;
      const float* src = x + y * g.w;
      for (int64_t i = 0; i < g.w; ++i) d[i] = src[i];  // short rows: a loop beats a memcpy call
    }
  return r;
}

// One output row, VW outputs at a time with every tap accumulated in a register. Full vectors may run
// past the row end into rows written later; the caller gives a scratch row where that is not allowed.
template <bool RELU>
void direct_row(const Padded& in, const float* wt, float bias, float* out, int64_t oy, int64_t owp, const Window& g) {
  constexpr int VW = Micro::VW;
  const VecF zero{};
  for (int64_t c0 = 0; c0 < owp; c0 += VW) {
    VecF acc = zero + bias;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const float* prow = in.p + (oy * g.sh + ky * g.dh) * in.w + c0 * g.sw;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float* src = prow + kx * g.dw;
        VecF v;
        if (g.sw == 1) {
          v = loadu(src);
        } else {
          for (int l = 0; l < VW; ++l) v[l] = src[l * g.sw];
        }
        acc += wt[ky * g.kw + kx] * v;
      }
    }
    if (RELU) acc = acc > zero ? acc : zero;
    storeu(out + c0, acc);
  }
}

void direct_forward_plane(const float* x, const float* wt, float bias, bool relu, float* y, const Window& g) {
  const Padded in = padded_plane(x, g);
  const int64_t owp = round_up(g.ow, Micro::VW), plane = g.oh * g.ow;
  float* tmp = tls_row.get(size_t(owp));
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    // Rows are written in order, so a row may spill into the next ones, but never past the plane.
    const bool direct = oy * g.ow + owp <= plane;
    float* out = direct ? y + oy * g.ow : tmp;
    relu ? direct_row<true>(in, wt, bias, out, oy, owp, g) : direct_row<false>(in, wt, bias, out, oy, owp, g);
    if (!direct)
      for (int64_t i = 0; i < g.ow; ++i) y[oy * g.ow + i] = tmp[i];
  }
}

void direct_backward_data_plane(const float* dy, const float* wt, float* dx, const Window& g) {
  constexpr int VW = Micro::VW;
  const Padded acc = padded_plane(nullptr, g);
  const int64_t owp = round_up(g.ow, VW);
  float* drow = tls_row.get(size_t(owp));
  std::fill(drow + g.ow, drow + owp, 0.f);  // lanes past the row scatter zeros into the padding
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    for (int64_t i = 0; i < g.ow; ++i) drow[i] = dy[oy * g.ow + i];
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      float* prow = acc.p + (oy * g.sh + ky * g.dh) * acc.w;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float wv = wt[ky * g.kw + kx];
        float* dst = prow + kx * g.dw;
        if (g.sw == 1) {
          for (int64_t c0 = 0; c0 < owp; c0 += VW) storeu(dst + c0, loadu(dst + c0) + wv * loadu(drow + c0));
        } else {
          for (int64_t ox = 0; ox < g.ow; ++ox) dst[ox * g.sw] += wv * drow[ox];
        }
      }
    }
  }
  for (int64_t y = 0; y < g.h; ++y) {
    const float* src = acc.p + (y + g.ph) * acc.w + g.pw;
    float* dst = dx + y * g.w;
    for (int64_t i = 0; i < g.w; ++i) dst[i] += src[i];
  }
}

void direct_backward_filter_plane(const float* x, const float* dy, double* dwt, const Window& g) {
  constexpr int VW = Micro::VW;
  const Padded in = padded_plane(x, g);
  const int64_t owp = round_up(g.ow, VW);
  // dy rows zero-padded to whole vectors, copied once: lanes past a row contribute nothing.
  float* drows = tls_row.get(size_t(g.oh * owp));
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    for (int64_t i = 0; i < g.ow; ++i) drows[oy * owp + i] = dy[oy * g.ow + i];
    std::fill(drows + oy * owp + g.ow, drows + (oy + 1) * owp, 0.f);
  }
  for (int64_t ky = 0; ky < g.kh; ++ky)
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      double total = 0;
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const float* src = in.p + (oy * g.sh + ky * g.dh) * in.w + kx * g.dw;
        const float* drow = drows + oy * owp;
        VecF part{};  // one row in float lanes, rows summed in double
        for (int64_t c0 = 0; c0 < owp; c0 += VW) {
          VecF v;
          if (g.sw == 1) {
            v = loadu(src + c0);
          } else {
            for (int l = 0; l < VW; ++l) v[l] = src[(c0 + l) * g.sw];
          }
          part += loadu(drow + c0) * v;
        }
        float sum = 0;
        for (int l = 0; l < VW; ++l) sum += part[l];
        total += sum;
      }
      dwt[ky * g.kw + kx] += total;
    }
}

void col2im(const float* dcol, int64_t ld, float* dx, const Window& g, int64_t c0, int64_t c1) {
  for (int64_t ci = c0; ci < c1; ++ci) {
    float* plane = dx + ci * g.h * g.w;
    std::memset(plane, 0, size_t(g.h * g.w) * sizeof(float));
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const float* src = dcol + ((ci * g.kh + ky) * g.kw + kx) * ld;
        int64_t off = kx * g.dw - g.pw, lo, hi;
        valid_range(off, g.sw, g.w, g.ow, lo, hi);
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          int64_t iy = oy * g.sh - g.ph + ky * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          float* xrow = plane + iy * g.w + off;
          const float* srow = src + oy * g.ow;
          for (int64_t ox = lo; ox < hi; ++ox) xrow[ox * g.sw] += srow[ox];
        }
      }
  }
}

// ---- Winograd F(2x2, 3x3) --------------------------------------------------------------------------
// y = A^T [(G g G^T) . (B^T d B)] A per 2x2 output tile, d the 4x4 input tile around it. The 16
// element-wise products, summed over input channels, are 16 GEMMs U_xi [cout, c] x V_xi [c, tiles]
// run on the micro-kernel. Tiles are numbered across images, p = (img * th + ty) * tw + tx, and cut
// into blocks of T tiles (whole NR panels). A task is one tile block and one block of output
// channels: it transforms its input tiles and its weights (or reads them, see wino_plan), runs the 16
// products into a local M [16][rows][T] and writes y from it through the output transform, with bias
// and ReLU. No float is summed in an order that depends on the thread count.

struct WinoPlan {
  int64_t th, tw, tiles;  // tile grid per image, tiles in all
  int64_t npan, T, nb;    // NR panels per tile block, tiles per block, tile blocks
  int64_t cout_blk, nbm;  // output channels per task (whole MR panels), channel blocks
  int64_t cpad;           // cout rounded up to MR: rows of the packed U
  // Floats from U_xi to U_xi+1 and from V_xi to V_xi+1 in a block: a cache line more than their size, so
  // that the 16 streams a transform writes do not all map to the same L1 set (4 KiB aliasing). With one
  // tile block, each task transforms the weights of its own channel block (blk_uxi apart) instead.
  int64_t uxi, vxi, blk_uxi;
};

// Above this many floats of V for a whole small map, the tile blocks stay small.
constexpr int64_t kWinoMaxAllTiles = int64_t(1) << 24;

// Floats of one tile block's V (16 * c * T) that stay in L2 next to its M and U.
constexpr int64_t kWinoBlockFloats = int64_t(1) << 16;

WinoPlan wino_plan(const WinogradProblem& P) {
  constexpr int NR = Micro::NR;
  WinoPlan q;
  q.th = (P.oh + 1) / 2;
  q.tw = (P.ow + 1) / 2;
  q.tiles = P.n * q.th * q.tw;
  q.npan = std::min<int64_t>(std::max<int64_t>(1, kWinoBlockFloats / (16 * P.c * NR)), 4);
  q.npan = std::min(q.npan, (q.tiles + NR - 1) / NR);
  q.T = q.npan * NR;
  q.nb = (q.tiles + q.T - 1) / q.T;
  // Few tile blocks (small maps of deep layers, many channels): the output channels are split as well,
  // so that a pool has enough tasks, and V is transformed once, up front, not once per channel block.
  // Where V of the whole map is moderate, one block holds every tile: each task then reads its share
  // of the weights once and transforms it itself, while it is hot, rather than all of U going through
  // memory (16 MiB for 512 channels).
  const int64_t all_pan = (q.tiles + NR - 1) / NR;
  if (q.nb < kMinTasks && 16 * P.c * all_pan * NR <= kWinoMaxAllTiles) {
    q.npan = all_pan;
    q.T = q.npan * NR;
    q.nb = 1;
  }
  const int64_t parts = std::max<int64_t>(1, (kMinTasks + q.nb - 1) / q.nb);
  q.cout_blk = padded_rows((P.cout + parts - 1) / parts);
  q.nbm = (P.cout + q.cout_blk - 1) / q.cout_blk;
  q.cpad = padded_rows(P.cout);
  q.uxi = q.cpad * P.c + 16;
  q.vxi = q.npan * P.c * NR + 16;
  q.blk_uxi = q.cout_blk * P.c + 16;
  return q;
}

// Calls fn(img, ty, tx0, count, j) for each run of tiles [p0, p1) inside one tile row; j = first tile - p0.
template <typename Fn>
void wino_rows(const WinoPlan& q, int64_t p0, int64_t p1, Fn&& fn) {
  for (int64_t p = p0; p < p1;) {
    const int64_t img = p / (q.th * q.tw), rem = p % (q.th * q.tw), ty = rem / q.tw, tx = rem % q.tw;
    const int64_t count = std::min(q.tw - tx, p1 - p);
    fn(img, ty, tx, count, p - p0);
    p += count;
  }
}

// U = G g G^T of every (output, input) channel pair, with g = wt * w_scale rounded to float first (the
// values Deploy's folded weights hold), for the MR output channels from co0: one A panel of each of the
// 16 GEMMs, U_xi's at dst + xi * uxi.
void wino_weight_panel(const WinogradProblem& P, int64_t co0, float* dst, int64_t uxi) {
  constexpr int MR = Micro::MR;
  // Input channels per pass: the MR rows' U values of a pass fill whole cache lines of the 16 panels
  // (uxi apart, so they do not share an L1 set) before those lines leave L1.
  constexpr int64_t kChunk = 32;
  const int64_t c = P.c;
  for (int64_t c0 = 0; c0 < c; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, c - c0);
    for (int r = 0; r < MR; ++r) {
      const int64_t co = co0 + r;
      if (co >= P.cout) {  // padding rows of the last panel
        for (int xi = 0; xi < 16; ++xi)
          for (int64_t i = 0; i < cn; ++i) dst[xi * uxi + (c0 + i) * MR + r] = 0.f;
        continue;
      }
      const float s = P.w_scale ? P.w_scale[co] : 1.f;
      const float* w9 = P.wt + (co * c + c0) * 9;
      // G g on the taps as they lie, [channel][ky][kx]: every lane j computes rows of G g for the
      // kernel row that starts at j, and only lanes with j % 9 < 3 are used. Contiguous, so vectorised.
      const int64_t n9 = cn * 9;
      float g[kChunk * 9 + 8], t[4][kChunk * 9 + 8];
      for (int64_t j = 0; j < n9; ++j) g[j] = w9[j] * s;
      // The next chunk of this row: MR rows read in short bursts are streams a prefetcher misses.
      if (c0 + kChunk < c)
        for (int64_t j = 0; j < kChunk * 9; j += 16) __builtin_prefetch(w9 + kChunk * 9 + j);
      for (int64_t j = n9; j < n9 + 8; ++j) g[j] = 0.f;
      for (int64_t j = 0; j < n9; ++j) {  // G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[j + 3] + g[j + 6]);
        t[2][j] = 0.5f * (g[j] - g[j + 3] + g[j + 6]);
        t[3][j] = g[j + 6];
      }
      for (int k = 0; k < 4; ++k)  // (G g) G^T, row by row
        for (int64_t i = 0; i < cn; ++i) {
          const float* a = t[k] + 9 * i;
          float* d = dst + 4 * k * uxi + (c0 + i) * MR + r;
          d[0] = a[0];
          d[uxi] = 0.5f * (a[0] + a[1] + a[2]);
          d[2 * uxi] = 0.5f * (a[0] - a[1] + a[2]);
          d[3 * uxi] = a[2];
        }
    }
  }
}

thread_local Scratch tls_wino_tmp, tls_wino_v, tls_wino_m;

// V of tiles [p0, p1) and input channels [c0, c1) into one block: V_xi (at V + xi * vxi) is npan B panels
// [c][NR] of the GEMMs; the columns past p1 are zeros. Per channel, the 16 values d[r][c] of every tile
// of the block are gathered into lanes D[4r + c][tile] (tile rows of the input read front to back), then
// B^T d B runs VW tiles at a time and stores whole vectors into the panels: VW divides NR.
void wino_input(const WinogradProblem& P, const WinoPlan& q, int64_t p0, int64_t p1, int64_t c0, int64_t c1, float* V) {
  constexpr int NR = Micro::NR, VW = Micro::VW;
  const int64_t T = q.T, c = P.c, cols = p1 - p0;
  float* D = tls_wino_tmp.get(size_t(16 * T));
  for (int64_t ci = c0; ci < c1; ++ci) {
    wino_rows(q, p0, p1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
      const float* plane = P.x + (img * c + ci) * P.h * P.w;
      // Tile t reads input columns first + 2t .. first + 2t + 3; all four exist for t in [lo, hi).
      const int64_t first = 2 * tx0 - P.pw;
      const int64_t lo = std::min(count, std::max<int64_t>(0, (1 - first) / 2));
      const int64_t hi = std::max(lo, std::min(count, (P.w - first - 2) / 2));
      for (int r = 0; r < 4; ++r) {
        float *d0 = D + 4 * r * T + j, *d1 = d0 + T, *d2 = d1 + T, *d3 = d2 + T;
        const int64_t iy = 2 * ty - P.ph + r;
        if (iy < 0 || iy >= P.h) {
          for (int64_t t = 0; t < count; ++t) d0[t] = d1[t] = d2[t] = d3[t] = 0.f;
          continue;
        }
        const float* row = plane + iy * P.w;
        const auto at = [&](int64_t ix) { return ix >= 0 && ix < P.w ? row[ix] : 0.f; };
        const auto edge = [&](int64_t t) {
          const int64_t ix = first + 2 * t;
          d0[t] = at(ix), d1[t] = at(ix + 1), d2[t] = at(ix + 2), d3[t] = at(ix + 3);
        };
        for (int64_t t = 0; t < lo; ++t) edge(t);
        const float* src = row + first;
        for (int64_t t = lo; t < hi; ++t) {
          d0[t] = src[2 * t];
          d1[t] = src[2 * t + 1];
          d2[t] = src[2 * t + 2];
          d3[t] = src[2 * t + 3];
        }
        for (int64_t t = hi; t < count; ++t) edge(t);
      }
    });
    for (int a = 0; a < 16; ++a)
      for (int64_t t = cols; t < T; ++t) D[a * T + t] = 0.f;
    for (int64_t k0 = 0; k0 < T; k0 += VW) {
      VecF t[4][4];
      for (int cc = 0; cc < 4; ++cc) {  // B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3
        const float* col = D + cc * T + k0;
        const VecF d0 = loadu(col), d1 = loadu(col + 4 * T), d2 = loadu(col + 8 * T), d3 = loadu(col + 12 * T);
        t[0][cc] = d0 - d2;
        t[1][cc] = d1 + d2;
        t[2][cc] = d2 - d1;
        t[3][cc] = d1 - d3;
      }
      float* out = V + ((k0 / NR) * c + ci) * NR + k0 % NR;
      for (int i = 0; i < 4; ++i) {  // (B^T d) B, the same combination of columns
        float* o = out + 4 * i * q.vxi;
        storeu(o, t[i][0] - t[i][2]);
        storeu(o + q.vxi, t[i][1] + t[i][2]);
        storeu(o + 2 * q.vxi, t[i][2] - t[i][1]);
        storeu(o + 3 * q.vxi, t[i][1] - t[i][3]);
      }
    }
  }
}

// y for tiles [p0, p1) and output channels [co0, co1) from M [16][rows][T]: A^T m A plus bias, ReLU.
void wino_output(const WinogradProblem& P, const WinoPlan& q, const float* M, int64_t rows, int64_t p0, int64_t p1,
                 int64_t co0, int64_t co1) {
  constexpr int VW = Micro::VW;
  const int64_t T = q.T, cols = p1 - p0, stride = rows * T;
  float* tmp = tls_wino_tmp.get(size_t(4 * T));
  const VecF zero{};
  for (int64_t co = co0; co < co1; ++co) {
    const float bias = P.bias ? P.bias[co] : 0.f;
    const float* m = M + (co - co0) * T;
    for (int64_t k0 = 0; k0 < cols; k0 += VW) {
      VecF s[2][4];
      for (int j = 0; j < 4; ++j) {  // A^T m: rows m0+m1+m2, m1-m2-m3
        const float* col = m + j * stride + k0;
        const VecF m0 = loadu(col), m1 = loadu(col + 4 * stride), m2 = loadu(col + 8 * stride), m3 = loadu(col + 12 * stride);
        s[0][j] = m0 + m1 + m2;
        s[1][j] = m1 - m2 - m3;
      }
      for (int i = 0; i < 2; ++i) {
        VecF a = s[i][0] + s[i][1] + s[i][2] + bias, b = s[i][1] - s[i][2] - s[i][3] + bias;
        if (P.relu) {
          a = a > zero ? a : zero;
          b = b > zero ? b : zero;
        }
        storeu(tmp + (2 * i) * T + k0, a);
        storeu(tmp + (2 * i + 1) * T + k0, b);
      }
    }
    wino_rows(q, p0, p1, [&](int64_t img, int64_t ty, int64_t tx0, int64_t count, int64_t j) {
      for (int dy = 0; dy < 2 && 2 * ty + dy < P.oh; ++dy) {
        float* yrow = P.y + ((img * P.cout + co) * P.oh + 2 * ty + dy) * P.ow;
        const float *a = tmp + 2 * dy * T + j, *b = a + T;
        const int64_t pairs = std::min(count, P.ow / 2 - tx0);  // tiles whose both columns exist
        for (int64_t t = 0; t < pairs; ++t) {
          yrow[2 * (tx0 + t)] = a[t];
          yrow[2 * (tx0 + t) + 1] = b[t];
        }
        if (pairs < count) yrow[2 * (tx0 + pairs)] = a[pairs];  // odd width: the last tile's left column
      }
    });
  }
}

// U: of all channels, held by the calling thread (several tile blocks), or of one task's channel block,
// held by the thread that runs it (one tile block); never both in one call. V of every block: caller's.
thread_local Scratch tls_wino_u, tls_wino_vall;

void winograd_forward(const WinogradProblem& P) {
  constexpr int MR = Micro::MR, NR = Micro::NR;
  const WinoPlan q = wino_plan(P);
  const int64_t c = P.c, vblock = 16 * q.vxi;
  float* Up = nullptr;
  if (q.nb > 1) {  // U of all channels once, shared by the tile blocks
    Up = tls_wino_u.get(size_t(16 * q.uxi));
    parallel_for(q.cpad / MR, 1, [&](int64_t b, int64_t e) {
      for (int64_t panel = b; panel < e; ++panel) wino_weight_panel(P, panel * MR, Up + panel * MR * c, q.uxi);
    });
  }
  float* Vall = nullptr;
  if (q.nbm > 1) {  // V of every block once, in channel chunks so that few blocks still make tasks
    constexpr int64_t kChunk = 32;
    const int64_t chunks = (c + kChunk - 1) / kChunk;
    Vall = tls_wino_vall.get(size_t(q.nb * vblock));
    parallel_tasks(q.nb * chunks, [&](int64_t t) {
      const int64_t b = t / chunks, c0 = (t % chunks) * kChunk;
      wino_input(P, q, b * q.T, std::min(q.tiles, (b + 1) * q.T), c0, std::min(c, c0 + kChunk), Vall + b * vblock);
    });
  }
  parallel_tasks(q.nb * q.nbm, [&](int64_t t) {
    const int64_t b = t / q.nbm, p0 = b * q.T, p1 = std::min(q.tiles, p0 + q.T);
    const int64_t co0 = (t % q.nbm) * q.cout_blk, co1 = std::min(P.cout, co0 + q.cout_blk), rows = co1 - co0;
    const float* V = Vall ? Vall + b * vblock : nullptr;
    if (!V) {
      float* own = tls_wino_v.get(size_t(vblock));
      wino_input(P, q, p0, p1, 0, c, own);
      V = own;
    }
    const float* U = Up ? Up + co0 * c : nullptr;
    int64_t uxi = q.uxi;
    if (!U) {
      float* own = tls_wino_u.get(size_t(16 * q.blk_uxi));
      for (int64_t ir = 0; ir < rows; ir += MR) wino_weight_panel(P, co0 + ir, own + ir * c, q.blk_uxi);
      U = own;
      uxi = q.blk_uxi;
    }
    float* M = tls_wino_m.get(size_t(16 * rows * q.T));
    const int64_t panels = (p1 - p0 + NR - 1) / NR;
    for (int xi = 0; xi < 16; ++xi)
      for (int64_t ir = 0; ir < rows; ir += MR)
        for (int64_t jp = 0; jp < panels; ++jp)  // columns up to whole vectors: what wino_output reads
          Micro::run(c, U + xi * uxi + ir * c, V + xi * q.vxi + jp * c * NR, M + (xi * rows + ir) * q.T + jp * NR,
                     q.T, int(std::min<int64_t>(MR, rows - ir)),
                     int(std::min<int64_t>(NR, round_up(p1 - p0 - jp * NR, Micro::VW))), false, nullptr, false);
    wino_output(P, q, M, rows, p0, p1, co0, co1);
  });
}

void relu_mask(const float* y, int64_t n, uint32_t* mask) {
  const int64_t full = n / 32;
  for (int64_t w = 0; w < full; ++w) mask[w] = positive_bits(y + 32 * w);
  if (n % 32) {
    uint32_t bits = 0;
    for (int64_t i = full * 32; i < n; ++i) bits |= uint32_t(y[i] > 0) << (i % 32);
    mask[full] = bits;
  }
}

void apply_mask(float* x, int64_t n, const uint32_t* mask) {
  const int64_t full = n / 32;
  for (int64_t w = 0; w < full; ++w) keep_bits(x + 32 * w, mask[w]);
  for (int64_t i = full * 32; i < n; ++i)
    if (!((mask[full] >> (i % 32)) & 1u)) x[i] = 0;
}

const Kernels& table() {
  static const Kernels k{gemm, winograd_forward, direct_forward_plane, direct_backward_data_plane, direct_backward_filter_plane,
                         col2im, relu_mask, apply_mask, fma_loop, Micro::MR, Micro::NR};
  return k;
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
