#include "ceilings.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "../bconv/kernels.h"
#include "../common/thread_pool.h"
#include "../convbn/kernels.h"

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

namespace xnorm::convbn {

double fma_peak_gflops(double seconds) {
  const Kernels& k = active_kernels();
  using clock = std::chrono::steady_clock;
  // Calibrate on one thread, then run every pool thread for about `seconds`.
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = clock::now();
    k.fma_loop(iters);
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02) {
      iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / dt));
      break;
    }
    iters *= 4;
  }
  const int threads = num_threads();
  std::vector<double> flops(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  auto t0 = clock::now();
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { flops[size_t(t)] = k.fma_loop(iters); });
  for (auto& th : pool) th.join();
  double wall = std::chrono::duration<double>(clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / wall * 1e-9;
}

}  // namespace xnorm::convbn

namespace xnorm::bconv {

double popcount_peak(double seconds) {
  const Kernels& kn = active_kernels();
  alignas(64) uint32_t data[256];
  for (int i = 0; i < 256; ++i) data[i] = uint32_t(i) * 2654435761u;
  using clock = std::chrono::steady_clock;
  // Size the run from a short single-thread probe, then run every pool thread at once.
  int64_t reps = 1 << 12;
  for (;;) {
    auto t0 = clock::now();
    volatile uint64_t sink = kn.popcount_loop(data, reps);
    (void)sink;
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.01 || reps >= (int64_t(1) << 24)) {
      reps = std::min<int64_t>(int64_t(1) << 24, std::max<int64_t>(1, int64_t(double(reps) * seconds / dt)));
      break;
    }
    reps *= 4;
  }
  int threads = num_threads();
  std::vector<uint64_t> sinks(static_cast<size_t>(threads));
  auto t0 = clock::now();
  parallel_tasks(threads, [&](int64_t i) { sinks[size_t(i)] = kn.popcount_loop(data, reps); });
  double dt = std::chrono::duration<double>(clock::now() - t0).count();
  volatile uint64_t keep = sinks[0];
  (void)keep;
  return double(threads) * double(reps) * 256.0 * 32.0 / dt;
}

}  // namespace xnorm::bconv
