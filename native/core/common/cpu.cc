#include "cpu.h"

#include <cstdlib>
#include <cstring>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace xnorm {
namespace {

Isa detect_best() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("fma"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#elif defined(__aarch64__)
  // Advanced SIMD (with FMA and the float16 conversions) is part of every ARMv8-A CPU that Linux runs on;
  // the hwcap check only guards against a kernel that hides it.
#if defined(__linux__) && defined(AT_HWCAP)
  if (!(getauxval(AT_HWCAP) & (1ul << 1)))  // HWCAP_ASIMD
    return Isa::Portable;
#endif
  return Isa::Neon;
#endif
  return Isa::Portable;
}

// Whether `want` can run where `best` is the best level: portable anywhere, an x86 level under a
// higher or equal x86 level, neon only on aarch64.
bool runs_under(Isa want, Isa best) {
  if (want == Isa::Portable) return true;
  if (want == Isa::Neon || best == Isa::Neon) return want == best;
  return int(want) <= int(best);
}

struct IsaChoice {
  Isa isa;
  std::string warning;
};

IsaChoice choose() {
  Isa best = detect_best();
  const char* env = std::getenv("XNORM_ISA");
  if (!env || !*env) return {best, ""};
  Isa want;
  if (!std::strcmp(env, "portable")) want = Isa::Portable;
  else if (!std::strcmp(env, "avx2")) want = Isa::Avx2;
  else if (!std::strcmp(env, "avx512")) want = Isa::Avx512;
  else if (!std::strcmp(env, "neon")) want = Isa::Neon;
  else
    return {best, std::string("XNORM_ISA=") + env + " is not one of portable, avx2, avx512, neon; using " + isa_name(best)};
  if (!runs_under(want, best))
    return {best, std::string("XNORM_ISA=") + env + " is not supported by this CPU; using " + isa_name(best)};
  return {want, ""};
}

const IsaChoice& choice() {
  static const IsaChoice c = choose();  // plain data, no JS values: safe to share between workers
  return c;
}

}  // namespace

Isa active_isa() { return choice().isa; }
std::string isa_warning() { return choice().warning; }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Neon: return "neon";
    case Isa::Portable: return "portable";
  }
  return "portable";
}

std::vector<std::string> active_isa_features() {
  switch (active_isa()) {
    case Isa::Avx512: return {"avx512vpopcntdq", "avx512bw", "avx512f", "avx2", "fma"};
    case Isa::Avx2: return {"avx2", "fma", "f16c"};
    case Isa::Neon: return {"neon", "asimd", "fma"};
    case Isa::Portable: return {"portable"};
  }
  return {"portable"};
}

}  // namespace xnorm
