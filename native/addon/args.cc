#include "args.h"

#include <cmath>

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "output_pool.h"

namespace xnorm::addon {
namespace {

napi_typedarray_type array_type_for(DType t) {
  switch (t) {
    case DType::Float32: return napi_float32_array;
    case DType::Float16: case DType::BFloat16: return napi_uint16_array;
    case DType::Int32: return napi_int32_array;
    case DType::UInt8: return napi_uint8_array;
    case DType::Bit: return napi_uint32_array;
  }
  return napi_float32_array;
}

const char* array_type_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

}  // namespace

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
  }
  if (v.IsString()) return "'" + v.As<Napi::String>().Utf8Value() + "'";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "true" : "false";
  if (v.IsTypedArray()) {
    auto ta = v.As<Napi::TypedArray>();
    return std::string(array_type_name(ta.TypedArrayType())) + "(" + std::to_string(ta.ElementLength()) + ")";
  }
  if (v.IsArray()) return "an array of length " + std::to_string(v.As<Napi::Array>().Length());
  if (v.IsFunction()) return "a function";
  return "an object";
}

Args::Args(const Napi::CallbackInfo& info, const char* op) : env_(info.Env()), op_(op) {
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray())
    fail(ErrorCode::Argument, op_ + ": expected an options object, received " +
                                  (info.Length() ? describe(info[0]) : std::string("nothing")));
  obj_ = info[0].As<Napi::Object>();
  async_ = info.Length() > 1 && info[1].ToBoolean().Value();
}

std::string Args::where(const char* name) const { return op_ + ": " + name; }

Napi::Value Args::get(const char* name) { return obj_.Get(name); }

bool Args::has(const char* name) {
  Napi::Value v = get(name);
  return !v.IsUndefined() && !v.IsNull();
}

int32_t plugin_dtype(DType t) {
  return t == DType::Float16 ? XNORM_CUDA_FLOAT16 : t == DType::BFloat16 ? XNORM_CUDA_BFLOAT16 : XNORM_CUDA_FLOAT32;
}

int32_t Args::device() {
  Napi::Value v = get("device");
  device_ = v.IsUndefined() || v.IsNull() ? -1 : int32_t(integer("device", -1, 1 << 20));
  return device_;
}

Buffer Args::tensor(const char* name, DType dtype, int64_t length) {
  if (device_ < 0) return host(name, dtype, length);
  DeviceRef mem = device_arg(get(name), where(name), device_, uint64_t(length) * uint64_t(dtype_bytes(dtype)));
  void* ptr = mem->ptr;
  return Buffer{ptr, length, std::move(mem)};
}

Buffer Args::optional_tensor(const char* name, DType dtype, int64_t length) {
  return has(name) ? tensor(name, dtype, length) : Buffer{};
}

Buffer Args::host(const char* name, DType dtype, int64_t length) {
  return typed(name, array_type_for(dtype), length);
}

Buffer Args::optional_host(const char* name, DType dtype, int64_t length) {
  return has(name) ? host(name, dtype, length) : Buffer{};
}

DType Args::float_dtype(const char* name) {
  DType t = dtype(name);
  if (!dtype_is_float(t))
    fail(ErrorCode::DType, where(name) + ": expected float32, float16 or bfloat16, received another dtype");
  return t;
}

Buffer Args::float64(const char* name, int64_t length) { return typed(name, napi_float64_array, length); }

Buffer Args::typed(const char* name, napi_typedarray_type want, int64_t length) {
  Napi::Value v = get(name);
  if (!v.IsTypedArray())
    fail(ErrorCode::Argument, where(name) + ": expected " + array_type_name(want) + ", received " + describe(v));
  auto ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != want)
    fail(ErrorCode::DType, where(name) + ": expected " + array_type_name(want) + ", received " + describe(v));
  napi_value buffer = nullptr;
  void* data = nullptr;
  size_t elements = 0;
  if (napi_get_typedarray_info(env_, ta, nullptr, &elements, &data, &buffer, nullptr) != napi_ok ||
      !Napi::Value(env_, buffer).IsArrayBuffer())
    fail(ErrorCode::Argument, where(name) + ": arrays backed by a SharedArrayBuffer are not supported (copy it first)");
  if (detached(buffer)) fail(ErrorCode::Disposed, where(name) + ": the array's memory was detached (transferred or freed)");
  if (int64_t(elements) != length)
    fail(ErrorCode::Shape, where(name) + ": expected " + std::to_string(length) + " elements, received " +
                               std::to_string(elements));
  buffers_.push_back(v);
  // V8 moves small on-heap arrays off the heap when their data pointer is taken, so the pointer stays
  // valid while the array is referenced and its memory is not detached.
  return Buffer{data, length, pooled_block_of(data)};
}

bool Args::detached(napi_value array_buffer) const {
  bool result = false;
  return napi_is_detached_arraybuffer(env_, array_buffer, &result) == napi_ok && result;
}

void Args::check_live() const {
  for (const Napi::Value& v : buffers_)
    if (v.IsTypedArray() && detached(v.As<Napi::TypedArray>().ArrayBuffer()))
      fail(ErrorCode::Disposed, op_ + ": an array's memory was detached while the arguments were read");
}

void Args::pin() const {
  auto* data = env_.GetInstanceData<AddonData>();
  if (!data || data->mark_untransferable.IsEmpty())
    fail(ErrorCode::Argument, op_ + ": ops whose work outlives the call (async forms, saved state) need the addon set up by lib/ (setup(XnormError, markAsUntransferable))");
  for (const Napi::Value& v : buffers_)
    if (v.IsTypedArray()) data->mark_untransferable.Call({v.As<Napi::TypedArray>().ArrayBuffer()});
}

std::vector<int64_t> Args::shape(const char* name) {
  Napi::Value v = get(name);
  if (!v.IsArray()) fail(ErrorCode::Argument, where(name) + ": expected an array of sizes, received " + describe(v));
  auto arr = v.As<Napi::Array>();
  if (arr.Length() > 16)
    fail(ErrorCode::Shape, where(name) + ": expected rank <= 16, received rank " + std::to_string(arr.Length()));
  std::vector<int64_t> dims;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value d = arr.Get(i);
    double x = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(x >= 0 && x <= double(kMaxElements) && std::floor(x) == x))
      fail(ErrorCode::Shape, where(name) + "[" + std::to_string(i) + "]: expected a non-negative integer, received " +
                                 describe(d));
    dims.push_back(int64_t(x));
  }
  shape_size(dims, where(name).c_str());
  return dims;
}

DType Args::dtype(const char* name) {
  std::string s = choice(name, {"float32", "float16", "bfloat16", "int32", "uint8", "bit"});
  if (s == "float32") return DType::Float32;
  if (s == "float16") return DType::Float16;
  if (s == "bfloat16") return DType::BFloat16;
  if (s == "int32") return DType::Int32;
  if (s == "uint8") return DType::UInt8;
  return DType::Bit;
}

std::string Args::choice(const char* name, std::initializer_list<const char*> allowed) {
  Napi::Value v = get(name);
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();  // read once: every op call passes a few of these
    for (const char* a : allowed)
      if (s == a) return s;
  }
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "'" : ", '") + std::string(a) + "'";
  fail(ErrorCode::Argument, where(name) + ": expected one of " + list + ", received " + describe(v));
}

int64_t Args::integer(const char* name, int64_t min, int64_t max) {
  Napi::Value v = get(name);
  double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(x >= double(min) && x <= double(max) && std::floor(x) == x))
    fail(ErrorCode::Argument, where(name) + ": expected an integer in [" + std::to_string(min) + ", " +
                                  std::to_string(max) + "], received " + describe(v));
  return int64_t(x);
}

double Args::number(const char* name) {
  Napi::Value v = get(name);
  double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(x)) fail(ErrorCode::Argument, where(name) + ": expected a finite number, received " + describe(v));
  return x;
}

double Args::bound(const char* name) {
  Napi::Value v = get(name);
  double x = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (std::isnan(x)) fail(ErrorCode::Argument, where(name) + ": expected a number, received " + describe(v));
  return x;
}

bool Args::flag(const char* name) {
  Napi::Value v = get(name);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) fail(ErrorCode::Argument, where(name) + ": expected a boolean, received " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

}  // namespace xnorm::addon
