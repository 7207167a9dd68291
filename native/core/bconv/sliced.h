// The bit-sliced MST edge (kernels.h, Kernels::sliced_edge), written once over GCC vector types so each
// kernel file compiles it for its own ISA (an NB-word vector is one zmm with AVX-512, two ymm with
// AVX2). Each kernel file includes it in its own anonymous namespace and passes its expansion step.
//
// A child j of parent i differs from it at positions D; per pixel
//   popc_j = popc_i + |D| - 2 S,  S = sum over k in D of (x_k xor w_ik),
// and S is counted for 64 * NB pixels at once: row k of the tile holds bit k of every pixel, each term
// is that row or its complement, and the terms are summed with carry-save adders into bit planes
// (plane l holds bit l of every pixel's S). The cost grows with |D|, not with the words D touches.
#pragma once
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "bconv.h"

namespace xnorm::bconv {
namespace {

// S < 2^kMaxPlanes for any K a layer can have (K < 2^31 bits).
constexpr int kMaxPlanes = 32;

template <int NB>
struct Planes {
  typedef uint64_t V __attribute__((vector_size(8 * NB), aligned(8)));

  // Carry-save adder: (hi, lo) = a + b' + c', bit by bit, where b' and c' are b and c, or their
  // complements with Flip (the terms of positions whose parent bit is 1: the complement costs nothing,
  // it only changes the majority's truth table; the three-way xor is the same). (Vectors by reference:
  // no vector passes through a call boundary, whose ABI would differ between the kernel files.)
  template <bool Flip = false>
  static inline void csa(V& hi, V& lo, const V& a, const V& b, const V& c) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    // One ternary-logic instruction each (the compiler does not find them): majority and three-way xor.
    constexpr int kMajority = Flip ? 0x71 : 0xe8;
    if constexpr (NB == 8) {
      const __m512i x = __m512i(a), y = __m512i(b), z = __m512i(c);
      hi = V(_mm512_ternarylogic_epi64(x, y, z, kMajority));
      lo = V(_mm512_ternarylogic_epi64(x, y, z, 0x96));
      return;
    } else if constexpr (NB == 4) {
      const __m256i x = __m256i(a), y = __m256i(b), z = __m256i(c);
      hi = V(_mm256_ternarylogic_epi64(x, y, z, kMajority));
      lo = V(_mm256_ternarylogic_epi64(x, y, z, 0x96));
      return;
    } else if constexpr (NB == 2) {
      const __m128i x = __m128i(a), y = __m128i(b), z = __m128i(c);
      hi = V(_mm_ternarylogic_epi64(x, y, z, kMajority));
      lo = V(_mm_ternarylogic_epi64(x, y, z, 0x96));
      return;
    }
#endif
    const V u = b ^ c;
    hi = Flip ? ~(b | c) | (u & a) : (b & c) | (u & a);
    lo = u ^ a;
  }

  // Row k of position pos (k << kPositionShift | parent bit), as it is: the caller's Flip complements it.
  // Bit `Bit`: the parent bit the caller knows pos has; with 512-pixel rows pos less it is the row's
  // byte offset, so the address takes no shifts (a fifth less time per term than k << 1 | bit).
  template <int Bit = -1>
  static inline void row(V& x, const uint64_t* rows, uint32_t pos) {
    if constexpr (NB == 8 && Bit >= 0) {
      __builtin_memcpy(&x, reinterpret_cast<const char*>(rows) + (pos - uint32_t(Bit)), sizeof x);
    } else {
      __builtin_memcpy(&x, rows + int64_t(pos >> kPositionShift) * NB, sizeof x);
    }
  }
  // The term of a position whatever its parent bit (the one block where both meet, and the padded tail).
  static inline void term(V& x, const uint64_t* rows, uint32_t pos) {
    row(x, rows, pos);
    x ^= uint64_t(0) - (pos & 1u);
  }

  // Adds `carry`, worth 2^level, into planes [level, end) and leaves in it the carry out of plane
  // end - 1 (in place rather than returned: a vector return value changes the ABI between ISA units,
  // which GCC warns about in the portable one). The caller sizes the planes for the final S, which no
  // partial sum exceeds, so the last carry out of all the planes is always zero.
  static inline void ripple(V* plane, int level, int end, V& carry) {
    for (int l = level; l < end; ++l) {
      const V t = plane[l] & carry;
      plane[l] ^= carry;
      carry = t;
    }
  }

  // Eight terms into ones, twos and fours; the carry of weight 8 goes to `eights`.
  template <bool Flip>
  static inline void add8(V& eights, V& ones, V& twos, V& fours, const V* x) {
    V twos_a, twos_b, fours_a, fours_b;
    csa<Flip>(twos_a, ones, ones, x[0], x[1]);
    csa<Flip>(twos_b, ones, ones, x[2], x[3]);
    csa(fours_a, twos, twos, twos_a, twos_b);
    csa<Flip>(twos_a, ones, ones, x[4], x[5]);
    csa<Flip>(twos_b, ones, ones, x[6], x[7]);
    csa(fours_b, twos, twos, twos_a, twos_b);
    csa(eights, fours, fours, fours_a, fours_b);
  }

  // S of 64 * NB pixels into planes (little-endian bit order); returns the number of planes.
  // Harley-Seal: sixteen terms go through fifteen adders into ones, twos, fours, eights and one carry
  // of weight 16, rippled into planes 4 to 7 (in registers) and on into memory. The positions run as
  // one list, the first `zeros` of them of parent bit 0 (sliced_steps): blocks of one parent bit take
  // their rows as they are or complemented inside the adders, the one block where the bits meet
  // complements per term, and a tail of at most eight terms goes through seven adders only.
  static int count(const uint64_t* rows, const uint32_t* pos, int64_t npos, int64_t zeros, V* plane) {
    int nplanes = 4;
    while (nplanes < kMaxPlanes && (npos >> nplanes) != 0) ++nplanes;
    for (int l = 8; l < nplanes; ++l) plane[l] = V{};
    V ones{}, twos{}, fours{}, eights{}, high[4] = {}, x[16];
    // A carry of weight 16 into planes 4 and up.
    auto carry16 = [&](V& carry) __attribute__((always_inline)) {
      ripple(high, 0, 4, carry);
      if (nplanes > 8) ripple(plane, 8, nplanes, carry);
    };
    auto add16 = [&](auto flip) __attribute__((always_inline)) {
      V eights_a, eights_b, carry;
      add8<flip()>(eights_a, ones, twos, fours, x);
      add8<flip()>(eights_b, ones, twos, fours, x + 8);
      csa(carry, eights, eights, eights_a, eights_b);
      carry16(carry);
    };
    int64_t i = 0;
    for (; i + 16 <= npos; i += 16) {
      if (i + 16 <= zeros) {
        for (int q = 0; q < 16; ++q) row<0>(x[q], rows, pos[i + q]);
        add16(std::false_type{});
      } else if (i >= zeros) {
        for (int q = 0; q < 16; ++q) row<1>(x[q], rows, pos[i + q]);
        add16(std::true_type{});
      } else {
        for (int q = 0; q < 16; ++q) term(x[q], rows, pos[i + q]);
        add16(std::false_type{});
      }
    }
    const int64_t rest = npos - i;
    if (rest > 8) {
      for (int q = 0; q < 16; ++q) {
        if (q < rest) term(x[q], rows, pos[i + q]);
        else x[q] = V{};
      }
      add16(std::false_type{});
    } else if (rest > 0) {
      for (int q = 0; q < 8; ++q) {
        if (q < rest) term(x[q], rows, pos[i + q]);
        else x[q] = V{};
      }
      V eights_a, carry;
      add8<false>(eights_a, ones, twos, fours, x);
      carry = eights & eights_a;  // half adder into the eights
      eights ^= eights_a;
      carry16(carry);
    }
    plane[0] = ones, plane[1] = twos, plane[2] = fours, plane[3] = eights;
    for (int l = 4; l < std::min(nplanes, 8); ++l) plane[l] = high[l - 4];
    return nplanes;
  }
};

static_assert(sizeof(Planes<8>::V) == 64 && kPositionShift == 6, "k << kPositionShift is row k's offset at NB = 8");

// child[i] = parent[i] + npos - 2 S[i] for the 64 * NB pixels, by `expand` from the planes:
// expand(planes as 64-bit words [nplanes][NB], nplanes, NB, npos, parent, child) (expand_scalar, or a
// kernel file's vector form).
template <int NB, typename Expand>
void sliced_edge_nb(const uint64_t* rows, const uint32_t* pos, int64_t npos, int64_t zeros, const int32_t* parent,
                    int32_t* child, Expand expand) {
  typename Planes<NB>::V plane[kMaxPlanes];
  const int nplanes = Planes<NB>::count(rows, pos, npos, zeros, plane);
  expand(reinterpret_cast<const uint64_t*>(plane), nplanes, NB, int32_t(npos), parent, child);
}

// The expansion without vector masks (AVX2, portable), written so the compiler vectorizes it: per 64
// pixels, each plane adds 2^(l+1) to the pixels whose bit is set (an and with the pixel's bit, a compare,
// an and-not, an add: four operations per vector of pixels), then child = parent + d - 2 S. (Pixel by
// pixel and bit by bit, it cost more than the counting it follows.)
inline void expand_scalar(const uint64_t* planes, int nplanes, int nb, int32_t d, const int32_t* parent,
                          int32_t* child) {
  static constexpr uint32_t kBit[32] = {
      1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,  1u << 8,  1u << 9,  1u << 10,
      1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15, 1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21,
      1u << 22, 1u << 23, 1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};
  for (int j = 0; j < nb; ++j) {
    uint32_t twice[64] = {};  // 2 S (unsigned: no overflow for any S a layer can have)
    for (int l = 0; l < nplanes; ++l) {
      const uint64_t w = planes[l * nb + j];
      const uint32_t lo = uint32_t(w), hi = uint32_t(w >> 32), add = 2u << l;
      for (int i = 0; i < 32; ++i) twice[i] += (lo & kBit[i]) ? add : 0u;
      for (int i = 0; i < 32; ++i) twice[32 + i] += (hi & kBit[i]) ? add : 0u;
    }
    for (int i = 0; i < 64; ++i)
      child[64 * j + i] = int32_t(uint32_t(parent[64 * j + i]) + uint32_t(d) - twice[i]);
  }
}

// Kernels::shifted_rows for NB words per row: row r of dst is bits [shift, shift + 64 NB) of row r of src,
// and'ed with mask.
template <int NB>
void shifted_rows_nb(const uint64_t* src, int64_t lds, int64_t nrows, int64_t shift, const uint64_t* mask,
                     uint64_t* dst) {
  using V = typename Planes<NB>::V;
  const int64_t word = shift >> 6;
  const int bit = int(shift & 63);
  V m, lo, hi;
  __builtin_memcpy(&m, mask, sizeof m);
  for (int64_t r = 0; r < nrows; ++r) {
    __builtin_memcpy(&lo, src + r * lds + word, sizeof lo);
    __builtin_memcpy(&hi, src + r * lds + word + 1, sizeof hi);
    const V x = ((lo >> bit) | ((hi << 1) << (63 - bit))) & m;  // (two shifts: bit 0 would shift by 64)
    __builtin_memcpy(dst + r * NB, &x, sizeof x);
  }
}

// f(std::integral_constant<int, NB>) for nb = 1, 2, 4 or 8 (the caller's tile widths).
template <typename F>
inline void with_nb(int64_t nb, F&& f) {
  switch (nb) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

template <typename Expand>
void sliced_edge_any(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                     const int32_t* parent, int32_t* child, Expand expand) {
  with_nb(nb, [&](auto n) { sliced_edge_nb<n()>(rows, pos, npos, zeros, parent, child, expand); });
}

inline void shifted_rows_any(const uint64_t* src, int64_t lds, int64_t nrows, int64_t shift, const uint64_t* mask,
                             int64_t nb, uint64_t* dst) {
  with_nb(nb, [&](auto n) { shifted_rows_nb<n()>(src, lds, nrows, shift, mask, dst); });
}

// Kernels::sliced_child: child = parent + add - 2 S modulo 2^nt, plane by plane from bit 0 up with a
// borrow (the subtraction of 2 S, plane l of which is plane l - 1 of S) and a carry (the addition of
// `add`), kept only where asked; its top plane, the sign of a value in [-2^(nt-1), 2^(nt-1)), xor invert
// to `sign`. The child's value fits, so the modular result is exact whatever the partial ones.
template <int NB>
void sliced_child_nb(const uint64_t* rows, const uint32_t* pos, int64_t npos, int64_t zeros, uint32_t add,
                     const uint64_t* parent, int nt, uint64_t* child, bool invert, uint64_t* sign) {
  using V = typename Planes<NB>::V;
  V sum[kMaxPlanes];
  const int nsum = Planes<NB>::count(rows, pos, npos, zeros, sum);
  V borrow{}, carry{}, p, c{};
  for (int l = 0; l < nt; ++l) {
    __builtin_memcpy(&p, parent + l * NB, sizeof p);
    const V twice = l > 0 && l <= nsum ? sum[l - 1] : V{};
    const V diff = p ^ twice ^ borrow;
    borrow = (~p & (twice | borrow)) | (twice & borrow);
    const V a = V{} - ((add >> l) & 1u);  // plane l of `add`: all ones or zero
    c = diff ^ carry ^ a;
    carry = (diff & carry) | (a & (diff | carry));
    if (child) __builtin_memcpy(child + l * NB, &c, sizeof c);
  }
  if (invert) c = ~c;
  __builtin_memcpy(sign, &c, sizeof c);
}

inline void sliced_child_any(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, int64_t zeros,
                             uint32_t add, const uint64_t* parent, int nt, uint64_t* child, bool invert, uint64_t* sign) {
  with_nb(nb, [&](auto n) { sliced_child_nb<n()>(rows, pos, npos, zeros, add, parent, nt, child, invert, sign); });
}

// Kernels::value_planes without vector masks: bit i of planes[l * nb + j] is bit l of v[64 j + i].
inline void value_planes_scalar(const int32_t* v, int64_t nb, int nvp, uint64_t* planes) {
  for (int64_t j = 0; j < nb; ++j)
    for (int l = 0; l < nvp; ++l) {
      uint64_t w = 0;
      for (int i = 0; i < 64; ++i) w |= uint64_t((uint32_t(v[64 * j + i]) >> l) & 1u) << i;
      planes[l * nb + j] = w;
    }
}

}  // namespace
}  // namespace xnorm::bconv
