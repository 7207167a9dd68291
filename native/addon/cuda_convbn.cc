// Bindings of the CUDA convolution and Conv + BN ops (for lib/convbn.ts when x lives on a GPU): the CPU
// bindings' checks (the geometry goes through the core's conv_shape), device tensors passed as handles whose
// sizes must match the geometry exactly, and per-channel parameters as host Float32Arrays. The work and the
// wait for the GPU run inside run_op, so the async forms wait on a libuv thread.
#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "../core/convbn/convbn.h"
#include "args.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

constexpr int64_t kMaxGeom = int64_t(1) << 31;

int32_t plugin_dtype(DType t) {
  return t == DType::Float16 ? XNORM_CUDA_FLOAT16 : t == DType::BFloat16 ? XNORM_CUDA_BFLOAT16 : XNORM_CUDA_FLOAT32;
}

DType float_dtype(Args& a, const char* name) {
  DType t = a.dtype(name);
  if (!dtype_is_float(t))
    fail(ErrorCode::DType, std::string(name) + ": expected float32, float16 or bfloat16, received another dtype");
  return t;
}

// A device argument that may be absent (a gradient or saved tensor that is not wanted).
DeviceRef optional_device(const Napi::Object& o, const char* key, const std::string& name, int32_t device, uint64_t bytes) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return device_arg(v, name, device, bytes);
}

void* ptr(const DeviceRef& r) { return r ? r->ptr : nullptr; }

struct Conv {
  convbn::ConvShape g;
  xnorm_cuda_conv p{};
  DType dtype = DType::Float32, w_dtype = DType::Float32;
  int32_t device = 0;
  uint64_t x_bytes() const { return uint64_t(g.x_size()) * dtype_bytes(dtype); }
  uint64_t y_bytes() const { return uint64_t(g.y_size()) * dtype_bytes(dtype); }
  uint64_t w_bytes() const { return uint64_t(g.w_size()) * dtype_bytes(w_dtype); }
};

Conv read_conv(Args& a) {
  Conv r;
  r.device = int32_t(a.integer("device", 0, 1 << 20));
  r.dtype = float_dtype(a, "dtype");
  r.w_dtype = float_dtype(a, "wDtype");
  std::vector<int64_t> xs = a.shape("xShape"), ws = a.shape("wShape");
  const int64_t stride[2] = {a.integer("strideH", 1, kMaxGeom), a.integer("strideW", 1, kMaxGeom)};
  const int64_t padding[2] = {a.integer("padH", 0, kMaxGeom), a.integer("padW", 0, kMaxGeom)};
  const int64_t dilation[2] = {a.integer("dilationH", 1, kMaxGeom), a.integer("dilationW", 1, kMaxGeom)};
  const int64_t groups = a.integer("groups", 1, kMaxGeom);
  const bool nchw = a.choice("layout", {"nchw", "nhwc"}) == "nchw";
  r.g = convbn::conv_shape(xs, ws, stride, padding, dilation, groups, nchw ? convbn::Layout::NCHW : convbn::Layout::NHWC);
  const convbn::ConvShape& g = r.g;
  r.p.n = g.n, r.p.c = g.c, r.p.h = g.h, r.p.w = g.w, r.p.cout = g.cout, r.p.kh = g.kh, r.p.kw = g.kw;
  r.p.groups = g.groups, r.p.sh = g.sh, r.p.sw = g.sw, r.p.ph = g.ph, r.p.pw = g.pw, r.p.dh = g.dh, r.p.dw = g.dw;
  r.p.layout = nchw ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
  r.p.dtype = plugin_dtype(r.dtype);
  r.p.w_dtype = plugin_dtype(r.w_dtype);
  r.p.relu = a.flag("relu");
  return r;
}

// Host BN parameters (cout float32 values each; gamma and beta optional) and eps.
struct Bn {
  Buffer mean, var, gamma, beta;
  double eps = 1e-5;
  xnorm_cuda_bn view() const {
    return xnorm_cuda_bn{static_cast<const float*>(mean.data), static_cast<const float*>(var.data),
                         static_cast<const float*>(gamma.data), static_cast<const float*>(beta.data), eps};
  }
};

Bn read_bn(Args& a, int64_t cout) {
  Bn bn;
  bn.mean = a.tensor("mean", DType::Float32, cout);
  bn.var = a.tensor("var", DType::Float32, cout);
  bn.gamma = a.optional_tensor("gamma", DType::Float32, cout);
  bn.beta = a.optional_tensor("beta", DType::Float32, cout);
  bn.eps = a.number("eps");
  if (!(bn.eps >= 0)) fail(ErrorCode::Argument, "eps: expected a finite number >= 0, received " + std::to_string(bn.eps));
  const float* v = static_cast<const float*>(bn.var.data);
  for (int64_t c = 0; c < cout; ++c)
    if (!(double(v[c]) + bn.eps > 0))
      fail(ErrorCode::Argument, "var[" + std::to_string(c) + "]: expected var + eps > 0, received " + std::to_string(v[c]));
  return bn;
}

uint64_t mask_bytes(const convbn::ConvShape& g) { return uint64_t((g.y_size() + 31) / 32) * 4; }

// conv2d (mode 'plain'), Tune and Eval forward on device tensors.
Napi::Value CudaConvForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaConvForward");
    Napi::Object o = info[0].As<Napi::Object>();
    const Conv c = read_conv(a);
    const std::string mode_s = a.choice("mode", {"plain", "tune", "eval"});
    const int32_t mode = mode_s == "plain" ? XNORM_CUDA_CONV_PLAIN : mode_s == "tune" ? XNORM_CUDA_CONV_TUNE : XNORM_CUDA_CONV_EVAL;
    const int64_t cout = c.g.cout;
    Buffer bias = a.optional_tensor("bias", DType::Float32, cout);
    Bn bn;
    if (mode != XNORM_CUDA_CONV_PLAIN) bn = read_bn(a, cout);
    const xnorm_cuda_api* api = &cuda_api(c.device);
    DeviceRef x = device_arg(o.Get("x"), "x", c.device, c.x_bytes());
    DeviceRef w = device_arg(o.Get("weight"), "weight", c.device, c.w_bytes());
    DeviceRef y = device_arg(o.Get("y"), "y", c.device, c.y_bytes());
    const bool tune = mode == XNORM_CUDA_CONV_TUNE, eval = mode == XNORM_CUDA_CONV_EVAL;
    DeviceRef s = tune ? optional_device(o, "s", "s", c.device, uint64_t(cout) * 4) : nullptr;
    DeviceRef mask = tune && c.p.relu ? optional_device(o, "mask", "mask", c.device, mask_bytes(c.g)) : nullptr;
    DeviceRef z = eval ? optional_device(o, "z", "z", c.device, c.y_bytes()) : nullptr;
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      const xnorm_cuda_bn b = bn.view();
      cuda_check(api->conv_forward(c.device, &c.p, mode, x->ptr, w->ptr, static_cast<const float*>(bias.data),
                                   mode == XNORM_CUDA_CONV_PLAIN ? nullptr : &b, y->ptr, static_cast<float*>(ptr(s)),
                                   static_cast<uint32_t*>(ptr(mask)), ptr(z), &st),
                 st);
      return nullptr;
    });
  });
}

// Tune / Eval backward on device tensors: saved state and dy as handles, gradients into the handles given.
Napi::Value CudaConvBnBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaConvBnBackward");
    Napi::Object o = info[0].As<Napi::Object>();
    const Conv c = read_conv(a);
    const bool tune = a.choice("mode", {"tune", "eval"}) == "tune";
    const int64_t cout = c.g.cout;
    Buffer bias = a.optional_tensor("bias", DType::Float32, cout);
    Bn bn = read_bn(a, cout);
    const xnorm_cuda_api* api = &cuda_api(c.device);
    DeviceRef x = device_arg(o.Get("x"), "x", c.device, c.x_bytes());
    DeviceRef w = device_arg(o.Get("weight"), "weight", c.device, c.w_bytes());
    DeviceRef dy = device_arg(o.Get("dy"), "dy", c.device, c.y_bytes());
    DeviceRef s, mask, z, y;
    if (tune) {
      s = device_arg(o.Get("s"), "s", c.device, uint64_t(cout) * 4);
      if (c.p.relu) mask = device_arg(o.Get("mask"), "mask", c.device, mask_bytes(c.g));
    } else {
      z = device_arg(o.Get("z"), "z", c.device, c.y_bytes());
      if (c.p.relu) y = device_arg(o.Get("y"), "y", c.device, c.y_bytes());
    }
    DeviceRef dx = optional_device(o, "dx", "dx", c.device, c.x_bytes());
    DeviceRef dw = optional_device(o, "dWeight", "dWeight", c.device, uint64_t(c.g.w_size()) * 4);
    DeviceRef dbias = optional_device(o, "dBias", "dBias", c.device, uint64_t(cout) * 4);
    DeviceRef dgamma = optional_device(o, "dGamma", "dGamma", c.device, uint64_t(cout) * 4);
    DeviceRef dbeta = optional_device(o, "dBeta", "dBeta", c.device, uint64_t(cout) * 4);
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      const xnorm_cuda_bn b = bn.view();
      const xnorm_cuda_conv_grads grads{ptr(dx), static_cast<float*>(ptr(dw)), static_cast<float*>(ptr(dbias)),
                                        static_cast<float*>(ptr(dgamma)), static_cast<float*>(ptr(dbeta))};
      cuda_check(api->conv_backward(c.device, &c.p, tune ? XNORM_CUDA_CONV_TUNE : XNORM_CUDA_CONV_EVAL, x->ptr, w->ptr,
                                    static_cast<const float*>(bias.data), &b, static_cast<const float*>(ptr(s)),
                                    static_cast<const uint32_t*>(ptr(mask)), ptr(z), ptr(y), dy->ptr, &grads, &st),
                 st);
      return nullptr;
    });
  });
}

// foldConvBn with a device weight: float32 W' and b' into device handles (synchronous: it is small).
Napi::Value CudaConvBnFold(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaConvBnFold");
    Napi::Object o = info[0].As<Napi::Object>();
    const auto device = int32_t(a.integer("device", 0, 1 << 20));
    const DType w_dtype = float_dtype(a, "wDtype");
    std::vector<int64_t> ws = a.shape("wShape");
    if (ws.size() != 4 || ws[0] < 1 || ws[1] < 1 || ws[2] < 1 || ws[3] < 1)
      fail(ErrorCode::Shape, "foldConvBn: weight: expected [Cout, Cin/groups, kh, kw] with all dimensions >= 1, received " +
                                 shape_str(ws));
    const int64_t size = shape_size(ws, "weight"), cout = ws[0];
    Buffer bias = a.optional_tensor("bias", DType::Float32, cout);
    Bn bn = read_bn(a, cout);
    const xnorm_cuda_api* api = &cuda_api(device);
    DeviceRef w = device_arg(o.Get("weight"), "weight", device, uint64_t(size) * dtype_bytes(w_dtype));
    DeviceRef wo = device_arg(o.Get("wOut"), "wOut", device, uint64_t(size) * 4);
    DeviceRef bo = device_arg(o.Get("bOut"), "bOut", device, uint64_t(cout) * 4);
    xnorm_cuda_status st{};
    const xnorm_cuda_bn b = bn.view();
    cuda_check(api->conv_fold(device, cout, size / cout, w->ptr, plugin_dtype(w_dtype), static_cast<const float*>(bias.data),
                              &b, static_cast<float*>(wo->ptr), static_cast<float*>(bo->ptr), nullptr, &st),
               st);
    return info.Env().Undefined();
  });
}

}  // namespace

void init_cuda_convbn(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaConvForward", Napi::Function::New(env, CudaConvForward));
  exports.Set("cudaConvBnBackward", Napi::Function::New(env, CudaConvBnBackward));
  exports.Set("cudaConvBnFold", Napi::Function::New(env, CudaConvBnFold));
}

}  // namespace xnorm::addon
