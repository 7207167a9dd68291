// Small loops that measure the machine's ceilings for the benchmarks (not used by any op).
#pragma once
#include <cstdint>

namespace xnorm {

// Sums n 32-bit words with the thread pool: a pure streaming read, the memory-bandwidth ceiling
// the BN-statistic kernels are compared with. Returns the sum so the reads cannot be optimised away.
uint32_t read_sum(const uint32_t* data, int64_t n);

}  // namespace xnorm
