// Activations between the caller's (dtype, layout) and the float32 NCHW the kernels work in.
#include <algorithm>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "../common/thread_pool.h"
#include "convbn_internal.h"

namespace xnorm::convbn {
namespace {

template <DType T>
inline float load_f(const void* p, int64_t i) {
  if constexpr (T == DType::Float16) return f16_to_float(static_cast<const uint16_t*>(p)[i]);
  else if constexpr (T == DType::BFloat16) return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
  else return static_cast<const float*>(p)[i];
}

template <DType T>
inline void store_f(void* p, int64_t i, float v) {
  if constexpr (T == DType::Float16) static_cast<uint16_t*>(p)[i] = float_to_f16(v);
  else if constexpr (T == DType::BFloat16) static_cast<uint16_t*>(p)[i] = float_to_bf16(v);
  else static_cast<float*>(p)[i] = v;
}

// Square blocks of a layout transpose: each side of a block is whole cache lines read or written.
constexpr int64_t kBlock = 16;

// dst[j * ld_dst + i] = src[i * ld_src + j] for i, j < 4 (float32, SSE: baseline x86-64).
inline void transpose4(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
#if defined(__SSE2__)
  __m128 r0 = _mm_loadu_ps(src), r1 = _mm_loadu_ps(src + ld_src), r2 = _mm_loadu_ps(src + 2 * ld_src),
         r3 = _mm_loadu_ps(src + 3 * ld_src);
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  _mm_storeu_ps(dst, r0);
  _mm_storeu_ps(dst + ld_dst, r1);
  _mm_storeu_ps(dst + 2 * ld_dst, r2);
  _mm_storeu_ps(dst + 3 * ld_dst, r3);
#else
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
#endif
}

// One block, channels [c0, c1) x pixels [s0, s1) of one image, NHWC (pixel stride c, dtype T) into
// float32 NCHW (channel stride s). Float32 whole blocks go through 4x4 register transposes.
template <DType T>
void block_to_nchw(const void* nhwc, float* nchw, int64_t c, int64_t s, int64_t c0, int64_t c1, int64_t s0, int64_t s1) {
  if (T == DType::Float32 && c1 - c0 == kBlock && s1 - s0 == kBlock) {
    for (int64_t ch = c0; ch < c1; ch += 4)
      for (int64_t i = s0; i < s1; i += 4) transpose4(static_cast<const float*>(nhwc) + i * c + ch, c, nchw + ch * s + i, s);
    return;
  }
  for (int64_t ch = c0; ch < c1; ++ch)
    for (int64_t i = s0; i < s1; ++i) nchw[ch * s + i] = load_f<T>(nhwc, i * c + ch);
}

// The inverse: float32 NCHW into NHWC of dtype T.
template <DType T>
void block_to_nhwc(const float* nchw, void* nhwc, int64_t c, int64_t s, int64_t c0, int64_t c1, int64_t s0, int64_t s1) {
  if (T == DType::Float32 && c1 - c0 == kBlock && s1 - s0 == kBlock) {
    for (int64_t ch = c0; ch < c1; ch += 4)
      for (int64_t i = s0; i < s1; i += 4) transpose4(nchw + ch * s + i, s, static_cast<float*>(nhwc) + i * c + ch, c);
    return;
  }
  for (int64_t i = s0; i < s1; ++i)
    for (int64_t ch = c0; ch < c1; ++ch) store_f<T>(nhwc, i * c + ch, nchw[ch * s + i]);
}

// Per image, [c, s] <-> [s, c] in kBlock x kBlock blocks. A task is a block row of pixels with every
// channel, blocks in channel order: its NHWC side is then one contiguous run of memory and each block
// continues the pages the one before used (a block column of channels would touch a page per pixel
// when C is 1024). to_nchw: src NHWC of dtype T, dst float32 NCHW; else src float32 NCHW, dst NHWC of T.
template <DType T>
void transpose(bool to_nchw, const void* src, void* dst, int64_t n, int64_t c, int64_t s) {
  const int64_t sb = (s + kBlock - 1) / kBlock, bytes = int64_t(dtype_bytes(T));
  parallel_for(n * sb, chunk_for(c * kBlock), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t img = u / sb, s0 = (u % sb) * kBlock, s1 = std::min(s, s0 + kBlock);
      const int64_t off = img * c * s;  // the same element offset in both layouts
      for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
        const int64_t c1 = std::min(c, c0 + kBlock);
        if (to_nchw)
          block_to_nchw<T>(static_cast<const char*>(src) + off * bytes, static_cast<float*>(dst) + off, c, s, c0, c1, s0, s1);
        else
          block_to_nhwc<T>(static_cast<const float*>(src) + off, static_cast<char*>(dst) + off * bytes, c, s, c0, c1, s0, s1);
      }
    }
  });
}

template <DType T>
void convert_t(const void* src, float* dst, int64_t size) {
  parallel_for(size, kTaskElements, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = load_f<T>(src, i);
  });
}

template <DType T>
void store_t(const float* src, void* dst, int64_t size) {
  parallel_for(size, kTaskElements, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) store_f<T>(dst, i, src[i]);
  });
}

}  // namespace

// A [n, c, s] activation in (dtype, layout) converted to float32 NCHW in dst.
void convert_to_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, float* dst) {
  if (layout == Layout::NCHW) {
    XNORM_BY_FLOAT_DTYPE(convert_t, dt, src, dst, n * c * s)
  }
  XNORM_BY_FLOAT_DTYPE(transpose, dt, true, src, dst, n, c, s)
}

// A [n, c, s] activation as float32 NCHW: the caller's buffer itself when it already is one, else a
// converted copy in the workspace slot.
const float* input_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, Slot slot) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return static_cast<const float*>(src);
  float* buf = workspace(slot, n * c * s);
  convert_to_f32(dt, layout, src, n, c, s, buf);
  return buf;
}

// Where a float32 NCHW result goes: straight into the caller's buffer when it has that form.
float* output_f32(DType dt, Layout layout, void* dst, int64_t size, Slot slot) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return static_cast<float*>(dst);
  return workspace(slot, size);
}

void store_output(DType dt, Layout layout, const float* src, int64_t n, int64_t c, int64_t s, void* dst) {
  if (dt == DType::Float32 && layout == Layout::NCHW) return;  // written in place
  if (layout == Layout::NCHW) {
    XNORM_BY_FLOAT_DTYPE(store_t, dt, src, dst, n * c * s)
  }
  XNORM_BY_FLOAT_DTYPE(transpose, dt, false, src, dst, n, c, s)
}

}  // namespace xnorm::convbn
