// The addon's own thread pool. Kernels split work into tasks whose boundaries depend only on the
// problem size, never on the thread count, so results are identical for any setNumThreads value.
#pragma once
#include <cstdint>
#include <functional>

namespace xnorm {

// Runs fn(task) for task in [0, ntasks) on the pool; the calling thread works too. Several callers
// (libuv threads, worker_threads) may run jobs at once. The first exception a task throws is rethrown
// here after all tasks have finished.
void parallel_tasks(int64_t ntasks, const std::function<void(int64_t task)>& fn);

// Splits [0, n) into fixed chunks of `chunk` items and runs fn(begin, end) for each chunk.
void parallel_for(int64_t n, int64_t chunk, const std::function<void(int64_t begin, int64_t end)>& fn);

int num_threads();
void set_num_threads(int n);  // 1..256; applies to jobs started afterwards

}  // namespace xnorm
