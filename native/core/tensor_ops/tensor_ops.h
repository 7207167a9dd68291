// Elementwise float32 ops with broadcasting, reductions over one run of axes, and 2-D pooling (NHWC):
// the glue kernels of the tfjs backend (lib/tfjs), which would otherwise run as JavaScript loops. Memory-bound, so one
// portable version, vectorized by the compiler; large arrays are split over the thread pool in chunks
// that depend only on the size (results do not depend on the thread count).
#pragma once
#include <cstdint>

namespace xnorm::tensor_ops {

enum class Binary { Add, Sub, Mul, Div, Max, Min, SquaredDiff };
enum class Unary { Relu, Relu6, Neg, Square, Sqrt, Rsqrt, Abs, Exp, Sigmoid, Tanh, Step, LeakyRelu, Elu, Copy };
enum class Reduce { Sum, Mean, Max, Min };
enum class Compare { Greater, GreaterEqual, Less, LessEqual, Equal, NotEqual };

// An array seen as [outer, mid, inner]: an operand's stride per dimension is its natural one or 0 where
// it is broadcast along that dimension.
struct Strides {
  int64_t outer = 0, mid = 0, inner = 0;
};

// y[o, m, i] = op(a[o·sa.outer + m·sa.mid + i·sa.inner], b[...]); y is contiguous [outer, mid, inner].
// inner strides are 0 or 1.
void binary(Binary op, int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b,
            Strides sb, float* y);

// The same view with a 0/1 result per element (tfjs 'bool' tensors are bytes).
void compare(Compare op, int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b,
             Strides sb, uint8_t* y);

// tfjs Cast from 'bool' (bytes 0/1) to float32.
void bool_to_float32(int64_t n, const uint8_t* x, float* y);

// y[i] = op(x[i]) for n elements; alpha is Step's value at x <= 0 and LeakyRelu's slope.
void unary(Unary op, float alpha, int64_t n, const float* x, float* y);

// y[o, i] = reduce over m of x[o, m, i] (x contiguous [outer, mid, inner], mid >= 1), accumulated in float64
// for Sum and Mean.
void reduce(Reduce op, int64_t outer, int64_t mid, int64_t inner, const float* x, float* y);

// 2-D pooling over NHWC float32 with tfjs's semantics: windows of kh x kw at stride (sh, sw) whose top
// left corner is (oy·sh − pad_top, ox·sw − pad_left), clipped to the image. Max ignores NaN (-inf for a
// window of none); avg divides by the pixels inside the image.
struct PoolShape {
  int64_t n = 0, h = 0, w = 0, c = 0, kh = 0, kw = 0, sh = 1, sw = 1, pad_top = 0, pad_left = 0, oh = 0, ow = 0;
};

void max_pool(const PoolShape& g, const float* x, float* y);
void avg_pool(const PoolShape& g, const float* x, float* y);
// dx (x's shape): each output's dy goes to the first pixel of its window holding the maximum.
void max_pool_grad(const PoolShape& g, const float* x, const float* dy, float* dx);
// dx (x's shape): every pixel gets the sum of dy over the windows that contain it, times 1 / (kh·kw)
// (tfjs's rule, which does not discount padding).
void avg_pool_grad(const PoolShape& g, const float* dy, float* dx);

}  // namespace xnorm::tensor_ops
