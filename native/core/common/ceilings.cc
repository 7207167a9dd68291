#include "ceilings.h"

#include <vector>

#include "thread_pool.h"

namespace xnorm {

uint32_t read_sum(const uint32_t* data, int64_t n) {
  constexpr int64_t kChunk = 1 << 18;  // 1 MiB per task
  std::vector<uint32_t> partial(size_t((n + kChunk - 1) / kChunk));
  parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
    // Eight independent lanes: the compiler vectorises this into wide integer adds at -O3.
    uint32_t acc[8] = {};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += data[i + l];
    for (; i < e; ++i) acc[0] += data[i];
    uint32_t s = 0;
    for (uint32_t a : acc) s += a;
    partial[size_t(b / kChunk)] = s;
  });
  uint32_t s = 0;
  for (uint32_t p : partial) s += p;
  return s;
}

}  // namespace xnorm
