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

#define XNORM_CUDA_ABI_VERSION 4u

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

/* Binary convolution (docs/DESIGN.md "Binary convolution"; the CPU core's bconv conventions). x: [n, h, w, ceil(c/32)]
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

/* MST channel reuse (docs/DESIGN.md "MST plans"): channel `child` is computed from channel `parent` of the same
 * group as popc(x ^ w_child) = popc(x ^ w_parent) + d - 2 * sum_j popc((x_k & mask) ^ pbits) over the
 * `nwords` triples (k = word index into the channel's kh*kw*ceil(cin_g/32) weight words, mask = w_parent ^
 * w_child, pbits = w_parent & mask) stored at words [triples, triples + 3*nwords) of the plan's edge words,
 * with d = the number of mask bits. Popcounts are those of padding 'one' (padded taps are +1 inputs);
 * padding 'zero' is applied afterwards, in the output pass. */
typedef struct xnorm_cuda_mst_edge {
  int32_t child, parent, nwords, d;
  int64_t triples;
} xnorm_cuda_mst_edge;
/* A plan: the roots are computed densely, then the edges level by level (one launch per level; every
 * parent is a root or a child of an earlier level), then the output transform. Every output channel must
 * be a root or the child of exactly one edge. */
typedef struct xnorm_cuda_mst {
  const uint32_t* edge_words; /* DEVICE: the words the triples are read from (e.g. the CPU's edge records) */
  int64_t edge_words_len;     /* their count; every edge's triples must lie inside */
  const int32_t* roots;       /* HOST: the channels computed densely */
  int64_t nroots;
  const xnorm_cuda_mst_edge* edges; /* HOST: nedges edges ordered by level */
  int64_t nedges;
  const int64_t* level_ends; /* HOST: level l = 1..nlevels is edges [level_ends[l-2] (0 for l = 1), level_ends[l-1]) */
  int32_t nlevels;
  /* 1: also compute the convolution with the dense weights (binary_conv2d's AUTO kernel) and time both on
   * the device (CUDA events, each run twice, the faster of each kept) into plan_ms / dense_ms. The output
   * is the same either way. */
  int32_t trial;
  float plan_ms, dense_ms; /* out, when trial */
} xnorm_cuda_mst;

/* Convolution and fused Conv + BatchNorm (docs/DESIGN.md "Conv and BN"; the CPU core's conventions in
 * native/core/convbn/convbn.h). Activations (x, y, z, dy, dx) have `dtype` and `layout` ([n, c, h, w] or
 * [n, h, w, c] for x; [n, cout, oh, ow] or [n, oh, ow, cout] for y); the weight [cout, c/groups, kh, kw] has
 * `w_dtype`; every other device array is float32. Products run on tensor cores: TF32 (m16n8k8) for float32
 * activations, FP16/BF16 (m16n8k16) for 16-bit ones, accumulated in float32 (a tolerance, not bit-exactness,
 * against the CPU). */
typedef struct xnorm_cuda_conv {
  int64_t n, c, h, w;
  int64_t cout, kh, kw, groups;
  int64_t sh, sw, ph, pw, dh, dw;
  int32_t layout;  /* xnorm_cuda_layout of the activations */
  int32_t dtype;   /* xnorm_cuda_dtype of the activations */
  int32_t w_dtype; /* xnorm_cuda_dtype of the weight */
  int32_t relu;    /* ReLU after the bias (plain, tune) or after BN (eval) */
} xnorm_cuda_conv;
/* Frozen BN statistics and affine parameters: HOST arrays of cout floats; gamma / beta NULL = 1 / 0. */
typedef struct xnorm_cuda_bn {
  const float* mean;
  const float* var;
  const float* gamma;
  const float* beta;
  double eps;
} xnorm_cuda_bn;
/* PLAIN: y = act(conv(x, w) + bias) (conv2d, Deploy). TUNE: s = gamma / sqrt(var + eps),
 * y = act(conv(x, w * s) + (bias - mean) * s + beta), the fold formed on the device. EVAL: z = conv(x, w) + bias,
 * then y = act(BN(z)). */
typedef enum xnorm_cuda_conv_mode { XNORM_CUDA_CONV_PLAIN = 0, XNORM_CUDA_CONV_TUNE = 1, XNORM_CUDA_CONV_EVAL = 2 } xnorm_cuda_conv_mode;
/* Gradient outputs on the DEVICE; NULL = not wanted (its work is skipped). dx has x's dtype and layout, the
 * rest are float32 (dw like the weight, the others cout values). */
typedef struct xnorm_cuda_conv_grads {
  void* dx;
  float* dw;
  float* dbias;
  float* dgamma;
  float* dbeta;
} xnorm_cuda_conv_grads;

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

  /* Binary convolution by an MST plan (see xnorm_cuda_mst), with the same parameters, results and output
   * as binary_conv2d (p->algorithm is used only by the dense run of a trial; the roots run on CUDA cores).
   * w: the dense weights on the device (the roots read their rows; the padding 'zero' pass their popcounts). */
  int32_t (*binary_conv2d_mst)(int32_t device, const uint32_t* x, const uint32_t* w, const xnorm_cuda_bconv* p,
                               xnorm_cuda_mst* plan, const float* scale, const float* bias, void* out,
                               xnorm_cuda_status* status);
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
  /* Deploy-mode fold on the device: w_out = w * s and b_out = (bias - mean) * s + beta (float32, cout * patch
   * and cout values), s_out (optional) = s = gamma / sqrt(var + eps), computed as on the CPU. w on the device
   * (w_dtype); bias (NULL = zeros) and bn on the HOST. */
  int32_t (*conv_fold)(int32_t device, int64_t cout, int64_t patch, const void* w, int32_t w_dtype, const float* bias,
                       const xnorm_cuda_bn* bn, float* w_out, float* b_out, float* s_out, xnorm_cuda_status* status);
  /* Convolution forward in `mode` (xnorm_cuda_conv_mode). x, w, y on the device; bias (NULL = zeros) and bn
   * (NULL for PLAIN) on the HOST. Saved state for backward, on the device, each optional: TUNE s_out (cout
   * floats) and, with relu, mask_out (ceil(y elements / 32) words, bit i%32 of word i/32 = (y_i > 0), i in y's
   * storage order); EVAL z_out (the conv output, y's size and dtype). */
  int32_t (*conv_forward)(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                          const float* bias, const xnorm_cuda_bn* bn, void* y, float* s_out, uint32_t* mask_out,
                          void* z_out, xnorm_cuda_status* status);
  /* Backward of TUNE (from x, the saved s and, with relu, the mask; never the conv output) or EVAL (from x, z
   * and, with relu, y) forward, by the formulas of docs/DESIGN.md "Conv and BN". Device: x, w, s, mask, z, y, dy and the gradients;
   * HOST: bias (NULL = zeros) and bn. */
  int32_t (*conv_backward)(int32_t device, const xnorm_cuda_conv* g, int32_t mode, const void* x, const void* w,
                           const float* bias, const xnorm_cuda_bn* bn, const float* s, const uint32_t* mask,
                           const void* z, const void* y, const void* dy, const xnorm_cuda_conv_grads* out,
                           xnorm_cuda_status* status);
} xnorm_cuda_api;

XNORM_CUDA_EXPORT uint32_t xnorm_cuda_abi_version(void);
XNORM_CUDA_EXPORT const xnorm_cuda_api* xnorm_cuda_get_api(void);

/* Optional (a host looks it up and copes without it): the CUDA runtime version the plugin is built with
 * and the driver's (as 1000 * major + 10 * minor; driver 0 = no NVIDIA driver installed), and the driver
 * that runtime needs, in words. */
XNORM_CUDA_EXPORT void xnorm_cuda_versions(int32_t* runtime, int32_t* driver, const char** driver_needed);

typedef uint32_t (*xnorm_cuda_abi_version_fn)(void);
typedef void (*xnorm_cuda_versions_fn)(int32_t* runtime, int32_t* driver, const char** driver_needed);
typedef const xnorm_cuda_api* (*xnorm_cuda_get_api_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* XNORM_CUDA_H */
