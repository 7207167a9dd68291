// A condition variable on pthreads. std::condition_variable::wait is versioned GLIBCXX_3.4.30 by GCC 12,
// which would make the prebuilt addon refuse every libstdc++ older than GCC 12; pthread_cond_wait has
// been in glibc since 2.3.2.
#pragma once
#include <pthread.h>

#include <mutex>

namespace xnorm {

class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;
  ~CondVar() { pthread_cond_destroy(&cond_); }

  template <typename Predicate>
  void wait(std::unique_lock<std::mutex>& lock, Predicate ready) {
    while (!ready()) pthread_cond_wait(&cond_, lock.mutex()->native_handle());
  }
  void notify_one() { pthread_cond_signal(&cond_); }
  void notify_all() { pthread_cond_broadcast(&cond_); }

 private:
  pthread_cond_t cond_ = PTHREAD_COND_INITIALIZER;
};

}  // namespace xnorm
