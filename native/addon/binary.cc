// Bindings for binary convolution: packBits / unpackBits, binaryConv2d (dense weights or an MST plan) and
// its reference, one entry per op for both devices ("device" -1 = CPU typed arrays, otherwise device
// handles on that CUDA device). Weights and plans arrive as native handles, validated when they were made
// (weights.cc); the geometry and every tensor size are checked here on each call, so a caller bypassing
// lib/ cannot make a kernel read or write out of bounds.
#include "../core/bconv/bconv.h"
#include "../core/common/checked.h"
#include "../core/common/debug.h"
#include "../core/common/error.h"
#include "../core/mst/mst.h"
#include "args.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"
#include "weights.h"

namespace xnorm::addon {
namespace {

constexpr int64_t kMaxGeom = int64_t(1) << 31;

// The [N, C, S] view of packBits / unpackBits.
struct Bits {
  int32_t device;
  bool nchw;
  int64_t n, c, s;
  int64_t floats() const { return n * c * s; }
  int64_t words() const { return n * s * ((c + 31) / 32); }
  xnorm_cuda_geometry plugin() const {
    xnorm_cuda_geometry g{};
    g.n = n, g.c = c, g.s = s;
    g.layout = nchw ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
    return g;
  }
};

Bits read_bits(Args& a) {
  Bits b;
  b.device = a.device();
  b.nchw = a.choice("layout", {"nchw", "nhwc"}) == "nchw";
  b.n = a.integer("n", 1, kMaxElements), b.c = a.integer("c", 1, kMaxElements), b.s = a.integer("s", 1, kMaxElements);
  checked_mul(checked_mul(b.n, b.c, "x"), b.s, "x");
  return b;
}

Napi::Value PackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "packBits");
    const Bits g = read_bits(a);
    const DType dtype = a.has("dtype") ? a.float_dtype("dtype") : DType::Float32;
    if (g.device < 0 && dtype != DType::Float32)
      fail(ErrorCode::DType, "packBits: x: expected float32 on the CPU (lib/ converts it), received another dtype");
    Buffer x = a.tensor("x", dtype, g.floats());
    const auto* thresholds = static_cast<const float*>(a.optional_host("thresholds", DType::Float32, g.c).data);
    const auto t0 = float(a.number("threshold"));
    Buffer out = a.tensor("out", DType::Bit, g.words());
    const xnorm_cuda_api* api = g.device >= 0 ? &cuda_api(g.device) : nullptr;
    const int64_t bytes = api ? -1 : g.floats() * 4 + g.words() * 4;
    return run_op(a, [=]() -> ResultBuilder {
      auto* words = static_cast<uint32_t*>(out.data);
      if (!api) {
        bconv::pack_bits(static_cast<const float*>(x.data), g.nchw, g.n, g.c, g.s, thresholds, t0, words);
        return nullptr;
      }
      xnorm_cuda_status st{};
      const xnorm_cuda_geometry pg = g.plugin();
      cuda_check(api->pack_bits(g.device, x.data, plugin_dtype(dtype), &pg, thresholds, t0, words, &st), st);
      return nullptr;
    }, bytes);
  });
}

Napi::Value UnpackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "unpackBits");
    const Bits g = read_bits(a);
    Buffer b = a.tensor("b", DType::Bit, g.words());
    Buffer out = a.tensor("out", DType::Float32, g.floats());
    const xnorm_cuda_api* api = g.device >= 0 ? &cuda_api(g.device) : nullptr;
    const int64_t bytes = api ? -1 : g.floats() * 4 + g.words() * 4;
    return run_op(a, [=]() -> ResultBuilder {
      const auto* words = static_cast<const uint32_t*>(b.data);
      if (!api) {
        bconv::unpack_bits(words, g.nchw, g.n, g.c, g.s, static_cast<float*>(out.data));
        return nullptr;
      }
      xnorm_cuda_status st{};
      const xnorm_cuda_geometry pg = g.plugin();
      cuda_check(api->unpack_bits(g.device, words, &pg, static_cast<float*>(out.data), &st), st);
      return nullptr;
    }, bytes);
  });
}

// Everything a binaryConv2d call reads, checked.
struct ConvCall {
  int32_t device = -1;
  std::shared_ptr<PackedWeights> weights;
  std::shared_ptr<Plan> plan;  // null: the dense weights
  bconv::ConvParams p;
  bconv::Transform t;
  Buffer x, out;
  int32_t algorithm = XNORM_CUDA_BCONV_AUTO;

  const bconv::WeightShape& s() const { return weights->shape; }
  bconv::Execution execution() const {
    const int64_t pixels = p.n * bconv::out_size(p.h, p.ph, p.dh, s().kh, p.sh) * bconv::out_size(p.w, p.pw, p.dw, s().kw, p.sw);
    const bool edges = plan && plan->cpu_runs_edges(static_cast<const uint32_t*>(x.data), p, t, pixels);
    if (plan && debug_enabled() &&
        debug_first("mst " + std::to_string(uintptr_t(plan.get())) + " " + std::to_string(pixels) + " " +
                    std::to_string(int(t.kind)) + " " + std::to_string(int(p.pad_zero))))
      debug_log("binaryConv2d with an MST plan, " + std::to_string(pixels) + " output pixels: " +
                (edges                    ? "runs its reuse edges"
                 : plan->built.nedges == 0 ? "runs dense (the plan has no reuse edges)"
                 : plan->tree.bits_only && !bconv::sliced_bits_output(p, t, s().cout)
                     ? "runs dense (its edges pay only for bit-sliced 'bits' output)"
                     : "runs dense (its edges were not faster at this size in its trial)"));
    return edges ? plan->execution() : weights->execution();
  }
  xnorm_cuda_bconv plugin() const {
    xnorm_cuda_bconv q{};
    q.n = p.n, q.h = p.h, q.w = p.w, q.c = p.c;
    q.cout = s().cout, q.cin_g = s().cin_g, q.kh = s().kh, q.kw = s().kw, q.groups = s().groups;
    q.sh = p.sh, q.sw = p.sw, q.ph = p.ph, q.pw = p.pw, q.dh = p.dh, q.dw = p.dw;
    q.pad_zero = p.pad_zero;
    q.output = t.kind == bconv::Output::Float ? XNORM_CUDA_OUT_FLOAT
               : t.kind == bconv::Output::Int32 ? XNORM_CUDA_OUT_INT32 : XNORM_CUDA_OUT_BITS;
    q.algorithm = algorithm;
    q.clamp = t.clamp;
    q.lo = t.lo, q.hi = t.hi;
    return q;
  }
};

ConvCall read_conv(Args& a, const char* op) {
  ConvCall c;
  Napi::Object o = a.object();
  c.device = a.device();
  if (a.has("plan")) {
    c.plan = plan_arg(o.Get("plan"), std::string(op) + ": w");
    c.weights = c.plan->weights;
  } else {
    c.weights = weights_arg(o.Get("weights"), std::string(op) + ": w");
  }
  const bconv::WeightShape& s = c.s();
  std::vector<int64_t> xs = a.shape("xShape");
  if (xs.size() != 4) fail(ErrorCode::Shape, std::string(op) + ": x: expected [N, H, W, C], received " + shape_str(xs));
  c.p.n = xs[0], c.p.h = xs[1], c.p.w = xs[2], c.p.c = xs[3];
  c.p.sh = a.integer("strideH", 1, kMaxGeom), c.p.sw = a.integer("strideW", 1, kMaxGeom);
  c.p.ph = a.integer("padH", 0, kMaxGeom), c.p.pw = a.integer("padW", 0, kMaxGeom);
  c.p.dh = a.integer("dilationH", 1, kMaxGeom), c.p.dw = a.integer("dilationW", 1, kMaxGeom);
  c.p.pad_zero = a.choice("padValue", {"one", "zero"}) == "zero";
  bconv::check_conv(c.p, s);
  c.x = a.tensor("x", DType::Bit, checked_mul(c.p.n * c.p.h * c.p.w, (c.p.c + 31) / 32, "x"));
  const std::string kind = a.choice("output", {"float", "int32", "bits"});
  c.t.kind = kind == "float" ? bconv::Output::Float : kind == "int32" ? bconv::Output::Int32 : bconv::Output::Bits;
  c.t.scale = static_cast<const float*>(a.optional_host("scale", DType::Float32, s.cout).data);
  c.t.bias = static_cast<const float*>(a.optional_host("bias", DType::Float32, s.cout).data);
  c.t.clamp = a.has("clampLo");
  if (c.t.clamp) {
    c.t.lo = float(a.bound("clampLo"));
    c.t.hi = float(a.bound("clampHi"));
    if (!(c.t.lo <= c.t.hi)) fail(ErrorCode::Argument, std::string(op) + ": clamp: expected lo <= hi");
  }
  if (c.t.kind == bconv::Output::Int32 && (c.t.scale || c.t.bias || c.t.clamp))
    fail(ErrorCode::Argument, std::string(op) + ": scale, bias and clamp apply to 'float' and 'bits' outputs, not 'int32'");
  // Optional, for GPU tests and checks: which kernel runs (default: the plugin picks).
  if (a.has("algorithm")) {
    const std::string alg = a.choice("algorithm", {"auto", "simt", "mma"});
    c.algorithm = alg == "simt" ? XNORM_CUDA_BCONV_SIMT : alg == "mma" ? XNORM_CUDA_BCONV_MMA : XNORM_CUDA_BCONV_AUTO;
  }
  const int64_t oh = bconv::out_size(c.p.h, c.p.ph, c.p.dh, s.kh, c.p.sh);
  const int64_t ow = bconv::out_size(c.p.w, c.p.pw, c.p.dw, s.kw, c.p.sw);
  const int64_t pixels = checked_mul(checked_mul(c.p.n, oh, "out"), ow, "out");
  if (c.t.kind == bconv::Output::Bits)
    c.out = a.tensor("out", DType::Bit, checked_mul(pixels, (s.cout + 31) / 32, "out"));
  else
    c.out = a.tensor("out", c.t.kind == bconv::Output::Float ? DType::Float32 : DType::Int32, checked_mul(pixels, s.cout, "out"));
  return c;
}

// On a GPU: the dense kernels, or an MST plan level by level ('always'; 'auto' where a first-call trial
// on this device found the edges faster, see Plan::gpu_mode). Bit-identical results either way.
void run_on_gpu(const ConvCall& c) {
  const xnorm_cuda_api& api = cuda_api(c.device);
  const DeviceRef words = c.weights->device_words.on(c.device, c.weights->words.data(), c.weights->words.size() * 4);
  const xnorm_cuda_bconv q = c.plugin();
  const auto* x = static_cast<const uint32_t*>(c.x.data);
  const auto* w = static_cast<const uint32_t*>(words->ptr);
  xnorm_cuda_status st{};
  const Plan::GpuMode mode = c.plan ? c.plan->gpu_mode(c.device) : Plan::GpuMode::Dense;
  if (mode == Plan::GpuMode::Dense) {
    cuda_check(api.binary_conv2d(c.device, x, w, &q, c.t.scale, c.t.bias, c.out.data, &st), st);
    return;
  }
  const Plan& plan = *c.plan;
  const std::vector<uint32_t>& edges = plan.built.edges;
  const DeviceRef edge_words = c.plan->device_edges.on(c.device, edges.data(), edges.size() * 4);
  xnorm_cuda_mst m{};
  m.edge_words = static_cast<const uint32_t*>(edge_words->ptr);
  m.edge_words_len = int64_t(edges.size());
  m.roots = plan.levels.roots.data();
  m.nroots = int64_t(plan.levels.roots.size());
  m.edges = plan.gpu_edges.data();
  m.nedges = int64_t(plan.gpu_edges.size());
  m.level_ends = plan.levels.level_ends.data();
  m.nlevels = int32_t(plan.levels.level_ends.size());
  m.trial = mode == Plan::GpuMode::Trial;
  cuda_check(api.binary_conv2d_mst(c.device, x, w, &q, &m, c.t.scale, c.t.bias, c.out.data, &st), st);
  if (m.trial) c.plan->record_trial(c.device, m.plan_ms, m.dense_ms);
}

Napi::Value BinaryConv2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "binaryConv2d");
    ConvCall c = read_conv(a, "binaryConv2d");
    if (c.device >= 0) cuda_api(c.device);  // unavailable: fail here, before any work
    return run_op(a, [c]() -> ResultBuilder {
      if (c.device >= 0) run_on_gpu(c);
      else bconv::conv(static_cast<const uint32_t*>(c.x.data), c.weights->words.data(), c.s(), c.execution(), c.p, c.t, c.out.data);
      return nullptr;
    });
  });
}

Napi::Value BinaryConv2dReference(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "binaryConv2dReference");
    ConvCall c = read_conv(a, "binaryConv2dReference");
    if (c.device >= 0) fail(ErrorCode::Device, "binaryConv2dReference: the reference runs on the CPU only");
    a.check_live();
    bconv::conv_reference(static_cast<const uint32_t*>(c.x.data), c.weights->words.data(), c.s(), c.p, c.t, c.out.data);
    return info.Env().Undefined();
  });
}

}  // namespace

void init_binary(Napi::Env env, Napi::Object exports) {
  exports.Set("packBits", Napi::Function::New(env, PackBits));
  exports.Set("unpackBits", Napi::Function::New(env, UnpackBits));
  exports.Set("binaryConv2d", Napi::Function::New(env, BinaryConv2d));
  exports.Set("binaryConv2dReference", Napi::Function::New(env, BinaryConv2dReference));
  init_weights(env, exports);
}

}  // namespace xnorm::addon
