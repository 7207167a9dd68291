// Device discovery, per-device stream and memory pool, copies, and the exported function table.
#include <cstdarg>
#include <cstring>
#include <mutex>

#include "bconv/bconv.cuh"
#include "bnstats/bnstats.cuh"
#include "convbn/convbn.cuh"
#include "common.cuh"

namespace xnorm_cuda {

int32_t report(xnorm_cuda_status* st, int32_t code, const char* fmt, ...) {
  if (st) {
    st->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof st->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

int32_t report_cuda(xnorm_cuda_status* st, cudaError_t e, const char* what) {
  int32_t code = e == cudaErrorMemoryAllocation ? XNORM_CUDA_OUT_OF_MEMORY : XNORM_CUDA_UNAVAILABLE;
  return report(st, code, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

namespace {

// The oldest NVIDIA driver for each CUDA major version (minor-version compatibility: any 13.x runtime
// runs on a driver for 13.0), from NVIDIA's CUDA release notes.
const char* driver_for(int cuda_major) {
  switch (cuda_major) {
    case 12: return "R525 (525.60.13) or newer";
    case 13: return "R580 (580.65.06) or newer";
    default: return "one that supports this CUDA version";
  }
}

// cudaGetDeviceCount failed: say whether the driver is missing, too old, or something else is wrong,
// since the runtime reports a missing driver as "CUDA driver version is insufficient".
int32_t report_driver_problem(xnorm_cuda_status* st, cudaError_t e) {
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);  // 0 when no driver (libcuda.so.1) is installed
  cudaGetLastError();
  const int major = runtime / 1000, minor = runtime % 1000 / 10;
  if (driver == 0)
    return report(st, XNORM_CUDA_UNAVAILABLE,
                  "no NVIDIA driver found (libcuda.so.1 is not installed or not on the library path); this plugin "
                  "is built with CUDA %d.%d and needs the NVIDIA driver %s",
                  major, minor, driver_for(major));
  if (driver / 1000 < major)
    return report(st, XNORM_CUDA_UNAVAILABLE,
                  "the NVIDIA driver is too old: it supports CUDA %d.%d, this plugin is built with CUDA %d.%d and "
                  "needs the driver %s",
                  driver / 1000, driver % 1000 / 10, major, minor, driver_for(major));
  return report_cuda(st, e, "cannot count CUDA devices");
}

// Process-wide and never destroyed: the devices outlive every caller, and freeing CUDA objects from a
// static destructor at exit races the driver's own teardown.
struct Registry {
  std::mutex mutex;
  int32_t count = -1;
  cudaError_t count_error = cudaSuccess;
  Device* devices = nullptr;
  std::once_flag* once = nullptr;
  int32_t* init_rc = nullptr;
  xnorm_cuda_status* init_status = nullptr;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

// cudaGetDeviceCount once; a missing driver or device is remembered with its error.
int32_t count_devices(int32_t* count, xnorm_cuda_status* st) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.count < 0) {
    int n = 0;
    r.count_error = cudaGetDeviceCount(&n);
    if (r.count_error != cudaSuccess) n = 0;
    r.count = n;
    r.devices = new Device[size_t(n > 0 ? n : 1)];
    r.once = new std::once_flag[size_t(n > 0 ? n : 1)];
    r.init_rc = new int32_t[size_t(n > 0 ? n : 1)]();
    r.init_status = new xnorm_cuda_status[size_t(n > 0 ? n : 1)]();
  }
  if (r.count_error != cudaSuccess) return report_driver_problem(st, r.count_error);
  if (r.count == 0) return report(st, XNORM_CUDA_UNAVAILABLE, "no CUDA device found");
  *count = r.count;
  return XNORM_CUDA_OK;
}

void init_device(int32_t i, Device& d, int32_t& rc, xnorm_cuda_status& st) {
  // Blocking sync: the addon waits for work on libuv threads, which must sleep rather than spin.
  // The flag cannot change once the primary context exists (another library in the process may have
  // created it first); that is harmless, so only cudaSetDevice's result counts.
  cudaInitDevice(i, cudaDeviceScheduleBlockingSync, 0);
  cudaGetLastError();
  cudaError_t e = cudaSetDevice(i);
  if (e != cudaSuccess) { rc = report_cuda(&st, e, "cannot initialise the CUDA device"); return; }
  int pools = 0, sms = 1, major = 0, minor = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, i);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, i);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
  e = cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) { rc = report_cuda(&st, e, "cannot create a CUDA stream"); return; }
  if (pools) {
    // Keep freed blocks in the pool instead of returning them to the driver at every synchronisation;
    // device_alloc trims the pool when an allocation fails.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, i) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  }
  d.index = i;
  d.pools = pools != 0;
  d.multiprocessors = sms > 0 ? sms : 1;
  d.cc = major * 10 + minor;
  rc = XNORM_CUDA_OK;
}

}  // namespace

int32_t use_device(int32_t device, Device** out, xnorm_cuda_status* st) {
  int32_t count = 0;
  XNORM_CUDA_TRY(count_devices(&count, st));
  if (device < 0 || device >= count)
    return report(st, XNORM_CUDA_ARGUMENT, "device cuda:%d does not exist (%d device%s)", device, count,
                  count == 1 ? "" : "s");
  Registry& r = registry();
  std::call_once(r.once[device], [&] { init_device(device, r.devices[device], r.init_rc[device], r.init_status[device]); });
  if (r.init_rc[device] != XNORM_CUDA_OK) {
    if (st) *st = r.init_status[device];
    return r.init_rc[device];
  }
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return report_cuda(st, e, "cannot select the CUDA device");
  *out = &r.devices[device];
  return XNORM_CUDA_OK;
}

int32_t device_alloc(Device& d, uint64_t bytes, void** out, xnorm_cuda_status* st) {
  *out = nullptr;
  if (bytes == 0) return XNORM_CUDA_OK;
  cudaError_t e = d.pools ? cudaMallocAsync(out, bytes, d.stream) : cudaMalloc(out, bytes);
  if (e == cudaErrorMemoryAllocation) {
    // Memory freed by queued work returns to the pool once the stream reaches it; blocks cached in
    // the pool may be too fragmented. Wait, give everything back to the driver and retry once.
    cudaGetLastError();
    cudaStreamSynchronize(d.stream);
    if (d.pools) {
      cudaMemPool_t pool;
      if (cudaDeviceGetDefaultMemPool(&pool, d.index) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    }
    e = d.pools ? cudaMallocAsync(out, bytes, d.stream) : cudaMalloc(out, bytes);
  }
  if (e != cudaSuccess) {
    *out = nullptr;
    cudaGetLastError();  // allocation failures are not sticky; clear them so later calls do not see them
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
      return report(st, XNORM_CUDA_OUT_OF_MEMORY,
                    "out of CUDA memory on cuda:%d: cannot allocate %llu bytes (%llu of %llu bytes free)", d.index,
                    (unsigned long long)bytes, (unsigned long long)free_b, (unsigned long long)total_b);
    return report_cuda(st, e, "CUDA allocation failed");
  }
  return XNORM_CUDA_OK;
}

void device_free(Device& d, void* p) {
  if (!p) return;
  if (d.pools) cudaFreeAsync(p, d.stream);
  else cudaFree(p);
}

int32_t finish(Device& d, xnorm_cuda_status* st, const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaStreamSynchronize(d.stream);
  if (e != cudaSuccess) return report_cuda(st, e, what);
  return XNORM_CUDA_OK;
}

namespace {

int32_t api_device_count(int32_t* count, xnorm_cuda_status* st) {
  if (!count) return report(st, XNORM_CUDA_ARGUMENT, "device_count: count is NULL");
  *count = 0;
  return count_devices(count, st);
}

int32_t api_device_info(int32_t device, xnorm_cuda_device_info* out, xnorm_cuda_status* st) {
  if (!out) return report(st, XNORM_CUDA_ARGUMENT, "device_info: out is NULL");
  int32_t count = 0;
  XNORM_CUDA_TRY(count_devices(&count, st));
  if (device < 0 || device >= count) return report(st, XNORM_CUDA_ARGUMENT, "device cuda:%d does not exist", device);
  // Properties come from the driver without creating a context, so listing devices stays cheap.
  cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) return report_cuda(st, e, "cannot read the CUDA device properties");
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", p.name);
  out->major = p.major;
  out->minor = p.minor;
  out->memory_bytes = p.totalGlobalMem;
  out->multiprocessors = p.multiProcessorCount;
  return XNORM_CUDA_OK;
}

int32_t api_alloc(int32_t device, uint64_t bytes, void** out, xnorm_cuda_status* st) {
  if (!out) return report(st, XNORM_CUDA_ARGUMENT, "alloc: out is NULL");
  *out = nullptr;
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  return device_alloc(*d, bytes, out, st);
}

int32_t api_free(int32_t device, void* p, xnorm_cuda_status* st) {
  if (!p) return XNORM_CUDA_OK;
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  cudaError_t e = d->pools ? cudaFreeAsync(p, d->stream) : cudaFree(p);
  return e == cudaSuccess ? XNORM_CUDA_OK : report_cuda(st, e, "CUDA free failed");
}

int32_t copy(int32_t device, void* dst, const void* src, uint64_t bytes, cudaMemcpyKind kind, xnorm_cuda_status* st,
             const char* what) {
  if (bytes == 0) return XNORM_CUDA_OK;
  if (!dst || !src) return report(st, XNORM_CUDA_ARGUMENT, "%s: NULL pointer", what);
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  // Pageable host memory: the copy is complete (and the host buffer free again) once the stream is.
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, d->stream);
  if (e != cudaSuccess) return report_cuda(st, e, what);
  return finish(*d, st, what);
}

int32_t api_upload(int32_t device, void* dst, const void* src, uint64_t bytes, xnorm_cuda_status* st) {
  return copy(device, dst, src, bytes, cudaMemcpyHostToDevice, st, "upload to the GPU");
}

int32_t api_download(int32_t device, void* dst, const void* src, uint64_t bytes, xnorm_cuda_status* st) {
  return copy(device, dst, src, bytes, cudaMemcpyDeviceToHost, st, "download from the GPU");
}

int32_t api_fill_zero(int32_t device, void* p, uint64_t bytes, xnorm_cuda_status* st) {
  if (bytes == 0) return XNORM_CUDA_OK;
  if (!p) return report(st, XNORM_CUDA_ARGUMENT, "fill_zero: NULL pointer");
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  cudaError_t e = cudaMemsetAsync(p, 0, bytes, d->stream);
  if (e != cudaSuccess) return report_cuda(st, e, "fill_zero");
  return finish(*d, st, "fill_zero");
}

int32_t api_synchronize(int32_t device, xnorm_cuda_status* st) {
  Device* d;
  XNORM_CUDA_TRY(use_device(device, &d, st));
  return finish(*d, st, "CUDA synchronisation");
}

const xnorm_cuda_api kApi = {
    XNORM_CUDA_ABI_VERSION,
    sizeof(xnorm_cuda_api),
    api_device_count,
    api_device_info,
    api_alloc,
    api_free,
    api_upload,
    api_download,
    api_fill_zero,
    api_synchronize,
    bnstats_moments,
    bnstats_batch_norm,
    binary_conv2d,
    binary_conv2d_mst,
    pack_bits,
    unpack_bits,
    conv_fold,
    conv_forward,
    conv_backward,
};

}  // namespace
}  // namespace xnorm_cuda

extern "C" {
XNORM_CUDA_EXPORT uint32_t xnorm_cuda_abi_version(void) { return XNORM_CUDA_ABI_VERSION; }
XNORM_CUDA_EXPORT const xnorm_cuda_api* xnorm_cuda_get_api(void) { return &xnorm_cuda::kApi; }
XNORM_CUDA_EXPORT void xnorm_cuda_versions(int32_t* runtime, int32_t* driver, const char** driver_needed) {
  int r = 0, d = 0;
  cudaRuntimeGetVersion(&r);
  cudaDriverGetVersion(&d);
  cudaGetLastError();
  *runtime = r;
  *driver = d;
  *driver_needed = xnorm_cuda::driver_for(r / 1000);
}
}
