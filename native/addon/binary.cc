// Bindings for binary convolution and MST plans. lib/binary.ts validates first; everything is checked
// again here (lengths, shapes, plan structure) so a caller bypassing lib/ cannot write out of bounds.
#include "../core/bconv/bconv.h"
#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "../core/mst/mst.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

using bconv::WeightShape;

WeightShape read_weight_shape(Args& a) {
  std::vector<int64_t> d = a.shape("wshape");
  if (d.size() != 4)
    fail(ErrorCode::Shape, "weights: expected [Cout, Cin/groups, kh, kw], received " + shape_str(d));
  WeightShape s;
  s.cout = d[0];
  s.cin_g = d[1];
  s.kh = d[2];
  s.kw = d[3];
  s.groups = a.integer("groups", 1, int64_t(1) << 30);
  bconv::check_weight_shape(s);
  return s;
}

const uint32_t* read_words(Args& a, const WeightShape& s) {
  return static_cast<const uint32_t*>(a.tensor("words", DType::Bit, s.cout * s.row_words()).data);
}

std::vector<int32_t> read_parent(Args& a, const WeightShape& s) {
  const int32_t* p = static_cast<const int32_t*>(a.tensor("parent", DType::Int32, s.cout).data);
  return std::vector<int32_t>(p, p + s.cout);
}

mst::Reuse read_reuse(Args& a) {
  std::string r = a.choice("reuse", {"auto", "always", "never"});
  return r == "auto" ? mst::Reuse::Auto : r == "always" ? mst::Reuse::Always : mst::Reuse::Never;
}

const char* reuse_name(mst::Reuse r) {
  return r == mst::Reuse::Auto ? "auto" : r == mst::Reuse::Always ? "always" : "never";
}

Napi::Value PackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "packBits");
    bool nchw = a.choice("layout", {"nchw", "nhwc"}) == "nchw";
    int64_t n = a.integer("n", 1, kMaxElements), c = a.integer("c", 1, kMaxElements), s = a.integer("s", 1, kMaxElements);
    int64_t size = checked_mul(checked_mul(n, c, "x"), s, "x");
    Buffer x = a.tensor("x", DType::Float32, size);
    Buffer thr = a.optional_tensor("thresholds", DType::Float32, c);
    float t0 = float(a.number("threshold"));
    Buffer out = a.tensor("out", DType::Bit, checked_mul(n * s, (c + 31) / 32, "out"));
    return run_op(a, [=]() -> ResultBuilder {
      bconv::pack_bits(static_cast<const float*>(x.data), nchw, n, c, s, static_cast<const float*>(thr.data), t0,
                       static_cast<uint32_t*>(out.data));
      return nullptr;
    });
  });
}

Napi::Value UnpackBits(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "unpackBits");
    bool nchw = a.choice("layout", {"nchw", "nhwc"}) == "nchw";
    int64_t n = a.integer("n", 1, kMaxElements), c = a.integer("c", 1, kMaxElements), s = a.integer("s", 1, kMaxElements);
    int64_t size = checked_mul(checked_mul(n, c, "x"), s, "x");
    Buffer b = a.tensor("b", DType::Bit, checked_mul(n * s, (c + 31) / 32, "b"));
    Buffer out = a.tensor("out", DType::Float32, size);
    return run_op(a, [=]() -> ResultBuilder {
      bconv::unpack_bits(static_cast<const uint32_t*>(b.data), nchw, n, c, s, static_cast<float*>(out.data));
      return nullptr;
    });
  });
}

Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "packWeights");
    WeightShape s = read_weight_shape(a);
    Buffer w = a.tensor("w", DType::Float32, s.cout * s.cin_g * s.taps());
    Buffer out = a.tensor("out", DType::Bit, s.cout * s.row_words());
    bconv::pack_weights(static_cast<const float*>(w.data), s, static_cast<uint32_t*>(out.data));
    return info.Env().Undefined();
  });
}

Napi::Value Copy(Napi::Env env, const std::vector<uint32_t>& v) {
  Napi::Uint32Array arr = Napi::Uint32Array::New(env, v.size());
  std::copy(v.begin(), v.end(), arr.Data());
  return arr;
}

// The execution form (panels + edges) of a parent array; all -1 gives the plain dense weights.
Napi::Value BinaryExecution(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "binaryExecution");
    WeightShape s = read_weight_shape(a);
    const uint32_t* words = read_words(a, s);
    mst::Built b = mst::build_execution(words, s, read_parent(a, s));
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("panels", Copy(env, b.panels));
    o.Set("npanels", double(b.npanels));
    o.Set("edges", Copy(env, b.edges));
    o.Set("nedges", double(b.nedges));
    o.Set("depth", b.depth);
    o.Set("totalDistance", double(b.total_distance));
    o.Set("bitsProcessed", b.bits_processed);
    return Napi::Value(o);
  });
}

Napi::Value MstPlan(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstPlan");
    WeightShape s = read_weight_shape(a);
    const uint32_t* words = read_words(a, s);
    mst::Reuse reuse = read_reuse(a);
    int32_t max_depth = int32_t(a.integer("maxDepth", 1, 65535));
    Buffer out = a.tensor("parent", DType::Int32, s.cout);
    std::vector<int32_t> parent = mst::build_tree(words, s, reuse, max_depth);
    std::copy(parent.begin(), parent.end(), static_cast<int32_t*>(out.data));
    return info.Env().Undefined();
  });
}

Napi::Value MstSerialize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstSerialize");
    WeightShape s = read_weight_shape(a);
    const uint32_t* words = read_words(a, s);
    std::vector<int32_t> parent = read_parent(a, s);
    mst::depths(parent, s);
    mst::Reuse reuse = read_reuse(a);
    int32_t max_depth = int32_t(a.integer("maxDepth", 1, 65535));
    Buffer out = a.tensor("out", DType::UInt8, mst::serialized_size(s));
    mst::serialize(words, s, parent, reuse, max_depth, static_cast<uint8_t*>(out.data));
    return info.Env().Undefined();
  });
}

Napi::Value MstSerializedSize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstSerializedSize");
    return Napi::Value(Napi::Number::New(info.Env(), double(mst::serialized_size(read_weight_shape(a)))));
  });
}

Napi::Value MstDeserialize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstDeserialize");
    WeightShape s = read_weight_shape(a);
    const uint32_t* words = read_words(a, s);
    Napi::Value bv = info[0].As<Napi::Object>().Get("bytes");
    if (!bv.IsTypedArray() || bv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      fail(ErrorCode::Argument, "MstPlan.deserialize: bytes: expected a Uint8Array, received " + describe(bv));
    int64_t len = int64_t(bv.As<Napi::TypedArray>().ElementLength());
    Buffer bytes = a.tensor("bytes", DType::UInt8, len);
    Buffer out = a.tensor("parent", DType::Int32, s.cout);
    mst::Reuse reuse;
    int32_t max_depth;
    std::vector<int32_t> parent =
        mst::deserialize(static_cast<const uint8_t*>(bytes.data), len, words, s, &reuse, &max_depth);
    std::copy(parent.begin(), parent.end(), static_cast<int32_t*>(out.data));
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("reuse", reuse_name(reuse));
    o.Set("maxDepth", max_depth);
    return Napi::Value(o);
  });
}

struct ConvCall {
  const uint32_t* x = nullptr;
  const uint32_t* words = nullptr;
  WeightShape s;
  bconv::ConvParams p;
  bconv::Execution e;
  bconv::Transform t;
  void* out = nullptr;
};

ConvCall read_conv(Args& a, bool with_execution) {
  ConvCall c;
  c.s = read_weight_shape(a);
  std::vector<int64_t> xs = a.shape("xshape");
  if (xs.size() != 4) fail(ErrorCode::Shape, "x: expected [N, H, W, C], received " + shape_str(xs));
  c.p.n = xs[0];
  c.p.h = xs[1];
  c.p.w = xs[2];
  c.p.c = xs[3];
  c.p.sh = a.integer("strideH", 1, 1 << 20);
  c.p.sw = a.integer("strideW", 1, 1 << 20);
  c.p.ph = a.integer("padH", 0, 1 << 20);
  c.p.pw = a.integer("padW", 0, 1 << 20);
  c.p.dh = a.integer("dilationH", 1, 1 << 20);
  c.p.dw = a.integer("dilationW", 1, 1 << 20);
  c.p.pad_zero = a.choice("padValue", {"one", "zero"}) == "zero";
  bconv::check_conv(c.p, c.s);
  c.x = static_cast<const uint32_t*>(a.tensor("x", DType::Bit, c.p.n * c.p.h * c.p.w * ((c.p.c + 31) / 32)).data);
  c.words = read_words(a, c.s);
  if (with_execution) {
    c.e.npanels = a.integer("npanels", 0, c.s.cout);
    c.e.panels = static_cast<const uint32_t*>(
        a.tensor("panels", DType::Bit, checked_mul(c.e.npanels, bconv::panel_record_words(c.s), "panels")).data);
    c.e.nedges = a.integer("nedges", 0, c.s.cout);
    if (c.e.nedges > 0) {
      Buffer probe = a.tensor("edges", DType::Bit, a.integer("edgeWords", 0, kMaxElements));
      c.e.edges = static_cast<const uint32_t*>(probe.data);
      c.e.edge_words = probe.length;
    }
  }
  int64_t oh = bconv::out_size(c.p.h, c.p.ph, c.p.dh, c.s.kh, c.p.sh);
  int64_t ow = bconv::out_size(c.p.w, c.p.pw, c.p.dw, c.s.kw, c.p.sw);
  int64_t pixels = c.p.n * oh * ow;
  std::string kind = a.choice("output", {"float", "int32", "bits"});
  c.t.kind = kind == "float" ? bconv::Output::Float : kind == "int32" ? bconv::Output::Int32 : bconv::Output::Bits;
  c.t.scale = static_cast<const float*>(a.optional_tensor("scale", DType::Float32, c.s.cout).data);
  c.t.bias = static_cast<const float*>(a.optional_tensor("bias", DType::Float32, c.s.cout).data);
  c.t.clamp = a.has("clampLo");
  if (c.t.clamp) {
    c.t.lo = float(a.number("clampLo"));
    c.t.hi = float(a.number("clampHi"));
  }
  if (c.t.kind == bconv::Output::Int32 && (c.t.scale || c.t.bias || c.t.clamp))
    fail(ErrorCode::Argument, "binaryConv2d: scale, bias and clamp apply to 'float' and 'bits' outputs, not 'int32'");
  if (c.t.kind == bconv::Output::Bits)
    c.out = a.tensor("out", DType::Bit, checked_mul(pixels, (c.s.cout + 31) / 32, "out")).data;
  else
    c.out = a.tensor("out", c.t.kind == bconv::Output::Float ? DType::Float32 : DType::Int32,
                     checked_mul(pixels, c.s.cout, "out")).data;
  return c;
}

Napi::Value BinaryConv2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "binaryConv2d");
    ConvCall c = read_conv(a, true);
    // Structure checks run here, on the calling thread, so a corrupt plan rejects before any work starts.
    bconv::validate_execution(c.s, c.e);
    return run_op(a, [c]() -> ResultBuilder {
      bconv::conv(c.x, c.words, c.s, c.e, c.p, c.t, c.out);
      return nullptr;
    });
  });
}

Napi::Value BinaryConv2dReference(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "binaryConv2dReference");
    ConvCall c = read_conv(a, false);
    bconv::conv_reference(c.x, c.words, c.s, c.p, c.t, c.out);
    return info.Env().Undefined();
  });
}

Napi::Value PopcountPeak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "popcountPeak");
    double seconds = a.number("seconds");
    if (!(seconds > 0 && seconds <= 10)) fail(ErrorCode::Argument, "popcountPeak: seconds: expected (0, 10]");
    return Napi::Value(Napi::Number::New(info.Env(), bconv::popcount_peak(seconds)));
  });
}

Napi::Value MstCalibration(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    const mst::Costs& k = mst::calibrated_costs();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("densePerWord", k.dense_per_word);
    o.Set("reusePerWord", k.reuse_per_word);
    o.Set("reusePerEdge", k.reuse_per_edge);
    o.Set("transposePerWord", k.transpose_per_word);
    return Napi::Value(o);
  });
}

}  // namespace

void init_binary(Napi::Env env, Napi::Object exports) {
  exports.Set("packBits", Napi::Function::New(env, PackBits));
  exports.Set("unpackBits", Napi::Function::New(env, UnpackBits));
  exports.Set("packWeights", Napi::Function::New(env, PackWeights));
  exports.Set("binaryExecution", Napi::Function::New(env, BinaryExecution));
  exports.Set("mstPlan", Napi::Function::New(env, MstPlan));
  exports.Set("mstSerialize", Napi::Function::New(env, MstSerialize));
  exports.Set("mstSerializedSize", Napi::Function::New(env, MstSerializedSize));
  exports.Set("mstDeserialize", Napi::Function::New(env, MstDeserialize));
  exports.Set("binaryConv2d", Napi::Function::New(env, BinaryConv2d));
  exports.Set("binaryConv2dReference", Napi::Function::New(env, BinaryConv2dReference));
  exports.Set("popcountPeak", Napi::Function::New(env, PopcountPeak));
  exports.Set("mstCalibration", Napi::Function::New(env, MstCalibration));
}

}  // namespace xnorm::addon
