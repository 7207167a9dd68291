/* The C ABI between the xnorm addon (or any other host, such as the GPU check driver) and the
 * xnorm_cuda plugin. Plain C: the addon loads the plugin with dlopen and must not depend on any CUDA
 * header or library, and C structs keep the two sides compatible across compilers.
 *
 * Versioning: the plugin exports xnorm_cuda_abi_version() and xnorm_cuda_get_api(). A host calls the
 * first, refuses a plugin whose version differs from XNORM_CUDA_ABI_VERSION, then takes the function
 * table from the second. Any change to a struct or a signature below bumps the version.
 *
 * Conventions: every function returns an xnorm_cuda_code and, on failure, fills `status` with the code
 * and a message. Device pointers come from alloc() on the same device. All work on a device runs on one
 * stream owned by the plugin, so operations are ordered among themselves; functions that hand results
 * back to host memory (download, moments) return once the data are there, and the op functions return
 * once their kernels have finished, so errors are reported by the call that caused them. Every function
 * may be called from any host thread. */
#ifndef XNORM_CUDA_H
#define XNORM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XNORM_CUDA_ABI_VERSION 2u

#if defined(_WIN32)
#define XNORM_CUDA_EXPORT __declspec(dllexport)
#else
#define XNORM_CUDA_EXPORT __attribute__((visibility("default")))
#endif

typedef enum xnorm_cuda_code {
  XNORM_CUDA_OK = 0,
  XNORM_CUDA_UNAVAILABLE = 1,   /* no driver, no device, device lost, or a CUDA runtime failure */
  XNORM_CUDA_OUT_OF_MEMORY = 2, /* device memory exhausted; the process and the device stay usable */
  XNORM_CUDA_ARGUMENT = 3       /* a bad argument (the addon checks first, so this means a bug) */
} xnorm_cuda_code;

typedef struct xnorm_cuda_status {
  int32_t code;
  char message[512];
} xnorm_cuda_status;

typedef struct xnorm_cuda_device_info {
  char name[256];
  int32_t major, minor;        /* compute capability */
  uint64_t memory_bytes;       /* total global memory */
  int32_t multiprocessors;
  int32_t reserved;
} xnorm_cuda_device_info;

typedef enum xnorm_cuda_dtype { XNORM_CUDA_FLOAT32 = 0, XNORM_CUDA_FLOAT16 = 1, XNORM_CUDA_BFLOAT16 = 2 } xnorm_cuda_dtype;
typedef enum xnorm_cuda_layout { XNORM_CUDA_NCHW = 0, XNORM_CUDA_NHWC = 1 } xnorm_cuda_layout;
typedef enum xnorm_cuda_over { XNORM_CUDA_CHANNEL = 0, XNORM_CUDA_INSTANCE = 1, XNORM_CUDA_GROUP = 2 } xnorm_cuda_over;

/* x viewed as [n, c, s] (NCHW) or [n, s, c] (NHWC), s = product of the spatial dims. */
typedef struct xnorm_cuda_geometry {
  int64_t n, c, s;
  int32_t layout; /* xnorm_cuda_layout */
  int32_t reserved;
} xnorm_cuda_geometry;

/* Binary convolution (DESIGN.md "Binary"; the CPU core's bconv conventions). x: [n, h, w, ceil(c/32)]
 * words, channels packed innermost, bit 1 = -1; weights: [cout][kh][kw][ceil(cin_g/32)] words, tail bits 0;
 * group g reads input channels [g*cin_g, (g+1)*cin_g). dot = K - 2*popcount(x XOR w) over the taps inside
 * the image; padded taps count as +1 inputs (pad_zero = 0) or contribute nothing (pad_zero = 1).
 * Output [n, oh, ow, cout]: int32 dots, or float y = float(dot)*scale + bias (two roundings, no FMA, as
 * on the CPU) then clamped to [lo, hi] if `clamp`; or bits [n, oh, ow, ceil(cout/32)] words with bit 1
 * where that float value is < 0 (tail bits 0). */
typedef enum xnorm_cuda_bconv_output { XNORM_CUDA_OUT_FLOAT = 0, XNORM_CUDA_OUT_INT32 = 1, XNORM_CUDA_OUT_BITS = 2 } xnorm_cuda_bconv_output;
/* Which kernel computes it (all give identical results): SIMT is the CUDA-core XOR+popcount kernel, MMA the
 * 1-bit tensor-core one (XNORM_CUDA_ARGUMENT before sm_75). AUTO picks MMA on sm_75 and newer once a
 * self-check on the device (both kernels on a small conv, compared exactly, once per device and process)
 * has passed, and SIMT otherwise. */
typedef enum xnorm_cuda_bconv_algorithm { XNORM_CUDA_BCONV_AUTO = 0, XNORM_CUDA_BCONV_SIMT = 1, XNORM_CUDA_BCONV_MMA = 2 } xnorm_cuda_bconv_algorithm;
typedef struct xnorm_cuda_bconv {
  int64_t n, h, w, c;
  int64_t cout, cin_g, kh, kw, groups;
  int64_t sh, sw, ph, pw, dh, dw;
  int32_t pad_zero;
  int32_t output; /* xnorm_cuda_bconv_output */
  int32_t clamp;
  float lo, hi;
  int32_t algorithm; /* xnorm_cuda_bconv_algorithm */
} xnorm_cuda_bconv;

typedef struct xnorm_cuda_api {
  uint32_t abi_version; /* XNORM_CUDA_ABI_VERSION */
  uint32_t struct_size; /* sizeof(xnorm_cuda_api) */

  /* Devices. device_count fails (XNORM_CUDA_UNAVAILABLE, with the CUDA error text) when there is no
   * driver or no device; it never crashes. */
  int32_t (*device_count)(int32_t* count, xnorm_cuda_status* status);
  int32_t (*device_info)(int32_t device, xnorm_cuda_device_info* out, xnorm_cuda_status* status);

  /* Stream-ordered memory from the device's pool. alloc of 0 bytes gives NULL; free(NULL) is a no-op. */
  int32_t (*alloc)(int32_t device, uint64_t bytes, void** out, xnorm_cuda_status* status);
  int32_t (*free)(int32_t device, void* ptr, xnorm_cuda_status* status);
  /* Host <-> device copies of `bytes` bytes. upload returns once `src` may be reused; download once
   * `dst` holds the data (after all earlier work on the device). */
  int32_t (*upload)(int32_t device, void* dst, const void* src, uint64_t bytes, xnorm_cuda_status* status);
  int32_t (*download)(int32_t device, void* dst, const void* src, uint64_t bytes, xnorm_cuda_status* status);
  /* Sets `bytes` bytes of device memory to zero (returns once done). */
  int32_t (*fill_zero)(int32_t device, void* ptr, uint64_t bytes, xnorm_cuda_status* status);
  /* Waits for all work queued on the device's stream. */
  int32_t (*synchronize)(int32_t device, xnorm_cuda_status* status);

  /* BN statistics, same semantics as the CPU core (native/core/bnstats/bnstats.h): per slot (C, N*C or
   * N*groups slots), mean and m2 in double, written to HOST arrays; if mean_f32/m2_f32 are not NULL, the
   * same values rounded to float32 are also written to those DEVICE arrays. Deterministic: the result
   * depends only on the data and the shape. *count_out receives the element count per slot. */
  int32_t (*moments)(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g, int32_t over,
                     int64_t groups, double* mean_host, double* m2_host, float* mean_f32, float* m2_f32,
                     int64_t* count_out, xnorm_cuda_status* status);
  /* BN apply: y = act(((x - mean) - mean_lo) * scale + beta), coefficient arrays on the HOST with C
   * entries (or N*C when per_instance), x and y on the device (y may equal x). */
  int32_t (*batch_norm)(int32_t device, const void* x, void* y, int32_t dtype, const xnorm_cuda_geometry* g,
                        int32_t per_instance, const float* mean, const float* mean_lo, const float* scale,
                        const float* beta, int32_t relu, xnorm_cuda_status* status);

  /* Binary convolution (see xnorm_cuda_bconv). x, w and out on the device; scale and bias on the HOST
   * with cout entries, or NULL for 1 and 0. */
  int32_t (*binary_conv2d)(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* p,
                           const float* scale, const float* bias, void* out, xnorm_cuda_status* status);

  /* float -> bits (packBits): x of `dtype` viewed by g (NCHW [n, c, s] or NHWC [n, s, c]) on the device;
   * out [n*s][ceil(c/32)] words on the device, channel i at bit i%32 of word i/32, bit 1 where
   * float(x) < threshold (NaN gives 0), tail bits 0. thresholds: c values on the HOST, or NULL to use
   * `threshold` for every channel. */
  int32_t (*pack_bits)(int32_t device, const void* x, int32_t dtype, const xnorm_cuda_geometry* g,
                       const float* thresholds, float threshold, uint32_t* out, xnorm_cuda_status* status);
  /* bits -> float32 (unpackBits): b [n*s][ceil(c/32)] words on the device; out float32 on the device in
   * g's layout, -1 where the bit is 1 and +1 where it is 0. */
  int32_t (*unpack_bits)(int32_t device, const uint32_t* b, const xnorm_cuda_geometry* g, float* out,
                         xnorm_cuda_status* status);
} xnorm_cuda_api;

XNORM_CUDA_EXPORT uint32_t xnorm_cuda_abi_version(void);
XNORM_CUDA_EXPORT const xnorm_cuda_api* xnorm_cuda_get_api(void);

typedef uint32_t (*xnorm_cuda_abi_version_fn)(void);
typedef const xnorm_cuda_api* (*xnorm_cuda_get_api_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* XNORM_CUDA_H */
