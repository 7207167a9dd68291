// Part of kernels_impl.h (see there): the GEMM driver and the packing of its operands around the
// ISA's micro-kernel (Micro::run).
#pragma once
#include <algorithm>
#include <memory>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "../common/thread_pool.h"
#include "im2col_impl.h"
#include "kernels.h"
#include "scratch_impl.h"
#include "vector_impl.h"

namespace xnorm::convbn::XNORM_CONVBN_NS {

thread_local Scratch tls_pack_b;

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
    if (A.kind == Operand::Im2colNhwc) {
      // Each pixel's patch as runs of channels into scratch, then one panel column per k.
      float tmp[MR * Micro::KC];
      for (int64_t r = 0; r < rows; ++r) patch_col_nhwc(A.win, A.p, i0 + ir + r, p0, kc, tmp + r * kc);
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < rows; ++r) d[k * MR + r] = tmp[r * kc + k];
    } else if (A.cs == 1 && rows == MR) {
      // MR row streams read side by side, each panel column written contiguously.
      // Without column scales a loop of its own: GCC if-converts csc(k) into a masked load, which is
      // slow on AMD Zen (it was half of Tune's time on 512@7 at batch 1).
      const float* src = A.p + (i0 + ir) * A.rs + p0;
      if (A.col_scale) {
        for (int64_t k = 0; k < kc; ++k) {
          const float ck = csc(k);
          for (int r = 0; r < MR; ++r) d[k * MR + r] = src[r * A.rs + k] * rsc[r] * ck;
        }
      } else {
        for (int64_t k = 0; k < kc; ++k)
          for (int r = 0; r < MR; ++r) d[k * MR + r] = src[r * A.rs + k] * rsc[r];
      }
    } else if (A.rs == 1 && rows == MR && !A.row_scale && !A.col_scale) {
      // Each panel column is MR consecutive floats of A (dy read down its channels: channels-last dW).
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A.p + i0 + ir + (p0 + k) * A.cs;
        for (int r = 0; r < MR; ++r) d[k * MR + r] = src[r];  // fixed length: one vector move
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

#if defined(__AVX512F__)
// r[c] = row c of a 16 x 16 block in, r[j] = its column j out.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int m = 0; m < 4; ++m) {
      t[8 * i + m] = _mm512_shuffle_f32x4(r[8 * i + m], r[8 * i + 4 + m], 0x88);
      t[8 * i + 4 + m] = _mm512_shuffle_f32x4(r[8 * i + m], r[8 * i + 4 + m], 0xdd);
    }
  for (int m = 0; m < 8; ++m) {
    r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
    r[m + 8] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd);
  }
}

#elif defined(__AVX2__)
// r[c] = row c of an 8 x 8 block in, r[j] = its column j out.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // u[4i + m]: columns m and m + 4 of rows 4i .. 4i + 3
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
    r[m + 4] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
  }
}
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
// The packing transposes go through registers in kTW x kTW blocks (AVX-512: 16, AVX2: 8). AVX2 used
// the scalar loops until they measured most of Tune's W * s packing at batch 1 (pw 1024@7 NCHW:
// 2.1-2.8 -> 1.6-1.8 ms with the 8 x 8 blocks; alternating processes, AVX2-only AMD host).
#if defined(__AVX512F__)
constexpr int kTW = 16;
inline void transpose_block(VecF r[kTW]) { transpose16(reinterpret_cast<__m512*>(r)); }
#else
constexpr int kTW = 8;
inline void transpose_block(VecF r[kTW]) { transpose8(reinterpret_cast<__m256*>(r)); }
#endif
static_assert(Micro::VW == kTW, "a transposed block is one vector per row");

// kTW consecutive weights of each of a panel's NR filters (src + co * stride, zeros for co >= cols),
// times scale[co] when given, transposed into kTW panel rows of NR floats: rows[l] gets weight l of
// every filter (null: skipped).
template <int NR>
inline void transpose_filters(const float* src, int64_t stride, int64_t cols, const float* scale, float* const rows[kTW]) {
  for (int g = 0; g < NR / kTW; ++g) {
    VecF r[kTW];
    for (int c = 0; c < kTW; ++c) {
      const int64_t co = g * kTW + c;
      if (co >= cols) {
        r[c] = VecF{};
      } else {
        __builtin_prefetch(src + co * stride + 96);  // NR streams: ahead of the prefetcher
        const VecF v = loadu(src + co * stride);
        r[c] = scale ? v * scale[co] : v;
      }
    }
    transpose_block(r);
    for (int l = 0; l < kTW; ++l)
      if (rows[l]) storeu(rows[l] + kTW * g, r[l]);
  }
}
#endif

// The WeightsT operand's rows [p0, p0+kc) (channels-last K order) x columns [j0, j0+nc) into NR-column
// panels, with its column scales. The slice covers whole or partial channel blocks; a block's weights are
// one contiguous run of each filter ([c0, c0 + width) x taps floats), read once, transposed (AVX-512:
// 16 x 16 in registers) and written as panel rows, NR floats each.
void pack_weights_slice(const Operand& B, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  constexpr int NR = Micro::NR;
  const int64_t taps = B.win.kh * B.win.kw, cin = B.win.c, span = taps * kNhwcBlock;
  const int64_t panels = (nc + NR - 1) / NR;
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t cols = std::min<int64_t>(NR, nc - q * NR), col0 = j0 + q * NR;
    const float* src = B.p + col0 * B.cs;
    const float* sc = B.col_scale ? B.col_scale + col0 : nullptr;
    float* d = dst + q * kc * NR;
#if defined(__AVX512F__) || defined(__AVX2__)
    if (NR % kTW == 0 && taps == 1) {
      // 1x1: K row = channel, so the slice is one run of each filter: kTW filters at a time along it.
      const int64_t full = kc / kTW * kTW;
      for (int g = 0; g < NR / kTW; ++g)
        for (int64_t j = 0; j < full; j += kTW) {
          float* rows[kTW];
          for (int l = 0; l < kTW; ++l) rows[l] = d + (j + l) * NR + kTW * g;
          transpose_filters<kTW>(src + kTW * g * B.cs + p0 + j, B.cs, cols - kTW * g, sc ? sc + kTW * g : nullptr, rows);
        }
      for (int64_t j = full; j < kc; ++j) {
        float* dr = d + j * NR;
        for (int64_t c = 0; c < cols; ++c) dr[c] = sc ? src[c * B.cs + p0 + j] * sc[c] : src[c * B.cs + p0 + j];
        for (int64_t c = cols; c < NR; ++c) dr[c] = 0;
      }
      continue;
    }
#endif
    for (int64_t c0 = p0 / span * kNhwcBlock; c0 < cin && c0 * taps < p0 + kc; c0 += kNhwcBlock) {
      const int64_t width = std::min(kNhwcBlock, cin - c0), jlo = c0 * taps, jhi = (c0 + width) * taps;
      // w column j = ci * taps + tap is K row c0 * taps + tap * width + (ci - c0): its panel row, or -1
      // when outside the slice (a partial block at either end of it).
      const auto row_of = [&](int64_t j) -> int64_t {
        const int64_t kk = jlo + (j % taps) * width + (j / taps - c0);
        return kk >= p0 && kk < p0 + kc ? kk - p0 : -1;
      };
      int64_t j = jlo;
#if defined(__AVX512F__) || defined(__AVX2__)
      if (NR % kTW == 0) {
        // kTW filters at a time along their whole run: kTW streams, not NR, for the prefetchers.
        const int64_t full = jlo + (jhi - jlo) / kTW * kTW;
        for (int g = 0; g < NR / kTW; ++g)
          for (j = jlo; j < full; j += kTW) {
            float* rows[kTW];
            int64_t tap = (j - jlo) % taps, cl = (j - jlo) / taps;
            for (int l = 0; l < kTW; ++l) {
              const int64_t kk = jlo + tap * width + cl;
              rows[l] = kk >= p0 && kk < p0 + kc ? d + (kk - p0) * NR + kTW * g : nullptr;
              if (++tap == taps) tap = 0, ++cl;
            }
            transpose_filters<kTW>(src + kTW * g * B.cs + j, B.cs, cols - kTW * g, sc ? sc + kTW * g : nullptr, rows);
          }
        j = full;
      }
#endif
      for (; j < jhi; ++j) {
        const int64_t row = row_of(j);
        if (row < 0) continue;
        float* dr = d + row * NR;
        for (int64_t c = 0; c < cols; ++c) dr[c] = sc ? src[c * B.cs + j] * sc[c] : src[c * B.cs + j];
        for (int64_t c = cols; c < NR; ++c) dr[c] = 0;
      }
    }
  }
}

// B rows [p0, p0+kc) x cols [j0, j0+nc) into NR-column panels: panel[k * NR + c], zero-padded columns.
// Operands read along k (transposed, Im2colT or Im2colNhwc) gather one panel's columns into L1-resident scratch
// first, so the panel itself is written row by row rather than with a stride through L2.
void pack_b(const Operand& B, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  constexpr int NR = Micro::NR;
  constexpr int64_t kTmp = Micro::NC > NR * Micro::KC ? Micro::NC : NR * Micro::KC;
  alignas(64) float tmp[kTmp];
  const int64_t panels = (nc + NR - 1) / NR;
  if (B.kind == Operand::WeightsT) {
    pack_weights_slice(B, p0, kc, j0, nc, dst);
    return;
  }
  if (B.kind == Operand::Im2col || B.kind == Operand::Im2colNhwcT || (B.kind == Operand::Strided && B.cs == 1)) {
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = tmp;
      if (B.kind == Operand::Im2col) {
        patch_row(B.win, B.p, p0 + k, j0, nc, tmp);
      } else if (B.kind == Operand::Im2colNhwcT) {
        patch_col_nhwc(B.win, B.p, p0 + k, j0, nc, tmp);
      } else {
        src = B.p + (p0 + k) * B.rs + j0;
      }
      const float sk = B.row_scale ? B.row_scale[p0 + k] : 1.f;  // x 1 is exact
      const int64_t full = nc / NR;
      for (int64_t q = 0; q < full; ++q) {
        float* d = dst + q * kc * NR + k * NR;
        const float* sq = src + q * NR;
        for (int c = 0; c < NR; ++c) d[c] = sq[c] * sk;  // fixed length: compiled to a few vector ops
      }
      if (full < panels) {
        float* d = dst + full * kc * NR + k * NR;
        const int64_t cols = nc - full * NR;
        for (int64_t c = 0; c < cols; ++c) d[c] = src[full * NR + c] * sk;
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
      } else if (B.kind == Operand::Im2colNhwc) {
        patch_col_nhwc(B.win, B.p, j, p0, kc, tmp + c * kc);
      } else {
        const float* src = B.p + j * B.cs + p0 * B.rs;
        for (int64_t k = 0; k < kc; ++k) tmp[c * kc + k] = src[k * B.rs];
      }
    }
    float* d = dst + q * kc * NR;
    int64_t k = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
    // kTW x kTW blocks through registers: the scalar transpose was most of the packing of Im2colT (the
    // weight gradient's patches) and Im2colNhwc.
    if (NR % kTW == 0)
      for (; k + kTW <= kc; k += kTW) {
        float* rows[kTW];
        for (int l = 0; l < kTW; ++l) rows[l] = d + (k + l) * NR;
        transpose_filters<NR>(tmp + k, kc, cols, nullptr, rows);
      }
#endif
    for (; k < kc; ++k) {
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

// One task: M blocks [b0, b1) of `mc` rows of problem P against its N block jt. `pa_all` is P's A packed
// in advance (slice p0, rows from i0 at pa_all + p0 * padded_rows(m) + i0 * kc, whatever the blocking). `pb_tile` is this N block of B
// packed in advance (slice p0 at pb_tile + p0 * padded_cols(nc)), or null: then B is packed here once
// per K slice and reused by every M block of the task.
void gemm_task(const GemmProblem& P, int64_t mc_rows, int64_t b0, int64_t b1, int64_t jt, int64_t tile_n,
               const float* pa_all, const float* pb_tile) {
  constexpr int MR = Micro::MR, NR = Micro::NR;
  const int64_t j0 = jt * tile_n, nc = std::min<int64_t>(tile_n, P.n - j0);
  float* own = pb_tile || P.b.packed ? nullptr : tls_pack_b.get(size_t(Micro::NC) * Micro::KC);
  const int64_t slice = k_slice(P.k);
  for (int64_t p0 = 0; p0 < P.k; p0 += slice) {
    const int64_t kc = std::min<int64_t>(slice, P.k - p0);
    const bool last = p0 + kc >= P.k, add = p0 > 0 || P.accumulate;
    // Prepared B is panel-major (see pack_weights_b); B packed here, slice by slice.
    const float* pb = P.b.packed ? P.b.packed + j0 * P.k + p0 * NR : pb_tile ? pb_tile + p0 * padded_cols(nc) : own;
    const int64_t panel_floats = P.b.packed ? NR * P.k : kc * NR;
    if (!pb_tile && !P.b.packed) pack_b(P.b, p0, kc, j0, nc, own);
    // Prepared panels come from memory once per call: the next K slice of a one-panel tile (a deep
    // layer at batch 1) is fetched a share per row tile while this one is multiplied.
    const char* next = P.b.packed && !last && nc <= NR ? reinterpret_cast<const char*>(pb + kc * NR) : nullptr;
    const int64_t next_lines = next ? (std::min(slice, P.k - p0 - kc) * NR * 4 + 63) / 64 : 0;
    const int64_t row_tiles = (b1 - b0) * ((mc_rows + MR - 1) / MR);
    int64_t fetched = 0, tiles_done = 0;
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = blk * mc_rows, mc = std::min(mc_rows, P.m - i0);
      const float* pa = pa_all + p0 * padded_rows(P.m) + i0 * kc;
      for (int64_t ir = 0; ir < mc; ir += MR) {
        if (next) {
          const int64_t upto = std::min(next_lines, (++tiles_done * next_lines + row_tiles - 1) / row_tiles);
          for (; fetched < upto; ++fetched) __builtin_prefetch(next + fetched * 64);
        }
        const float* bias = last && P.bias_row ? P.bias_row + i0 + ir : nullptr;
        for (int64_t jr = 0; jr < nc; jr += NR)
          Micro::run(kc, pa + (ir / MR) * kc * MR, pb + (jr / NR) * panel_floats, P.c + (i0 + ir) * P.ldc + j0 + jr,
                     P.ldc, int(std::min<int64_t>(MR, mc - ir)), int(std::min<int64_t>(NR, nc - jr)), add, bias,
                     last && P.relu);
        if (last && P.epilogue) (*P.epilogue)(i0 + ir, std::min<int64_t>(MR, mc - ir), j0, nc);
      }
    }
  }
}

int64_t packed_floats(int64_t m, int64_t k) { return k * padded_rows(m); }

// w [m, k] into the A panels gemm_task reads: K slice p0, M block blk at p0 * padded_rows(m) + blk * MC * kc.
void pack_weights(const float* w, int64_t m, int64_t k, float* dst) {
  Operand A;
  A.p = w, A.rs = k, A.cs = 1;
  const int64_t slice = k_slice(k), blocks = (m + Micro::MC - 1) / Micro::MC, slices = (k + slice - 1) / slice;
  parallel_tasks(slices * blocks, [&](int64_t t) {
    const int64_t p0 = (t / blocks) * slice, kc = std::min(slice, k - p0);
    const int64_t i0 = (t % blocks) * Micro::MC, mc = std::min<int64_t>(Micro::MC, m - i0);
    pack_a(A, i0, mc, p0, kc, dst + p0 * padded_rows(m) + i0 * kc);
  });
}

int64_t packed_b_floats(int64_t k, int64_t n) { return k * padded_cols(n); }


void pack_weights_b(const float* w, const float* scale, int64_t taps, int64_t k, int64_t n, float* dst) {
  constexpr int NR = Micro::NR;
  // Task: one NR-column panel (NR filters) x a span of their K, in w's own order (channel, tap): every
  // filter's span is read contiguously, transposed, and each (channel, tap) row of the panel written
  // whole (NR floats) at its place in the channels-last K order (nhwc_row). Panel-major: a panel's K
  // rows are one run (K slice p0 at p0 * NR in it), so a gemm task streams its panel front to back, one
  // stream for the prefetchers rather than one per K slice.
  constexpr int64_t kSpan = 1024;
  const int64_t cin = k / taps, panels = (n + NR - 1) / NR;
  const int64_t spans = (k + kSpan - 1) / kSpan;
  parallel_tasks(panels * spans, [&](int64_t t) {
    const int64_t q = t / spans, lo = (t % spans) * kSpan, hi = std::min(k, lo + kSpan);
    const int64_t j0 = q * NR, cols = std::min<int64_t>(NR, n - j0);
    const float* src = w + j0 * k;
    const auto row_of = [&](int64_t j) {  // the panel row of w's column j (= ci * taps + tap)
      return dst + j0 * k + nhwc_row(j % taps, j / taps, cin, taps) * NR;
    };
    int64_t j = lo;
#if defined(__AVX512F__) || defined(__AVX2__)
    if (NR % kTW == 0) {
      for (; j + kTW <= hi; j += kTW) {
        float* rows[kTW];
        for (int l = 0; l < kTW; ++l) rows[l] = row_of(j + l);
        transpose_filters<NR>(src + j, k, cols, scale ? scale + j0 : nullptr, rows);
      }
    }
#endif
    for (; j < hi; ++j) {
      float* d = row_of(j);
      for (int64_t c = 0; c < cols; ++c) d[c] = scale ? src[c * k + j] * scale[j0 + c] : src[c * k + j];
      for (int64_t c = cols; c < NR; ++c) d[c] = 0;
    }
  });
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
  // N tile width: NC, narrowed (by halves, in whole panels) while the job has too few tasks to keep a
  // pool busy, e.g. 512 channels on a 7x7 map. Depends on the sizes only, never on the thread count.
  int64_t tile_n = Micro::NC;
  const auto tasks_with = [&](int64_t tn) {
    int64_t t = 0;
    for (int64_t i = 0; i < count; ++i)
      if (live(problems[i])) t += ((problems[i].m + Micro::MC - 1) / Micro::MC) * ((problems[i].n + tn - 1) / tn);
    return t;
  };
  // B as conv weights, packed per call (Tune with few pixels as M) or prepared: the M side is one block
  // (B packed once, by the task that uses it, while in cache; prepared panels read from memory once),
  // and N is split down to single panels instead.
  bool weights_b = false;
  for (int64_t i = 0; i < count; ++i)
    if (live(problems[i]) && (problems[i].b.kind == Operand::WeightsT || problems[i].b.packed) && problems[i].m <= Micro::MC)
      weights_b = true;
  const int64_t min_tile = weights_b ? Micro::NR : 4 * Micro::NR;
  while (tile_n > Micro::NR && tile_n >= min_tile && tasks_with(tile_n) < kMinTasks)
    tile_n = std::max<int64_t>(Micro::NR, padded_cols(tile_n / 2));
  // M block height: MC, or (still too few tasks: one N tile of a deep layer at batch 1) a little less,
  // so that each problem's blocks come in a multiple of the thread count: 512 rows on 2 threads are
  // 4 x 128, not 144 + 144 + 144 + 80 (288 rows for one thread, 224 for the other). Blocking never
  // changes the order of any sum, so results do not depend on it.
  int64_t mc = Micro::MC;
  if (tasks_with(tile_n) < kMinTasks && !weights_b) {
    int64_t m = 0;
    for (int64_t i = 0; i < count; ++i) m = std::max(m, problems[i].m);
    const int64_t threads = num_threads(), blocks = (m + Micro::MC - 1) / Micro::MC;
    const int64_t even = (blocks + threads - 1) / threads * threads;
    mc = padded_rows((m + even - 1) / even);
  }
  const auto m_blocks = [&](const GemmProblem& P) { return (P.m + mc - 1) / mc; };
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
    for (int64_t j = 0; j < i && !P.a.packed; ++j) {
      const GemmProblem& Q = problems[j];
      if (a_owner[j] == j && live(Q) && Q.a.p == P.a.p && Q.a.rs == P.a.rs && Q.a.cs == P.a.cs && Q.m == P.m && Q.k == P.k &&
          Q.a.row_scale == P.a.row_scale && Q.a.col_scale == P.a.col_scale) {
        a_owner[i] = j;
        break;
      }
    }
    a_at[i] = a_owner[i] == i ? a_floats : a_at[a_owner[i]];
    if (a_owner[i] == i && live(P) && !P.a.packed) a_floats += P.k * padded_rows(P.m);
    if (!live(P)) continue;
    all_blocks += m_blocks(P) * n_tiles(P);
    if (m_blocks(P) > 1 && !P.b.packed) b_floats += b_size(P);
  }
  float* pre_a = tls_packed_a.get(size_t(std::max<int64_t>(a_floats, 1)));
  const auto own_a = [&](int64_t i) { return a_owner[i] == i && live(problems[i]) && !problems[i].a.packed; };
  for_jobs(count, [&](int64_t i) { return own_a(i) ? slices(problems[i]) * m_blocks(problems[i]) : 0; },
           [&](int64_t i, int64_t t) {
             const GemmProblem& P = problems[i];
             const int64_t slice = k_slice(P.k), p0 = (t / m_blocks(P)) * slice, kc = std::min(slice, P.k - p0);
             const int64_t i0 = (t % m_blocks(P)) * mc, rows = std::min(mc, P.m - i0);
             pack_a(P.a, i0, rows, p0, kc, pre_a + a_at[i] + p0 * padded_rows(P.m) + i0 * kc);
           });
  // M blocks per task, from the sizes only (never the thread count), so the split is reproducible.
  const int64_t per_task = std::max<int64_t>(1, all_blocks / kTargetTasks);
  // With several M blocks per problem, B would be packed again by each of their tasks: pack it once.
  std::unique_ptr<int64_t[]> b_at(new int64_t[size_t(count)]);  // offset of problem i's packed B, or -1
  const bool prepack_b = b_floats > 0 && b_floats <= kMaxPrepacked;
  float* pre_b = prepack_b ? tls_packed_b.get(size_t(b_floats)) : nullptr;
  for (int64_t i = 0, off = 0; i < count; ++i) {
    const bool pre = prepack_b && live(problems[i]) && m_blocks(problems[i]) > 1 && !problems[i].b.packed;
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
             const float* pa = P.a.packed ? P.a.packed : pre_a + a_at[i];
             gemm_task(P, mc, mt * per_task, std::min(m_blocks(P), (mt + 1) * per_task), jt, tile_n, pa, pb);
           });
}

}  // namespace xnorm::convbn::XNORM_CONVBN_NS
