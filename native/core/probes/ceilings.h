// Small loops that measure the machine's ceilings for the benchmarks (not used by any op): memory
// read bandwidth, float32 FMA throughput and XOR+popcount throughput. Each probe keeps the namespace of
// the kernels it is the ceiling of.
#pragma once
#include <cstdint>

namespace xnorm {

// Sums n 32-bit words with the thread pool: a pure streaming read, the memory-bandwidth ceiling
// the BN-statistic kernels are compared with. Returns the sum so the reads cannot be optimised away.
uint32_t read_sum(const uint32_t* data, int64_t n);

}  // namespace xnorm

namespace xnorm::convbn {

// This machine's float32 FMA throughput with all pool threads busy for about `seconds`, in GFLOP/s.
double fma_peak_gflops(double seconds);

}  // namespace xnorm::convbn

namespace xnorm::bconv {

// Bit-operations per second of an L1-resident XOR+popcount loop on all threads: the ceiling the conv
// kernels are measured against.
double popcount_peak(double seconds);

}  // namespace xnorm::bconv
