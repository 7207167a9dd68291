#include "tensor_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/thread_pool.h"

namespace xnorm::tensor_ops {
namespace {

// Elements per task: big enough that a task's cost dwarfs the hand-off, small enough to spread a 1 MB array.
constexpr int64_t kChunk = 1 << 16;

template <Binary op>
inline float apply(float a, float b) {
  if constexpr (op == Binary::Add) return a + b;
  if constexpr (op == Binary::Sub) return a - b;
  if constexpr (op == Binary::Mul) return a * b;
  if constexpr (op == Binary::Div) return a / b;
  if constexpr (op == Binary::Max) return (a != a || b != b) ? NAN : (a > b ? a : b);
  if constexpr (op == Binary::Min) return (a != a || b != b) ? NAN : (a < b ? a : b);
  if constexpr (op == Binary::SquaredDiff) return (a - b) * (a - b);
}

// One inner row, with each operand's inner stride 0 or 1 known at compile time so the loop vectorizes.
template <Binary op, bool a_step, bool b_step>
void row(int64_t n, const float* a, const float* b, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = apply<op>(a[a_step ? i : 0], b[b_step ? i : 0]);
}

template <Binary op>
void binary_op(int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b, Strides sb, float* y) {
  auto fn = sa.inner ? (sb.inner ? row<op, true, true> : row<op, true, false>)
                     : (sb.inner ? row<op, false, true> : row<op, false, false>);
  const int64_t rows = outer * mid;
  // Rows per task so that a task covers about kChunk elements.
  const int64_t per = std::max<int64_t>(1, kChunk / std::max<int64_t>(inner, 1));
  parallel_for(rows, per, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r / mid, m = r % mid;
      fn(inner, a + o * sa.outer + m * sa.mid, b + o * sb.outer + m * sb.mid, y + r * inner);
    }
  });
}

template <Unary op>
inline float apply1(float x, float alpha) {
  if constexpr (op == Unary::Relu) return x > 0 ? x : (x != x ? x : 0.0f);
  if constexpr (op == Unary::Relu6) return x != x ? x : std::min(std::max(x, 0.0f), 6.0f);
  if constexpr (op == Unary::Neg) return -x;
  if constexpr (op == Unary::Square) return x * x;
  if constexpr (op == Unary::Sqrt) return std::sqrt(x);
  if constexpr (op == Unary::Rsqrt) return 1.0f / std::sqrt(x);
  if constexpr (op == Unary::Abs) return std::fabs(x);
  if constexpr (op == Unary::Exp) return std::exp(x);
  if constexpr (op == Unary::Sigmoid) return 1.0f / (1.0f + std::exp(-x));
  if constexpr (op == Unary::Tanh) return std::tanh(x);
  if constexpr (op == Unary::Step) return x > 0 ? 1.0f : (x != x ? x : alpha);
  if constexpr (op == Unary::LeakyRelu) return x < 0 ? alpha * x : x;
  if constexpr (op == Unary::Elu) return x < 0 ? std::expm1(x) : x;
  if constexpr (op == Unary::Copy) return x;
}

template <Unary op>
void unary_op(float alpha, int64_t n, const float* x, float* y) {
  parallel_for(n, kChunk, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = apply1<op>(x[i], alpha);
  });
}

// Sum or Mean: float64 partial sums per output, rows of x added in order (a vectorizable inner loop).
void sum_over_mid(bool mean, int64_t outer, int64_t mid, int64_t inner, const float* x, float* y) {
  if (inner == 1) {
    // One sum per outer row: contiguous.
    parallel_for(outer, std::max<int64_t>(1, kChunk / mid), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const float* p = x + o * mid;
        double s = 0;
        for (int64_t m = 0; m < mid; ++m) s += p[m];
        y[o] = float(mean ? s / double(mid) : s);
      }
    });
    return;
  }
  // Column sums: split the inner axis into blocks, each task adds every row of its block.
  const int64_t block = 256;
  const int64_t blocks = (inner + block - 1) / block;
  parallel_tasks(outer * blocks, [&](int64_t task) {
    const int64_t o = task / blocks, i0 = (task % blocks) * block, n = std::min(block, inner - i0);
    double acc[block];
    std::fill(acc, acc + n, 0.0);
    const float* p = x + o * mid * inner + i0;
    for (int64_t m = 0; m < mid; ++m, p += inner)
      for (int64_t i = 0; i < n; ++i) acc[i] += p[i];
    float* out = y + o * inner + i0;
    for (int64_t i = 0; i < n; ++i) out[i] = float(mean ? acc[i] / double(mid) : acc[i]);
  });
}

template <bool is_max>
inline float pick(float c, float v) {
  // NaN wins, as in tfjs's Max/Min
  return (c != c || v != v) ? NAN : (is_max ? (v > c ? v : c) : (v < c ? v : c));
}

template <bool is_max>
void extreme_over_mid(int64_t outer, int64_t mid, int64_t inner, const float* x, float* y) {
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kChunk / mid), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const float* p = x + o * mid;
        float c = p[0];
        for (int64_t m = 1; m < mid; ++m) c = pick<is_max>(c, p[m]);
        y[o] = c;
      }
    });
    return;
  }
  const int64_t block = 256;
  const int64_t blocks = (inner + block - 1) / block;
  parallel_tasks(outer * blocks, [&](int64_t task) {
    const int64_t o = task / blocks, i0 = (task % blocks) * block, n = std::min(block, inner - i0);
    const float* p = x + o * mid * inner + i0;
    float* out = y + o * inner + i0;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
    for (int64_t m = 1; m < mid; ++m) {
      p += inner;
      for (int64_t i = 0; i < n; ++i) out[i] = pick<is_max>(out[i], p[i]);
    }
  });
}

}  // namespace

void binary(Binary op, int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b,
            Strides sb, float* y) {
  switch (op) {
    case Binary::Add: return binary_op<Binary::Add>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::Sub: return binary_op<Binary::Sub>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::Mul: return binary_op<Binary::Mul>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::Div: return binary_op<Binary::Div>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::Max: return binary_op<Binary::Max>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::Min: return binary_op<Binary::Min>(outer, mid, inner, a, sa, b, sb, y);
    case Binary::SquaredDiff: return binary_op<Binary::SquaredDiff>(outer, mid, inner, a, sa, b, sb, y);
  }
}

void unary(Unary op, float alpha, int64_t n, const float* x, float* y) {
  switch (op) {
    case Unary::Relu: return unary_op<Unary::Relu>(alpha, n, x, y);
    case Unary::Relu6: return unary_op<Unary::Relu6>(alpha, n, x, y);
    case Unary::Neg: return unary_op<Unary::Neg>(alpha, n, x, y);
    case Unary::Square: return unary_op<Unary::Square>(alpha, n, x, y);
    case Unary::Sqrt: return unary_op<Unary::Sqrt>(alpha, n, x, y);
    case Unary::Rsqrt: return unary_op<Unary::Rsqrt>(alpha, n, x, y);
    case Unary::Abs: return unary_op<Unary::Abs>(alpha, n, x, y);
    case Unary::Exp: return unary_op<Unary::Exp>(alpha, n, x, y);
    case Unary::Sigmoid: return unary_op<Unary::Sigmoid>(alpha, n, x, y);
    case Unary::Tanh: return unary_op<Unary::Tanh>(alpha, n, x, y);
    case Unary::Step: return unary_op<Unary::Step>(alpha, n, x, y);
    case Unary::LeakyRelu: return unary_op<Unary::LeakyRelu>(alpha, n, x, y);
    case Unary::Elu: return unary_op<Unary::Elu>(alpha, n, x, y);
    case Unary::Copy: return unary_op<Unary::Copy>(alpha, n, x, y);
  }
}

void reduce(Reduce op, int64_t outer, int64_t mid, int64_t inner, const float* x, float* y) {
  switch (op) {
    case Reduce::Sum: return sum_over_mid(false, outer, mid, inner, x, y);
    case Reduce::Mean: return sum_over_mid(true, outer, mid, inner, x, y);
    case Reduce::Max: return extreme_over_mid<true>(outer, mid, inner, x, y);
    case Reduce::Min: return extreme_over_mid<false>(outer, mid, inner, x, y);
  }
}

}  // namespace xnorm::tensor_ops
