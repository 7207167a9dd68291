// Per-ISA kernels for binary convolution and MST plans. Each *_<isa>.cc fills one table.
#pragma once
#include <cstdint>

#include "bconv.h"

namespace xnorm::bconv {

// The output transform applied by dense_panel itself to each finished block of a pixel-major tile
// whose panel holds consecutive channels (for 'bits', starting on a 32-channel word): the popcounts
// go from registers to the output and never through memory. Pixel i of the tile is written at
// out + i * ldo (elements; words for 'bits'), channel ch[0] + c at offset ch[0] + c (word ch[0] / 32).
// Pixels with raw[i] set (border pixels under 'zero' padding) get their popcounts stored to P instead,
// for the correction pass. Values as out_int32 / out_float / out_bits compute them.
struct Epilogue {
  Output kind = Output::Int32;
  int32_t k = 0;                                       // dot = k - 2 * popcount
  const float *scale = nullptr, *bias = nullptr;       // per channel ('float', 'bits')
  const float* clamp = nullptr;                        // [lo, hi] or null ('float', 'bits')
  void* out = nullptr;
  int64_t ldo = 0;
  const uint8_t* raw = nullptr;                        // per pixel of the tile; null: none
  bool stream = false;  // 'float': non-temporal stores for rows of whole cache lines; the caller fences
};

// Most pixels pack_nchw takes per call: its word buffer (16 KiB) stays in L1 while each plane is read
// in one sequential run of 16 KiB.
constexpr int64_t kPackRun = 4096;

// A panel whose channels 16 to 31 are all empty: the AVX-512 and AVX2 dense kernels count only its
// first 16 channels, at half the cost (MST plans fill their root panels to a multiple of 16).
constexpr int kHalfPanel = kPanelWidth / 2;
inline bool half_panel(const uint32_t* ch) {
  for (int c = kHalfPanel; c < kPanelWidth; ++c)
    if (ch[c] != kNoChannel) return false;
  return true;
}

struct Kernels {
  // One panel (32 channels of one group, data [Kw][32], Kw = taps * wg) against npix pixels. Pixel i's
  // words for tap t are the wg words at rows[i * taps + t] + off: an indirection buffer pointing into
  // the input itself, into an im2col copy, or at a zero row for padding.
  // P[ch[c] * ldc + i * ldp] = sum_k popcount(x_i[k] ^ panel[k][c]) for every c with ch[c] != kNoChannel.
  // ldc = 1 (pixel-major tile, contiguous channels) lets the kernel store whole vectors. With `ep`
  // (pixel-major, consecutive channels only) the output is written instead, see Epilogue.
  void (*dense_panel)(const uint32_t* const* rows, int64_t taps, int64_t wg, int64_t off, int64_t npix,
                      const uint32_t* panel, const uint32_t* ch, int32_t* p, int64_t ldc, int64_t ldp,
                      const Epilogue* ep);
  // Tap-bit-major rows of a tile, for the bit-sliced MST edges: bit i of rows[k * nb + j] is bit k of
  // the input words of pixel 64 j + i (k < 32 * kw). From the word-major tile at (at[w * ldat + p], zero
  // past the tile's pixels, ldat >= 64 * nb).
  void (*bit_rows)(const uint32_t* at, int64_t ldat, int64_t kw, int64_t nb, uint64_t* rows);
  // The tap-bit-major rows of one tap from an input pixel's (stride 1, output as large as the input:
  // a tap reads the input pixel a fixed distance away): dst[r * nb + j] = bits [shift + 64 j, shift +
  // 64 j + 64) of src row r (lds words, at least nb + shift / 64 + 1) and'ed with mask[j], r < nrows,
  // nb = 1, 2, 4 or 8.
  void (*shifted_rows)(const uint64_t* src, int64_t lds, int64_t nrows, int64_t shift, const uint64_t* mask,
                       int64_t nb, uint64_t* dst);
  // One MST edge over 64 * nb pixels (nb = 1, 2, 4 or 8), bit-sliced (sliced.h): pos holds npos entries
  // k << 1 | the parent's weight bit at position k, the first `zeros` of them of parent bit 0;
  // child[i] = parent[i] + npos - 2 S[i].
  void (*sliced_edge)(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                      const int32_t* parent, int32_t* child);
  // 'bits' output of MST tiles in bit planes: a channel's values (popcounts less a threshold, two's
  // complement modulo 2^nt) over 64 * nb pixels as nt planes of nb words, bit i of planes[l * nb + j] =
  // bit l of pixel 64 j + i's value. value_planes: from int32 values; sliced_child: a child's planes
  // (parent + add - 2 S over an edge as sliced_edge takes it) to `child` unless it is null, and their
  // top plane (the sign) xor invert to `sign` (nb words).
  void (*value_planes)(const int32_t* v, int64_t nb, int nvp, uint64_t* planes);
  void (*sliced_child)(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                       uint32_t add, const uint64_t* parent, int nt, uint64_t* child, bool invert, uint64_t* sign);
  // NHWC pixels of C floats -> ceil(C/32) words each; bit = x < thr[c]. With `stream` (an output
  // larger than the caches) the kernels that can write it with non-temporal stores where whole 64-byte
  // lines allow (C < 32: 1 word per pixel, up to a third of the bytes read), fenced before they return.
  void (*pack_nhwc)(const float* x, int64_t pixels, int64_t c, const float* thr, uint32_t* out, bool stream);
  // One image's NCHW planes (plane stride ld floats), pixels [0, count) -> words [count][ceil(C/32)];
  // count <= kPackRun where C > 16 (the word buffer), any count for C <= 16. `stream` as for pack_nhwc.
  void (*pack_nchw)(const float* x, int64_t ld, int64_t count, int64_t c, const float* thr, uint32_t* out,
                    bool stream);
  // Hamming distance and number of differing words between row and each of n rows of kw words.
  void (*distances)(const uint32_t* row, const uint32_t* rows, int64_t n, int64_t kw, int32_t* hamming,
                    int32_t* diff_words);
  // dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: the word-major tile bit_rows reads, and
  // the way back to pixel-major for the output pass.
  void (*transpose)(const uint32_t* src, int64_t rows, int64_t cols, int64_t lds, uint32_t* dst, int64_t ldd);
  // The output of one pixel from int32 values v[c], c < n, with dot = k + m * v[c] (popcounts: k = K,
  // m = -2; corrected dot products: k = 0, m = 1). 'float' is float(dot) * scale + bias rounded after
  // the product (never an FMA, as the reference computes it), clamped to [clamp[0], clamp[1]] when
  // clamp is not null; 'bits' is its sign, bit c = 1 where that value is < 0 (tail bits 0), so it is
  // packBits of the float output by construction.
  void (*out_int32)(const int32_t* v, int32_t k, int32_t m, int64_t n, int32_t* out);
  void (*out_float)(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
                    int64_t n, float* out);
  void (*out_bits)(const int32_t* v, int32_t k, int32_t m, const float* scale, const float* bias, const float* clamp,
                   int64_t n, uint32_t* out);
  // 'bits' of one output channel over n pixels of a channel-major tile, from its popcounts v (dot =
  // k - 2 * v), values as out_bits computes them: bit i of out[i / 32] (tail bits 0). Null for the
  // portable kernels: the caller then goes through pixel-major rows and out_bits.
  void (*sign_bits)(const int32_t* v, int64_t n, int32_t k, float scale, float bias, const float* clamp,
                    uint32_t* out);
  // Peak loop: `reps` passes of XOR+popcount over 256 L1-resident words; returns a checksum.
  uint64_t (*popcount_loop)(const uint32_t* data, int64_t reps);
};

const Kernels& kernels_portable();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_neon();  // aarch64 builds only
const Kernels& active_kernels();

}  // namespace xnorm::bconv
