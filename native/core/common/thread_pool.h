// The addon's own thread pool. Kernels split work into tasks whose boundaries depend only on the
// problem size, never on the thread count, so results are identical for any setNumThreads value.
#pragma once
#include <cstdint>
#include <functional>

namespace xnorm {

// Runs fn(task) for task in [0, ntasks) on the pool. Several callers (libuv threads, worker_threads)
// may run jobs at once. The first exception a task throws is rethrown here after all tasks finished.
// A synchronous caller (the JS thread of a Sync op) works on its own job. A caller inside
// BackgroundCaller (an async op on a libuv thread) works on it only in a free compute slot, else it
// waits: pool threads and background callers share setNumThreads() slots, so however many async ops
// are in flight, at most that many threads compute, and a lone async op needs no hand-off.
void parallel_tasks(int64_t ntasks, const std::function<void(int64_t task)>& fn);

// Marks the current thread, for its lifetime, as a background caller (see parallel_tasks).
class BackgroundCaller {
 public:
  BackgroundCaller();
  ~BackgroundCaller();
  BackgroundCaller(const BackgroundCaller&) = delete;
  BackgroundCaller& operator=(const BackgroundCaller&) = delete;

 private:
  bool previous_;
};

// Splits [0, n) into fixed chunks of `chunk` items and runs fn(begin, end) for each chunk.
void parallel_for(int64_t n, int64_t chunk, const std::function<void(int64_t begin, int64_t end)>& fn);

int num_threads();
void set_num_threads(int n);  // 1..256; applies to jobs started afterwards

}  // namespace xnorm
