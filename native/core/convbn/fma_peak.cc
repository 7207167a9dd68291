// The float32 FMA ceiling the conv kernels are measured against.
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "../common/thread_pool.h"
#include "convbn.h"
#include "kernels.h"

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
