// Run-time choice of the SIMD level. Kernels are compiled once per level in separate translation
// units (*_avx512.cc, *_avx2.cc on x86-64, *_neon.cc on aarch64, *_portable.cc everywhere); the level is
// picked once, when the addon loads.
#pragma once
#include <string>
#include <vector>

namespace xnorm {

// Neon is aarch64's level; the x86 levels and Neon never coexist in one build.
enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

// The level in use: the best the CPU and OS support, lowered by XNORM_ISA=portable|avx2|avx512|neon.
Isa active_isa();
const char* isa_name(Isa isa);
// Feature names of the level in use, best first, e.g. {"avx512vpopcntdq","avx512bw","avx512f","avx2","fma"}.
std::vector<std::string> active_isa_features();
// Set when XNORM_ISA asked for a level above what the CPU supports (the request is then lowered).
std::string isa_warning();

}  // namespace xnorm
