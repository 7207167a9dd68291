#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cond_var.h"
#include "error.h"
#include "spin.h"

namespace xnorm {
namespace {

thread_local bool tls_background_caller = false;

// The first failure among a job's tasks, kept as values and thrown again on the caller's thread. Not a
// std::exception_ptr: copying or destroying one calls libstdc++ functions exported only from GCC 11 on
// (CXXABI_1.3.13), which would stop the prebuilt addon loading on Debian 11, Ubuntu 20.04 or RHEL 8.
struct TaskFailure {
  enum Kind { None, Xnorm, BadAlloc, Other } kind = None;
  ErrorCode code = ErrorCode::Argument;
  std::string message;

  // Called from a catch block: records the exception being handled.
  void capture() {
    try {
      throw;
    } catch (const Error& e) {
      kind = Xnorm, code = e.code(), message = e.what();
    } catch (const std::bad_alloc&) {
      kind = BadAlloc;
    } catch (const std::exception& e) {
      kind = Other, message = e.what();
    } catch (...) {
      kind = Other, message = "unknown exception in a kernel task";
    }
  }
  void rethrow() const {
    if (kind == Xnorm) throw Error(code, message);
    if (kind == BadAlloc) throw std::bad_alloc();
    if (kind == Other) throw std::runtime_error(message);
  }
};

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t ntasks;
  int max_helpers;  // pool threads allowed on this job besides the caller
  int helpers = 0;  // guarded by the pool mutex
  // Tasks are taken from both ends: the caller's from the front, pool threads' from the back. A call
  // repeated with the same sizes then gives each thread about the same tasks as last time, and with
  // them the same weight panels, still in its core's cache. taken = (from the front) | (from the back) << 32.
  std::atomic<uint64_t> taken{0};
  std::atomic<int64_t> done{0};
  std::mutex done_mu;
  CondVar done_cv;
  TaskFailure error;  // guarded by done_mu

  static int64_t front(uint64_t v) { return int64_t(v & 0xffffffffu); }
  static int64_t back(uint64_t v) { return int64_t(v >> 32); }
  bool all_taken(uint64_t v) const { return front(v) + back(v) >= ntasks; }
  bool exhausted() const { return all_taken(taken.load()); }
  // The next task from this end, or -1 when none is left.
  int64_t take(bool from_back) {
    uint64_t v = taken.load();
    for (;;) {
      if (all_taken(v)) return -1;
      if (taken.compare_exchange_weak(v, v + (from_back ? uint64_t(1) << 32 : 1)))
        return from_back ? ntasks - 1 - back(v) : front(v);
    }
  }
  // Runs tasks until none are left; returns when this thread has nothing more to take.
  void work(bool from_back) {
    for (;;) {
      const int64_t t = take(from_back);
      if (t < 0) return;
      try {
        (*fn)(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(done_mu);
        if (error.kind == TaskFailure::None) error.capture();
      }
      if (done.fetch_add(1) + 1 == ntasks) {
        std::lock_guard<std::mutex> lock(done_mu);
        done_cv.notify_all();
      }
    }
  }
};

int default_threads() {
  if (const char* env = std::getenv("XNORM_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 256) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(std::min(hc, 256u)) : 1;
}

class Pool {
 public:
  Pool() : threads_(default_threads()) {}

  int threads() const { return threads_.load(); }

  void set_threads(int n) {
    threads_.store(n);
  }

  void run(int64_t ntasks, const std::function<void(int64_t)>& fn) {
    // A background caller computes only in a free slot (one request at a time: the libuv thread does
    // the work itself, with no hand-off to a sleeping pool thread); otherwise it waits.
    const bool claimed = tls_background_caller && try_claim();
    const bool caller_works = !tls_background_caller || claimed;
    int helpers = int(std::min<int64_t>(threads_.load() - (caller_works ? 1 : 0), ntasks - (caller_works ? 1 : 0)));
    if (helpers <= 0) {
      for (int64_t t = 0; t < ntasks; ++t) {
        try {
          fn(t);
        } catch (...) {
          if (claimed) release();
          throw;
        }
      }
      if (claimed) release();
      return;
    }
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->ntasks = ntasks;
    job->max_helpers = helpers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (int(workers_.size()) < helpers) workers_.emplace_back([this] { loop(); });
      queue_.push_back(job);
      pushed_.fetch_add(1);
    }
    cv_.notify_all();
    if (caller_works) job->work(false);
    if (claimed) release();
    if (!spin_until([&] { return job->done.load() == ntasks; })) {
      std::unique_lock<std::mutex> lock(job->done_mu);
      job->done_cv.wait(lock, [&] { return job->done.load() == ntasks; });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = std::find(queue_.begin(), queue_.end(), job);
      if (it != queue_.end()) queue_.erase(it);
    }
    job->error.rethrow();
  }

 private:
  void loop() {
    uint64_t seen = 0;  // jobs queued when this worker last took one
    for (;;) {
      std::shared_ptr<Job> job;
      spin_until([&] { return pushed_.load() != seen; });
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Pick inside the predicate: `taken` advances without the mutex, so a job seen here can run
        // out of tasks before a second look, which would then find nothing.
        cv_.wait(lock, [&] { return (job = pick_locked()) != nullptr; });
        ++job->helpers;
        seen = pushed_.load();
      }
      job->work(true);
      std::lock_guard<std::mutex> lock(mu_);
      // Once its tasks are all taken a job leaves the queue, so idle threads do not spin on it.
      auto it = std::find(queue_.begin(), queue_.end(), job);
      if (it != queue_.end() && job->exhausted()) queue_.erase(it);
      release_locked();
    }
  }

  // A job with tasks left and room for a helper, with a compute slot claimed for it; null if none.
  std::shared_ptr<Job> pick_locked() {
    for (auto& j : queue_)
      if (j->helpers < j->max_helpers && !j->exhausted()) return try_claim() ? j : nullptr;
    return nullptr;
  }

  // Compute slots: pool threads and background callers running tasks, at most threads_ at a time.
  // (Sync callers compute on their own thread, outside the count.)
  bool try_claim() {
    int c = computing_.load();
    while (c < threads_.load())
      if (computing_.compare_exchange_weak(c, c + 1)) return true;
    return false;
  }
  void release_locked() {
    computing_.fetch_sub(1);
    for (auto& j : queue_)
      if (j->helpers < j->max_helpers && !j->exhausted()) {
        cv_.notify_all();  // a worker waits for this slot
        return;
      }
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked();
  }

  std::atomic<int> threads_;
  std::atomic<int> computing_{0};  // claimed compute slots
  std::atomic<uint64_t> pushed_{0};  // jobs queued so far: what idle workers spin on
  std::mutex mu_;
  CondVar cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
};

// Never destroyed: pool threads may still be parked at process exit, and joining them from a static
// destructor would race with other exit-time teardown. It holds no JS values.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void parallel_tasks(int64_t ntasks, const std::function<void(int64_t)>& fn) {
  constexpr int64_t kMaxJob = int64_t(1) << 31;  // a job counts its tasks in 32 bits (Job::taken)
  if (ntasks <= kMaxJob) {
    if (ntasks > 0) pool().run(ntasks, fn);
    return;
  }
  for (int64_t base = 0; base < ntasks; base += kMaxJob)
    pool().run(std::min(kMaxJob, ntasks - base), [&](int64_t t) { fn(base + t); });
}

void parallel_for(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  chunk = std::max<int64_t>(chunk, 1);
  int64_t ntasks = (n + chunk - 1) / chunk;
  parallel_tasks(ntasks, [&](int64_t t) { fn(t * chunk, std::min(n, (t + 1) * chunk)); });
}

BackgroundCaller::BackgroundCaller() : previous_(tls_background_caller) { tls_background_caller = true; }
BackgroundCaller::~BackgroundCaller() { tls_background_caller = previous_; }

int num_threads() { return pool().threads(); }
void set_num_threads(int n) { pool().set_threads(n); }

}  // namespace xnorm
