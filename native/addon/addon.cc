// Module entry: per-environment state, info(), thread count, and each op family's bindings.
#include <napi.h>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>

#include "../core/common/glibc_compat.h"
#endif
#include <mutex>
#include <new>
#include <stdexcept>

#include "../core/common/cpu.h"
#include "../core/common/thread_pool.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "output_pool.h"

namespace xnorm::addon {

Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data && !data->error_class.IsEmpty()) {
    Napi::Object err = data->error_class.New({Napi::String::New(env, error_code_name(code)),
                                              Napi::String::New(env, message)});
    return Napi::Error(env, err);
  }
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, error_code_name(code)));
  return err;
}

Failure failure_of(const std::exception& e) {
  if (const auto* core = dynamic_cast<const Error*>(&e)) return {core->code(), core->what()};
  if (dynamic_cast<const std::bad_alloc*>(&e)) return {ErrorCode::OutOfMemory, "out of memory while allocating native scratch space"};
  if (dynamic_cast<const std::length_error*>(&e))
    return {ErrorCode::OutOfMemory, "native scratch space of that size cannot be allocated"};
  return {ErrorCode::Argument, std::string("internal error: ") + e.what()};
}

namespace {

// setup(XnormError, markAsUntransferable), once per environment by lib/native.ts: errors become
// XnormErrors, and async ops may run (they pin the memory they read, see Args::pin).
Napi::Value Setup(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction() || !info[1].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setup: expected the XnormError class and worker_threads.markAsUntransferable");
  auto* data = info.Env().GetInstanceData<AddonData>();
  data->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  data->mark_untransferable = Napi::Persistent(info[1].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("threads", num_threads());
  out.Set("isaLevel", isa_name(active_isa()));
  Napi::Array features = Napi::Array::New(env);
  for (const std::string& f : active_isa_features()) features.Set(features.Length(), f);
  out.Set("isa", features);
  out.Set("isaWarning", isa_warning());
  out.Set("napi", NAPI_VERSION);
#if defined(__clang__)
  out.Set("compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
  out.Set("compiler", "gcc " __VERSION__);
#else
  out.Set("compiler", "unknown");
#endif
  return out;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args args(info, "setNumThreads");
    set_num_threads(int(args.integer("threads", 1, 256)));
    return info.Env().Undefined();
  });
}

}  // namespace

// Where an output of `bytes` should start in a fresh buffer that JS allocated uninitialised with 63
// bytes to spare: on a 64-byte line, so kernels write whole cache lines. (Outputs of 128 KiB and more
// come from the output pool instead, see output_pool.h.)
Napi::Value PrepareOutput(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args args(info, "prepareOutput");
    const int64_t bytes = args.integer("bytes", 0, int64_t(1) << 52);
    Napi::Value v = info[0].As<Napi::Object>().Get("buffer");
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      fail(ErrorCode::Argument, "prepareOutput: buffer: expected a Uint8Array, received " + describe(v));
    auto a = v.As<Napi::Uint8Array>();
    const uintptr_t begin = reinterpret_cast<uintptr_t>(a.Data());
    if (uint64_t(bytes) + 63 > a.ByteLength()) fail(ErrorCode::Argument, "prepareOutput: buffer without room to align the output");
    return Napi::Number::New(info.Env(), double((64 - (begin & 63)) & 63));
  });
}

// Node unloads an addon when the last environment that loaded it (say, the only worker_thread using
// xnorm) exits. xnorm's pool threads outlive environments and run this library's code, so the library
// pins itself in memory once: unloading it under them would crash the process.
void pin_library_in_memory() {
#if defined(__unix__) || defined(__APPLE__)
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info self;
    if (dladdr(reinterpret_cast<void*>(&pin_library_in_memory), &self) && self.dli_fname)
      dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE);
  });
#endif
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  pin_library_in_memory();
  env.SetInstanceData(new AddonData());
  exports.Set("setup", Napi::Function::New(env, Setup));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("prepareOutput", Napi::Function::New(env, PrepareOutput));
  init_bnstats(env, exports);
  init_binary(env, exports);
  init_cuda(env, exports);
  init_convbn(env, exports);
  init_probes(env, exports);
  init_tensor_ops(env, exports);
  init_output_pool(env, exports);
  return exports;
}

}  // namespace xnorm::addon

static Napi::Object InitXnorm(Napi::Env env, Napi::Object exports) { return xnorm::addon::init(env, exports); }
NODE_API_MODULE(xnorm, InitXnorm)
