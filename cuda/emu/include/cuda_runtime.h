// CPU emulation of the parts of the CUDA runtime and device language the plugin uses, so that the
// plugin's kernels can be built with a host compiler and run on threads (one std::thread per CUDA
// thread, blocks one after another). Only for tests on machines without a GPU: slow, and it checks
// the kernels' logic (indexing, reductions, barriers, shuffles), not their performance or the real
// memory model. Built by scripts/build-cuda-emu.sh.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint4 {
  unsigned x, y, z, w;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace xnorm_emu {
struct ThreadState {
  dim3 thread, block, block_dim, grid_dim;
};
ThreadState& state();
void syncthreads();
void warp_exchange(int lane, const void* in, void* out, int src, size_t bytes);
void launch(unsigned grid, unsigned block, const std::function<void()>& body);
// Every lane's `bytes` bytes (at most 32) into out[32][bytes]: what a loop of __shfl_sync over all source
// lanes gives, with one exchange (the tensor-core MMA emulation reads whole fragments this way).
void warp_all_gather(int lane, const void* in, size_t bytes, void* out);
}  // namespace xnorm_emu

#define threadIdx (::xnorm_emu::state().thread)
#define blockIdx (::xnorm_emu::state().block)
#define blockDim (::xnorm_emu::state().block_dim)
#define gridDim (::xnorm_emu::state().grid_dim)

inline void __syncthreads() { xnorm_emu::syncthreads(); }
namespace xnorm_emu {
unsigned warp_ballot(int lane, bool pred);
}
inline unsigned __ballot_sync(unsigned, int pred) { return xnorm_emu::warp_ballot(int(threadIdx.x & 31), pred != 0); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline float __int2float_rn(int v) { return float(v); }
// Separate, correctly rounded operations: volatile keeps the host compiler from fusing them.
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fsub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}

template <typename T>
T __shfl_down_sync(unsigned, T v, int offset) {
  int lane = int(threadIdx.x & 31);
  T r;
  xnorm_emu::warp_exchange(lane, &v, &r, lane + offset < 32 ? lane + offset : lane, sizeof(T));
  return r;
}

template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  T r;
  xnorm_emu::warp_exchange(int(threadIdx.x & 31), &v, &r, src & 31, sizeof(T));
  return r;
}

template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  int lane = int(threadIdx.x & 31);
  T r;
  xnorm_emu::warp_exchange(lane, &v, &r, (lane ^ mask) & 31, sizeof(T));
  return r;
}

// One fiber runs at a time, so a plain read-modify-write is atomic.
inline unsigned atomicOr(unsigned* p, unsigned v) {
  unsigned old = *p;
  *p = old | v;
  return old;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) {
  unsigned old = *p;
  *p = old + v;
  return old;
}
// Blocks run one after another, so every write is visible to the next block.
inline void __threadfence() {}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}
inline float __fdividef(float a, float b) { return a / b; }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
using std::fmaf;
using std::fmaxf;
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  return a < b ? a : b;
}

// Runtime API.
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100
};
typedef cudaError_t cudaError;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMemoryPoolsSupported = 115
};
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
typedef struct CUstream_st* cudaStream_t;
typedef struct CUmemPool_st* cudaMemPool_t;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaDeviceScheduleBlockingSync = 4;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
};

cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device);
cudaError_t cudaInitDevice(int device, unsigned flags, unsigned);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int device);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* p, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void* v);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t p, size_t keep);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b);
cudaError_t cudaGetLastError();
// Events take the host clock when recorded: launches and copies run to completion when queued.
typedef struct CUevent_st* cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, Kernel, int, size_t) {
  *n = 8;
  return cudaSuccess;
}
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
