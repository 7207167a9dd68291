// Bindings of the CUDA ops: the same argument checks as the CPU bindings, with device tensors passed as
// handles. The work (kernels and the wait for them) runs inside run_op, so the async form waits for the
// GPU on a libuv thread; the device memory it uses stays referenced until it ends.
#include <algorithm>
#include <memory>

#include "../core/bconv/bconv.h"
#include "../core/bnstats/bnstats.h"
#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "cuda_plugin.h"
#include "errors.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

int32_t cuda_dtype(DType t) {
  return t == DType::Float16 ? XNORM_CUDA_FLOAT16 : t == DType::BFloat16 ? XNORM_CUDA_BFLOAT16 : XNORM_CUDA_FLOAT32;
}

xnorm_cuda_geometry cuda_geometry(const bnstats::Geometry& g) {
  xnorm_cuda_geometry r{};
  r.n = g.n;
  r.c = g.c;
  r.s = g.s;
  r.layout = g.layout == bnstats::Layout::NCHW ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
  return r;
}

DType float_dtype(Args& a, const char* op) {
  DType t = a.dtype("dtype");
  if (!dtype_is_float(t))
    fail(ErrorCode::DType, std::string(op) + ": x: expected float32, float16 or bfloat16, received another dtype");
  return t;
}

Napi::Value CudaMoments(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaMoments");
    Napi::Object o = info[0].As<Napi::Object>();
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    DType dtype = float_dtype(a, "cudaMoments");
    std::vector<int64_t> shape = a.shape("shape");
    bnstats::Layout layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? bnstats::Layout::NCHW : bnstats::Layout::NHWC;
    bnstats::Geometry g = bnstats::geometry(shape, layout);
    std::string over_s = a.choice("over", {"channel", "instance", "group"});
    int32_t over = over_s == "channel" ? XNORM_CUDA_CHANNEL : over_s == "instance" ? XNORM_CUDA_INSTANCE : XNORM_CUDA_GROUP;
    bnstats::Over cpu_over = over_s == "channel" ? bnstats::Over::Channel
                             : over_s == "instance" ? bnstats::Over::Instance : bnstats::Over::Group;
    int64_t groups = over == XNORM_CUDA_GROUP ? a.integer("groups", 1, g.c > 0 ? g.c : 1) : 1;
    if (g.c < 1 || g.c % groups != 0)
      fail(ErrorCode::Argument, "cudaMoments: groups: expected a divisor of C = " + std::to_string(g.c) +
                                    ", received " + std::to_string(groups));
    int64_t size = shape_size(shape, "x");
    if (size == 0) fail(ErrorCode::Shape, "cudaMoments: x: the reduction has no elements");
    int64_t slots = bnstats::moment_slots(g, cpu_over, groups);
    const xnorm_cuda_api* api = &cuda_api(device);
    DeviceRef x = device_arg(o.Get("x"), "cudaMoments: x", device, uint64_t(size) * dtype_bytes(dtype));
    DeviceRef mean32 = device_arg(o.Get("meanF32"), "cudaMoments: meanF32", device, uint64_t(slots) * 4);
    DeviceRef m232 = device_arg(o.Get("m2F32"), "cudaMoments: m2F32", device, uint64_t(slots) * 4);
    Buffer mean = a.float64("mean", slots);
    Buffer m2 = a.float64("m2", slots);
    xnorm_cuda_geometry cg = cuda_geometry(g);
    int32_t dt = cuda_dtype(dtype);
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      int64_t count = 0;
      cuda_check(api->moments(device, x->ptr, dt, &cg, over, groups, static_cast<double*>(mean.data),
                              static_cast<double*>(m2.data), static_cast<float*>(mean32->ptr),
                              static_cast<float*>(m232->ptr), &count, &st),
                 st);
      return [count](Napi::Env env) { return Napi::Number::New(env, double(count)); };
    });
  });
}

Napi::Value CudaBatchNorm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaBatchNorm");
    Napi::Object o = info[0].As<Napi::Object>();
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    DType dtype = float_dtype(a, "cudaBatchNorm");
    std::vector<int64_t> shape = a.shape("shape");
    bnstats::Layout layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? bnstats::Layout::NCHW : bnstats::Layout::NHWC;
    bnstats::Geometry g = bnstats::geometry(shape, layout);
    bool per_instance = a.flag("perInstance");
    bool relu = a.flag("relu");
    int64_t size = shape_size(shape, "x");
    const xnorm_cuda_api* api = &cuda_api(device);
    uint64_t bytes = uint64_t(size) * dtype_bytes(dtype);
    DeviceRef x = device_arg(o.Get("x"), "cudaBatchNorm: x", device, bytes);
    DeviceRef y = device_arg(o.Get("y"), "cudaBatchNorm: y", device, bytes);
    int64_t coeffs = per_instance ? g.n * g.c : g.c;
    Buffer mean = a.tensor("mean", DType::Float32, coeffs);
    Buffer mean_lo = a.tensor("meanLo", DType::Float32, coeffs);
    Buffer scale = a.tensor("scale", DType::Float32, coeffs);
    Buffer beta = a.tensor("beta", DType::Float32, coeffs);
    xnorm_cuda_geometry cg = cuda_geometry(g);
    int32_t dt = cuda_dtype(dtype);
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      cuda_check(api->batch_norm(device, x->ptr, y->ptr, dt, &cg, per_instance, static_cast<const float*>(mean.data),
                                 static_cast<const float*>(mean_lo.data), static_cast<const float*>(scale.data),
                                 static_cast<const float*>(beta.data), relu, &st),
                 st);
      return nullptr;
    });
  });
}

// The plugin's tables of an MST plan, from its CPU execution form (panels for the roots, edge records in
// an order where parents come first), checked here exactly as the CPU checks it (ERR_XNORM_CORRUPT_PLAN):
// the roots, and the edges grouped by depth so that each level only reads earlier ones.
struct MstTables {
  std::vector<int32_t> roots;
  std::vector<xnorm_cuda_mst_edge> edges;
  std::vector<int64_t> level_ends;
};

MstTables mst_tables(const bconv::WeightShape& s, const bconv::Execution& e) {
  bconv::check_weight_shape(s);
  bconv::validate_execution(s, e);
  MstTables t;
  std::vector<int32_t> depth(size_t(s.cout), 0);
  const int64_t rec = bconv::panel_record_words(s);
  for (int64_t q = 0; q < e.npanels; ++q)
    for (int c = 0; c < bconv::kPanelWidth; ++c)
      if (e.panels[q * rec + 1 + c] != bconv::kNoChannel) t.roots.push_back(int32_t(e.panels[q * rec + 1 + c]));
  std::vector<int32_t> edge_depth;
  int32_t max_depth = 0;
  for (int64_t i = 0, off = 0; i < e.nedges; ++i) {
    const uint32_t* r = e.edges + off;
    xnorm_cuda_mst_edge edge{int32_t(r[0]), int32_t(r[1]), int32_t(r[2]), int32_t(r[3]), off + 4};
    depth[size_t(edge.child)] = depth[size_t(edge.parent)] + 1;
    max_depth = std::max(max_depth, depth[size_t(edge.child)]);
    edge_depth.push_back(depth[size_t(edge.child)]);
    t.edges.push_back(edge);
    off += 4 + 3 * int64_t(r[2]);
  }
  std::vector<size_t> order(t.edges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return edge_depth[a] < edge_depth[b]; });
  std::vector<xnorm_cuda_mst_edge> sorted;
  for (size_t i : order) sorted.push_back(t.edges[i]);
  t.edges.swap(sorted);
  for (int32_t d = 1, i = 0; d <= max_depth; ++d) {
    while (size_t(i) < order.size() && edge_depth[order[size_t(i)]] == d) ++i;
    t.level_ends.push_back(i);
  }
  return t;
}

// Binary convolution on device tensors (for lib/'s binaryConv2d when x lives on a GPU): the bconv
// conventions of native/include/xnorm_cuda.h. x, weights and out are device handles of exactly the sizes the
// geometry implies; scale and bias are optional host Float32Arrays of Cout values. With `mst`, an MST plan
// runs (see below).
Napi::Value CudaBinaryConv2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaBinaryConv2d");
    Napi::Object o = info[0].As<Napi::Object>();
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    constexpr int64_t kMax = (int64_t(1) << 31) - 1;  // products of two sizes fit; longer ones are checked
    xnorm_cuda_bconv p{};
    p.n = a.integer("n", 1, kMax), p.h = a.integer("h", 1, kMax), p.w = a.integer("w", 1, kMax);
    p.c = a.integer("c", 1, kMax), p.cout = a.integer("cout", 1, kMax), p.cin_g = a.integer("cinG", 1, kMax);
    p.kh = a.integer("kh", 1, kMax), p.kw = a.integer("kw", 1, kMax), p.groups = a.integer("groups", 1, kMax);
    p.sh = a.integer("sh", 1, kMax), p.sw = a.integer("sw", 1, kMax), p.ph = a.integer("ph", 0, kMax);
    p.pw = a.integer("pw", 0, kMax), p.dh = a.integer("dh", 1, kMax), p.dw = a.integer("dw", 1, kMax);
    p.pad_zero = a.flag("padZero");
    std::string out_kind = a.choice("output", {"float", "int32", "bits"});
    p.output = out_kind == "float" ? XNORM_CUDA_OUT_FLOAT : out_kind == "int32" ? XNORM_CUDA_OUT_INT32 : XNORM_CUDA_OUT_BITS;
    // Optional, for tests and checks: which kernel runs (default: the plugin picks).
    if (a.has("algorithm")) {
      std::string alg = a.choice("algorithm", {"auto", "simt", "mma"});
      p.algorithm = alg == "simt" ? XNORM_CUDA_BCONV_SIMT : alg == "mma" ? XNORM_CUDA_BCONV_MMA : XNORM_CUDA_BCONV_AUTO;
    }
    p.clamp = a.flag("clamp");
    if (p.clamp) {
      p.lo = float(a.number("lo"));
      p.hi = float(a.number("hi"));
      if (!(p.lo <= p.hi)) fail(ErrorCode::Argument, "cudaBinaryConv2d: clamp: expected lo <= hi");
    }
    // The CPU op's own geometry checks: groups against C and Cout, the kernel inside the padded input, overflow.
    bconv::WeightShape s;
    s.cout = p.cout, s.cin_g = p.cin_g, s.kh = p.kh, s.kw = p.kw, s.groups = p.groups;
    bconv::ConvParams cp;
    cp.n = p.n, cp.h = p.h, cp.w = p.w, cp.c = p.c, cp.sh = p.sh, cp.sw = p.sw, cp.ph = p.ph, cp.pw = p.pw;
    cp.dh = p.dh, cp.dw = p.dw, cp.pad_zero = p.pad_zero != 0;
    bconv::check_conv(cp, s);
    const int64_t oh = bconv::out_size(p.h, p.ph, p.dh, p.kh, p.sh), ow = bconv::out_size(p.w, p.pw, p.dw, p.kw, p.sw);
    int64_t in_words = checked_mul(checked_mul(checked_mul(p.n, p.h, "x"), p.w, "x"), (p.c + 31) / 32, "x");
    int64_t w_words = checked_mul(checked_mul(checked_mul(p.cout, p.kh, "w"), p.kw, "w"), (p.cin_g + 31) / 32, "w");
    int64_t per_pixel = p.output == XNORM_CUDA_OUT_BITS ? (p.cout + 31) / 32 : p.cout;
    int64_t out_elems = checked_mul(checked_mul(checked_mul(p.n, oh, "out"), ow, "out"), per_pixel, "out");
    const xnorm_cuda_api* api = &cuda_api(device);
    DeviceRef x = device_arg(o.Get("x"), "cudaBinaryConv2d: x", device, uint64_t(in_words) * 4);
    DeviceRef w = device_arg(o.Get("weights"), "cudaBinaryConv2d: weights", device, uint64_t(w_words) * 4);
    DeviceRef out = device_arg(o.Get("out"), "cudaBinaryConv2d: out", device, uint64_t(out_elems) * 4);
    Buffer scale = a.optional_tensor("scale", DType::Float32, p.cout);
    Buffer bias = a.optional_tensor("bias", DType::Float32, p.cout);
    const auto* sc = static_cast<const float*>(scale.data);
    const auto* bi = static_cast<const float*>(bias.data);
    if (!a.flag("mst"))
      return run_op(a, [=]() -> ResultBuilder {
        xnorm_cuda_status st{};
        cuda_check(api->binary_conv2d(device, static_cast<const uint32_t*>(x->ptr), static_cast<const uint32_t*>(w->ptr),
                                      &p, sc, bi, out->ptr, &st),
                   st);
        return nullptr;
      });
    // An MST plan: its CPU execution form (host panels and edge records, checked here on every call) and
    // the device copy of the edge records the kernels read the word triples from. `trial` also times the
    // dense weights on this input and returns both times.
    bconv::Execution e;
    e.npanels = a.integer("npanels", 0, p.cout);
    e.panels = static_cast<const uint32_t*>(
        a.tensor("panels", DType::Bit, checked_mul(e.npanels, bconv::panel_record_words(s), "panels")).data);
    e.nedges = a.integer("nedges", 1, p.cout);
    Buffer edges = a.tensor("edges", DType::Bit, a.integer("edgeWords", 4, int64_t(1) << 40));
    e.edges = static_cast<const uint32_t*>(edges.data);
    e.edge_words = edges.length;
    auto tables = std::make_shared<const MstTables>(mst_tables(s, e));
    DeviceRef edge_words = device_arg(o.Get("edgesDevice"), "cudaBinaryConv2d: edgesDevice", device, uint64_t(e.edge_words) * 4);
    const bool trial = a.flag("trial");
    const int64_t nwords = e.edge_words;
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      xnorm_cuda_mst m{};
      m.edge_words = static_cast<const uint32_t*>(edge_words->ptr);
      m.edge_words_len = nwords;
      m.roots = tables->roots.data();
      m.nroots = int64_t(tables->roots.size());
      m.edges = tables->edges.data();
      m.nedges = int64_t(tables->edges.size());
      m.level_ends = tables->level_ends.data();
      m.nlevels = int32_t(tables->level_ends.size());
      m.trial = trial;
      cuda_check(api->binary_conv2d_mst(device, static_cast<const uint32_t*>(x->ptr), static_cast<const uint32_t*>(w->ptr),
                                        &p, &m, sc, bi, out->ptr, &st),
                 st);
      if (!trial) return nullptr;
      const double plan_ms = m.plan_ms, dense_ms = m.dense_ms;
      return [plan_ms, dense_ms](Napi::Env env) {
        Napi::Object r = Napi::Object::New(env);
        r.Set("planMs", plan_ms);
        r.Set("denseMs", dense_ms);
        return r;
      };
    });
  });
}

// The [N, C, S] view of packBits / unpackBits (lib/binary.ts passes the same n, c, s as to the CPU ops).
xnorm_cuda_geometry bits_geometry(Args& a, const char* op) {
  constexpr int64_t kMax = int64_t(1) << 40;
  xnorm_cuda_geometry g{};
  g.n = a.integer("n", 1, kMax), g.c = a.integer("c", 1, kMax), g.s = a.integer("s", 1, kMax);
  g.layout = a.choice("layout", {"nchw", "nhwc"}) == "nchw" ? XNORM_CUDA_NCHW : XNORM_CUDA_NHWC;
  checked_mul(checked_mul(g.n, g.c, op), g.s, op);
  return g;
}

// packBits on a device tensor: x (n*c*s elements of `dtype`) -> out (n*s*ceil(c/32) words), both handles;
// `thresholds` an optional host Float32Array of C values, else the number `threshold`.
Napi::Value CudaPackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaPackBits");
    Napi::Object o = info[0].As<Napi::Object>();
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    DType dtype = float_dtype(a, "cudaPackBits");
    xnorm_cuda_geometry g = bits_geometry(a, "cudaPackBits");
    Buffer thresholds = a.optional_tensor("thresholds", DType::Float32, g.c);
    float threshold = float(a.number("threshold"));
    const xnorm_cuda_api* api = &cuda_api(device);
    DeviceRef x = device_arg(o.Get("x"), "cudaPackBits: x", device, uint64_t(g.n * g.c * g.s) * dtype_bytes(dtype));
    DeviceRef out = device_arg(o.Get("out"), "cudaPackBits: out", device, uint64_t(g.n * g.s * ((g.c + 31) / 32)) * 4);
    int32_t dt = cuda_dtype(dtype);
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      cuda_check(api->pack_bits(device, x->ptr, dt, &g, static_cast<const float*>(thresholds.data), threshold,
                                static_cast<uint32_t*>(out->ptr), &st),
                 st);
      return nullptr;
    });
  });
}

// unpackBits on a device tensor: b (n*s*ceil(c/32) words) -> out (n*c*s float32 in `layout`), both handles.
Napi::Value CudaUnpackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "cudaUnpackBits");
    Napi::Object o = info[0].As<Napi::Object>();
    auto device = int32_t(a.integer("device", 0, 1 << 20));
    xnorm_cuda_geometry g = bits_geometry(a, "cudaUnpackBits");
    const xnorm_cuda_api* api = &cuda_api(device);
    DeviceRef b = device_arg(o.Get("b"), "cudaUnpackBits: b", device, uint64_t(g.n * g.s * ((g.c + 31) / 32)) * 4);
    DeviceRef out = device_arg(o.Get("out"), "cudaUnpackBits: out", device, uint64_t(g.n * g.c * g.s) * 4);
    return run_op(a, [=]() -> ResultBuilder {
      xnorm_cuda_status st{};
      cuda_check(api->unpack_bits(device, static_cast<const uint32_t*>(b->ptr), &g, static_cast<float*>(out->ptr), &st), st);
      return nullptr;
    });
  });
}

}  // namespace

void init_cuda_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaMoments", Napi::Function::New(env, CudaMoments));
  exports.Set("cudaBatchNorm", Napi::Function::New(env, CudaBatchNorm));
  exports.Set("cudaBinaryConv2d", Napi::Function::New(env, CudaBinaryConv2d));
  exports.Set("cudaPackBits", Napi::Function::New(env, CudaPackBits));
  exports.Set("cudaUnpackBits", Napi::Function::New(env, CudaUnpackBits));
}

}  // namespace xnorm::addon
