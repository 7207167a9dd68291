// Bindings for convolution and fused Conv + BatchNorm: conv2d, Tune/Eval forward and backward, folding,
// the references and the FMA-peak probe. One entry per op for both devices: the "device" argument says
// where the tensors live (-1 = CPU typed arrays, otherwise device handles on that CUDA device), one reader
// checks the geometry through the core's conv_shape, and the op dispatches to the CPU kernels or the
// plugin. Every size is re-derived here and checked against the tensors, so a caller that bypasses lib/
// cannot make a kernel read or write out of bounds. Per-channel parameters are host Float32Arrays.
#include "../core/convbn/convbn.h"

#include <cstring>

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "families.h"
#include "handles.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

using convbn::BnParams;
using convbn::ConvShape;
using convbn::Grads;

constexpr int64_t kMaxGeom = int64_t(1) << 31;

float* f32(const Buffer& b) { return static_cast<float*>(b.data); }

// The shared arguments of every conv entry: device, dtypes, geometry and the fused ReLU.
struct Conv {
  ConvShape g;
  DType dtype = DType::Float32;    // activations
  DType w_dtype = DType::Float32;  // weight (float32 on the CPU, which converts nothing natively)
  int32_t device = -1;
  bool relu = false;
  const xnorm_cuda_api* api = nullptr;  // GPU only

  bool on_gpu() const { return device >= 0; }
  int64_t mask_words() const { return (g.y_size() + 31) / 32; }
  // run_op's inline_bytes for the forward: a CPU conv of at most kInlineMacs multiply-adds (a few µs)
  // runs inline in its async form too.
  int64_t inline_bytes() const {
    const int64_t out = g.y_size(), patch = g.patch();
    if (on_gpu() || out > kInlineMacs || patch > kInlineMacs || out * patch > kInlineMacs) return -1;
    return (g.x_size() + g.y_size() + g.w_size()) * int64_t(sizeof(float));
  }
  xnorm_cuda_conv plugin() const {
    xnorm_cuda_conv p{};
    p.n = g.n, p.c = g.c, p.h = g.h, p.w = g.w, p.cout = g.cout, p.kh = g.kh, p.kw = g.kw;
    p.groups = g.groups, p.sh = g.sh, p.sw = g.sw, p.ph = g.ph, p.pw = g.pw, p.dh = g.dh, p.dw = g.dw;
    p.layout = g.layout == convbn::Layout::NCHW ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
    p.dtype = plugin_dtype(dtype);
    p.w_dtype = plugin_dtype(w_dtype);
    p.relu = relu;
    return p;
  }
};

Conv read_conv(Args& a, bool float32_only = false) {
  Conv r;
  r.device = a.device();
  r.dtype = float32_only ? DType::Float32 : a.float_dtype("dtype");
  r.w_dtype = a.has("wDtype") ? a.float_dtype("wDtype") : DType::Float32;
  if (!r.on_gpu() && r.w_dtype != DType::Float32)
    fail(ErrorCode::DType, "weight: expected float32 on the CPU (lib/ converts it), received another dtype");
  std::vector<int64_t> xs = a.shape("xShape"), ws = a.shape("wShape");
  const int64_t stride[2] = {a.integer("strideH", 1, kMaxGeom), a.integer("strideW", 1, kMaxGeom)};
  const int64_t padding[2] = {a.integer("padH", 0, kMaxGeom), a.integer("padW", 0, kMaxGeom)};
  const int64_t dilation[2] = {a.integer("dilationH", 1, kMaxGeom), a.integer("dilationW", 1, kMaxGeom)};
  const int64_t groups = a.integer("groups", 1, kMaxGeom);
  auto layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? convbn::Layout::NCHW : convbn::Layout::NHWC;
  r.g = convbn::conv_shape(xs, ws, stride, padding, dilation, groups, layout);
  r.relu = a.flag("relu");
  if (r.on_gpu()) r.api = &cuda_api(r.device);
  return r;
}

// BN parameters (host float32, gamma and beta optional) and eps, with var + eps > 0 per channel.
BnParams read_bn(Args& a, int64_t cout) {
  BnParams bn;
  bn.mean = f32(a.host("mean", DType::Float32, cout));
  bn.var = f32(a.host("var", DType::Float32, cout));
  bn.gamma = f32(a.optional_host("gamma", DType::Float32, cout));
  bn.beta = f32(a.optional_host("beta", DType::Float32, cout));
  bn.eps = a.number("eps");
  if (!(bn.eps >= 0)) fail(ErrorCode::Argument, "eps: expected a finite number >= 0, received " + std::to_string(bn.eps));
  // One rule with batchNorm: a NaN statistic makes its channel NaN (as in PyTorch); var + eps <= 0 is refused.
  for (int64_t c = 0; c < cout; ++c)
    if (double(bn.var[c]) + bn.eps <= 0)
      fail(ErrorCode::Argument, "var[" + std::to_string(c) + "]: expected var + eps > 0, received " + std::to_string(bn.var[c]));
  return bn;
}

xnorm_cuda_bn plugin_bn(const BnParams& bn) { return xnorm_cuda_bn{bn.mean, bn.var, bn.gamma, bn.beta, bn.eps}; }

// The JS handle of prepared conv weights (ConvWeights). dispose() empties it; ops in flight keep theirs.
struct PreparedHandle {
  std::shared_ptr<const convbn::PreparedWeights> weights;
};

const napi_type_tag kPreparedTag = {0x786e6f726d636f6eull, 0x7677656967687473ull};  // "xnormcon" "vweights"

std::shared_ptr<const convbn::PreparedWeights> prepared_arg(Args& a, const std::string& name) {
  PreparedHandle& h = handle_arg<PreparedHandle>(a.object().Get("prepared"), kPreparedTag, name,
                                                 "ConvWeights (from prepareConv)");
  if (!h.weights) fail(ErrorCode::Disposed, name + ": the ConvWeights was disposed");
  return h.weights;
}

// prepareConv: float32 weights [Cout, Cin/groups, kh, kw] packed for the CPU kernels (on the pool when async).
Napi::Value PrepareConv(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "prepareConv");
    std::vector<int64_t> ws = a.shape("wShape");
    if (ws.size() != 4 || ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
      fail(ErrorCode::Shape, "prepareConv: weight: expected [Cout, Cin/groups, kh, kw] with all dimensions >= 1, received " +
                                 shape_str(ws));
    const int64_t groups = a.integer("groups", 1, kMaxGeom);
    if (ws[0] % groups != 0)
      fail(ErrorCode::Shape, "prepareConv: weight: Cout = " + std::to_string(ws[0]) + " is not divisible by groups = " +
                                 std::to_string(groups));
    Buffer w = a.host("weight", DType::Float32, shape_size(ws, "weight"));
    return run_op(a, [=]() -> ResultBuilder {
      auto p = std::make_shared<const convbn::PreparedWeights>(f32(w), ws[0], ws[1], ws[2], ws[3], groups);
      return [p](Napi::Env env) { return make_handle(env, new PreparedHandle{p}, kPreparedTag); };
    });
  });
}

Napi::Value ConvWeightsBytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convWeightsBytes");
    return Napi::Value(Napi::Number::New(info.Env(), double(prepared_arg(a, "ConvWeights.bytes")->bytes())));
  });
}

Napi::Value ReleaseConvWeights(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "releaseConvWeights");
    handle_arg<PreparedHandle>(a.object().Get("prepared"), kPreparedTag, "ConvWeights.dispose", "ConvWeights").weights.reset();
    return info.Env().Undefined();
  });
}

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "conv2d");
    const Conv c = read_conv(a);
    const ConvShape& g = c.g;
    Buffer x = a.tensor("x", c.dtype, g.x_size()), y = a.tensor("y", c.dtype, g.y_size());
    Buffer w, b = a.optional_host("bias", DType::Float32, g.cout);
    // Prepared weights (CPU only): wShape and groups, checked against x by read_conv, must be theirs.
    std::shared_ptr<const convbn::PreparedWeights> pre;
    if (a.has("prepared")) {
      pre = prepared_arg(a, "conv2d: weight");
      if (c.on_gpu())
        fail(ErrorCode::Device, "conv2d: weight: ConvWeights prepared on the CPU, x on CUDA device " + std::to_string(c.device) +
                                    "; prepare the weights on that device");
      if (pre->cout != g.cout || pre->cin_g != g.cin_g() || pre->kh != g.kh || pre->kw != g.kw || pre->groups != g.groups)
        fail(ErrorCode::Shape, "conv2d: weight: the ConvWeights' shape or groups differ from wShape and groups");
    } else {
      w = a.tensor("weight", c.w_dtype, g.w_size());
    }
    return run_op(a, [=]() -> ResultBuilder {
      if (pre) {
        convbn::conv_forward(g, c.dtype, x.data, *pre, f32(b), c.relu, y.data);
        return nullptr;
      }
      if (!c.on_gpu()) {
        convbn::conv_forward(g, c.dtype, x.data, f32(w), f32(b), c.relu, y.data, nullptr);
        return nullptr;
      }
      xnorm_cuda_status st{};
      const xnorm_cuda_conv p = c.plugin();
      cuda_check(c.api->conv_forward(c.device, &p, XNORM_CUDA_CONV_PLAIN, x.data, w.data, f32(b), nullptr, y.data,
                                     nullptr, nullptr, nullptr, &st),
                 st);
      return nullptr;
    }, c.inline_bytes());
  });
}

// conv2dBackward: the plain conv's gradients, dx (from dy and the weight) and dWeight (from x and dy);
// the absent ones are skipped. CPU only: the CUDA plugin has the Tune/Eval backward, no plain one yet.
Napi::Value Conv2dBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "conv2dBackward");
    const Conv c = read_conv(a);
    if (c.on_gpu())
      fail(ErrorCode::Device, "conv2dBackward: runs on the CPU only (no CUDA kernel yet); received tensors on CUDA device " +
                                  std::to_string(c.device));
    const ConvShape& g = c.g;
    Buffer dy = a.tensor("dy", c.dtype, g.y_size());
    const bool want_dx = a.has("dx"), want_dw = a.has("dWeight");
    if (!want_dx && !want_dw) fail(ErrorCode::Argument, "conv2dBackward: neither dx nor dWeight is wanted");
    Buffer dx = a.optional_tensor("dx", c.dtype, g.x_size());
    Buffer dw = a.optional_tensor("dWeight", DType::Float32, g.w_size());
    Buffer x = want_dw ? a.tensor("x", c.dtype, g.x_size()) : Buffer{};
    Buffer w = want_dx ? a.tensor("weight", DType::Float32, g.w_size()) : Buffer{};
    return run_op(a, [=]() -> ResultBuilder {
      if (g.x_size() == 0) return nullptr;  // an empty batch: dx is empty, and no input means dWeight = 0 (lib/ zero-fills it)
      convbn::conv_backward(g, c.dtype, want_dw ? x.data : nullptr, f32(w), dy.data, want_dx ? dx.data : nullptr,
                            want_dw ? f32(dw) : nullptr);
      return nullptr;
    });
  });
}

bool same_geometry(const ConvShape& a, const ConvShape& b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w && a.cout == b.cout && a.kh == b.kh && a.kw == b.kw &&
         a.sh == b.sh && a.sw == b.sw && a.ph == b.ph && a.pw == b.pw && a.dh == b.dh && a.dw == b.dw &&
         a.groups == b.groups && a.layout == b.layout;
}

// New zero-filled storage for state the saved object owns: host memory on the CPU, device memory on a GPU.
Buffer owned(const Conv& c, DType dt, int64_t length) {
  const auto bytes = uint64_t(checked_mul(length, dtype_bytes(dt), "saved state"));
  if (c.on_gpu()) {
    DeviceRef mem = device_alloc(c.device, bytes);
    xnorm_cuda_status st{};
    cuda_check(c.api->fill_zero(c.device, mem->ptr, bytes, &st), st);
    void* ptr = mem->ptr;
    return Buffer{ptr, length, std::move(mem)};
  }
  auto mem = std::make_shared<std::vector<uint8_t>>(size_t(bytes));
  void* ptr = mem->data();
  return Buffer{ptr, length, std::shared_ptr<void>(mem, ptr)};
}

// What Tune (or Eval) forward keeps for backward, made once by convBnSaved and checked then: the geometry
// and BN parameters (copies), the forward's x and weight (and Eval's y), and the state it owns: s and the
// 1-bit ReLU mask in Tune mode (never the conv output), the conv output z in Eval mode.
struct SavedConv {
  Conv c;
  bool tune = true;
  std::vector<float> bias, mean, var, gamma, beta;
  double eps = 1e-5;
  Buffer x, weight, y;  // the forward's tensors (on the CPU their arrays are referenced by the handle)
  Buffer s, mask, z;    // owned

  static const float* ptr(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }
  BnParams bn() const { return BnParams{ptr(mean), ptr(var), ptr(gamma), ptr(beta), eps}; }
};

// The JS handle: the state (shared with ops in flight) and, on the CPU, references that keep the forward's
// typed arrays alive. Deleted on the JS thread, by dispose() (releaseSaved) or the GC.
struct SavedHandle {
  std::shared_ptr<SavedConv> state;
  std::vector<Napi::ObjectReference> arrays;
};

const napi_type_tag kSavedTag = {0x786e6f726d736176ull, 0x6564636f6e76626eull};  // "xnormsav" "edconvbn"

SavedHandle& saved_arg(Args& a, const char* op) {
  return handle_arg<SavedHandle>(a.object().Get("saved"), kSavedTag, std::string(op) + ": saved",
                                 "a ConvBnSaved handle (from convBnSaved)");
}

std::vector<float> host_copy(const float* p, int64_t n) { return p ? std::vector<float>(p, p + n) : std::vector<float>(); }

// The saved state of one forward call: the same arguments as convBnForward, without the output.
Napi::Value ConvBnSaved(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convBnSaved");
    auto st = std::make_shared<SavedConv>();
    st->c = read_conv(a);
    const Conv& c = st->c;
    const ConvShape& g = c.g;
    st->tune = a.choice("mode", {"tune", "eval"}) == "tune";
    st->x = a.tensor("x", c.dtype, g.x_size());
    st->weight = a.tensor("weight", c.w_dtype, g.w_size());
    if (!st->tune && c.relu) st->y = a.tensor("y", c.dtype, g.y_size());
    const size_t arrays = a.buffers().size();  // the CPU arrays of x, weight and y: the handle keeps them
    st->bias = host_copy(f32(a.optional_host("bias", DType::Float32, g.cout)), g.cout);
    const BnParams bn = read_bn(a, g.cout);
    st->mean = host_copy(bn.mean, g.cout), st->var = host_copy(bn.var, g.cout);
    st->gamma = host_copy(bn.gamma, g.cout), st->beta = host_copy(bn.beta, g.cout);
    st->eps = bn.eps;
    if (st->tune) {
      st->s = owned(c, DType::Float32, g.cout);
      if (c.relu) st->mask = owned(c, DType::Bit, c.mask_words());
    } else {
      st->z = owned(c, c.dtype, g.y_size());
    }
    // The state outlives this call: the arrays it keeps must never be detached.
    a.check_live();
    a.pin();
    auto* h = new SavedHandle{std::move(st), {}};
    Napi::Value handle = make_handle(info.Env(), h, kSavedTag);
    for (size_t i = 0; i < arrays; ++i) h->arrays.push_back(Napi::Persistent(a.buffers()[i].As<Napi::Object>()));
    return handle;
  });
}

Napi::Value ConvBnForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convBn");
    const Conv c = read_conv(a);
    const ConvShape& g = c.g;
    const bool tune = a.choice("mode", {"tune", "eval"}) == "tune";
    Buffer x = a.tensor("x", c.dtype, g.x_size()), y = a.tensor("y", c.dtype, g.y_size());
    Buffer w = a.tensor("weight", c.w_dtype, g.w_size()), b = a.optional_host("bias", DType::Float32, g.cout);
    const BnParams bn = read_bn(a, g.cout);
    // With `saved`, the state backward needs is written into it: s (and the ReLU mask) or z.
    Buffer s, mask, z;
    if (a.has("saved")) {
      const std::shared_ptr<SavedConv> st = saved_arg(a, "convBn").state;
      if (!st) fail(ErrorCode::Disposed, "convBn: saved: the ConvBnSaved was disposed");
      if (st->tune != tune || st->c.relu != c.relu || st->c.device != c.device || st->c.dtype != c.dtype ||
          !same_geometry(st->c.g, g))
        fail(ErrorCode::Argument, "convBn: saved: made for another call (mode, geometry, device or dtype differ)");
      s = st->s, mask = st->mask, z = st->z;
    }
    return run_op(a, [=]() -> ResultBuilder {
      auto* mask_words = static_cast<uint32_t*>(mask.data);
      if (c.on_gpu()) {
        xnorm_cuda_status st{};
        const xnorm_cuda_conv p = c.plugin();
        const xnorm_cuda_bn pb = plugin_bn(bn);
        cuda_check(c.api->conv_forward(c.device, &p, tune ? XNORM_CUDA_CONV_TUNE : XNORM_CUDA_CONV_EVAL, x.data, w.data,
                                       f32(b), &pb, y.data, f32(s), mask_words, z.data, &st),
                   st);
      } else if (tune) {
        convbn::tune_forward(g, c.dtype, x.data, f32(w), f32(b), bn, c.relu, y.data, f32(s), mask_words);
      } else {
        convbn::eval_forward(g, c.dtype, x.data, f32(w), f32(b), bn, c.relu, y.data, z.data);
      }
      return nullptr;
    }, c.inline_bytes());
  });
}

// Backward from a saved state: dy and the gradients wanted (absent: skipped), on the state's device.
Napi::Value ConvBnBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convBnBackward");
    SavedHandle& h = saved_arg(a, "convBnBackward");
    if (!h.state) fail(ErrorCode::Disposed, "convBnBackward: saved: the ConvBnSaved was disposed");
    const std::shared_ptr<const SavedConv> st = h.state;
    for (const Napi::ObjectReference& r : h.arrays) a.keep(r.Value());  // an async op keeps them referenced
    const Conv& c = st->c;
    const ConvShape& g = c.g;
    if (a.device() != c.device)
      fail(ErrorCode::Device, "convBnBackward: dy: expected the device of the saved state (" + std::to_string(c.device) + ")");
    Buffer dy = a.tensor("dy", c.dtype, g.y_size());
    Buffer dx = a.optional_tensor("dx", c.dtype, g.x_size());
    Buffer dw = a.optional_tensor("dWeight", DType::Float32, g.w_size());
    Buffer dbias = a.optional_tensor("dBias", DType::Float32, g.cout);
    Buffer dgamma = a.optional_tensor("dGamma", DType::Float32, g.cout);
    Buffer dbeta = a.optional_tensor("dBeta", DType::Float32, g.cout);
    return run_op(a, [=]() -> ResultBuilder {
      const BnParams bn = st->bn();
      const float* bias = SavedConv::ptr(st->bias);
      const auto* mask_words = static_cast<const uint32_t*>(st->mask.data);
      const Buffer &x = st->x, &w = st->weight, &s = st->s, &z = st->z, &y = st->y;
      if (c.on_gpu()) {
        xnorm_cuda_status cs{};
        const xnorm_cuda_conv p = c.plugin();
        const xnorm_cuda_bn pb = plugin_bn(bn);
        const xnorm_cuda_conv_grads grads{dx.data, f32(dw), f32(dbias), f32(dgamma), f32(dbeta)};
        cuda_check(c.api->conv_backward(c.device, &p, st->tune ? XNORM_CUDA_CONV_TUNE : XNORM_CUDA_CONV_EVAL, x.data,
                                        w.data, bias, &pb, f32(s), mask_words, z.data, y.data, dy.data, &grads, &cs),
                   cs);
        return nullptr;
      }
      const Grads out{dx.data, f32(dw), f32(dbias), f32(dgamma), f32(dbeta)};
      if (st->tune) convbn::tune_backward(g, c.dtype, x.data, f32(w), bias, bn, f32(s), mask_words, dy.data, out);
      else convbn::eval_backward(g, c.dtype, x.data, z.data, y.data, f32(w), bn, dy.data, out);
      return nullptr;
    });
  });
}

// Test hook: copies of what a CPU saved state owns in Tune mode (s and the ReLU mask).
Napi::Value SavedState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "savedState");
    const std::shared_ptr<SavedConv> st = saved_arg(a, "savedState").state;
    if (!st) fail(ErrorCode::Disposed, "savedState: saved: the ConvBnSaved was disposed");
    if (st->c.on_gpu()) fail(ErrorCode::Device, "savedState: a CPU test hook");
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    if (st->s.data) {
      auto s = Napi::Float32Array::New(env, size_t(st->s.length));
      std::memcpy(s.Data(), st->s.data, s.ByteLength());
      o.Set("s", s);
    }
    if (st->mask.data) {
      auto mask = Napi::Uint32Array::New(env, size_t(st->mask.length));
      std::memcpy(mask.Data(), st->mask.data, mask.ByteLength());
      o.Set("mask", mask);
    }
    return Napi::Value(o);
  });
}

// dispose(): drops the state and the references now; ops in flight keep what they read. Idempotent.
Napi::Value ReleaseSaved(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "releaseSaved");
    SavedHandle& h = saved_arg(a, "releaseSaved");
    h.state.reset();
    h.arrays.clear();
    return info.Env().Undefined();
  });
}

// Deploy-mode weights W' and b' (float32) into the tensors given; synchronous, it is small.
Napi::Value ConvBnFold(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "foldConvBn");
    const int32_t device = a.device();
    const DType w_dtype = a.has("wDtype") ? a.float_dtype("wDtype") : DType::Float32;
    if (device < 0 && w_dtype != DType::Float32)
      fail(ErrorCode::DType, "foldConvBn: weight: expected float32 on the CPU (lib/ converts it), received another dtype");
    std::vector<int64_t> ws = a.shape("wShape");
    if (ws.size() != 4 || ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
      fail(ErrorCode::Shape, "foldConvBn: weight: expected [Cout, Cin/groups, kh, kw] with all dimensions >= 1, received " +
                                 shape_str(ws));
    ConvShape g;  // only Cout and the patch size matter here
    g.cout = ws[0], g.c = ws[1], g.kh = ws[2], g.kw = ws[3];
    const int64_t size = shape_size(ws, "weight");
    Buffer w = a.tensor("weight", w_dtype, size), b = a.optional_host("bias", DType::Float32, g.cout);
    const BnParams bn = read_bn(a, g.cout);
    Buffer wo = a.tensor("wOut", DType::Float32, size), bo = a.tensor("bOut", DType::Float32, g.cout);
    a.check_live();
    if (device < 0) {
      convbn::fold(g, f32(w), f32(b), bn, f32(wo), f32(bo), nullptr);
    } else {
      xnorm_cuda_status st{};
      const xnorm_cuda_bn pb = plugin_bn(bn);
      cuda_check(cuda_api(device).conv_fold(device, g.cout, size / g.cout, w.data, plugin_dtype(w_dtype), f32(b), &pb,
                                            f32(wo), f32(bo), nullptr, &st),
                 st);
    }
    return info.Env().Undefined();
  });
}

// Test hooks: the fast float32 conv passes alone, and the references (float32 CPU tensors only).
Napi::Value ConvKernel(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convKernel");
    std::string which = a.choice("which", {"forward", "backwardData", "backwardFilter"});
    bool reference = a.flag("reference");
    const Conv c = read_conv(a, reference);
    if (c.on_gpu()) fail(ErrorCode::Device, "convKernel: a CPU test hook; received device " + std::to_string(c.device));
    const ConvShape& g = c.g;
    const DType dt = c.dtype;
    Buffer w = a.tensor("weight", DType::Float32, g.w_size());
    if (which == "forward") {
      Buffer x = a.tensor("x", dt, g.x_size()), y = a.tensor("y", dt, g.y_size());
      Buffer b = a.optional_tensor("bias", DType::Float32, g.cout);
      a.check_live();
      if (reference) convbn::conv_reference(g, f32(x), f32(w), f32(b), f32(y));
      else convbn::conv_forward(g, dt, x.data, f32(w), f32(b), false, y.data, nullptr);
    } else if (which == "backwardData") {
      Buffer dy = a.tensor("dy", dt, g.y_size()), dx = a.tensor("dx", dt, g.x_size());
      a.check_live();
      if (reference) convbn::conv_backward_data_reference(g, f32(dy), f32(w), f32(dx));
      else convbn::conv_backward(g, dt, nullptr, f32(w), dy.data, dx.data, nullptr);
    } else {
      // weight receives dW here
      Buffer x = a.tensor("x", dt, g.x_size()), dy = a.tensor("dy", dt, g.y_size());
      a.check_live();
      if (reference) convbn::conv_backward_filter_reference(g, f32(x), f32(dy), f32(w));
      else convbn::conv_backward(g, dt, x.data, nullptr, dy.data, nullptr, f32(w));
    }
    return info.Env().Undefined();
  });
}

Napi::Value ConvInfo(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), convbn::micro_tile());
}

}  // namespace

void init_convbn(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2d", Napi::Function::New(env, Conv2d));
  exports.Set("conv2dBackward", Napi::Function::New(env, Conv2dBackward));
  exports.Set("prepareConv", Napi::Function::New(env, PrepareConv));
  exports.Set("convWeightsBytes", Napi::Function::New(env, ConvWeightsBytes));
  exports.Set("releaseConvWeights", Napi::Function::New(env, ReleaseConvWeights));
  exports.Set("convBnForward", Napi::Function::New(env, ConvBnForward));
  exports.Set("convBnSaved", Napi::Function::New(env, ConvBnSaved));
  exports.Set("convBnBackward", Napi::Function::New(env, ConvBnBackward));
  exports.Set("releaseSaved", Napi::Function::New(env, ReleaseSaved));
  exports.Set("savedState", Napi::Function::New(env, SavedState));
  exports.Set("convBnFold", Napi::Function::New(env, ConvBnFold));
  exports.Set("convKernel", Napi::Function::New(env, ConvKernel));
  exports.Set("convInfo", Napi::Function::New(env, ConvInfo));
}

}  // namespace xnorm::addon
