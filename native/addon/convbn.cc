// Bindings for convolution and fused Conv + BatchNorm: conv2d, Tune/Eval forward and backward, folding,
// the references and the FMA-peak probe. Every size is re-derived here from the shapes and checked
// against the typed arrays, so a caller that bypasses lib/ cannot make a kernel write out of bounds.
#include "../core/convbn/convbn.h"

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

using convbn::BnParams;
using convbn::ConvShape;
using convbn::Grads;

constexpr int64_t kMaxGeom = int64_t(1) << 31;

struct Geometry {
  ConvShape g;
  DType dtype = DType::Float32;
};

Geometry read_geometry(Args& a, bool float32_only = false) {
  Geometry r;
  r.dtype = float32_only ? DType::Float32 : a.dtype("dtype");
  if (!dtype_is_float(r.dtype)) fail(ErrorCode::DType, "x: expected float32, float16 or bfloat16, received another dtype");
  std::vector<int64_t> xs = a.shape("xShape"), ws = a.shape("wShape");
  const int64_t stride[2] = {a.integer("strideH", 1, kMaxGeom), a.integer("strideW", 1, kMaxGeom)};
  const int64_t padding[2] = {a.integer("padH", 0, kMaxGeom), a.integer("padW", 0, kMaxGeom)};
  const int64_t dilation[2] = {a.integer("dilationH", 1, kMaxGeom), a.integer("dilationW", 1, kMaxGeom)};
  int64_t groups = a.integer("groups", 1, kMaxGeom);
  auto layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? convbn::Layout::NCHW : convbn::Layout::NHWC;
  r.g = convbn::conv_shape(xs, ws, stride, padding, dilation, groups, layout);
  return r;
}

float* f32(const Buffer& b) { return static_cast<float*>(b.data); }

BnParams read_bn(Args& a, int64_t cout) {
  BnParams bn;
  bn.mean = f32(a.tensor("mean", DType::Float32, cout));
  bn.var = f32(a.tensor("var", DType::Float32, cout));
  bn.gamma = f32(a.optional_tensor("gamma", DType::Float32, cout));
  bn.beta = f32(a.optional_tensor("beta", DType::Float32, cout));
  bn.eps = a.number("eps");
  if (!(bn.eps >= 0)) fail(ErrorCode::Argument, "eps: expected a finite number >= 0, received " + std::to_string(bn.eps));
  return bn;
}

int64_t mask_words(const ConvShape& g) { return (g.y_size() + 31) / 32; }

Napi::Value Conv2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "conv2d");
    Geometry geo = read_geometry(a);
    const ConvShape g = geo.g;
    const DType dt = geo.dtype;
    Buffer x = a.tensor("x", dt, g.x_size()), y = a.tensor("y", dt, g.y_size());
    Buffer w = a.tensor("weight", DType::Float32, g.w_size()), b = a.optional_tensor("bias", DType::Float32, g.cout);
    bool relu = a.flag("relu");
    return run_op(a, [=]() -> ResultBuilder {
      convbn::conv_forward(g, dt, x.data, f32(w), f32(b), relu, y.data, nullptr);
      return nullptr;
    });
  });
}

Napi::Value ConvBnForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convBn");
    Geometry geo = read_geometry(a);
    const ConvShape g = geo.g;
    const DType dt = geo.dtype;
    const bool tune = a.choice("mode", {"tune", "eval"}) == "tune";
    Buffer x = a.tensor("x", dt, g.x_size()), y = a.tensor("y", dt, g.y_size());
    Buffer w = a.tensor("weight", DType::Float32, g.w_size()), b = a.optional_tensor("bias", DType::Float32, g.cout);
    BnParams bn = read_bn(a, g.cout);
    bool relu = a.flag("relu");
    // Saved state: Tune keeps s (and the ReLU mask), Eval keeps the conv output z.
    Buffer s = tune ? a.optional_tensor("s", DType::Float32, g.cout) : Buffer{};
    Buffer mask = tune && relu ? a.optional_tensor("mask", DType::Bit, mask_words(g)) : Buffer{};
    Buffer z = tune ? Buffer{} : a.optional_tensor("z", dt, g.y_size());
    return run_op(a, [=]() -> ResultBuilder {
      if (tune) {
        convbn::tune_forward(g, dt, x.data, f32(w), f32(b), bn, relu, y.data, f32(s), static_cast<uint32_t*>(mask.data));
      } else {
        convbn::eval_forward(g, dt, x.data, f32(w), f32(b), bn, relu, y.data, z.data);
      }
      return nullptr;
    });
  });
}

Napi::Value ConvBnBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convBnBackward");
    Geometry geo = read_geometry(a);
    const ConvShape g = geo.g;
    const DType dt = geo.dtype;
    const bool tune = a.choice("mode", {"tune", "eval"}) == "tune";
    Buffer x = a.tensor("x", dt, g.x_size()), dy = a.tensor("dy", dt, g.y_size());
    Buffer w = a.tensor("weight", DType::Float32, g.w_size()), b = a.optional_tensor("bias", DType::Float32, g.cout);
    BnParams bn = read_bn(a, g.cout);
    bool relu = a.flag("relu");
    Buffer s, mask, z, y;
    if (tune) {
      s = a.tensor("s", DType::Float32, g.cout);
      if (relu) mask = a.tensor("mask", DType::Bit, mask_words(g));
    } else {
      z = a.tensor("z", dt, g.y_size());
      if (relu) y = a.tensor("y", dt, g.y_size());
    }
    Grads out;
    out.dx = a.optional_tensor("dx", dt, g.x_size()).data;
    out.dw = f32(a.optional_tensor("dWeight", DType::Float32, g.w_size()));
    out.dbias = f32(a.optional_tensor("dBias", DType::Float32, g.cout));
    out.dgamma = f32(a.optional_tensor("dGamma", DType::Float32, g.cout));
    out.dbeta = f32(a.optional_tensor("dBeta", DType::Float32, g.cout));
    return run_op(a, [=]() -> ResultBuilder {
      if (tune) {
        convbn::tune_backward(g, dt, x.data, f32(w), f32(b), bn, f32(s), static_cast<const uint32_t*>(mask.data), dy.data,
                              out);
      } else {
        convbn::eval_backward(g, dt, x.data, z.data, y.data, f32(w), bn, dy.data, out);
      }
      return nullptr;
    });
  });
}

Napi::Value ConvBnFold(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "foldConvBn");
    std::vector<int64_t> ws = a.shape("wShape");
    if (ws.size() != 4 || ws[0] < 1)
      fail(ErrorCode::Shape, "foldConvBn: weight: expected [Cout, Cin/groups, kh, kw] with Cout >= 1, received " +
                                 shape_str(ws));
    ConvShape g;  // only Cout and the patch size matter here
    g.cout = ws[0]; g.c = ws[1]; g.kh = ws[2]; g.kw = ws[3];
    int64_t size = shape_size(ws, "weight");
    Buffer w = a.tensor("weight", DType::Float32, size), b = a.optional_tensor("bias", DType::Float32, g.cout);
    BnParams bn = read_bn(a, g.cout);
    Buffer wo = a.tensor("wOut", DType::Float32, size), bo = a.tensor("bOut", DType::Float32, g.cout);
    convbn::fold(g, f32(w), f32(b), bn, f32(wo), f32(bo), nullptr);
    return info.Env().Undefined();
  });
}

// Test hooks: the fast float32 conv passes alone, and the references (float32 tensors only).
Napi::Value ConvKernel(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "convKernel");
    std::string which = a.choice("which", {"forward", "backwardData", "backwardFilter"});
    bool reference = a.flag("reference");
    Geometry geo = read_geometry(a, reference);
    const ConvShape g = geo.g;
    const DType dt = geo.dtype;
    Buffer w = a.tensor("weight", DType::Float32, g.w_size());
    if (which == "forward") {
      Buffer x = a.tensor("x", dt, g.x_size()), y = a.tensor("y", dt, g.y_size());
      Buffer b = a.optional_tensor("bias", DType::Float32, g.cout);
      if (reference) convbn::conv_reference(g, f32(x), f32(w), f32(b), f32(y));
      else convbn::conv_forward(g, dt, x.data, f32(w), f32(b), false, y.data, nullptr);
    } else if (which == "backwardData") {
      Buffer dy = a.tensor("dy", dt, g.y_size()), dx = a.tensor("dx", dt, g.x_size());
      if (reference) convbn::conv_backward_data_reference(g, f32(dy), f32(w), f32(dx));
      else convbn::conv_backward_data(g, dt, dy.data, f32(w), dx.data);
    } else {
      // weight receives dW here
      Buffer x = a.tensor("x", dt, g.x_size()), dy = a.tensor("dy", dt, g.y_size());
      if (reference) convbn::conv_backward_filter_reference(g, f32(x), f32(dy), f32(w));
      else convbn::conv_backward_filter(g, dt, x.data, dy.data, f32(w));
    }
    return info.Env().Undefined();
  });
}

Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "fmaPeak");
    double seconds = a.number("seconds");
    if (!(seconds > 0 && seconds <= 10)) fail(ErrorCode::Argument, "fmaPeak: seconds: expected a number in (0, 10]");
    return run_op(a, [seconds]() -> ResultBuilder {
      double gflops = convbn::fma_peak_gflops(seconds);
      return [gflops](Napi::Env env) { return Napi::Number::New(env, gflops); };
    });
  });
}

Napi::Value ConvInfo(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), convbn::micro_tile());
}

}  // namespace

void init_convbn(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2d", Napi::Function::New(env, Conv2d));
  exports.Set("convBnForward", Napi::Function::New(env, ConvBnForward));
  exports.Set("convBnBackward", Napi::Function::New(env, ConvBnBackward));
  exports.Set("convBnFold", Napi::Function::New(env, ConvBnFold));
  exports.Set("convKernel", Napi::Function::New(env, ConvKernel));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  exports.Set("convInfo", Napi::Function::New(env, ConvInfo));
}

}  // namespace xnorm::addon
