// AVX2 kernels. AVX2 has no vector popcount: bytes are counted with a 16-entry pshufb table (nibbles),
// accumulated as bytes for up to 31 steps (8 * 31 < 256), then widened to 32-bit lanes with
// maddubs/madd, which keeps the per-word cost to a handful of simple operations.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bconv.h"
#include "epilogue.h"
#include "kernels.h"
#include "sliced.h"
#include "transpose8x8.h"

namespace xnorm::bconv {
namespace {

constexpr int64_t kByteSteps = 31;

struct Popc {
  __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2,
                                 3, 3, 4);
  __m256i low = _mm256_set1_epi8(0x0f);
  __m256i ones8 = _mm256_set1_epi8(1);
  __m256i ones16 = _mm256_set1_epi16(1);
  // Per-byte popcount (0..8).
  __m256i bytes(__m256i v) const {
    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    return _mm256_add_epi8(lo, hi);
  }
  // Sums of the 4 byte counts of each 32-bit lane.
  __m256i widen(__m256i b) const { return _mm256_madd_epi16(_mm256_maddubs_epi16(b, ones8), ones16); }
};

// The output transform of 8 channels, as output_value (epilogue.h) computes it for one.
struct Transform8 {
  __m256i k, m;
  __m256 lo, hi;
  const float* clamp;
  bool popcounts;  // m = -2: a shift instead of a (slower) 32-bit multiply
  Transform8(int32_t k_, int32_t m_, const float* clamp_)
      : k(_mm256_set1_epi32(k_)), m(_mm256_set1_epi32(m_)), lo(_mm256_set1_ps(clamp_ ? clamp_[0] : 0.0f)),
        hi(_mm256_set1_ps(clamp_ ? clamp_[1] : 0.0f)), clamp(clamp_), popcounts(m_ == -2) {}
  __m256i dot(__m256i v) const {
    return popcounts ? _mm256_sub_epi32(k, _mm256_slli_epi32(v, 1)) : _mm256_add_epi32(k, _mm256_mullo_epi32(m, v));
  }
  __m256i dot(const int32_t* v) const { return dot(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v))); }
  __m256 value(__m256i v, __m256 scale, __m256 bias) const {
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(dot(v)), scale);
    __asm__("" : "+x"(y));  // keeps the product rounded: the compiler may not fuse it with the add
    y = _mm256_add_ps(y, bias);
    return clamp ? _mm256_min_ps(hi, _mm256_max_ps(lo, y)) : y;  // = std::min(std::max(y, lo), hi)
  }
  __m256 value(const int32_t* v, const float* scale, const float* bias) const {
    return value(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)), _mm256_loadu_ps(scale), _mm256_loadu_ps(bias));
  }
};

// The fused output (Epilogue) of MR pixels x 8 * NQ consecutive channels from ch0, from the popcounts
// in registers: whole vectors, as output_value computes each value (epilogue.h's scalar form took a
// fifth of the 128-channel layers' time). Float rows of whole cache lines are streamed where asked.
template <int MR, int NQ>
void finish_block(const __m256i (*acc)[4], const Epilogue& ep, int64_t pix0, int64_t ch0, int32_t* p, int64_t ldp) {
  const Transform8 tf(ep.k, -2, ep.clamp);
  const auto raw = [&](int r) {
    if (!ep.raw || !ep.raw[pix0 + r]) return false;
    for (int q = 0; q < NQ; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + r * ldp + ch0 + 8 * q), acc[r][q]);
    return true;
  };
  if (ep.kind == Output::Int32) {
    for (int r = 0; r < MR; ++r) {
      if (raw(r)) continue;
      int32_t* o = static_cast<int32_t*>(ep.out) + (pix0 + r) * ep.ldo + ch0;
      for (int q = 0; q < NQ; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8 * q), tf.dot(acc[r][q]));
    }
    return;
  }
  __m256 scale[NQ], bias[NQ];
  for (int q = 0; q < NQ; ++q) scale[q] = _mm256_loadu_ps(ep.scale + ch0 + 8 * q), bias[q] = _mm256_loadu_ps(ep.bias + ch0 + 8 * q);
  const auto value = [&](int r, int q) { return tf.value(acc[r][q], scale[q], bias[q]); };
  if (ep.kind == Output::Bits) {
    for (int r = 0; r < MR; ++r) {
      if (raw(r)) continue;
      uint32_t word = 0;
      for (int q = 0; q < NQ; ++q)
        word |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(value(r, q), _mm256_setzero_ps(), _CMP_LT_OQ))) << (8 * q);
      static_cast<uint32_t*>(ep.out)[(pix0 + r) * ep.ldo + ch0 / 32] = word;
    }
    return;
  }
  for (int r = 0; r < MR; ++r) {
    if (raw(r)) continue;
    float* o = static_cast<float*>(ep.out) + (pix0 + r) * ep.ldo + ch0;
    if (NQ == 4 && ep.stream && (reinterpret_cast<uintptr_t>(o) & 63) == 0) {
      for (int q = 0; q < NQ; ++q) _mm256_stream_ps(o + 8 * q, value(r, q));
    } else {
      for (int q = 0; q < NQ; ++q) _mm256_storeu_ps(o + 8 * q, value(r, q));
    }
  }
}

// MR pixels x 8 * NQ channels (NQ = 2 for a half_panel, whose other channels are empty). Bytes count
// up to kByteSteps words, then widen into the 32-bit sums. WG > 0 fixes the words per tap at compile
// time (small channel counts: the word loop unrolls, and the byte counts widen between taps). nvalid:
// the panel's consecutive channels (consecutive_channels), 8 * NQ for the vector epilogue.
template <int MR, int NQ, int WG>
void dense_tile(const Popc& pc, const uint32_t* const* rows, int64_t taps, int64_t wg_runtime, int64_t off,
                const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, int nvalid,
                const Epilogue* ep, int64_t pix0) {
  static_assert(WG <= kByteSteps, "a tap's words fit in the byte counts");
  __m256i acc[MR][4], b8[MR][NQ];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm256_setzero_si256();
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NQ; ++q) b8[r][q] = _mm256_setzero_si256();
  const auto widen = [&] {
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NQ; ++q) {
        acc[r][q] = _mm256_add_epi32(acc[r][q], pc.widen(b8[r][q]));
        b8[r][q] = _mm256_setzero_si256();
      }
  };
  if (ep && ep->kind == Output::Float && !ep->stream) {
    // The output lines, fetched for writing now: their misses overlap the popcounts, not the stores.
    const char* out = static_cast<const char*>(ep->out) + (pix0 * ep->ldo + ch[0]) * 4;
    for (int r = 0; r < MR; ++r) {
      __builtin_prefetch(out + r * ep->ldo * 4, 1);
      __builtin_prefetch(out + r * ep->ldo * 4 + 64, 1);
    }
  }
  const int64_t wg = WG > 0 ? WG : wg_runtime;
  int64_t steps = 0;  // words in the byte counts
  for (int64_t t = 0; t < taps; ++t) {
    const uint32_t* src[MR];
    for (int r = 0; r < MR; ++r) src[r] = rows[r * taps + t] + off;
    const uint32_t* wt = panel + t * wg * kPanelWidth;
    if (WG > 0 && steps + WG > kByteSteps) widen(), steps = 0;
    for (int64_t j = 0; j < wg; ++j) {
      if (WG == 0 && steps == kByteSteps) widen(), steps = 0;
      for (int q = 0; q < NQ; ++q) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + j * kPanelWidth + 8 * q));
        for (int r = 0; r < MR; ++r)
          b8[r][q] = _mm256_add_epi8(b8[r][q], pc.bytes(_mm256_xor_si256(_mm256_set1_epi32(int(src[r][j])), w)));
      }
      ++steps;
    }
  }
  widen();
  if (ep && nvalid == 8 * NQ) {
    finish_block<MR, NQ>(acc, *ep, pix0, ch[0], p, ldp);
    return;
  }
  alignas(32) int32_t buf[MR][kPanelWidth];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(buf[r] + 8 * q), acc[r][q]);
  finish_tile<MR>(buf, ch, ep, pix0, p, ldc, ldp);
}

void dense_panel(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                 const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp, const Epilogue* ep) {
  Popc pc;
  const int nvalid = ep ? consecutive_channels(ch) : 0;  // once per panel, not per tile
  auto tiles = [&](auto nq, auto words) {
    int64_t i = 0;
    for (; i + 2 <= npix; i += 2)
      dense_tile<2, nq(), words()>(pc, rows + i * taps, taps, wg, off, panel, ch, p + i * ldp, ldc, ldp, nvalid, ep, i);
    if (i < npix) dense_tile<1, nq(), words()>(pc, rows + i * taps, taps, wg, off, panel, ch, p + i * ldp, ldc, ldp, nvalid, ep, i);
  };
  auto by_words = [&](auto nq) {
    switch (wg) {
      case 1: return tiles(nq, std::integral_constant<int, 1>{});
      case 2: return tiles(nq, std::integral_constant<int, 2>{});
      case 4: return tiles(nq, std::integral_constant<int, 4>{});
      case 8: return tiles(nq, std::integral_constant<int, 8>{});
      default: return tiles(nq, std::integral_constant<int, 0>{});
    }
  };
  if (half_panel(ch)) return by_words(std::integral_constant<int, 2>{});
  by_words(std::integral_constant<int, 4>{});
}

// Bit k of 32 pixels at a time: an in-lane byte shuffle and a dword permute per input register gather
// byte k / 8 of the 32 pixels into one register; a shift brings bit k % 8 of every byte to its top and
// movemask reads the 32 of them.
void bit_rows(const uint32_t* at, int64_t ldat, int64_t kw, int64_t nb, uint64_t* rows) {
  // Within each 128-bit lane (4 pixels): dword b = byte b of the 4 pixels.
  const __m256i by_byte = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5,
                                           9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t w = 0; w < kw; ++w)
    for (int64_t half = 0; half < 2 * nb; ++half) {
      const uint32_t* px = at + w * ldat + 32 * half;
      __m256i y[4];
      for (int r = 0; r < 4; ++r)
        y[r] = _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(px + 8 * r)), by_byte);
      auto* out = reinterpret_cast<uint32_t*>(rows) + half;  // the 32-bit half of each row's 64-bit word
      for (int byte = 0; byte < 4; ++byte) {
        // Register r's dwords byte and 4 + byte (pixels 8r .. 8r + 7) go to dwords 2r and 2r + 1.
        const __m256i idx = _mm256_setr_epi32(byte, 4 + byte, byte, 4 + byte, byte, 4 + byte, byte, 4 + byte);
        __m256i v = _mm256_permutevar8x32_epi32(y[0], idx);
        v = _mm256_blend_epi32(v, _mm256_permutevar8x32_epi32(y[1], idx), 0x0c);
        v = _mm256_blend_epi32(v, _mm256_permutevar8x32_epi32(y[2], idx), 0x30);
        v = _mm256_blend_epi32(v, _mm256_permutevar8x32_epi32(y[3], idx), 0xc0);
        for (int b = 0; b < 8; ++b)
          out[((32 * w + 8 * byte + b) * nb) * 2] = uint32_t(_mm256_movemask_epi8(_mm256_slli_epi64(v, 7 - b)));
      }
    }
}

void sliced_edge(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                 const int32_t* parent, int32_t* child) {
  sliced_edge_any(rows, nb, pos, npos, zeros, parent, child, expand_scalar);
}

// Fewer than 32 channels (one word per pixel): 8 pixels at a time read as 8 * c contiguous floats,
// compared in whole vectors against the thresholds laid out the same way, each pixel's c bits then cut
// out of the resulting bit string: by variable shifts of 64-bit lanes while the 8 pixels fit in 64 bits
// (c <= 8), else by scalar shifts (per pixel, C = 3 made 3 scalar compares: 11-21 % of the read
// bandwidth). Each line is fetched 4 KiB ahead, as the AVX-512 kernel does (streamed stores of the
// words, as it makes, measured no faster here).
void pack_nhwc_narrow(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out) {
  __m256 tv[31];  // thresholds of element e of a block at lane e % 8 of vector e / 8: channel e % c
  for (int64_t v = 0; v < c; ++v) {
    alignas(32) float t[8];
    for (int l = 0; l < 8; ++l) t[l] = thr[(v * 8 + l) % c];
    tv[v] = _mm256_load_ps(t);
  }
  const uint64_t keep = (uint64_t(1) << c) - 1;
  const __m256i keep_v = _mm256_set1_epi64x(int64_t(keep));
  const __m256i at_lo = _mm256_setr_epi64x(0, c, 2 * c, 3 * c), at_hi = _mm256_setr_epi64x(4 * c, 5 * c, 6 * c, 7 * c);
  const __m256i low_dwords = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  int64_t i = 0;
  for (; i + 8 <= pixels; i += 8) {
    const float* px = x + i * c;
    for (int64_t v = 0; v < c; v += 2) _mm_prefetch(reinterpret_cast<const char*>(px + 8 * v) + 4096, _MM_HINT_T0);
    uint64_t a[4] = {};  // the 8 * c bits (<= 248) as 64-bit words
    for (int64_t v = 0; v < c; ++v)
      a[v >> 3] |= uint64_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(px + 8 * v), tv[v], _CMP_LT_OQ))) << (8 * (v & 7));
    __m256i* d = reinterpret_cast<__m256i*>(out + i);
    if (c <= 8) {
      const __m256i all = _mm256_set1_epi64x(int64_t(a[0]));
      const __m256i lo = _mm256_permutevar8x32_epi32(_mm256_and_si256(_mm256_srlv_epi64(all, at_lo), keep_v), low_dwords);
      const __m256i hi = _mm256_permutevar8x32_epi32(_mm256_and_si256(_mm256_srlv_epi64(all, at_hi), keep_v), low_dwords);
      _mm256_storeu_si256(d, _mm256_permute2x128_si256(lo, hi, 0x20));
      continue;
    }
    for (int64_t p = 0; p < 8; ++p) {
      const int64_t o = p * c, w = o >> 6, b = o & 63;
      const uint64_t bits = b && w < 3 ? a[w] >> b | a[w + 1] << (64 - b) : a[w] >> b;
      out[i + p] = uint32_t(bits & keep);
    }
  }
  for (; i < pixels; ++i) {  // the last pixels, one at a time
    uint32_t w = 0;
    for (int64_t ch = 0; ch < c; ++ch) w |= uint32_t(x[i * c + ch] < thr[ch]) << ch;
    out[i] = w;
  }
}

void pack_nhwc(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out, bool /*stream*/) {
  if (c < 32) return pack_nhwc_narrow(x, pixels, c, thr, out);
  int64_t wc = (c + 31) / 32;
  for (int64_t i = 0; i < pixels; ++i) {
    const float* px = x + i * c;
    for (int64_t w = 0; w < wc; ++w) {
      int64_t c0 = w * 32, n = c - c0 < 32 ? c - c0 : 32;
      uint32_t word = 0;
      int64_t b = 0;
      for (; b + 8 <= n; b += 8) {
        __m256 v = _mm256_cmp_ps(_mm256_loadu_ps(px + c0 + b), _mm256_loadu_ps(thr + c0 + b), _CMP_LT_OQ);
        word |= uint32_t(_mm256_movemask_ps(v)) << b;
      }
      for (; b < n; ++b) word |= uint32_t(px[c0 + b] < thr[c0 + b]) << b;
      out[i * wc + w] = word;
    }
  }
}

// Plane by plane into an L1-resident word buffer, as the AVX-512 version.
void pack_nchw(const float* x, int64_t ld, int64_t count, int64_t c, const float* thr, uint32_t* out,
               bool /*stream*/) {
  const int64_t wc = (c + 31) / 32, full = count / 8 * 8;
  alignas(32) uint32_t buf[kPackRun];
  for (int64_t w = 0; w < wc; ++w) {
    uint32_t* dst = wc == 1 ? out : buf;
    const int64_t nb = c - w * 32 < 32 ? c - w * 32 : 32;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t ch = w * 32 + b;
      const float* plane = x + ch * ld;
      const __m256 t = _mm256_set1_ps(thr[ch]);
      const __m256i bit = _mm256_set1_epi32(int(1u << b));
      for (int64_t p = 0; p < full; p += 8) {
        // 2 KiB ahead, across 4 KiB pages (where the hardware prefetchers stop) and into the next plane.
        _mm_prefetch(reinterpret_cast<const char*>(p + 512 < count ? plane + p + 512 : plane + ld + p + 512 - count), _MM_HINT_T0);
        __m256i m = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(plane + p), t, _CMP_LT_OQ)), bit);
        __m256i* d = reinterpret_cast<__m256i*>(dst + p);
        _mm256_storeu_si256(d, b == 0 ? m : _mm256_or_si256(_mm256_loadu_si256(d), m));
      }
      for (int64_t p = full; p < count; ++p) dst[p] = (b == 0 ? 0u : dst[p]) | (uint32_t(plane[p] < thr[ch]) << b);
    }
    if (wc > 1)
      for (int64_t p = 0; p < count; ++p) out[p * wc + w] = buf[p];
  }
}

void distances(const uint32_t* row, const uint32_t* rows, int64_t n, int64_t kw, int32_t* hamming,
               int32_t* diff_words) {
  for (int64_t v = 0; v < n; ++v) {
    int32_t h = 0, dw = 0;
    for (int64_t k = 0; k < kw; ++k) {
      uint32_t x = row[k] ^ rows[v * kw + k];
      h += __builtin_popcount(x);  // -mpopcnt: one instruction
      dw += x != 0;
    }
    hamming[v] = h;
    diff_words[v] = dw;
  }
}

void out_int32(const int32_t* v, int32_t k, int32_t m, int64_t n, int32_t* out) {
  const Transform8 tf(k, m, nullptr);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), tf.dot(v + c));
  for (; c < n; ++c) out[c] = k + m * v[c];
}

void out_float(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
               int64_t n, float* out) {
  const Transform8 tf(k, m, clamp);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) _mm256_storeu_ps(out + c, tf.value(v + c, scale + c, bias + c));
  for (; c < n; ++c) out[c] = output_value(k + m * v[c], scale[c], bias[c], clamp);
}

void out_bits(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
              int64_t n, uint32_t* out) {
  const Transform8 tf(k, m, clamp);
  for (int64_t w = 0; w * 32 < n; ++w) {
    uint32_t word = 0;
    int64_t b = 0;
    const int64_t nb = n - w * 32 < 32 ? n - w * 32 : 32;
    for (; b + 8 <= nb; b += 8) {
      const int64_t c = w * 32 + b;
      __m256 neg = _mm256_cmp_ps(tf.value(v + c, scale + c, bias + c), _mm256_setzero_ps(), _CMP_LT_OQ);
      word |= uint32_t(_mm256_movemask_ps(neg)) << b;
    }
    for (; b < nb; ++b) {
      const int64_t c = w * 32 + b;
      word |= uint32_t(output_value(k + m * v[c], scale[c], bias[c], clamp) < 0.0f) << b;
    }
    out[w] = word;
  }
}

void sign_bits(const int32_t* v, int64_t n, int32_t k, float scale, float bias, const float* clamp, uint32_t* out) {
  const Transform8 tf(k, -2, clamp);
  float scales[8], biases[8];  // one channel's: the same in every lane
  for (int l = 0; l < 8; ++l) scales[l] = scale, biases[l] = bias;
  for (int64_t w = 0; w * 32 < n; ++w) {
    uint32_t word = 0;
    int64_t i = w * 32;
    const int64_t end = std::min<int64_t>(n, i + 32);
    for (; i + 8 <= end; i += 8) {
      const __m256 neg = _mm256_cmp_ps(tf.value(v + i, scales, biases), _mm256_setzero_ps(), _CMP_LT_OQ);
      word |= uint32_t(_mm256_movemask_ps(neg)) << (i - w * 32);
    }
    for (; i < end; ++i) word |= uint32_t(output_value(k - 2 * v[i], scale, bias, clamp) < 0.0f) << (i - w * 32);
    out[w] = word;
  }
}

// Eight data vectors stay in registers and are counted four times per pass (256 words): the ALU
// ceiling of the pshufb popcount, with no loads.
uint64_t popcount_loop(const uint32_t* data, int64_t reps) {
  Popc pc;
  __m256i d[8], acc[4];
  for (int j = 0; j < 8; ++j) d[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + 8 * j));
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (int64_t r = 0; r < reps; ++r) {
    __m256i s[4], key[4];
    for (auto& v : s) v = _mm256_setzero_si256();
    for (int q = 0; q < 4; ++q) key[q] = _mm256_set1_epi32(int(4 * r + q));
#pragma GCC unroll 32
    for (int j = 0; j < 32; ++j)  // 8 byte-steps per accumulator stay below 256
      s[j & 3] = _mm256_add_epi8(s[j & 3], pc.bytes(_mm256_xor_si256(d[j & 7], key[j >> 3])));
    for (int q = 0; q < 4; ++q) acc[q] = _mm256_add_epi32(acc[q], pc.widen(s[q]));
  }
  alignas(32) uint32_t buf[8];
  uint64_t total = 0;
  for (auto& a : acc) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf), a);
    for (uint32_t v : buf) total += v;
  }
  return total;
}

}  // namespace

const Kernels& kernels_avx2() {
  static const Kernels k{dense_panel, bit_rows, shifted_rows_any, sliced_edge, value_planes_scalar, sliced_child_any, pack_nhwc, pack_nchw, distances, transpose_words_avx2, out_int32, out_float, out_bits, sign_bits, popcount_loop};
  return k;
}

}  // namespace xnorm::bconv
