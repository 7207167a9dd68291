// Bindings for BN statistics: moments (fast and reference) and BN apply.
#include "../core/bnstats/bnstats.h"

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

using bnstats::Geometry;
using bnstats::Layout;
using bnstats::Over;

struct MomentsCall {
  Buffer x, mean, m2;
  DType dtype;
  Geometry g;
  Over over;
  int64_t groups;
};

MomentsCall read_moments(Args& a) {
  MomentsCall c;
  c.dtype = a.dtype("dtype");
  if (!dtype_is_float(c.dtype))
    fail(ErrorCode::DType, "moments: x: expected float32, float16 or bfloat16, received another dtype");
  std::vector<int64_t> shape = a.shape("shape");
  Layout layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? Layout::NCHW : Layout::NHWC;
  c.g = bnstats::geometry(shape, layout);
  std::string over = a.choice("over", {"channel", "instance", "group"});
  c.over = over == "channel" ? Over::Channel : over == "instance" ? Over::Instance : Over::Group;
  c.groups = c.over == Over::Group ? a.integer("groups", 1, c.g.c > 0 ? c.g.c : 1) : 1;
  if (c.g.c % c.groups != 0)
    fail(ErrorCode::Argument, "moments: groups: expected a divisor of C = " + std::to_string(c.g.c) + ", received " +
                                  std::to_string(c.groups));
  c.x = a.tensor("x", c.dtype, shape_size(shape, "x"));
  int64_t slots = bnstats::moment_slots(c.g, c.over, c.groups);
  c.mean = a.float64("mean", slots);
  c.m2 = a.float64("m2", slots);
  return c;
}

Napi::Value Moments(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "moments");
    MomentsCall c = read_moments(a);
    return run_op(a, [c]() -> ResultBuilder {
      int64_t count = bnstats::moments(c.x.data, c.dtype, c.g, c.over, c.groups, static_cast<double*>(c.mean.data),
                                       static_cast<double*>(c.m2.data));
      return [count](Napi::Env env) { return Napi::Number::New(env, double(count)); };
    });
  });
}

Napi::Value MomentsReference(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "momentsReference");
    MomentsCall c = read_moments(a);
    int64_t count = bnstats::moments_reference(c.x.data, c.dtype, c.g, c.over, c.groups,
                                               static_cast<double*>(c.mean.data), static_cast<double*>(c.m2.data));
    return Napi::Number::New(info.Env(), double(count));
  });
}

Napi::Value BatchNorm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "batchNorm");
    DType dtype = a.dtype("dtype");
    if (!dtype_is_float(dtype))
      fail(ErrorCode::DType, "batchNorm: x: expected float32, float16 or bfloat16, received another dtype");
    std::vector<int64_t> shape = a.shape("shape");
    Layout layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? Layout::NCHW : Layout::NHWC;
    Geometry g = bnstats::geometry(shape, layout);
    bool per_instance = a.flag("perInstance");
    bool relu = a.flag("relu");
    int64_t size = shape_size(shape, "x");
    Buffer x = a.tensor("x", dtype, size);
    Buffer y = a.tensor("y", dtype, size);
    int64_t coeffs = per_instance ? g.n * g.c : g.c;
    Buffer mean = a.tensor("mean", DType::Float32, coeffs);
    Buffer mean_lo = a.tensor("meanLo", DType::Float32, coeffs);
    Buffer scale = a.tensor("scale", DType::Float32, coeffs);
    Buffer beta = a.tensor("beta", DType::Float32, coeffs);
    return run_op(a, [=]() -> ResultBuilder {
      bnstats::apply(x.data, y.data, dtype, g, per_instance, static_cast<const float*>(mean.data),
                     static_cast<const float*>(mean_lo.data), static_cast<const float*>(scale.data),
                     static_cast<const float*>(beta.data), relu);
      return nullptr;
    });
  });
}

}  // namespace

void init_bnstats(Napi::Env env, Napi::Object exports) {
  exports.Set("moments", Napi::Function::New(env, Moments));
  exports.Set("momentsReference", Napi::Function::New(env, MomentsReference));
  exports.Set("batchNorm", Napi::Function::New(env, BatchNorm));
}

}  // namespace xnorm::addon
