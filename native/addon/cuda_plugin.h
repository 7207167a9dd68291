// The addon's side of the CUDA plugin: loading it with dlopen (no CUDA headers or libraries here, so the
// addon builds and loads everywhere), and device memory owned by JS tensors.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../include/xnorm_cuda.h"

namespace xnorm::addon {

// The loaded plugin's function table, or throws ERR_XNORM_CUDA_UNAVAILABLE with the reason it is not
// usable. `device` (when >= 0) must exist.
const xnorm_cuda_api& cuda_api(int device = -1);

// Turns a failed plugin call into an xnorm::Error with the matching code.
[[noreturn]] void cuda_fail(const xnorm_cuda_status& st);
inline void cuda_check(int32_t rc, const xnorm_cuda_status& st) {
  if (rc != XNORM_CUDA_OK) cuda_fail(st);
}

// A device allocation; freed (stream-ordered) when the last reference goes, so an op in flight keeps
// its inputs and outputs alive even if their tensors are disposed meanwhile.
struct DeviceMemory {
  const xnorm_cuda_api* api = nullptr;
  int32_t device = 0;
  void* ptr = nullptr;
  uint64_t bytes = 0;
  ~DeviceMemory();
};
using DeviceRef = std::shared_ptr<DeviceMemory>;

// The device memory behind a handle created by cudaAlloc, checked: it must be a live handle on
// `device` of exactly `bytes` bytes. `name` is used in error messages.
DeviceRef device_arg(const Napi::Value& v, const std::string& name, int32_t device, uint64_t bytes);

// New, uninitialised device memory on `device`, freed with the last reference.
DeviceRef device_alloc(int32_t device, uint64_t bytes);
// New device memory on `device` holding a copy of `bytes` bytes of host memory (weights, plan tables).
DeviceRef device_copy(int32_t device, const void* host, uint64_t bytes);

}  // namespace xnorm::addon
