// Bindings for the elementwise, reduction and pooling kernels of the tfjs backend (host float32 arrays
// only). Each array's length is checked against the view or shape it is read or written through.
#include "../core/tensor_ops/tensor_ops.h"

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

namespace ew = xnorm::tensor_ops;

constexpr int64_t kMaxDim = int64_t(1) << 50;

struct View {
  int64_t outer, mid, inner;
  int64_t size() const { return checked_mul(checked_mul(outer, mid, "elementwise size"), inner, "elementwise size"); }
};

View read_view(Args& a) {
  return View{a.integer("outer", 1, kMaxDim), a.integer("mid", 1, kMaxDim), a.integer("inner", 1, kMaxDim)};
}

// An operand spanning some of the three dimensions (flags "<name>Outer", ...; the rest broadcast): its
// array holds exactly the spanned part, contiguous, and its strides follow from that.
struct Operand {
  Buffer data;
  ew::Strides strides;
};

Operand read_operand(Args& a, const View& v, const char* name, const char* outer, const char* mid, const char* inner) {
  const bool so = a.flag(outer), sm = a.flag(mid), si = a.flag(inner);
  Operand r;
  r.strides.inner = si ? 1 : 0;
  r.strides.mid = sm ? (si ? v.inner : 1) : 0;
  r.strides.outer = so ? (sm ? v.mid : 1) * (si ? v.inner : 1) : 0;
  const int64_t length = checked_mul(checked_mul(so ? v.outer : 1, sm ? v.mid : 1, name), si ? v.inner : 1, name);
  r.data = a.host(name, DType::Float32, length);
  return r;
}

float* f32(const Buffer& b) { return static_cast<float*>(b.data); }

// An op named by a string argument, looked up in a table of (name, op) pairs.
template <typename Op, size_t N>
Op op_arg(Args& a, const std::pair<const char*, Op> (&table)[N]) {
  const Napi::Value v = a.object().Get("op");
  const std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  std::string known;
  for (const auto& [n, op] : table) {
    if (name == n) return op;
    known += (known.empty() ? "" : ", ") + std::string(n);
  }
  fail(ErrorCode::Argument, "op: expected one of " + known + ", received " + (name.empty() ? "another value" : name));
}

constexpr std::pair<const char*, ew::Binary> kBinary[] = {
    {"add", ew::Binary::Add}, {"sub", ew::Binary::Sub}, {"mul", ew::Binary::Mul}, {"div", ew::Binary::Div},
    {"max", ew::Binary::Max}, {"min", ew::Binary::Min}, {"squaredDiff", ew::Binary::SquaredDiff}};

constexpr std::pair<const char*, ew::Unary> kUnary[] = {
    {"relu", ew::Unary::Relu}, {"relu6", ew::Unary::Relu6}, {"neg", ew::Unary::Neg}, {"square", ew::Unary::Square},
    {"sqrt", ew::Unary::Sqrt}, {"rsqrt", ew::Unary::Rsqrt}, {"abs", ew::Unary::Abs}, {"exp", ew::Unary::Exp},
    {"sigmoid", ew::Unary::Sigmoid}, {"tanh", ew::Unary::Tanh}, {"step", ew::Unary::Step},
    {"leakyRelu", ew::Unary::LeakyRelu}, {"elu", ew::Unary::Elu}, {"copy", ew::Unary::Copy}};

constexpr std::pair<const char*, ew::Compare> kCompare[] = {
    {"greater", ew::Compare::Greater}, {"greaterEqual", ew::Compare::GreaterEqual}, {"less", ew::Compare::Less},
    {"lessEqual", ew::Compare::LessEqual}, {"equal", ew::Compare::Equal}, {"notEqual", ew::Compare::NotEqual}};

constexpr std::pair<const char*, ew::Reduce> kReduce[] = {
    {"sum", ew::Reduce::Sum}, {"mean", ew::Reduce::Mean}, {"max", ew::Reduce::Max}, {"min", ew::Reduce::Min}};

// An op over two broadcast operands (elementwiseBinary, elementwiseCompare): the op from `table`, the
// view, both operands, and y of the view's size in `out_dtype`, filled by kernel(op, view, a, b, y).
template <typename Op, size_t N, typename Kernel>
Napi::Value broadcast_entry(const Napi::CallbackInfo& info, const char* name, const std::pair<const char*, Op> (&table)[N],
                            DType out_dtype, Kernel kernel) {
  return guarded(info.Env(), [&] {
    Args a(info, name);
    const Op op = op_arg(a, table);
    const View v = read_view(a);
    const Operand pa = read_operand(a, v, "a", "aOuter", "aMid", "aInner");
    const Operand pb = read_operand(a, v, "b", "bOuter", "bMid", "bInner");
    Buffer out = a.host("y", out_dtype, v.size());
    return run_op(a, [=]() -> ResultBuilder {
      kernel(op, v, pa, pb, out.data);
      return nullptr;
    });
  });
}

Napi::Value ElementwiseBinary(const Napi::CallbackInfo& info) {
  return broadcast_entry(info, "elementwiseBinary", kBinary, DType::Float32,
                         [](ew::Binary op, const View& v, const Operand& a, const Operand& b, void* y) {
                           ew::binary(op, v.outer, v.mid, v.inner, f32(a.data), a.strides, f32(b.data), b.strides,
                                      static_cast<float*>(y));
                         });
}

// compare: the same view as elementwiseBinary, a Uint8Array of 0/1 out (tfjs 'bool').
Napi::Value ElementwiseCompare(const Napi::CallbackInfo& info) {
  return broadcast_entry(info, "elementwiseCompare", kCompare, DType::UInt8,
                         [](ew::Compare op, const View& v, const Operand& a, const Operand& b, void* y) {
                           ew::compare(op, v.outer, v.mid, v.inner, f32(a.data), a.strides, f32(b.data), b.strides,
                                       static_cast<uint8_t*>(y));
                         });
}

// boolToFloat32: a Uint8Array of 0/1 ('bool') widened into a Float32Array of the same length.
Napi::Value BoolToFloat32(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "boolToFloat32");
    const int64_t n = a.integer("size", 0, kMaxDim);
    Buffer x = a.host("x", DType::UInt8, n), y = a.host("y", DType::Float32, n);
    return run_op(a, [=]() -> ResultBuilder {
      ew::bool_to_float32(n, static_cast<const uint8_t*>(x.data), f32(y));
      return nullptr;
    });
  });
}

Napi::Value ElementwiseUnary(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "elementwiseUnary");
    const ew::Unary op = op_arg(a, kUnary);
    const int64_t n = a.integer("size", 0, kMaxDim);
    const float alpha = a.has("alpha") ? float(a.number("alpha")) : 0.0f;
    Buffer x = a.host("x", DType::Float32, n), y = a.host("y", DType::Float32, n);
    return run_op(a, [=]() -> ResultBuilder {
      ew::unary(op, alpha, n, f32(x), f32(y));
      return nullptr;
    });
  });
}

Napi::Value ReduceMid(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "reduceMid");
    const ew::Reduce op = op_arg(a, kReduce);
    const View v = read_view(a);
    Buffer x = a.host("x", DType::Float32, v.size());
    Buffer y = a.host("y", DType::Float32, checked_mul(v.outer, v.inner, "reduceMid: y"));
    return run_op(a, [=]() -> ResultBuilder {
      ew::reduce(op, v.outer, v.mid, v.inner, f32(x), f32(y));
      return nullptr;
    });
  });
}

// pool2d: max or average pooling over NHWC, or their gradients. Windows are clipped to the image, so any
// padding and output size stays in bounds; the arrays must match the shapes given.
Napi::Value Pool2d(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "pool2d");
    const std::string op = a.choice("op", {"max", "avg", "maxGrad", "avgGrad"});
    ew::PoolShape g;
    g.n = a.integer("n", 1, kMaxDim), g.h = a.integer("h", 1, kMaxDim), g.w = a.integer("w", 1, kMaxDim);
    g.c = a.integer("c", 1, kMaxDim), g.kh = a.integer("kh", 1, kMaxDim), g.kw = a.integer("kw", 1, kMaxDim);
    g.sh = a.integer("sh", 1, kMaxDim), g.sw = a.integer("sw", 1, kMaxDim);
    g.pad_top = a.integer("padTop", 0, kMaxDim), g.pad_left = a.integer("padLeft", 0, kMaxDim);
    g.oh = a.integer("oh", 1, kMaxDim), g.ow = a.integer("ow", 1, kMaxDim);
    const int64_t x_size = checked_mul(checked_mul(g.n, g.h, "pool2d: x"), checked_mul(g.w, g.c, "pool2d: x"), "pool2d: x");
    const int64_t y_size = checked_mul(checked_mul(g.n, g.oh, "pool2d: y"), checked_mul(g.ow, g.c, "pool2d: y"), "pool2d: y");
    const bool grad = op == "maxGrad" || op == "avgGrad";
    Buffer x = op == "avgGrad" ? Buffer{} : a.host("x", DType::Float32, x_size);
    Buffer dy = grad ? a.host("dy", DType::Float32, y_size) : Buffer{};
    Buffer y = a.host("y", DType::Float32, grad ? x_size : y_size);
    return run_op(a, [=]() -> ResultBuilder {
      if (op == "max") ew::max_pool(g, f32(x), f32(y));
      else if (op == "avg") ew::avg_pool(g, f32(x), f32(y));
      else if (op == "maxGrad") ew::max_pool_grad(g, f32(x), f32(dy), f32(y));
      else ew::avg_pool_grad(g, f32(dy), f32(y));
      return nullptr;
    });
  });
}

}  // namespace

void init_tensor_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("elementwiseBinary", Napi::Function::New(env, ElementwiseBinary));
  exports.Set("elementwiseUnary", Napi::Function::New(env, ElementwiseUnary));
  exports.Set("elementwiseCompare", Napi::Function::New(env, ElementwiseCompare));
  exports.Set("boolToFloat32", Napi::Function::New(env, BoolToFloat32));
  exports.Set("reduceMid", Napi::Function::New(env, ReduceMid));
  exports.Set("pool2d", Napi::Function::New(env, Pool2d));
}

}  // namespace xnorm::addon
