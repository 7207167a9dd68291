#include "tensor_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/glibc_compat.h"
#include "../common/thread_pool.h"

namespace xnorm::tensor_ops {
namespace {

// Elements per task: big enough that a task's cost dwarfs the hand-off, small enough to spread a 1 MB array.
constexpr int64_t kChunk = 1 << 16;

// One inner row, with each operand's inner stride 0 or 1 known at compile time so the loop vectorizes.
template <typename Out, bool a_step, bool b_step, typename F>
void row(int64_t n, const float* a, const float* b, Out* y, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(a[a_step ? i : 0], b[b_step ? i : 0]);
}

// y[o, m, i] = f(a[...], b[...]) over the broadcast view, rows split over the pool.
template <typename Out, typename F>
void broadcast(int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b, Strides sb, Out* y, F f) {
  auto fn = sa.inner ? (sb.inner ? row<Out, true, true, F> : row<Out, true, false, F>)
                     : (sb.inner ? row<Out, false, true, F> : row<Out, false, false, F>);
  const int64_t rows = outer * mid;
  if (inner >= kChunk) {
    // Long rows (a same-shape or scalar operation is one row): split each row into chunks.
    const int64_t chunks = (inner + kChunk - 1) / kChunk;
    parallel_tasks(rows * chunks, [&](int64_t task) {
      const int64_t r = task / chunks, i0 = (task % chunks) * kChunk, n = std::min(kChunk, inner - i0);
      const int64_t o = r / mid, m = r % mid;
      fn(n, a + o * sa.outer + m * sa.mid + i0 * sa.inner, b + o * sb.outer + m * sb.mid + i0 * sb.inner, y + r * inner + i0, f);
    });
    return;
  }
  // Rows per task so that a task covers about kChunk elements.
  parallel_for(rows, kChunk / inner, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r / mid, m = r % mid;
      fn(inner, a + o * sa.outer + m * sa.mid, b + o * sb.outer + m * sb.mid, y + r * inner, f);
    }
  });
}

// NaN in either operand gives NaN, as tfjs's Math.max / Math.min do. Lambdas, not functions: the row
// loops are instantiated per functor type and inline it (a function pointer would be called per element).
constexpr auto nan_max = [](float a, float b) { return (a != a || b != b) ? NAN : (a > b ? a : b); };
constexpr auto nan_min = [](float a, float b) { return (a != a || b != b) ? NAN : (a < b ? a : b); };

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
  // Column sums: tasks over (outer, block of 256 columns, slab of rows); each slab's float64 partial sums
  // are added in slab order afterwards, so the result does not depend on the thread count. Slabs let a
  // per-channel sum over a whole batch (outer = 1, few columns) use every thread.
  const int64_t block = 256, blocks = (inner + block - 1) / block;
  const int64_t slab_rows = std::max<int64_t>(16, (kChunk / 4) / std::min(inner, block));  // ~16K values a task
  const int64_t slabs = (mid + slab_rows - 1) / slab_rows;
  std::vector<double> partial(size_t(outer * slabs * inner));
  parallel_tasks(outer * blocks * slabs, [&](int64_t task) {
    const int64_t o = task / (blocks * slabs), rest = task % (blocks * slabs);
    const int64_t i0 = (rest / slabs) * block, n = std::min(block, inner - i0);
    const int64_t m0 = (rest % slabs) * slab_rows, m1 = std::min(mid, m0 + slab_rows);
    double* acc = partial.data() + ((o * slabs + rest % slabs) * inner + i0);
    std::fill(acc, acc + n, 0.0);
    const float* p = x + (o * mid + m0) * inner + i0;
    for (int64_t m = m0; m < m1; ++m, p += inner)
      for (int64_t i = 0; i < n; ++i) acc[i] += p[i];
  });
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double sum = 0;
      for (int64_t k = 0; k < slabs; ++k) sum += partial[size_t((o * slabs + k) * inner + i)];
      y[o * inner + i] = float(mean ? sum / double(mid) : sum);
    }
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
  auto run = [&](auto f) { broadcast<float>(outer, mid, inner, a, sa, b, sb, y, f); };
  switch (op) {
    case Binary::Add: return run([](float p, float q) { return p + q; });
    case Binary::Sub: return run([](float p, float q) { return p - q; });
    case Binary::Mul: return run([](float p, float q) { return p * q; });
    case Binary::Div: return run([](float p, float q) { return p / q; });
    case Binary::Max: return run(nan_max);
    case Binary::Min: return run(nan_min);
    case Binary::SquaredDiff: return run([](float p, float q) { return (p - q) * (p - q); });
  }
}

void compare(Compare op, int64_t outer, int64_t mid, int64_t inner, const float* a, Strides sa, const float* b,
             Strides sb, uint8_t* y) {
  auto run = [&](auto f) { broadcast<uint8_t>(outer, mid, inner, a, sa, b, sb, y, f); };
  switch (op) {
    case Compare::Greater: return run([](float p, float q) { return uint8_t(p > q); });
    case Compare::GreaterEqual: return run([](float p, float q) { return uint8_t(p >= q); });
    case Compare::Less: return run([](float p, float q) { return uint8_t(p < q); });
    case Compare::LessEqual: return run([](float p, float q) { return uint8_t(p <= q); });
    case Compare::Equal: return run([](float p, float q) { return uint8_t(p == q); });
    case Compare::NotEqual: return run([](float p, float q) { return uint8_t(p != q); });
  }
}

void bool_to_float32(int64_t n, const uint8_t* x, float* y) {
  parallel_for(n, kChunk, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = float(x[i]);
  });
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
