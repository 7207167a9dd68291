// CPU emulation of the CUDA runtime and of kernel launches (see include/cuda_runtime.h).
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "include/cuda_runtime.h"

namespace xnorm_emu {
namespace {

class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    unsigned gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  unsigned n_, arrived_ = 0, gen_ = 0;
};

struct Warp {
  Barrier barrier{32};
  unsigned char slot[32][16];
};

struct Block {
  explicit Block(unsigned threads) : barrier(threads), warps((threads + 31) / 32) {}
  Barrier barrier;
  std::vector<Warp> warps;
};

thread_local ThreadState t_state;
thread_local Block* t_block = nullptr;
thread_local cudaError_t t_last = cudaSuccess;

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}

// The emulated device: plenty of room, but a hard limit so out-of-memory paths can be tested.
constexpr size_t kMemory = size_t(1) << 36;

}  // namespace

ThreadState& state() { return t_state; }

void syncthreads() { t_block->barrier.wait(); }

void warp_exchange(int lane, const void* in, void* out, int src, size_t bytes) {
  Warp& w = t_block->warps[t_state.thread.x / 32];
  std::memcpy(w.slot[lane], in, bytes);
  w.barrier.wait();
  std::memcpy(out, w.slot[src], bytes);
  w.barrier.wait();
}

void launch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (block % 32 != 0) {
    fprintf(stderr, "xnorm_emu: block size %u is not a whole number of warps\n", block);
    abort();
  }
  // One host thread per CUDA thread of a block, reused for every block in turn; the barrier between
  // blocks keeps them apart, so `static` shared memory is never used by two blocks at once.
  Block blk(block);
  std::vector<std::thread> threads;
  threads.reserve(block);
  for (unsigned t = 0; t < block; ++t)
    threads.emplace_back([&, t] {
      t_block = &blk;
      t_state.thread = dim3{t, 0, 0};
      t_state.block_dim = dim3{block, 1, 1};
      t_state.grid_dim = dim3{grid, 1, 1};
      for (unsigned b = 0; b < grid; ++b) {
        t_state.block = dim3{b, 0, 0};
        body();
        blk.barrier.wait();
      }
    });
  for (std::thread& th : threads) th.join();
}

}  // namespace xnorm_emu

using xnorm_emu::set_error;

cudaError_t cudaGetDeviceCount(int* n) {
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
  *v = 1;
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
    default: return "invalid argument";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaErrorInvalidValue";
  }
}
