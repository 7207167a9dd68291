// Reading and re-checking the arguments lib/ passes to the addon. lib/ validates first; this second
// check at the boundary means a caller that bypasses lib/ still cannot crash the process or write
// outside a buffer. Every failure names the argument, what was expected and what was received.
#pragma once
#include <napi.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "../core/common/dtype.h"

namespace xnorm::addon {

struct Buffer {
  void* data = nullptr;
  int64_t length = 0;  // elements
};

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op);

  // A typed array whose element type matches dtype and whose length is exactly `length` elements.
  Buffer tensor(const char* name, DType dtype, int64_t length);
  // A Float64Array of exactly `length` elements (double-precision side outputs such as moments).
  Buffer float64(const char* name, int64_t length);
  // As tensor(), or {nullptr, 0} when the property is absent or null.
  Buffer optional_tensor(const char* name, DType dtype, int64_t length);
  // Non-negative safe integers; the element count must not overflow.
  std::vector<int64_t> shape(const char* name);
  DType dtype(const char* name);
  std::string choice(const char* name, std::initializer_list<const char*> allowed);
  int64_t integer(const char* name, int64_t min, int64_t max);
  double number(const char* name);  // finite
  bool flag(const char* name);      // absent = false
  bool has(const char* name);

  bool async() const { return async_; }
  Napi::Env env() const { return env_; }
  // The typed arrays read so far; an async op keeps them referenced until it ends.
  const std::vector<Napi::Value>& buffers() const { return buffers_; }

 private:
  Napi::Value get(const char* name);
  Buffer typed(const char* name, napi_typedarray_type want, int64_t length);
  std::string where(const char* name) const;

  Napi::Env env_;
  Napi::Object obj_;
  std::string op_;
  bool async_;
  std::vector<Napi::Value> buffers_;
};

std::string describe(const Napi::Value& v);

}  // namespace xnorm::addon
