// CPU emulation of the CUDA runtime and of kernel launches (see include/cuda_runtime.h).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <chrono>
#include <mutex>
#include <string>
#include <ucontext.h>
#include <vector>

#include "include/cuda_runtime.h"

namespace xnorm_emu {
namespace {

// CUDA threads are fibers (ucontext) on the calling host thread: a barrier or shuffle yields to the next
// fiber until every participant has arrived. One block runs at a time, so `static` shared memory is
// safe, and a process-wide lock serialises launches the way the plugin's single stream would.
constexpr size_t kStack = 256 * 1024;

struct Barrier {
  unsigned arrived = 0, generation = 0;
};

struct Scheduler {
  ucontext_t main;
  std::vector<ucontext_t> ctx;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::vector<ThreadState> states;
  std::vector<char> done;
  std::vector<Barrier> warps;
  Barrier block;
  unsigned threads = 0, current = 0;
  const std::function<void()>* body = nullptr;
};

Scheduler* g_sched = nullptr;  // set while a launch runs (under g_launch)
std::mutex g_launch;
thread_local cudaError_t t_last = cudaSuccess;

void yield() { swapcontext(&g_sched->ctx[g_sched->current], &g_sched->main); }

void wait_at(Barrier& b, unsigned count) {
  unsigned gen = b.generation;
  if (++b.arrived == count) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == gen) yield();
}

void fiber_main() {
  Scheduler& s = *g_sched;
  (*s.body)();
  s.done[s.current] = 1;
  // Returning resumes uc_link (the scheduler).
}

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}

// The emulated device: plenty of room, but a hard limit so out-of-memory paths can be tested.
constexpr size_t kMemory = size_t(1) << 36;

}  // namespace

ThreadState& state() { return g_sched->states[g_sched->current]; }

void syncthreads() { wait_at(g_sched->block, g_sched->threads); }

void warp_exchange(int lane, const void* in, void* out, int src, size_t bytes) {
  static thread_local unsigned char slots[1024][16];  // per fiber, indexed by thread
  Scheduler& s = *g_sched;
  unsigned warp = s.current / 32, base = warp * 32;
  std::memcpy(slots[base + unsigned(lane)], in, bytes);
  wait_at(s.warps[warp], 32);
  std::memcpy(out, slots[base + unsigned(src)], bytes);
  wait_at(s.warps[warp], 32);
}

void warp_all_gather(int lane, const void* in, size_t bytes, void* out) {
  static thread_local unsigned char slots[1024][32];  // per fiber, indexed by thread
  Scheduler& s = *g_sched;
  unsigned warp = s.current / 32, base = warp * 32;
  std::memcpy(slots[base + unsigned(lane)], in, bytes);
  wait_at(s.warps[warp], 32);
  for (unsigned l = 0; l < 32; ++l) std::memcpy(static_cast<unsigned char*>(out) + l * bytes, slots[base + l], bytes);
  wait_at(s.warps[warp], 32);
}

unsigned warp_ballot(int lane, bool pred) {
  static thread_local unsigned char flags[1024];
  Scheduler& s = *g_sched;
  unsigned warp = s.current / 32, base = warp * 32;
  flags[base + unsigned(lane)] = pred;
  wait_at(s.warps[warp], 32);
  unsigned word = 0;
  for (unsigned l = 0; l < 32; ++l) word |= unsigned(flags[base + l]) << l;
  wait_at(s.warps[warp], 32);
  return word;
}

void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (block % 32 != 0 || block > 1024) {
    fprintf(stderr, "xnorm_emu: block size %u is not a whole number of warps (at most 1024)\n", block);
    abort();
  }
  std::lock_guard<std::mutex> lock(g_launch);
  Scheduler s;
  s.threads = block;
  s.body = &body;
  s.ctx.resize(block);
  for (unsigned t = 0; t < block; ++t) s.stacks.emplace_back(new char[kStack]);  // untouched until used
  s.states.resize(block);
  s.warps.resize(block / 32);
  g_sched = &s;
  for (unsigned b = 0; b < grid; ++b) {
    s.done.assign(block, 0);
    for (unsigned t = 0; t < block; ++t) {
      s.states[t].thread = dim3{t, 0, 0};
      s.states[t].block = dim3{b, 0, 0};
      s.states[t].block_dim = dim3{block, 1, 1};
      s.states[t].grid_dim = dim3{grid, 1, 1};
      getcontext(&s.ctx[t]);
      s.ctx[t].uc_stack.ss_sp = s.stacks[t].get();
      s.ctx[t].uc_stack.ss_size = kStack;
      s.ctx[t].uc_link = &s.main;
      makecontext(&s.ctx[t], fiber_main, 0);
    }
    for (unsigned left = block; left > 0;) {
      left = 0;
      for (unsigned t = 0; t < block; ++t) {
        if (s.done[t]) continue;
        s.current = t;
        swapcontext(&s.main, &s.ctx[t]);
        if (!s.done[t]) ++left;
      }
    }
  }
  g_sched = nullptr;
}

}  // namespace xnorm_emu

using xnorm_emu::set_error;

// XNORM_EMU_DRIVER=none (no driver) or a CUDA driver version such as 12040 makes the emulated device
// count fail as the real runtime does then, so the plugin's driver diagnosis can be tested without a GPU.
int emu_driver_version() {
  const char* v = getenv("XNORM_EMU_DRIVER");
  if (!v || !*v) return 13000;
  return std::string(v) == "none" ? 0 : atoi(v);
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = emu_driver_version();
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 0;
  if (emu_driver_version() < 13000) return set_error(cudaErrorInsufficientDriver);
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return set_error(cudaErrorInvalidValue);
  std::memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "xnorm CPU emulation of a CUDA device");
  p->totalGlobalMem = xnorm_emu::kMemory;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaInitDevice(int device, unsigned, unsigned) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidValue); }
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidValue); }
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  // The emulated device claims sm_90 (as cudaGetDeviceProperties does); everything else is 1.
  *v = a == cudaDevAttrComputeCapabilityMajor ? 9 : a == cudaDevAttrComputeCapabilityMinor ? 0 : 1;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(uintptr_t(1));
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }  // launches run to completion
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* p, int) {
  *p = reinterpret_cast<cudaMemPool_t>(uintptr_t(1));
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes > xnorm_emu::kMemory) return set_error(cudaErrorMemoryAllocation);
  *p = aligned_alloc(256, (bytes + 255) / 256 * 256);
  return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = *total_b = xnorm_emu::kMemory;
  return cudaSuccess;
}
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  cudaError_t e = xnorm_emu::t_last;
  xnorm_emu::t_last = cudaSuccess;
  return e;
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    default: return "invalid argument";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    default: return "cudaErrorInvalidValue";
  }
}
