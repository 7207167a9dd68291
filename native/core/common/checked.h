// Size arithmetic that refuses to overflow: shapes come from users and multiply.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "error.h"

namespace xnorm {

// Largest element count we accept: below 2^53 so JS numbers stay exact, and small enough that
// count * 8 bytes cannot overflow size_t.
constexpr int64_t kMaxElements = (int64_t(1) << 53) - 1;

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > kMaxElements)
    fail(ErrorCode::Shape, std::string(what) + ": size overflows (" + std::to_string(a) + " x " + std::to_string(b) + ")");
  return r;
}

inline int64_t shape_size(const std::vector<int64_t>& shape, const char* what) {
  int64_t n = 1;
  for (int64_t d : shape) n = checked_mul(n, d, what);
  return n;
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace xnorm
