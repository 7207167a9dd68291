// Loading the xnorm_cuda plugin on first use, info().cuda, and device-memory handles for JS tensors.
#include <algorithm>
#include <dlfcn.h>

#include "../core/common/glibc_compat.h"
#include <napi.h>

#include <cstdlib>
#include <mutex>
#include <set>
#include <unordered_map>

#include "../core/common/debug.h"
#include "../core/common/error.h"
#include "args.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

// Process-wide plugin state: plain C++ only (no JS values), shared by every environment (main thread
// and workers). The plugin is never unloaded: device memory may be freed until the process ends.
struct Plugin {
  std::mutex mutex;
  bool tried = false;
  const xnorm_cuda_api* api = nullptr;  // set only when the plugin loaded and at least one device works
  std::string path;
  std::string reason;
  std::vector<xnorm_cuda_device_info> devices;
  // From the plugin's xnorm_cuda_versions (when it has it), as "13.0"; driver "" = no driver.
  std::string cuda_version, driver_version, driver_needed;
};

// XNORM_DEBUG: the probe's steps, as they happen.
void debug_step(const std::string& what) {
  if (debug_enabled()) debug_log("CUDA probe: " + what);
}

Plugin& plugin() {
  static Plugin* p = new Plugin();  // never destroyed: see above
  return *p;
}

bool file_exists(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f) fclose(f);
  return f != nullptr;
}

std::string dir_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The folder of the loaded .node file: a plugin placed beside the addon is found first.
std::string addon_dir() {
  Dl_info di;
  if (dladdr(reinterpret_cast<void*>(&addon_dir), &di) && di.dli_fname) return dir_of(di.dli_fname);
  return "";
}

constexpr const char* kLibName = "libxnorm_cuda.so";

// "13.0" from CUDA's 13000.
std::string version_string(int32_t v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// Tries each candidate in order; fills p.api/devices or p.reason. Called once, under the mutex.
void load(Plugin& p, const std::vector<std::string>& extra) {
  const char* toggle = getenv("XNORM_CUDA");
  if (toggle && std::string(toggle) == "0") {
    p.reason = "CUDA is disabled by the environment variable XNORM_CUDA=0";
    return;
  }
  std::vector<std::string> candidates;
  const char* forced = getenv("XNORM_CUDA_PLUGIN");
  if (forced && *forced) {
    candidates.push_back(forced);
  } else {
    std::string here = addon_dir();
    if (!here.empty()) candidates.push_back(here + "/" + kLibName);
    for (const std::string& e : extra)  // the addon's folder may be one of them (a prebuild)
      if (std::find(candidates.begin(), candidates.end(), e) == candidates.end()) candidates.push_back(e);
  }
  std::string looked;
  for (const std::string& c : candidates) {
    looked += (looked.empty() ? "" : ", ") + c;
    if (!file_exists(c)) {
      debug_step(c + ": not found");
      continue;
    }
    debug_step("loading " + c);
    // RTLD_LOCAL: the plugin's static CUDA runtime stays private to it.
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* err = dlerror();
      p.reason = "the CUDA plugin " + c + " could not be loaded: " + (err ? err : "unknown error");
      return;
    }
    p.path = c;
    auto version = reinterpret_cast<xnorm_cuda_abi_version_fn>(dlsym(h, "xnorm_cuda_abi_version"));
    auto get_api = reinterpret_cast<xnorm_cuda_get_api_fn>(dlsym(h, "xnorm_cuda_get_api"));
    if (!version || !get_api) {
      p.reason = c + " is not an xnorm_cuda plugin (it lacks xnorm_cuda_abi_version/xnorm_cuda_get_api)";
      return;
    }
    uint32_t v = version();
    const xnorm_cuda_api* api = v == XNORM_CUDA_ABI_VERSION ? get_api() : nullptr;
    if (!api || api->abi_version != XNORM_CUDA_ABI_VERSION || api->struct_size < sizeof(xnorm_cuda_api)) {
      p.reason = "the CUDA plugin " + c + " has C ABI version " + std::to_string(v) + " but this addon needs " +
                 std::to_string(XNORM_CUDA_ABI_VERSION) + "; rebuild it with `bash node_modules/xnorm/scripts/build-cuda.sh node_modules/xnorm/build/cuda` "
                 "(in a checkout of xnorm: `npm run build:cuda`) or reinstall";
      return;
    }
    if (auto versions = reinterpret_cast<xnorm_cuda_versions_fn>(dlsym(h, "xnorm_cuda_versions"))) {
      int32_t runtime = 0, driver = 0;
      const char* needed = nullptr;
      versions(&runtime, &driver, &needed);
      p.cuda_version = version_string(runtime);
      p.driver_version = driver > 0 ? version_string(driver) : "";
      p.driver_needed = needed ? needed : "";
      debug_step("plugin built with CUDA " + p.cuda_version + "; driver: " +
                 (driver > 0 ? "supports CUDA " + p.driver_version : std::string("none")));
    }
    xnorm_cuda_status st{};
    int32_t count = 0;
    if (api->device_count(&count, &st) != XNORM_CUDA_OK) {
      p.reason = std::string("no usable NVIDIA driver or GPU: ") + st.message;
      return;
    }
    for (int32_t d = 0; d < count; ++d) {
      xnorm_cuda_device_info di{};
      if (api->device_info(d, &di, &st) != XNORM_CUDA_OK) {
        p.reason = std::string("cannot query cuda:") + std::to_string(d) + ": " + st.message;
        return;
      }
      p.devices.push_back(di);
    }
    p.api = api;
    return;
  }
  p.reason = "the CUDA plugin (" + std::string(kLibName) + ") is not installed; looked in: " + looked +
             ". Build it with `bash node_modules/xnorm/scripts/build-cuda.sh node_modules/xnorm/build/cuda` (needs "
             "the CUDA toolkit; in a checkout of xnorm: `npm run build:cuda`) or install a prebuild that includes it";
}

// Loads on the first call; later calls return the same outcome. Probe failures are reasons, never
// crashes: every plugin call here reports through a status, and anything thrown is caught.
Plugin& loaded(const std::vector<std::string>& extra) {
  Plugin& p = plugin();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (!p.tried) {
    p.tried = true;
    try {
      load(p, extra);
    } catch (const std::exception& e) {
      p.api = nullptr;
      p.reason = std::string("loading the CUDA plugin failed: ") + e.what();
    }
    debug_step(p.api ? std::to_string(p.devices.size()) + " device(s) found" : "CUDA unavailable: " + p.reason);
  }
  return p;
}

// Records an outcome decided elsewhere (the probe in a child process found CUDA unusable, or crashed)
// without loading anything: the child's reason, plugin file and versions.
void refuse(const Napi::Object& child) {
  auto text = [&](const char* key) {
    Napi::Value v = child.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  };
  Plugin& p = plugin();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.tried) return;
  p.tried = true;
  p.reason = text("reason");
  p.path = text("plugin");
  p.cuda_version = text("cudaVersion");
  p.driver_version = text("driverVersion");
  p.driver_needed = text("driverNeeded");
}

bool tried() {
  Plugin& p = plugin();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.tried;
}

// Search paths the JS side passes (package root's build/cuda and prebuilds/<platform>-<arch>).
std::vector<std::string> paths_from(const Napi::CallbackInfo& info) {
  std::vector<std::string> out;
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Value v = info[0].As<Napi::Object>().Get("paths");
    if (v.IsArray()) {
      auto a = v.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i)
        if (a.Get(i).IsString()) out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
  }
  return out;
}

// ---- device memory handles ----

const napi_type_tag kHandleTag = {0x786e6f726d637564ull, 0x61646576696365ull};  // "xnormcud" "adevice"

struct Handle {
  DeviceRef mem;
  int64_t accounted = 0;  // bytes reported to V8 as external memory
  napi_env env = nullptr;
};

// Live handles per environment, so the environment's cleanup hook can free what JS still holds.
struct Handles {
  std::mutex mutex;
  std::unordered_map<napi_env, std::set<Handle*>> live;
};

Handles& handles() {
  static Handles* h = new Handles();  // never destroyed: finalizers may run during teardown
  return *h;
}

void cleanup_env(void* arg) {
  auto env = static_cast<napi_env>(arg);
  Handles& hs = handles();
  std::lock_guard<std::mutex> lock(hs.mutex);
  auto it = hs.live.find(env);
  if (it == hs.live.end()) return;
  for (Handle* h : it->second) h->mem.reset();  // the finalizer, if it still runs, deletes h
  hs.live.erase(it);
}

void release(Handle* h) {
  if (h->accounted) {
    int64_t ignored;
    napi_adjust_external_memory(h->env, -h->accounted, &ignored);
    h->accounted = 0;
  }
  h->mem.reset();
}

void finalize_handle(Napi::Env, Handle* h) {
  {
    Handles& hs = handles();
    std::lock_guard<std::mutex> lock(hs.mutex);
    auto it = hs.live.find(h->env);
    if (it != hs.live.end()) it->second.erase(h);
  }
  release(h);
  delete h;
}

Handle* handle_of(const Napi::Value& v, const std::string& name) {
  if (!v.IsExternal() || !v.As<Napi::External<Handle>>().CheckTypeTag(&kHandleTag))
    fail(ErrorCode::Argument, name + ": expected a CUDA tensor handle, received " + describe(v));
  return v.As<Napi::External<Handle>>().Data();
}

// What cudaInfo reports once the plugin was tried.
Napi::Object status_object(Napi::Env env, Plugin& p) {
  std::lock_guard<std::mutex> lock(p.mutex);
  Napi::Object out = Napi::Object::New(env);
  out.Set("tried", true);
  out.Set("available", p.api != nullptr);
  if (!p.api) out.Set("reason", p.reason);
  if (!p.path.empty()) out.Set("plugin", p.path);
  if (!p.cuda_version.empty()) out.Set("cudaVersion", p.cuda_version);
  if (!p.driver_version.empty()) out.Set("driverVersion", p.driver_version);
  if (!p.driver_needed.empty()) out.Set("driverNeeded", p.driver_needed);
  Napi::Array devs = Napi::Array::New(env);
  for (const xnorm_cuda_device_info& d : p.devices) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", std::string(d.name));
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("memoryBytes", double(d.memory_bytes));
    o.Set("multiprocessors", d.multiprocessors);
    devs.Set(devs.Length(), o);
  }
  out.Set("devices", devs);
  return out;
}

// cudaInfo({paths}) loads the plugin (once per process) and reports; {peek: true} only says whether
// that has happened; {refuse: {reason, plugin?, cudaVersion?, ...}} records what a probe in a child
// process found (CUDA unusable).
// cudaInfo(args, true) loads on the thread pool (dlopen and the driver's start take 100 ms and more)
// and returns a Promise of the report.
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    bool peek = info.Length() > 0 && info[0].IsObject() && info[0].As<Napi::Object>().Get("peek").ToBoolean().Value();
    if (peek && !tried()) {
      Napi::Object out = Napi::Object::New(env);
      out.Set("tried", false);
      return out;
    }
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Value child = info[0].As<Napi::Object>().Get("refuse");
      if (child.IsObject()) refuse(child.As<Napi::Object>());
    }
    std::vector<std::string> paths = paths_from(info);
    const bool async = info.Length() > 1 && info[1].ToBoolean().Value();
    if (!async) return status_object(env, loaded(paths));
    Args a(info, "cudaInfo");
    return run_op(a, [paths]() -> ResultBuilder {
      loaded(paths);
      return [](Napi::Env e) -> Napi::Value { return status_object(e, plugin()); };
    });
  });
}

Napi::Value CudaAlloc(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Napi::Env env = info.Env();
    Args a(info, "cudaAlloc");
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    auto bytes = uint64_t(a.integer("bytes", 0, int64_t(1) << 53));
    const xnorm_cuda_api& api = cuda_api(device);
    xnorm_cuda_status st{};
    void* ptr = nullptr;
    cuda_check(api.alloc(device, bytes, &ptr, &st), st);
    auto mem = std::make_shared<DeviceMemory>();
    mem->api = &api;
    mem->device = device;
    mem->ptr = ptr;
    mem->bytes = bytes;
    if (a.flag("zero")) cuda_check(api.fill_zero(device, ptr, bytes, &st), st);  // mem frees ptr on failure
    auto* h = new Handle{mem, int64_t(bytes), env};
    Napi::External<Handle> ext;
    try {
      ext = Napi::External<Handle>::New(env, h, finalize_handle);
    } catch (...) {
      delete h;
      throw;
    }
    ext.TypeTag(&kHandleTag);
    int64_t ignored;
    napi_adjust_external_memory(env, h->accounted, &ignored);
    Handles& hs = handles();
    std::lock_guard<std::mutex> lock(hs.mutex);
    auto it = hs.live.find(env);
    if (it == hs.live.end()) {
      napi_add_env_cleanup_hook(env, cleanup_env, env);
      it = hs.live.emplace(env, std::set<Handle*>()).first;
    }
    it->second.insert(h);
    return Napi::Value(ext);
  });
}

// dispose(): frees the device memory now (once nothing in flight uses it). Idempotent.
Napi::Value CudaFree(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Handle* h = handle_of(info[0], "cudaFree: handle");
    release(h);
    return info.Env().Undefined();
  });
}

// Copies between a typed array and device memory of the same byte size.
Napi::Value Copy(const Napi::CallbackInfo& info, bool upload) {
  return guarded(info.Env(), [&] {
    const char* op = upload ? "cudaUpload" : "cudaDownload";
    Args a(info, op);
    Napi::Object o = info[0].As<Napi::Object>();
    Napi::Value hv = o.Get("handle");
    Handle* h = handle_of(hv, std::string(op) + ": handle");
    if (!h->mem) fail(ErrorCode::Disposed, std::string(op) + ": the tensor was disposed");
    DeviceRef mem = h->mem;
    DType dt = a.dtype("dtype");
    uint64_t elems = mem->bytes / uint64_t(dtype_bytes(dt));
    Buffer host = a.tensor("host", dt, int64_t(elems));
    const xnorm_cuda_api* api = &cuda_api(mem->device);
    return run_op(a, [mem, host, upload, api]() -> ResultBuilder {
      xnorm_cuda_status st{};
      int32_t rc = upload ? api->upload(mem->device, mem->ptr, host.data, mem->bytes, &st)
                          : api->download(mem->device, host.data, mem->ptr, mem->bytes, &st);
      cuda_check(rc, st);
      return nullptr;
    });
  });
}

// The external-memory total V8 holds for this isolate (device tensors count towards its GC pressure).
Napi::Value ExternalMemory(const Napi::CallbackInfo& info) {
  int64_t total = 0;
  napi_adjust_external_memory(info.Env(), 0, &total);
  return Napi::Number::New(info.Env(), double(total));
}

Napi::Value CudaUpload(const Napi::CallbackInfo& info) { return Copy(info, true); }
Napi::Value CudaDownload(const Napi::CallbackInfo& info) { return Copy(info, false); }

}  // namespace

DeviceMemory::~DeviceMemory() {
  xnorm_cuda_status st{};
  if (ptr) api->free(device, ptr, &st);  // nothing to report to: the owner is gone
}

const xnorm_cuda_api& cuda_api(int device) {
  Plugin& p = loaded({});
  if (!p.api) fail(ErrorCode::CudaUnavailable, "CUDA is not available: " + p.reason);
  if (device >= int(p.devices.size()))
    fail(ErrorCode::Device, "device cuda:" + std::to_string(device) + " does not exist (" +
                                std::to_string(p.devices.size()) + " CUDA device(s))");
  return *p.api;
}

void cuda_fail(const xnorm_cuda_status& st) {
  switch (st.code) {
    case XNORM_CUDA_OUT_OF_MEMORY: fail(ErrorCode::OutOfMemory, st.message);
    case XNORM_CUDA_ARGUMENT: fail(ErrorCode::Argument, st.message);
    default: fail(ErrorCode::CudaUnavailable, std::string("CUDA error: ") + st.message);
  }
}

DeviceRef device_alloc(int32_t device, uint64_t bytes) {
  const xnorm_cuda_api& api = cuda_api(device);
  xnorm_cuda_status st{};
  auto mem = std::make_shared<DeviceMemory>();
  mem->api = &api;
  mem->device = device;
  mem->bytes = bytes;
  cuda_check(api.alloc(device, bytes, &mem->ptr, &st), st);
  return mem;
}

DeviceRef device_copy(int32_t device, const void* host, uint64_t bytes) {
  DeviceRef mem = device_alloc(device, bytes);
  xnorm_cuda_status st{};
  cuda_check(mem->api->upload(device, mem->ptr, host, bytes, &st), st);  // mem frees ptr on failure
  return mem;
}

DeviceRef device_arg(const Napi::Value& v, const std::string& name, int32_t device, uint64_t bytes) {
  Handle* h = handle_of(v, name);
  if (!h->mem) fail(ErrorCode::Disposed, name + ": the tensor was disposed");
  if (h->mem->device != device)
    fail(ErrorCode::Device, name + ": expected a tensor on cuda:" + std::to_string(device) + ", received one on cuda:" +
                                std::to_string(h->mem->device));
  if (h->mem->bytes != bytes)
    fail(ErrorCode::Shape, name + ": expected " + std::to_string(bytes) + " bytes of device memory, received " +
                               std::to_string(h->mem->bytes));
  return h->mem;
}

void init_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo));
  exports.Set("cudaAlloc", Napi::Function::New(env, CudaAlloc));
  exports.Set("cudaFree", Napi::Function::New(env, CudaFree));
  exports.Set("cudaUpload", Napi::Function::New(env, CudaUpload));
  exports.Set("cudaDownload", Napi::Function::New(env, CudaDownload));
  exports.Set("externalMemory", Napi::Function::New(env, ExternalMemory));
}

}  // namespace xnorm::addon
