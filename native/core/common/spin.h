// Brief spinning before a thread sleeps: ops issued back to back (layer after layer) then start, and
// end, without a futex wake-up, which costs tens of microseconds on a VM. 150 us covers the 55-70 us
// that a Sync call's JS, argument checks and output take between two convs (50 us did not: the pool
// thread slept, and woke 15-25 us into the next call's first job; batch-1 convs then ran 4-12 % slower).
#pragma once
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace xnorm {

constexpr std::chrono::microseconds kSpin{150};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until ready() or kSpin has passed; returns ready().
template <typename F>
bool spin_until(F&& ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return ready();
  }
}

}  // namespace xnorm
