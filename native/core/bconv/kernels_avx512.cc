// AVX-512 kernels with VPOPCNTDQ: one vpopcntd counts 16 words (16 output channels, or 16 pixels).
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../common/avx512_masked.h"
#include "bconv.h"
#include "epilogue.h"
#include "kernels.h"
#include "sliced.h"
#include "transpose8x8.h"

namespace xnorm::bconv {
namespace {

inline __m512i popc_xor(__m512i a, __m512i b) { return _mm512_popcnt_epi32(_mm512_xor_si512(a, b)); }

inline __mmask16 first_n(int64_t n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? 0 : __mmask16((1u << n) - 1); }

// The output transform of 16 channels: float(k + m * v) * scale + bias, the product rounded on its own
// (the reference rounds twice), then clamped when clamp is not null.
struct Transform16 {
  __m512i k, m;
  __m512 lo, hi;
  const float* clamp;
  bool popcounts;  // m = -2: a shift instead of a (slower) 32-bit multiply
  Transform16(int32_t k_, int32_t m_, const float* clamp_)
      : k(_mm512_set1_epi32(k_)), m(_mm512_set1_epi32(m_)), lo(_mm512_set1_ps(clamp_ ? clamp_[0] : 0.0f)),
        hi(_mm512_set1_ps(clamp_ ? clamp_[1] : 0.0f)), clamp(clamp_), popcounts(m_ == -2) {}
  __m512i dot(__m512i v) const {
    return popcounts ? _mm512_sub_epi32(k, _mm512_slli_epi32(v, 1)) : _mm512_add_epi32(k, _mm512_mullo_epi32(m, v));
  }
  __m512 value(__m512i v, __m512 scale, __m512 bias) const {
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(dot(v)), scale);
    __asm__("" : "+v"(y));  // keeps the product rounded: the compiler may not fuse it with the add
    y = _mm512_add_ps(y, bias);
    return clamp ? _mm512_min_ps(hi, _mm512_max_ps(lo, y)) : y;  // = std::min(std::max(y, lo), hi)
  }
  __mmask16 negative(__mmask16 lanes, __m512i v, __m512 scale, __m512 bias) const {
    return _mm512_mask_cmp_ps_mask(lanes, value(v, scale, bias), _mm512_setzero_ps(), _CMP_LT_OQ);
  }
};

// The fused output of one block: MR pixels x nvalid consecutive channels starting at ch0.
template <int MR>
void finish_block(const __m512i* acc0, const __m512i* acc1, const Epilogue& ep, int64_t pix0, int64_t ch0,
                  int nvalid, int32_t* p, int64_t ldp) {
  const __mmask16 m0 = first_n(nvalid), m1 = first_n(nvalid - 16);
  const Transform16 tf(ep.k, -2, ep.clamp);
  auto raw = [&](int r) {
    if (!ep.raw || !ep.raw[pix0 + r]) return false;
    storeu_epi32(p + r * ldp + ch0, m0, acc0[r]);
    storeu_epi32(p + r * ldp + ch0 + 16, m1, acc1[r]);
    return true;
  };
  if (ep.kind == Output::Int32) {
    int32_t* out = static_cast<int32_t*>(ep.out) + pix0 * ep.ldo + ch0;
    for (int r = 0; r < MR; ++r) {
      if (raw(r)) continue;
      int32_t* o = out + r * ep.ldo;
      if (nvalid == 32) {  // a masked store, even with all lanes on, is far slower on some CPUs
        _mm512_storeu_si512(o, tf.dot(acc0[r]));
        _mm512_storeu_si512(o + 16, tf.dot(acc1[r]));
      } else {
        storeu_epi32(o, m0, tf.dot(acc0[r]));
        storeu_epi32(o + 16, m1, tf.dot(acc1[r]));
      }
    }
    return;
  }
  const __m512 s0 = loadu_ps(m0, ep.scale + ch0), s1 = loadu_ps(m1, ep.scale + ch0 + 16);
  const __m512 b0 = loadu_ps(m0, ep.bias + ch0), b1 = loadu_ps(m1, ep.bias + ch0 + 16);
  if (ep.kind == Output::Bits) {
    uint32_t* out = static_cast<uint32_t*>(ep.out) + pix0 * ep.ldo + ch0 / 32;
    for (int r = 0; r < MR; ++r)
      if (!raw(r))
        out[r * ep.ldo] = uint32_t(tf.negative(m0, acc0[r], s0, b0)) | uint32_t(tf.negative(m1, acc1[r], s1, b1)) << 16;
    return;
  }
  float* out = static_cast<float*>(ep.out) + pix0 * ep.ldo + ch0;
  for (int r = 0; r < MR; ++r) {
    if (raw(r)) continue;
    float* o = out + r * ep.ldo;
    if (nvalid == 32 && ep.stream && (reinterpret_cast<uintptr_t>(o) & 63) == 0) {
      _mm512_stream_ps(o, tf.value(acc0[r], s0, b0));
      _mm512_stream_ps(o + 16, tf.value(acc1[r], s1, b1));
    } else if (nvalid == 32) {  // a masked store, even with all lanes on, is far slower on some CPUs
      _mm512_storeu_ps(o, tf.value(acc0[r], s0, b0));
      _mm512_storeu_ps(o + 16, tf.value(acc1[r], s1, b1));
    } else {
      storeu_ps(o, m0, tf.value(acc0[r], s0, b0));
      storeu_ps(o + 16, m1, tf.value(acc1[r], s1, b1));
    }
  }
}

// 8 pixels x 16 channels (a[r] lane c: pixel r, channel ch[c]) to p[ch[c] * ldc + r], skipping
// kNoChannel: an in-register transpose and one 8-pixel store per channel. (Through a buffer and scalar
// stores, 256 of them per 32 channels, a root panel cost a fifth more than in the dense path.)
inline void store_channel_major(const __m512i a[8], const uint32_t* ch, int32_t* p, int64_t ldc) {
  __m512i t[8], u[8];
  for (int k = 0; k < 4; ++k) {  // lane L: (a[2k], a[2k+1]) at channels 4L, 4L + 1 and 4L + 2, 4L + 3
    t[k] = _mm512_unpacklo_epi32(a[2 * k], a[2 * k + 1]);
    t[4 + k] = _mm512_unpackhi_epi32(a[2 * k], a[2 * k + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // u[4 h + m] lane L: channel 4L + m, pixels 0-3 (u[m]) or 4-7 (u[4 + m])
    u[4 * h + 0] = _mm512_unpacklo_epi64(t[2 * h], t[2 * h + 1]);
    u[4 * h + 1] = _mm512_unpackhi_epi64(t[2 * h], t[2 * h + 1]);
    u[4 * h + 2] = _mm512_unpacklo_epi64(t[4 + 2 * h], t[4 + 2 * h + 1]);
    u[4 * h + 3] = _mm512_unpackhi_epi64(t[4 + 2 * h], t[4 + 2 * h + 1]);
  }
  const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int m = 0; m < 4; ++m) {
    const __m512i v[2] = {_mm512_permutex2var_epi64(u[m], first, u[4 + m]),     // channels m, 4 + m
                          _mm512_permutex2var_epi64(u[m], second, u[4 + m])};   // channels 8 + m, 12 + m
    for (int q = 0; q < 4; ++q) {
      const int c = 4 * q + m;
      if (ch[c] == kNoChannel) continue;
      const __m256i px = q % 2 ? _mm512_extracti64x4_epi64(v[q / 2], 1) : _mm512_castsi512_si256(v[q / 2]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + int64_t(ch[c]) * ldc), px);
    }
  }
}

// MR pixels x 32 channels held in 2*MR accumulators; each step broadcasts one input word per pixel.
// Half: the panel's channels 16 to 31 are empty (half_panel), their accumulators stay zero.
template <int MR, bool Half>
void dense_tile(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, const uint32_t* panel,
                const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, int nvalid, const Epilogue* ep,
                int64_t pix0) {
  __m512i acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    acc0[r] = _mm512_setzero_si512();
    acc1[r] = _mm512_setzero_si512();
  }
  if (ep && ep->kind != Output::Bits && !ep->stream) {
    // Fetch the output lines for writing now: their misses then overlap the popcounts below instead of
    // stalling the stores (this write pattern is invisible to the hardware prefetchers). Streamed
    // outputs skip that: their lines are written whole, never read.
    char* out = static_cast<char*>(ep->out) + (pix0 * ep->ldo + ch[0]) * 4;
    for (int r = 0; r < MR; ++r) {
      __builtin_prefetch(out + r * ep->ldo * 4, 1);
      __builtin_prefetch(out + r * ep->ldo * 4 + 64, 1);
    }
  }
  for (int64_t t = 0; t < taps; ++t) {
    const uint32_t* src[MR];
    for (int r = 0; r < MR; ++r) src[r] = rows[r * taps + t] + off;
    const uint32_t* wt = panel + t * wg * kPanelWidth;
    // Not unrolled: with the word count fixed at compile time (it used to be, for 1, 2 and 4 words),
    // GCC hoisted every word's broadcasts and spilled accumulators to the stack inside this loop (128
    // channels: 115-117 -> 99-103 us at batch 1 28x28, 686 -> 601-610 us at batch 8; 64 channels at
    // batch 1 56x56: 127-131 -> 121-123 us; Intel host).
#pragma GCC unroll 1
    for (int64_t j = 0; j < wg; ++j) {
      __m512i b0 = _mm512_loadu_si512(wt + j * kPanelWidth);
      __m512i b1 = Half ? b0 : _mm512_loadu_si512(wt + j * kPanelWidth + 16);
      for (int r = 0; r < MR; ++r) {
        __m512i x = _mm512_set1_epi32(int(src[r][j]));
        acc0[r] = _mm512_add_epi32(acc0[r], popc_xor(x, b0));
        if (!Half) acc1[r] = _mm512_add_epi32(acc1[r], popc_xor(x, b1));
      }
    }
  }
  if (ep) {
    finish_block<MR>(acc0, acc1, *ep, pix0, ch[0], nvalid, p, ldp);
    return;
  }
  if (nvalid > 0) {  // pixel-major tile, channels ch[0] .. ch[0] + nvalid - 1: whole-vector stores
    __mmask16 m0 = first_n(nvalid), m1 = first_n(nvalid - 16);
    for (int r = 0; r < MR; ++r) {
      storeu_epi32(p + r * ldp + ch[0], m0, acc0[r]);
      storeu_epi32(p + r * ldp + ch[0] + 16, m1, acc1[r]);
    }
    return;
  }
  if constexpr (MR == 8) {
    if (ldp == 1) {  // channel-major tile (MST plans): each channel's 8 pixels are contiguous
      store_channel_major(acc0, ch, p, ldc);
      store_channel_major(acc1, ch + 16, p, ldc);
      return;
    }
  }
  alignas(64) int32_t buf[MR][kPanelWidth];
  for (int r = 0; r < MR; ++r) {
    _mm512_store_si512(buf[r], acc0[r]);
    _mm512_store_si512(buf[r] + 16, acc1[r]);
  }
  scatter_tile<MR>(buf, ch, p, ldc, ldp);
}

template <bool Half>
void dense_blocks(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                  const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep) {
  const int nv = ldc == 1 ? consecutive_channels(ch) : 0;  // pixel-major with consecutive channels: whole-vector stores
  int64_t i = 0;
#define XNORM_TILE(MR) dense_tile<MR, Half>(rows + i * taps, taps, wg, off, panel, ch, p + i * ldp, ldc, ldp, nv, ep, i)
  for (; i + 8 <= npix; i += 8) XNORM_TILE(8);
  switch (npix - i) {
    case 7: XNORM_TILE(7); break;
    case 6: XNORM_TILE(6); break;
    case 5: XNORM_TILE(5); break;
    case 4: XNORM_TILE(4); break;
    case 3: XNORM_TILE(3); break;
    case 2: XNORM_TILE(2); break;
    case 1: XNORM_TILE(1); break;
    default: break;
  }
#undef XNORM_TILE
}

void dense_panel(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                 const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep) {
  if (half_panel(ch)) return dense_blocks<true>(rows, taps, wg, off, npix, panel, ch, p, ldc, ldp, ep);
  dense_blocks<false>(rows, taps, wg, off, npix, panel, ch, p, ldc, ldp, ep);
}

// Bit k of 64 pixels at a time: an in-lane byte shuffle and two dword permutes gather byte k / 8 of the
// 64 pixels into one register; a shift brings bit k % 8 of every byte to its top and movepi8_mask reads
// the 64 of them.
void bit_rows(const uint32_t* at, int64_t ldat, int64_t kw, int64_t nb, uint64_t* rows) {
  // Within each 128-bit lane (4 pixels): dword b = byte b of the 4 pixels.
  const __m512i by_byte = _mm512_set4_epi32(0x0f0b0703, 0x0e0a0602, 0x0d090501, 0x0c080400);
  for (int64_t w = 0; w < kw; ++w)
    for (int64_t j = 0; j < nb; ++j) {
      const uint32_t* px = at + w * ldat + 64 * j;
      __m512i z[4];
      for (int r = 0; r < 4; ++r) z[r] = _mm512_shuffle_epi8(_mm512_loadu_si512(px + 16 * r), by_byte);
      for (int byte = 0; byte < 4; ++byte) {
        // Dword m of the pair (z0, z1) or (z2, z3): byte `byte` of pixels 4 m .. 4 m + 3 of the pair.
        const __m512i idx = _mm512_add_epi32(_mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0),
                                             _mm512_set1_epi32(byte));
        const __m512i v = _mm512_mask_blend_epi32(0xff00, _mm512_permutex2var_epi32(z[0], idx, z[1]),
                                                  _mm512_permutex2var_epi32(z[2], idx, z[3]));
        for (int b = 0; b < 8; ++b)
          rows[(32 * w + 8 * byte + b) * nb + j] = _mm512_movepi8_mask(_mm512_slli_epi64(v, 7 - b));
      }
    }
}

// bit_rows with GFNI and VBMI (where the CPU has them: kernels_avx512 checks at run time), a third of the
// instructions. Per 64 pixels of word w (four registers of 16 pixels): a byte permute puts byte B of
// eight pixels into one 64-bit lane (pixel order reversed), an affine transform in GF(2) transposes each
// lane's 8 x 8 bits (lane byte b: bit 8 B + b of the eight pixels), and two two-register byte permutes
// and a blend gather byte b of all eight lanes: bit row 8 B + b of the 64 pixels. Eight 64-pixel words
// of one row are contiguous in `rows`, so eight of them are transposed (8 x 8 64-bit lanes) and stored
// whole (of a last, partial group of eight, the lanes it has).
// The first n (1 to 8) 64-bit lanes of v to dst, in plain stores of 4, 2 and 1 lanes: masked stores
// made bit_rows_gfni slower than bit_rows on AMD Zen 5.
inline void store_lanes(uint64_t* dst, __m512i v, int64_t n) {
  if (n == 8) return _mm512_storeu_si512(dst, v);
  if (n >= 4) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(v));
    v = _mm512_alignr_epi64(v, v, 4), dst += 4, n -= 4;
  }
  if (n >= 2) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_castsi512_si128(v));
    v = _mm512_alignr_epi64(v, v, 2), dst += 2, n -= 2;
  }
  if (n) _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm512_castsi512_si128(v));
}

// Bit rows 8 B .. 8 B + 7 of one word of 64 pixels (px: the word of pixels 0 .. 63): lane b of out[B]
// holds row 8 B + b (bit_rows_gfni).
__attribute__((target("gfni,avx512vbmi"), always_inline)) inline void gfni_rows_of_block(
    const uint32_t* px, __m512i by_lane, __m512i by_row, __m512i one_hot, __m512i out[4]) {
  __m512i t[4];
  for (int r = 0; r < 4; ++r)
    t[r] = _mm512_gf2p8affine_epi64_epi8(one_hot, _mm512_permutexvar_epi8(by_lane, _mm512_loadu_si512(px + 16 * r)), 0);
  for (int B = 0; B < 4; ++B) {
    const __m512i idx = _mm512_add_epi8(by_row, _mm512_set1_epi8(char(16 * B)));
    out[B] = _mm512_mask_blend_epi8(0xf0f0f0f0f0f0f0f0ull, _mm512_permutex2var_epi8(t[0], idx, t[1]),
                                    _mm512_permutex2var_epi8(t[2], idx, t[3]));
  }
}

__attribute__((target("gfni,avx512vbmi"))) void bit_rows_gfni(const uint32_t* at, int64_t ldat, int64_t kw,
                                                               int64_t nb, uint64_t* rows) {
  alignas(64) uint8_t lane_idx[64], row_idx[64];
  for (int B = 0; B < 4; ++B)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 8; ++i) lane_idx[(2 * B + h) * 8 + i] = uint8_t((8 * h + 7 - i) * 4 + B);
  for (int b = 0; b < 8; ++b)  // byte m of lane b: lane b of the 8-pixel group m's register (two per pair)
    for (int m = 0; m < 8; ++m) row_idx[b * 8 + m] = uint8_t((m & 2 ? 64 : 0) + (m & 1) * 8 + b);
  const __m512i by_lane = _mm512_load_si512(lane_idx), by_row = _mm512_load_si512(row_idx);
  const __m512i one_hot = _mm512_set1_epi64(int64_t(0x8040201008040201));  // byte b: bit b
  for (int64_t w = 0; w < kw; ++w) {
    if (nb == 1) {  // one word per row: the rows are the lanes
      __m512i o[4];
      gfni_rows_of_block(at + w * ldat, by_lane, by_row, one_hot, o);
      for (int B = 0; B < 4; ++B) _mm512_storeu_si512(rows + 32 * w + 8 * B, o[B]);
      continue;
    }
    for (int64_t j0 = 0; j0 < nb; j0 += 8) {
      const int64_t n = std::min<int64_t>(8, nb - j0);
      __m512i o[8][4];
      for (int j = 0; j < 8; ++j) {
        if (j < n) gfni_rows_of_block(at + w * ldat + 64 * (j0 + j), by_lane, by_row, one_hot, o[j]);
        else o[j][0] = o[j][1] = o[j][2] = o[j][3] = _mm512_setzero_si512();
      }
      for (int B = 0; B < 4; ++B) {
        // Transpose the 8 x 8 lanes o[j][B] lane b -> row b lane j.
        __m512i u[8], v[8];
        for (int j = 0; j < 8; j += 2) {
          u[j] = _mm512_unpacklo_epi64(o[j][B], o[j + 1][B]);      // lanes (j, j+1) of rows 0, 2, 4, 6
          u[j + 1] = _mm512_unpackhi_epi64(o[j][B], o[j + 1][B]);  // rows 1, 3, 5, 7
        }
        for (int q = 0; q < 2; ++q)
          for (int half = 0; half < 2; ++half) {
            const __m512i a = u[4 * half + q], c = u[4 * half + q + 2];
            v[4 * half + q] = _mm512_shuffle_i64x2(a, c, 0x88);      // rows q, q + 4 of blocks 4 half .. + 3
            v[4 * half + q + 2] = _mm512_shuffle_i64x2(a, c, 0xdd);  // rows q + 2, q + 6
          }
        for (int q = 0; q < 4; ++q) {  // rows q and q + 4
          const __m512i lo = _mm512_shuffle_i64x2(v[q], v[4 + q], 0x88), hi = _mm512_shuffle_i64x2(v[q], v[4 + q], 0xdd);
          uint64_t* row_lo = rows + (32 * w + 8 * B + q) * nb + j0;
          uint64_t* row_hi = rows + (32 * w + 8 * B + q + 4) * nb + j0;
          store_lanes(row_lo, lo, n);
          store_lanes(row_hi, hi, n);
        }
      }
    }
  }
}

// child = parent + d - 2 S for 16 pixels, S widened from bytes.
inline void child_from_bytes(__m128i s, const int32_t* parent, __m512i d, int32_t* child) {
  const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(parent), d);
  _mm512_storeu_si512(child, _mm512_sub_epi32(v, _mm512_slli_epi32(_mm512_cvtepu8_epi32(s), 1)));
}

// The planes to per-pixel S and the child from parent + d. Below 256 (most edges) S is built as bytes,
// 64 pixels per register; otherwise 16 pixels at a time, bit l of S taking 2^(l + 1) off under a mask.
void expand_masked(const uint64_t* planes, int nplanes, int nb, int32_t d, const int32_t* parent, int32_t* child) {
  const __m512i dv = _mm512_set1_epi32(d);
  if (nplanes <= 8) {
    for (int j = 0; j < nb; ++j) {
      __m512i s = _mm512_setzero_si512();
      for (int l = 0; l < nplanes; ++l)
        s = _mm512_mask_add_epi8(s, __mmask64(planes[l * nb + j]), s, _mm512_set1_epi8(char(1 << l)));
      const int64_t i = 64 * j;
      child_from_bytes(_mm512_castsi512_si128(s), parent + i, dv, child + i);
      child_from_bytes(_mm512_extracti32x4_epi32(s, 1), parent + i + 16, dv, child + i + 16);
      child_from_bytes(_mm512_extracti32x4_epi32(s, 2), parent + i + 32, dv, child + i + 32);
      child_from_bytes(_mm512_extracti32x4_epi32(s, 3), parent + i + 48, dv, child + i + 48);
    }
    return;
  }
  const auto* quarter = reinterpret_cast<const uint16_t*>(planes);  // [plane][16-pixel group]
  const int groups = 4 * nb;
  for (int g = 0; g < groups; ++g) {
    __m512i v = _mm512_add_epi32(_mm512_loadu_si512(parent + 16 * g), dv);
    for (int l = 0; l < nplanes; ++l)
      v = _mm512_mask_sub_epi32(v, __mmask16(quarter[l * groups + g]), v, _mm512_set1_epi32(int32_t(2u << l)));
    _mm512_storeu_si512(child + 16 * g, v);
  }
}

void sliced_edge(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                 const int32_t* parent, int32_t* child) {
  sliced_edge_any(rows, nb, pos, npos, zeros, parent, child, expand_masked);
}

// Kernels::value_planes: per 64 pixels, one byte of each value at a time narrowed into one register;
// a shift brings bit l % 8 of every byte to its top and movepi8_mask reads the 64 of them (as bit_rows).
void value_planes(const int32_t* v, int64_t nb, int nvp, uint64_t* planes) {
  for (int64_t j = 0; j < nb; ++j)
    for (int byte = 0; 8 * byte < nvp; ++byte) {
      const __m128i shift = _mm_cvtsi32_si128(8 * byte);
      auto narrow = [&](int q) { return _mm512_cvtepi32_epi8(_mm512_srl_epi32(_mm512_loadu_si512(v + 64 * j + 16 * q), shift)); };
      __m512i bytes = _mm512_castsi128_si512(narrow(0));  // byte i: bits 8 byte .. 8 byte + 7 of pixel 64 j + i
      bytes = _mm512_inserti32x4(bytes, narrow(1), 1);
      bytes = _mm512_inserti32x4(bytes, narrow(2), 2);
      bytes = _mm512_inserti32x4(bytes, narrow(3), 3);
      for (int b = 0; b < 8 && 8 * byte + b < nvp; ++b)
        planes[(8 * byte + b) * nb + j] = _mm512_movepi8_mask(_mm512_slli_epi64(bytes, 7 - b));
    }
}

// 16 output words: around the caches when asked and the line is whole (the caller fences).
inline void store_line(uint32_t* out, __m512i words, bool stream) {
  if (stream && (reinterpret_cast<uintptr_t>(out) & 63) == 0) _mm512_stream_si512(reinterpret_cast<__m512i*>(out), words);
  else _mm512_storeu_si512(out, words);
}

// Fewer than 32 channels (one word per pixel): 16 pixels at a time read as 16 * c contiguous floats,
// compared in whole vectors against the thresholds laid out the same way; each pixel's c bits are then
// cut out of the resulting bit string in 64-bit lanes, eight pixels per vector, by a variable shift:
// of the string itself while 8 pixels fit in 64 bits (c <= 8), of one of 4 windows of 64 bits built in
// registers while 4 pixels do (c <= 16), else of a 64-bit window gathered per pixel. No masked load
// per pixel, which is slow on some CPUs. Each line is fetched 4 KiB ahead: the hardware prefetchers
// alone left one core waiting on the loads (C = 3 and 16: 20-25 % slower).
void pack_nhwc_narrow(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out, bool stream) {
  __m512 tv[31];  // thresholds of element e of a block at lane e % 16 of vector e / 16: channel e % c
  for (int64_t v = 0; v < c; ++v) {
    alignas(64) float t[16];
    for (int l = 0; l < 16; ++l) t[l] = thr[(v * 16 + l) % c];
    tv[v] = _mm512_load_ps(t);
  }
  alignas(64) int64_t at[16];  // bit offset of pixel p in the string
  for (int p = 0; p < 16; ++p) at[p] = p * c;
  const __m512i keep = _mm512_set1_epi64((int64_t(1) << c) - 1);
  const __m512i at_lo = _mm512_load_si512(at), at_hi = _mm512_load_si512(at + 8);
  // c <= 8: pixels 8..15 shift from the string's bit 8c on
  const __m512i in_half = _mm512_sub_epi64(at_hi, _mm512_set1_epi64(8 * c));
  // 8 < c <= 16: pixel p shifts from the string's bit 4c * (p / 4) on
  const __m512i in_four = _mm512_sub_epi64(at_lo, _mm512_set_epi64(4 * c, 4 * c, 4 * c, 4 * c, 0, 0, 0, 0));
  const __m512i byte_lo = _mm512_srli_epi64(at_lo, 3), byte_hi = _mm512_srli_epi64(at_hi, 3);
  const __m512i sh_lo = _mm512_and_si512(at_lo, _mm512_set1_epi64(7)), sh_hi = _mm512_and_si512(at_hi, _mm512_set1_epi64(7));
  int64_t i = 0;
  for (; i + 16 <= pixels; i += 16) {
    const float* px = x + i * c;
    for (int64_t v = 0; v < c; ++v) _mm_prefetch(reinterpret_cast<const char*>(px + 16 * v) + 4096, _MM_HINT_T0);
    __m512i lo, hi;
    if (c <= 8) {
      unsigned __int128 bits = 0;
      for (int64_t v = 0; v < c; ++v)
        bits |= (unsigned __int128)_mm512_cmp_ps_mask(_mm512_loadu_ps(px + 16 * v), tv[v], _CMP_LT_OQ) << (16 * v);
      lo = _mm512_srlv_epi64(_mm512_set1_epi64(int64_t(uint64_t(bits))), at_lo);
      hi = _mm512_srlv_epi64(_mm512_set1_epi64(int64_t(uint64_t(bits >> (8 * c)))), in_half);
    } else if (c <= 16) {
      uint64_t a[5] = {};  // the 16 * c bits as 64-bit words (same-size stores and loads: no forwarding stall)
      for (int64_t v = 0; v < c; ++v)
        a[v >> 2] |= uint64_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(px + 16 * v), tv[v], _CMP_LT_OQ)) << (16 * (v & 3));
      uint64_t win[4];  // 64 bits from pixel 4k on: 4 pixels of up to 16 bits
      for (int k = 0; k < 4; ++k) {
        const int64_t o = 4 * k * c, w = o >> 6, b = o & 63;
        win[k] = b ? a[w] >> b | a[w + 1] << (64 - b) : a[w];
      }
      lo = _mm512_srlv_epi64(_mm512_mask_set1_epi64(_mm512_set1_epi64(int64_t(win[0])), 0xf0, int64_t(win[1])), in_four);
      hi = _mm512_srlv_epi64(_mm512_mask_set1_epi64(_mm512_set1_epi64(int64_t(win[2])), 0xf0, int64_t(win[3])), in_four);
    } else {
      alignas(64) uint16_t bits[32 + 4] = {};  // 16 * c bits, then slack for the 64-bit windows
      for (int64_t v = 0; v < c; ++v) bits[v] = uint16_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(px + 16 * v), tv[v], _CMP_LT_OQ));
      lo = _mm512_srlv_epi64(_mm512_i64gather_epi64(byte_lo, bits, 1), sh_lo);
      hi = _mm512_srlv_epi64(_mm512_i64gather_epi64(byte_hi, bits, 1), sh_hi);
    }
    const __m256i wl = _mm512_cvtepi64_epi32(_mm512_and_si512(lo, keep)), wh = _mm512_cvtepi64_epi32(_mm512_and_si512(hi, keep));
    store_line(out + i, _mm512_inserti64x4(_mm512_castsi256_si512(wl), wh, 1), stream);
  }
  for (; i < pixels; ++i) {  // the last pixels, one at a time
    uint32_t w = 0;
    for (int64_t ch = 0; ch < c; ++ch) w |= uint32_t(x[i * c + ch] < thr[ch]) << ch;
    out[i] = w;
  }
  if (stream) _mm_sfence();
}

// C a multiple of 32: the words are the bit string of all the values in order (bit j: value j < its
// channel's threshold), so the pixels are one flat run, read in vectors that sit on whole lines: V8's
// large Float32Arrays start 16 bytes into a line, and loads split across lines cost C = 64 and 1024
// about a tenth. Vector k holds values 16k - lead ... 16k + 15 - lead (the first one masked before value
// 0, the last past the end); half word j is the top 16 - lead bits of vector j's mask and the low lead
// bits of vector j + 1's, four half words stored at a time. Each line is fetched 4 KiB ahead.
void pack_nhwc_flat(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out) {
  const int64_t lead = reinterpret_cast<uintptr_t>(x) % 64 / 4, n = pixels * c, period = c / 16;
  const float* base = x - lead;  // vector k at base + 16k
  alignas(64) float tv[16 * 64];  // thresholds of the lanes of vector k at tv + 16 (k % period), c <= 1024
  std::vector<float> big_tv;
  float* t = tv;
  if (c > 1024) big_tv.resize(size_t(c)), t = big_tv.data();
  for (int64_t i = 0; i < c; ++i) t[i] = thr[(i - lead + c) % c];
  const int64_t last_full = (n + lead) / 16 - 1;  // vectors up to this one lie inside the values
  int64_t v = 0;  // k % period
  auto mask = [&](int64_t k) -> uint64_t {
    const float* p = base + 16 * k;
    _mm_prefetch(reinterpret_cast<const char*>(p) + 4096, _MM_HINT_T0);
    const __m512 tk = _mm512_loadu_ps(t + 16 * v);
    v = v + 1 == period ? 0 : v + 1;
    if (k > 0 && k <= last_full) return _mm512_cmp_ps_mask(_mm512_loadu_ps(p), tk, _CMP_LT_OQ);
    const __mmask16 lanes = __mmask16(first_n(n + lead - 16 * k) & (k == 0 ? ~first_n(lead) : 0xffff));
    return _mm512_mask_cmp_ps_mask(lanes, _mm512_maskz_loadu_ps(lanes, p), tk, _CMP_LT_OQ);
  };
  char* half = reinterpret_cast<char*>(out);
  const int64_t halves = n / 16;
  uint64_t prev = mask(0);
  int64_t j = 0;
  for (; j + 4 <= halves; j += 4) {
    const uint64_t m1 = mask(j + 1), m2 = mask(j + 2), m3 = mask(j + 3), m4 = mask(j + 4);
    const uint64_t bits = prev | m1 << 16 | m2 << 32 | m3 << 48;
    const uint64_t h = lead ? bits >> lead | m4 << (64 - lead) : bits;
    std::memcpy(half + 2 * j, &h, 8);
    prev = m4;
  }
  for (; j < halves; ++j) {
    const uint64_t next = mask(j + 1);
    const uint16_t h = uint16_t((prev | next << 16) >> lead);
    std::memcpy(half + 2 * j, &h, 2);
    prev = next;
  }
}

// 32 channels and more: each 16 channels' mask is stored as the half word it is (little-endian: the low
// half of word w holds channels 32w ... 32w + 15), each line fetched 4 KiB ahead, no masked load but the
// channel tail's.
void pack_nhwc(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out, bool stream) {
  if (c < 32) return pack_nhwc_narrow(x, pixels, c, thr, out, stream);
  if (c % 32 == 0 && reinterpret_cast<uintptr_t>(x) % 4 == 0) return pack_nhwc_flat(x, pixels, c, thr, out);
  const int64_t wc = (c + 31) / 32, full = c / 16, halves = (c + 15) / 16;
  const __mmask16 tail = first_n(c - 16 * full);
  auto put = [](char* pixel, int64_t h, __mmask16 m) { _mm_storeu_si16(pixel + 2 * h, _mm_cvtsi32_si128(m)); };
  for (int64_t i = 0; i < pixels; ++i) {
    const float* px = x + i * c;
    char* o = reinterpret_cast<char*>(out + i * wc);
    for (int64_t v = 0; v < full; ++v) {
      _mm_prefetch(reinterpret_cast<const char*>(px + 16 * v) + 4096, _MM_HINT_T0);
      put(o, v, _mm512_cmp_ps_mask(_mm512_loadu_ps(px + 16 * v), _mm512_loadu_ps(thr + 16 * v), _CMP_LT_OQ));
    }
    if (tail)
      put(o, full, _mm512_mask_cmp_ps_mask(tail, _mm512_maskz_loadu_ps(tail, px + 16 * full),
                                           _mm512_maskz_loadu_ps(tail, thr + 16 * full), _CMP_LT_OQ));
    if (halves & 1) put(o, halves, 0);  // the upper half of a last word that holds 16 channels or fewer
  }
}

// At most 16 channels: all planes side by side, 16 pixels at a time, each word built in a register and
// stored once (a handful of sequential streams, each prefetched 2 KiB ahead like the plane passes below).
void pack_nchw_few(const float* x, int64_t ld, int64_t count, int64_t c, const float* thr, uint32_t* out,
                   bool stream) {
  __m512 t[16];
  for (int64_t b = 0; b < c; ++b) t[b] = _mm512_set1_ps(thr[b]);
  int64_t p = 0;
  for (; p + 16 <= count; p += 16) {
    __m512i word = _mm512_setzero_si512();
    for (int64_t b = 0; b < c; ++b) {
      const float* plane = x + b * ld + p;
      _mm_prefetch(reinterpret_cast<const char*>(plane + 512), _MM_HINT_T0);
      const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(plane), t[b], _CMP_LT_OQ);
      word = _mm512_mask_or_epi32(word, m, word, _mm512_set1_epi32(int(1u << b)));
    }
    store_line(out + p, word, stream);
  }
  for (; p < count; ++p) {
    uint32_t w = 0;
    for (int64_t b = 0; b < c; ++b) w |= uint32_t(x[b * ld + p] < thr[b]) << b;
    out[p] = w;
  }
  if (stream) _mm_sfence();
}

// More channels, plane by plane: for each channel of a word, one sequential pass over its plane sets
// that channel's bit in an L1-resident word buffer (a masked OR per 16 pixels). One long sequential
// read at a time is what the hardware prefetchers follow best; nothing is transposed bit by bit. Where
// every plane starts at the same offset within a line (ld a multiple of 16), the 16-pixel steps start
// `lead` pixels before pixel 0 so that each load covers one whole line (V8's large Float32Arrays start
// 16 bytes into one), the buffer shifted alike; the first step's lanes before pixel 0 are masked off.
void pack_nchw(const float* x, int64_t ld, int64_t count, int64_t c, const float* thr, uint32_t* out,
               bool stream) {
  if (c <= 16) return pack_nchw_few(x, ld, count, c, thr, out, stream);
  const int64_t wc = (c + 31) / 32;
  const int64_t lead = ld % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 4 == 0 ? reinterpret_cast<uintptr_t>(x) % 64 / 4 : 0;
  const int64_t full = (count + lead) / 16 * 16 - lead;  // the whole steps end here
  alignas(64) uint32_t buf[kPackRun + 16];
  for (int64_t w = 0; w < wc; ++w) {
    uint32_t* dst = wc == 1 && !stream ? out : buf + lead;
    const int64_t nb = c - w * 32 < 32 ? c - w * 32 : 32;
    for (int64_t b = 0; b < nb; ++b) {
      const float* plane = x + (w * 32 + b) * ld;
      const __m512 t = _mm512_set1_ps(thr[w * 32 + b]);
      const __m512i bit = _mm512_set1_epi32(int(1u << b));
      auto masked_step = [&](int64_t p, __mmask16 lanes) {
        __mmask16 m = _mm512_mask_cmp_ps_mask(lanes, loadu_ps(lanes, plane + p), t, _CMP_LT_OQ);
        __m512i prev = b == 0 ? _mm512_setzero_si512() : loadu_epi32(lanes, dst + p);
        storeu_epi32(dst + p, lanes, _mm512_mask_or_epi32(prev, m, prev, bit));
      };
      int64_t p = -lead;
      if (lead) masked_step(p, __mmask16(first_n(count + lead) & ~first_n(lead))), p += 16;
      // Whole vectors with plain loads and stores (masked stores are slow on some CPUs), then the tail.
      for (; p < full; p += 16) {
        // 8 KiB ahead, across 4 KiB pages (where the hardware prefetchers stop) and into the next plane:
        // at 2 KiB the loads still waited (C = 64 and 1024 10-20 % slower on one core).
        const int64_t ahead = p + 2048;
        _mm_prefetch(reinterpret_cast<const char*>(ahead < count ? plane + ahead : plane + ld + ahead - count), _MM_HINT_T0);
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(plane + p), t, _CMP_LT_OQ);
        __m512i prev = b == 0 ? _mm512_setzero_si512() : _mm512_loadu_si512(dst + p);
        _mm512_storeu_si512(dst + p, _mm512_mask_or_epi32(prev, m, prev, bit));
      }
      if (p < count) masked_step(p, first_n(count - p));
    }
    const uint32_t* words = buf + lead;
    if (wc > 1) {
      for (int64_t p = 0; p < count; ++p) out[p * wc + w] = words[p];
    } else if (stream) {  // one word per pixel: whole lines streamed, the rest stored
      int64_t p = 0;
      for (; p < count && (reinterpret_cast<uintptr_t>(out + p) & 63); ++p) out[p] = words[p];
      for (; p + 16 <= count; p += 16) store_line(out + p, _mm512_loadu_si512(words + p), true);
      for (; p < count; ++p) out[p] = words[p];
      _mm_sfence();
    }
  }
}

void distances(const uint32_t* row, const uint32_t* rows, int64_t n, int64_t kw, int32_t* hamming,
               int32_t* diff_words) {
  for (int64_t v = 0; v < n; ++v) {
    const uint32_t* other = rows + v * kw;
    __m512i h = _mm512_setzero_si512();
    int32_t dw = 0;
    for (int64_t k = 0; k < kw; k += 16) {
      __mmask16 m = first_n(kw - k);
      __m512i x = _mm512_xor_si512(loadu_epi32(m, row + k), loadu_epi32(m, other + k));
      h = _mm512_add_epi32(h, _mm512_popcnt_epi32(x));
      dw += __builtin_popcount(_mm512_test_epi32_mask(x, x));
    }
    hamming[v] = _mm512_reduce_add_epi32(h);
    diff_words[v] = dw;
  }
}

void out_int32(const int32_t* v, int32_t k, int32_t m, int64_t n, int32_t* out) {
  const Transform16 tf(k, m, nullptr);
  for (int64_t c = 0; c < n; c += 16) {
    __mmask16 lanes = first_n(n - c);
    storeu_epi32(out + c, lanes, tf.dot(loadu_epi32(lanes, v + c)));
  }
}

void out_float(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
               int64_t n, float* out) {
  const Transform16 tf(k, m, clamp);
  for (int64_t c = 0; c < n; c += 16) {
    __mmask16 lanes = first_n(n - c);
    __m512 y = tf.value(loadu_epi32(lanes, v + c), loadu_ps(lanes, scale + c),
                        loadu_ps(lanes, bias + c));
    storeu_ps(out + c, lanes, y);
  }
}

void out_bits(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
              int64_t n, uint32_t* out) {
  const Transform16 tf(k, m, clamp);
  for (int64_t w = 0; w * 32 < n; ++w) {
    uint32_t word = 0;
    for (int h = 0; h < 2; ++h) {
      const int64_t c = w * 32 + 16 * h;
      const __mmask16 lanes = first_n(n - c);
      word |= uint32_t(tf.negative(lanes, loadu_epi32(lanes, v + c), loadu_ps(lanes, scale + c),
                                   loadu_ps(lanes, bias + c)))
              << (16 * h);
    }
    out[w] = word;
  }
}

void sign_bits(const int32_t* v, int64_t n, int32_t k, float scale, float bias, const float* clamp, uint32_t* out) {
  const Transform16 tf(k, -2, clamp);
  const __m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(bias);
  int64_t w = 0;
  for (; w * 32 + 32 <= n; ++w) {  // whole words: plain loads (masked ones are slower on some CPUs)
    const __mmask16 all = 0xffff;
    const uint32_t lo = tf.negative(all, _mm512_loadu_si512(v + w * 32), s, b);
    const uint32_t hi = tf.negative(all, _mm512_loadu_si512(v + w * 32 + 16), s, b);
    out[w] = lo | hi << 16;
  }
  for (; w * 32 < n; ++w) {
    uint32_t word = 0;
    for (int h = 0; h < 2; ++h) {
      const int64_t i = w * 32 + 16 * h;
      const __mmask16 lanes = first_n(n - i);
      word |= uint32_t(tf.negative(lanes, loadu_epi32(lanes, v + i), s, b)) << (16 * h);
    }
    out[w] = word;
  }
}

// The data stay in registers: this is the ALU ceiling of XOR + popcount + add, with no loads.
uint64_t popcount_loop(const uint32_t* data, int64_t reps) {
  __m512i d[16], acc[8];
  for (int j = 0; j < 16; ++j) d[j] = _mm512_loadu_si512(data + 16 * j);
  for (auto& a : acc) a = _mm512_setzero_si512();
  for (int64_t r = 0; r < reps; ++r) {
    __m512i key = _mm512_set1_epi32(int(r));
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) acc[j & 7] = _mm512_add_epi32(acc[j & 7], popc_xor(d[j], key));
  }
  uint64_t s = 0;
  for (auto& a : acc) s += uint32_t(_mm512_reduce_add_epi32(a));
  return s;
}

}  // namespace

const Kernels& kernels_avx512() {
  // GFNI and VBMI come with most AVX-512 CPUs but not all of them (Skylake-X has neither); XNORM_GFNI=0
  // keeps the plain bit_rows (tests compare the two).
  static const bool gfni = __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx512vbmi") &&
                           !(std::getenv("XNORM_GFNI") && std::string(std::getenv("XNORM_GFNI")) == "0");
  static const Kernels k{dense_panel, gfni ? bit_rows_gfni : bit_rows, shifted_rows_any, sliced_edge, value_planes, sliced_child_any, pack_nhwc, pack_nchw, distances, transpose_words_avx2, out_int32, out_float, out_bits, sign_bits, popcount_loop};
  return k;
}

}  // namespace xnorm::bconv
