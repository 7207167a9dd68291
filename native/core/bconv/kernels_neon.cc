// NEON (AArch64 Advanced SIMD) kernels. The popcounts are NEON's byte popcount (cnt): XOR, count each
// byte, accumulate the byte counts for up to 31 steps (8 * 31 < 256), then widen them with pairwise
// adds (uaddlp / uadalp) into one 32-bit count per channel. The kernels with no NEON-specific gain
// (bit transposes, packing, the output transforms, the bit-sliced MST edge, which is written over
// GCC vector types and so compiles to NEON already) are the portable table's.
#include <arm_neon.h>

#include <cstdint>

#include "bconv.h"
#include "epilogue.h"
#include "kernels.h"

namespace xnorm::bconv {
namespace {

constexpr int64_t kByteSteps = 31;

// The 32-bit sums of each 4 bytes (one channel's word) of a vector of byte counts.
inline uint32x4_t widen(uint8x16_t b) { return vpaddlq_u16(vpaddlq_u8(b)); }

// MR pixels against one 32-channel panel: 8 vectors of 4 channels per pixel.
template <int MR>
void dense_tile(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, const uint32_t* panel,
                const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep, int64_t pix0) {
  uint32x4_t acc[MR][8];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 8; ++q) acc[r][q] = vdupq_n_u32(0);
  const int64_t kw = taps * wg;
  const uint32_t* src[MR];
  int64_t t = 0, j = 0;  // tap and word of step k, advanced with k
  for (int r = 0; r < MR; ++r) src[r] = rows[r * taps] + off;
  for (int64_t k0 = 0; k0 < kw; k0 += kByteSteps) {
    const int64_t k1 = k0 + kByteSteps < kw ? k0 + kByteSteps : kw;
    uint8x16_t b8[MR][8];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 8; ++q) b8[r][q] = vdupq_n_u8(0);
    for (int64_t k = k0; k < k1; ++k) {
      if (j == wg) {
        j = 0;
        ++t;
        for (int r = 0; r < MR; ++r) src[r] = rows[r * taps + t] + off;
      }
      const uint32_t* wk = panel + k * kPanelWidth;
      uint32x4_t x[MR];
      for (int r = 0; r < MR; ++r) x[r] = vdupq_n_u32(src[r][j]);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) {
        const uint32x4_t w = vld1q_u32(wk + 4 * q);
        for (int r = 0; r < MR; ++r)
          b8[r][q] = vaddq_u8(b8[r][q], vcntq_u8(vreinterpretq_u8_u32(veorq_u32(x[r], w))));
      }
      ++j;
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < 8; ++q) acc[r][q] = vaddq_u32(acc[r][q], widen(b8[r][q]));
  }
  alignas(16) int32_t buf[MR][kPanelWidth];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 8; ++q) vst1q_s32(buf[r] + 4 * q, vreinterpretq_s32_u32(acc[r][q]));
  finish_tile<MR>(buf, ch, ep, pix0, p, ldc, ldp);
}

void dense_panel(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                 const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep) {
  int64_t i = 0;
  for (; i + 2 <= npix; i += 2) dense_tile<2>(rows + i * taps, taps, wg, off, panel, ch, p + i * ldp, ldc, ldp, ep, i);
  if (i < npix) dense_tile<1>(rows + i * taps, taps, wg, off, panel, ch, p + i * ldp, ldc, ldp, ep, i);
}

// Hamming distances 4 words at a time: byte counts accumulated for up to 31 vectors, then widened; the
// differing words counted from a per-lane nonzero test (all ones = -1, subtracted).
void distances(const uint32_t* row, const uint32_t* rows, int64_t n, int64_t kw, int32_t* hamming,
               int32_t* diff_words) {
  const int64_t full = kw / 4 * 4;
  for (int64_t v = 0; v < n; ++v) {
    const uint32_t* other = rows + v * kw;
    uint32x4_t h4 = vdupq_n_u32(0), d4 = vdupq_n_u32(0);
    for (int64_t k0 = 0; k0 < full; k0 += 4 * kByteSteps) {
      const int64_t k1 = k0 + 4 * kByteSteps < full ? k0 + 4 * kByteSteps : full;
      uint8x16_t b8 = vdupq_n_u8(0);
      for (int64_t k = k0; k < k1; k += 4) {
        const uint32x4_t x = veorq_u32(vld1q_u32(row + k), vld1q_u32(other + k));
        b8 = vaddq_u8(b8, vcntq_u8(vreinterpretq_u8_u32(x)));
        d4 = vsubq_u32(d4, vtstq_u32(x, x));
      }
      h4 = vaddq_u32(h4, widen(b8));
    }
    int32_t h = int32_t(vaddvq_u32(h4)), dw = int32_t(vaddvq_u32(d4));
    for (int64_t k = full; k < kw; ++k) {
      const uint32_t x = row[k] ^ other[k];
      h += __builtin_popcount(x);
      dw += x != 0;
    }
    hamming[v] = h;
    diff_words[v] = dw;
  }
}

// Eight data vectors stay in registers and are counted eight times per pass (256 words): the ALU
// ceiling of the cnt popcount, with no loads.
uint64_t popcount_loop(const uint32_t* data, int64_t reps) {
  uint32x4_t d[8];
  for (int j = 0; j < 8; ++j) d[j] = vld1q_u32(data + 4 * j);
  uint32x4_t acc[4];
  for (auto& a : acc) a = vdupq_n_u32(0);
  for (int64_t r = 0; r < reps; ++r) {
    uint8x16_t s[4];
    for (auto& v : s) v = vdupq_n_u8(0);
#pragma GCC unroll 64
    for (int j = 0; j < 64; ++j) {  // 16 byte-steps per accumulator stay below 256
      const uint32x4_t key = vdupq_n_u32(uint32_t(8 * r + (j >> 3)));
      s[j & 3] = vaddq_u8(s[j & 3], vcntq_u8(vreinterpretq_u8_u32(veorq_u32(d[j & 7], key))));
    }
    for (int q = 0; q < 4; ++q) acc[q] = vaddq_u32(acc[q], widen(s[q]));
  }
  uint64_t total = 0;
  for (auto& a : acc) total += vaddlvq_u32(a);
  return total;
}

}  // namespace

const Kernels& kernels_neon() {
  const Kernels& p = kernels_portable();
  static const Kernels k{dense_panel, p.bit_rows, p.shifted_rows, p.sliced_edge, p.value_planes, p.sliced_child, p.pack_nhwc, p.pack_nchw, distances, p.transpose,
                         p.out_int32, p.out_float, p.out_bits, nullptr, popcount_loop};
  return k;
}

}  // namespace xnorm::bconv
