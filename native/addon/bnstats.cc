// Bindings for BN statistics: moments (fast and reference) and BN apply, one entry per op for both
// devices: "device" -1 (the CPU) reads typed arrays, a CUDA index device handles. Moments always return
// their float64 results in host arrays; on a GPU float32 copies also stay on the device.
#include "../core/bnstats/bnstats.h"

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "cuda_plugin.h"
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
  Buffer mean32, m232;  // GPU: float32 copies on the device
  DType dtype;
  Geometry g;
  Over over;
  int64_t groups;
  int32_t device;
};

xnorm_cuda_geometry plugin_geometry(const Geometry& g) {
  xnorm_cuda_geometry r{};
  r.n = g.n, r.c = g.c, r.s = g.s;
  r.layout = g.layout == Layout::NCHW ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
  return r;
}

Geometry read_geometry(Args& a, std::vector<int64_t>* shape) {
  *shape = a.shape("shape");
  Layout layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? Layout::NCHW : Layout::NHWC;
  return bnstats::geometry(*shape, layout);
}

MomentsCall read_moments(Args& a) {
  MomentsCall c;
  c.device = a.device();
  c.dtype = a.float_dtype("dtype");
  std::vector<int64_t> shape;
  c.g = read_geometry(a, &shape);
  std::string over = a.choice("over", {"channel", "instance", "group"});
  c.over = over == "channel" ? Over::Channel : over == "instance" ? Over::Instance : Over::Group;
  c.groups = c.over == Over::Group ? a.integer("groups", 1, c.g.c > 0 ? c.g.c : 1) : 1;
  if (c.g.c % c.groups != 0)
    fail(ErrorCode::Argument, "moments: groups: expected a divisor of C = " + std::to_string(c.g.c) + ", received " +
                                  std::to_string(c.groups));
  const int64_t size = shape_size(shape, "x");
  // The CPU core refuses an empty reduction itself; the plugin is told nothing it cannot check.
  if (c.device >= 0 && size == 0) fail(ErrorCode::Shape, "moments: x: the reduction has no elements");
  c.x = a.tensor("x", c.dtype, size);
  int64_t slots = bnstats::moment_slots(c.g, c.over, c.groups);
  c.mean = a.float64("mean", slots);
  c.m2 = a.float64("m2", slots);
  if (c.device >= 0) {
    c.mean32 = a.tensor("meanF32", DType::Float32, slots);
    c.m232 = a.tensor("m2F32", DType::Float32, slots);
  }
  return c;
}

Napi::Value Moments(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "moments");
    MomentsCall c = read_moments(a);
    const xnorm_cuda_api* api = c.device >= 0 ? &cuda_api(c.device) : nullptr;
    const int64_t bytes = api ? -1 : c.x.length * int64_t(dtype_bytes(c.dtype));
    return run_op(a, [c, api]() -> ResultBuilder {
      auto* mean = static_cast<double*>(c.mean.data);
      auto* m2 = static_cast<double*>(c.m2.data);
      int64_t count = 0;
      if (!api) {
        count = bnstats::moments(c.x.data, c.dtype, c.g, c.over, c.groups, mean, m2);
      } else {
        xnorm_cuda_status st{};
        const xnorm_cuda_geometry g = plugin_geometry(c.g);
        const int32_t over = c.over == Over::Channel ? XNORM_CUDA_CHANNEL : c.over == Over::Instance ? XNORM_CUDA_INSTANCE : XNORM_CUDA_GROUP;
        cuda_check(api->moments(c.device, c.x.data, plugin_dtype(c.dtype), &g, over, c.groups, mean, m2,
                                static_cast<float*>(c.mean32.data), static_cast<float*>(c.m232.data), &count, &st),
                   st);
      }
      return [count](Napi::Env env) { return Napi::Number::New(env, double(count)); };
    }, bytes);
  });
}

Napi::Value MomentsReference(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "momentsReference");
    MomentsCall c = read_moments(a);
    if (c.device >= 0) fail(ErrorCode::Device, "momentsReference: the reference runs on the CPU only");
    a.check_live();
    int64_t count = bnstats::moments_reference(c.x.data, c.dtype, c.g, c.over, c.groups,
                                               static_cast<double*>(c.mean.data), static_cast<double*>(c.m2.data));
    return Napi::Number::New(info.Env(), double(count));
  });
}

Napi::Value BatchNorm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "batchNorm");
    const int32_t device = a.device();
    DType dtype = a.float_dtype("dtype");
    std::vector<int64_t> shape;
    Geometry g = read_geometry(a, &shape);
    bool per_instance = a.flag("perInstance");
    bool relu = a.flag("relu");
    int64_t size = shape_size(shape, "x");
    Buffer x = a.tensor("x", dtype, size);
    Buffer y = a.tensor("y", dtype, size);
    int64_t coeffs = per_instance ? g.n * g.c : g.c;
    const auto* mean = static_cast<const float*>(a.host("mean", DType::Float32, coeffs).data);
    const auto* mean_lo = static_cast<const float*>(a.host("meanLo", DType::Float32, coeffs).data);
    const auto* scale = static_cast<const float*>(a.host("scale", DType::Float32, coeffs).data);
    const auto* beta = static_cast<const float*>(a.host("beta", DType::Float32, coeffs).data);
    const xnorm_cuda_api* api = device >= 0 ? &cuda_api(device) : nullptr;
    const int64_t bytes = api ? -1 : 2 * size * int64_t(dtype_bytes(dtype));
    return run_op(a, [=]() -> ResultBuilder {
      if (!api) {
        bnstats::apply(x.data, y.data, dtype, g, per_instance, mean, mean_lo, scale, beta, relu);
        return nullptr;
      }
      xnorm_cuda_status st{};
      const xnorm_cuda_geometry pg = plugin_geometry(g);
      cuda_check(api->batch_norm(device, x.data, y.data, plugin_dtype(dtype), &pg, per_instance, mean, mean_lo, scale, beta,
                                 relu, &st),
                 st);
      return nullptr;
    }, bytes);
  });
}

}  // namespace

void init_bnstats(Napi::Env env, Napi::Object exports) {
  exports.Set("moments", Napi::Function::New(env, Moments));
  exports.Set("momentsReference", Napi::Function::New(env, MomentsReference));
  exports.Set("batchNorm", Napi::Function::New(env, BatchNorm));
}

}  // namespace xnorm::addon
