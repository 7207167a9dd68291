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

namespace xnorm::bconv {
namespace {

// S < 2^kMaxPlanes for any K a layer can have (K < 2^31 bits).
constexpr int kMaxPlanes = 32;

template <int NB>
struct Planes {
  typedef uint64_t V __attribute__((vector_size(8 * NB), aligned(8)));

  // Carry-save adder: (hi, lo) = a + b + c, bit by bit. (Vectors by reference: no vector passes through
  // a call boundary, whose ABI would differ between the kernel files.)
  static inline void csa(V& hi, V& lo, const V& a, const V& b, const V& c) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    // One ternary-logic instruction each (the compiler does not find them): majority and three-way xor.
    if constexpr (NB == 8) {
      const __m512i x = __m512i(a), y = __m512i(b), z = __m512i(c);
      hi = V(_mm512_ternarylogic_epi64(x, y, z, 0xe8));
      lo = V(_mm512_ternarylogic_epi64(x, y, z, 0x96));
      return;
    } else if constexpr (NB == 4) {
      const __m256i x = __m256i(a), y = __m256i(b), z = __m256i(c);
      hi = V(_mm256_ternarylogic_epi64(x, y, z, 0xe8));
      lo = V(_mm256_ternarylogic_epi64(x, y, z, 0x96));
      return;
    }
#endif
    const V u = a ^ b;
    hi = (a & b) | (u & c);
    lo = u ^ c;
  }

  // The term of one position (k << 1 | parent's bit): row k, complemented where the parent's bit is 1
  // (Flip: the caller runs the positions of each parent bit separately).
  template <bool Flip>
  static inline void term(V& x, const uint64_t* rows, uint32_t pos) {
    __builtin_memcpy(&x, rows + int64_t(pos >> 1) * NB, sizeof x);
    if (Flip) x = ~x;
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
  static inline void add8(V& eights, V& ones, V& twos, V& fours, const V* x) {
    V twos_a, twos_b, fours_a, fours_b;
    csa(twos_a, ones, ones, x[0], x[1]);
    csa(twos_b, ones, ones, x[2], x[3]);
    csa(fours_a, twos, twos, twos_a, twos_b);
    csa(twos_a, ones, ones, x[4], x[5]);
    csa(twos_b, ones, ones, x[6], x[7]);
    csa(fours_b, twos, twos, twos_a, twos_b);
    csa(eights, fours, fours, fours_a, fours_b);
  }

  // S of 64 * NB pixels into planes (little-endian bit order); returns the number of planes.
  // Harley-Seal: sixteen terms go through fifteen adders into ones, twos, fours, eights and one carry
  // of weight 16, rippled into planes 4 to 7 (in registers) and on into memory; the last block of each
  // parent bit's run is padded with zero terms.
  static int count(const uint64_t* rows, const uint32_t* pos, int64_t npos, V* plane) {
    int nplanes = 4;
    while (nplanes < kMaxPlanes && (npos >> nplanes) != 0) ++nplanes;
    for (int l = 0; l < nplanes; ++l) plane[l] = V{};
    V ones{}, twos{}, fours{}, eights{}, high[4] = {}, x[16];
    auto add16 = [&]() __attribute__((always_inline)) {
      V eights_a, eights_b, carry;
      add8(eights_a, ones, twos, fours, x);
      add8(eights_b, ones, twos, fours, x + 8);
      csa(carry, eights, eights, eights_a, eights_b);
      ripple(high, 0, 4, carry);
      if (nplanes > 8) ripple(plane, 8, nplanes, carry);
    };
    auto run = [&](auto flip, const uint32_t* p, int64_t n) __attribute__((always_inline)) {
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        for (int q = 0; q < 16; ++q) term<flip()>(x[q], rows, p[i + q]);
        add16();
      }
      if (i == n) return;
      for (int q = 0; q < 16; ++q) {
        if (i + q < n) term<flip()>(x[q], rows, p[i + q]);
        else x[q] = V{};
      }
      add16();
    };
    // edge_positions puts each edge's positions of parent bit 0 first.
    const int64_t zeros = std::partition_point(pos, pos + npos, [](uint32_t v) { return (v & 1u) == 0; }) - pos;
    run(std::false_type{}, pos, zeros);
    run(std::true_type{}, pos + zeros, npos - zeros);
    plane[0] = ones, plane[1] = twos, plane[2] = fours, plane[3] = eights;
    for (int l = 4; l < std::min(nplanes, 8); ++l) plane[l] = high[l - 4];
    return nplanes;
  }
};

// child[i] = parent[i] + npos - 2 S[i] for the 64 * NB pixels, by `expand` from the planes:
// expand(planes as 64-bit words [nplanes][NB], nplanes, NB, npos, parent, child) (expand_scalar, or a
// kernel file's vector form).
template <int NB, typename Expand>
void sliced_edge_nb(const uint64_t* rows, const uint32_t* pos, int64_t npos, const int32_t* parent, int32_t* child,
                    Expand expand) {
  typename Planes<NB>::V plane[kMaxPlanes];
  const int nplanes = Planes<NB>::count(rows, pos, npos, plane);
  expand(reinterpret_cast<const uint64_t*>(plane), nplanes, NB, int32_t(npos), parent, child);
}

// The expansion without vector masks: bit l of pixel i's S is bit i % 64 of planes[l][i / 64].
inline void expand_scalar(const uint64_t* planes, int nplanes, int nb, int32_t d, const int32_t* parent,
                          int32_t* child) {
  for (int j = 0; j < nb; ++j)
    for (int i = 0; i < 64; ++i) {
      int32_t v = 0;
      for (int l = 0; l < nplanes; ++l) v |= int32_t((planes[l * nb + j] >> i) & 1u) << l;
      child[64 * j + i] = parent[64 * j + i] + d - 2 * v;
    }
}

// Kernels::sliced_edge for nb = 1, 2, 4 or 8 (the caller's tile widths).
template <typename Expand>
void sliced_edge_any(const uint64_t* rows, int64_t nb, const uint32_t* pos, int64_t npos, const int32_t* parent,
                     int32_t* child, Expand expand) {
  switch (nb) {
    case 1: return sliced_edge_nb<1>(rows, pos, npos, parent, child, expand);
    case 2: return sliced_edge_nb<2>(rows, pos, npos, parent, child, expand);
    case 4: return sliced_edge_nb<4>(rows, pos, npos, parent, child, expand);
    default: return sliced_edge_nb<8>(rows, pos, npos, parent, child, expand);
  }
}

}  // namespace
}  // namespace xnorm::bconv
