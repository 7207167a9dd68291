// Reading and re-checking the arguments lib/ passes to the addon. lib/ validates first; this second
// check at the boundary means a caller that bypasses lib/ still cannot crash the process or write
// outside a buffer. Every failure names the argument, what was expected and what was received.
#pragma once
#include <napi.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "../core/common/dtype.h"

namespace xnorm::addon {

struct Buffer {
  void* data = nullptr;
  int64_t length = 0;  // elements
  // What keeps the memory alive while a copy of this Buffer exists (an op in flight, a saved state): a
  // CUDA tensor's allocation, or the pooled block of an xnorm-made output (see output_pool.h).
  std::shared_ptr<void> owner;
};

// The plugin's dtype code of a float dtype.
int32_t plugin_dtype(DType t);

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op);

  // Where the op's tensors live, from the "device" argument: -1 (or absent) is the CPU, otherwise a CUDA
  // device index. Once read, tensor() takes device handles when it is >= 0.
  int32_t device();
  // A tensor on the op's device: on the CPU a typed array whose element type matches dtype and whose
  // length is exactly `length` elements; on a GPU a live device handle of exactly that many elements.
  Buffer tensor(const char* name, DType dtype, int64_t length);
  // As tensor(), or {nullptr, 0} when the property is absent or null.
  Buffer optional_tensor(const char* name, DType dtype, int64_t length);
  // A host typed array whatever the op's device (per-channel parameters, small side outputs).
  Buffer host(const char* name, DType dtype, int64_t length);
  Buffer optional_host(const char* name, DType dtype, int64_t length);
  // A float dtype (float32, float16, bfloat16), else ERR_XNORM_DTYPE.
  DType float_dtype(const char* name);
  // A Float64Array of exactly `length` elements (double-precision side outputs such as moments).
  Buffer float64(const char* name, int64_t length);
  // Non-negative safe integers; the element count must not overflow.
  std::vector<int64_t> shape(const char* name);
  DType dtype(const char* name);
  std::string choice(const char* name, std::initializer_list<const char*> allowed);
  int64_t integer(const char* name, int64_t min, int64_t max);
  double number(const char* name);  // finite
  double bound(const char* name);   // any number but NaN (a clamp bound may be infinite)
  bool flag(const char* name);      // absent = false
  bool has(const char* name);

  bool async() const { return async_; }
  Napi::Object object() const { return obj_; }
  Napi::Env env() const { return env_; }
  // Adds a value an async op must keep referenced until it ends (arrays an object argument refers to).
  void keep(const Napi::Value& v) { buffers_.push_back(v); }
  // Fails (ERR_XNORM_DISPOSED) if the memory of an array read so far was detached meanwhile (a getter
  // of a later argument can do that): call after the last read, before any kernel uses a pointer.
  void check_live() const;
  // Marks the memory of every array read so far untransferable, so nothing can detach and free it while
  // work that outlives this call reads it (async ops, saved state). Needs setup() (lib/native.ts).
  void pin() const;
  // The typed arrays read so far; an async op keeps them referenced until it ends.
  const std::vector<Napi::Value>& buffers() const { return buffers_; }

 private:
  Napi::Value get(const char* name);
  bool detached(napi_value array_buffer) const;
  Buffer typed(const char* name, napi_typedarray_type want, int64_t length);
  std::string where(const char* name) const;

  Napi::Env env_;
  Napi::Object obj_;
  std::string op_;
  bool async_;
  int32_t device_ = -1;
  std::vector<Napi::Value> buffers_;
};

std::string describe(const Napi::Value& v);

}  // namespace xnorm::addon
