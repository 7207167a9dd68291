// Activations between the caller's (dtype, layout) and the float32 NCHW the kernels work in.
#include <algorithm>
#include <vector>

#include "../common/thread_pool.h"
#include "convbn_internal.h"

namespace xnorm::convbn {
namespace {

inline float load_f(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::Float16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

inline void store_f(DType t, void* p, int64_t i, float v) {
  switch (t) {
    case DType::Float16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

}  // namespace

// A [n, c, s] activation in (dtype, layout) converted to float32 NCHW in dst.
void convert_to_f32(DType dt, Layout layout, const void* src, int64_t n, int64_t c, int64_t s, float* dst) {
  parallel_for(n * c, chunk_for(s), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t img = u / c, ch = u % c;
      float* d = dst + u * s;
      if (layout == Layout::NCHW) {
        for (int64_t i = 0; i < s; ++i) d[i] = load_f(dt, src, u * s + i);
      } else {
        for (int64_t i = 0; i < s; ++i) d[i] = load_f(dt, src, (img * s + i) * c + ch);
      }
    }
  });
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
    parallel_for(n * c * s, kTaskElements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) store_f(dt, dst, i, src[i]);
    });
    return;
  }
  parallel_for(n * s, chunk_for(c), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t img = u / s, i = u % s;
      const float* sp = src + img * c * s + i;
      for (int64_t ch = 0; ch < c; ++ch) store_f(dt, dst, u * c + ch, sp[ch * s]);
    }
  });
}

}  // namespace xnorm::convbn
