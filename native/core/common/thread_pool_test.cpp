// Stress test of the thread pool, built and run by scripts/sanitize.sh under ThreadSanitizer: every
// task (and every task index) runs exactly once, failures reach their caller and free their compute
// slot, and however many async ops (background callers) are in flight, at most num_threads() threads
// run tasks at once.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

#include "error.h"
#include "thread_pool.h"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what);
    ++failures;
  }
}

std::atomic<int> running{0}, peak{0};

// A task that holds its thread for a while and records how many tasks ran beside it.
void busy_task() {
  int now = running.fetch_add(1) + 1;
  int p = peak.load();
  while (now > p && !peak.compare_exchange_weak(p, now)) {
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(30);
  while (std::chrono::steady_clock::now() < until) {
  }
  running.fetch_sub(1);
}

// `callers` threads, each an async op's libuv thread, run `jobs` jobs of `ntasks` tasks.
void background_callers(int callers, int jobs, int64_t ntasks) {
  std::vector<std::thread> ts;
  std::atomic<int64_t> ran{0};
  for (int c = 0; c < callers; ++c)
    ts.emplace_back([&] {
      xnorm::BackgroundCaller background;
      for (int j = 0; j < jobs; ++j)
        xnorm::parallel_tasks(ntasks, [&](int64_t) {
          busy_task();
          ran.fetch_add(1);
        });
    });
  for (auto& t : ts) t.join();
  check(ran.load() == int64_t(callers) * jobs * ntasks, "every task runs exactly once");
}

// Each task index of a job runs exactly once (the caller takes tasks from the front, pool threads from
// the back: the two ends must meet without a gap or an overlap).
void each_index_once() {
  for (int threads : {2, 3, 4})
    for (int64_t ntasks : {1, 2, 3, 5, 64, 1000}) {
      xnorm::set_num_threads(threads);
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(ntasks));
        xnorm::parallel_tasks(ntasks, [&](int64_t t) {
          if (t % 7 == 0) busy_task();
          hits[static_cast<size_t>(t)].fetch_add(1);
        });
        check(std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h.load() == 1; }),
              "each task index runs exactly once");
      }
    }
}

}  // namespace

int main() {
  each_index_once();

  for (int threads : {1, 2, 3}) {
    xnorm::set_num_threads(threads);
    for (int64_t ntasks : {1, 2, 7}) {
      peak.store(0);
      background_callers(6, 20, ntasks);
      if (peak.load() > threads) {
        std::fprintf(stderr, "threads %d, %lld tasks per job: %d tasks ran at once\n", threads,
                     static_cast<long long>(ntasks), peak.load());
        check(false, "background callers and pool threads stay within num_threads()");
      }
    }
  }

  // A failing task: the caller gets the error, and its slot is free again for the next jobs.
  xnorm::set_num_threads(2);
  for (int64_t ntasks : {1, 5}) {
    bool thrown = false;
    std::thread t([&] {
      xnorm::BackgroundCaller background;
      try {
        xnorm::parallel_tasks(ntasks, [](int64_t task) {
          if (task == 0) throw xnorm::Error(xnorm::ErrorCode::Argument, "task 0 fails");
        });
      } catch (const xnorm::Error& e) {
        thrown = std::string(e.what()) == "task 0 fails";
      }
    });
    t.join();
    check(thrown, "a task's failure reaches its background caller");
  }
  peak.store(0);
  background_callers(4, 10, 4);
  check(peak.load() == 2, "after failures, two slots still compute");

  // A Sync caller computes on its own thread, outside the slots: with background callers in flight at
  // most one more thread runs tasks.
  peak.store(0);
  std::thread sync_caller([] {
    for (int j = 0; j < 20; ++j) xnorm::parallel_tasks(3, [](int64_t) { busy_task(); });
  });
  background_callers(4, 20, 3);
  sync_caller.join();
  check(peak.load() <= 3, "a Sync caller adds at most its own thread");

  if (failures) return 1;
  std::printf("thread pool under TSan: ok\n");
  return 0;
}
