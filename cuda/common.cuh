// Shared plumbing of the plugin: per-device state (one stream and one memory pool per device), CUDA
// error -> xnorm_cuda_status conversion, and scoped device scratch memory.
#pragma once
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdio>

#include "../native/include/xnorm_cuda.h"

namespace xnorm_cuda {

// Fills `st` (if not NULL) and returns its code.
int32_t report(xnorm_cuda_status* st, int32_t code, const char* fmt, ...);
// A failed CUDA call: OOM maps to XNORM_CUDA_OUT_OF_MEMORY, everything else to XNORM_CUDA_UNAVAILABLE.
int32_t report_cuda(xnorm_cuda_status* st, cudaError_t e, const char* what);

struct Device {
  int32_t index = -1;
  cudaStream_t stream = nullptr;
  bool pools = false;  // stream-ordered allocation supported (else plain cudaMalloc/cudaFree)
  int32_t multiprocessors = 1;
  int32_t cc = 0;  // compute capability as major * 10 + minor
  // The 1-bit tensor-core conv kernel against the CUDA-core one on this device: 0 not yet compared,
  // 1 identical (binary_conv2d's auto may use it), -1 different (auto keeps the CUDA-core kernel).
  std::atomic<int32_t> bconv_mma{0};
};

// Makes `device` current on this host thread, initialising its stream and pool on first use.
// Returns XNORM_CUDA_OK and sets *out, or fills st.
int32_t use_device(int32_t device, Device** out, xnorm_cuda_status* st);

int32_t device_alloc(Device& d, uint64_t bytes, void** out, xnorm_cuda_status* st);
void device_free(Device& d, void* p);

// Waits for the device's stream and turns any launch or execution error into a status.
int32_t finish(Device& d, xnorm_cuda_status* st, const char* what);

// Device scratch memory freed (stream-ordered) when the scope ends.
class Scratch {
 public:
  explicit Scratch(Device& d) : d_(d) {}
  ~Scratch() { device_free(d_, p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  int32_t alloc(uint64_t bytes, xnorm_cuda_status* st) { return device_alloc(d_, bytes, &p_, st); }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  Device& d_;
  void* p_ = nullptr;
};

// Kernel launch. Under nvcc it is the <<<>>> launch; a host compiler building the CPU emulation
// (cuda/emu/, for testing the kernels on machines without a GPU) runs the same kernel code on threads.
#ifdef __CUDACC__
#define XNORM_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#define XNORM_LAUNCH(kernel, grid, block, stream, ...) \
  ::xnorm_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); })
#endif

#define XNORM_CUDA_TRY(expr)             \
  do {                                   \
    int32_t xnorm_rc_ = (expr);          \
    if (xnorm_rc_ != XNORM_CUDA_OK) return xnorm_rc_; \
  } while (0)

}  // namespace xnorm_cuda
