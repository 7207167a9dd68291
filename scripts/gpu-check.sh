#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU, the CUDA toolkit (nvcc), a C++ compiler, Python 3 and
# PyTorch, and no Node.js. Builds the xnorm_cuda plugin (for this machine's GPU only, to keep it quick)
# and the CPU core kernels as a library, then runs scripts/gpu-check/gpu_check.py: every CUDA op against the
# CPU kernels on random awkward shapes, and benchmarks against PyTorch. Finishes in under 5 minutes.
#   scripts/gpu-check.sh [--quick] [--device N]
#   scripts/gpu-check.sh --emulated    no GPU needed: the plugin's CPU emulation (scripts/build-cuda-emu.sh),
#                                      correctness only; checks the kernels' logic and this script itself
#   XNORM_CUDA_ARCHS="90"   override the architectures (default: the GPUs' own, from nvidia-smi)
#   XNORM_CHECK_DIR=dir     build folder (default build/gpu-check)
# Exit status: 0 all checks passed, 1 a check failed, 2 build failed, 3 no usable GPU, 4 no PyTorch.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${XNORM_CHECK_DIR:-$root/build/gpu-check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
cxx="${CXX:-g++}"

emulated=0
if [ "${1:-}" = "--emulated" ]; then emulated=1; shift; fi

archs="${XNORM_CUDA_ARCHS:-}"
if [ -z "$archs" ] && command -v nvidia-smi >/dev/null 2>&1; then
  archs="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d '.' | sort -u | tr '\n' ' ')"
fi
archs="${archs:-90}"
t0=$SECONDS
if [ "$emulated" = 1 ]; then
  echo "== building the CPU emulation of the plugin"
  "$root/scripts/build-cuda-emu.sh" "$out/emu" >/dev/null || { echo "emulated plugin build failed"; exit 2; }
elif command -v cmake >/dev/null 2>&1; then
  echo "== building the plugin for sm_${archs// /, sm_} (CMake)"

  cmake -S "$root/cuda" -B "$out/cmake" -DCMAKE_BUILD_TYPE=Release -DXNORM_CUDA_ARCHS="$(echo $archs | tr ' ' ';')" \
    -DXNORM_CUDA_OUTPUT_DIR="$out" >"$out/cmake.log" 2>&1 &&
    cmake --build "$out/cmake" -j "$(nproc)" >>"$out/cmake.log" 2>&1 ||
    { cat "$out/cmake.log"; echo "plugin build failed"; exit 2; }
else
  echo "== building the plugin for sm_${archs// /, sm_} (nvcc)"
  XNORM_CUDA_ARCHS="$archs" XNORM_CUDA_JOBS="$(nproc)" "$root/scripts/build-cuda.sh" "$out" >/dev/null ||
    { echo "plugin build failed"; exit 2; }
fi

echo "== building the CPU core kernels for comparison"
core=(native/core/common/cpu.cc native/core/common/thread_pool.cc scripts/gpu-check/core_capi.cc)
# Every base source of the two families, as scripts/sources.js picks them (the per-ISA ones follow below).
for src in "$root"/native/core/{bnstats,convbn}/*.cc; do
  case "$src" in *_avx2.cc | *_avx512.cc) ;; *) core+=("${src#"$root"/}") ;; esac
done
objs=()
cflags=(-std=c++17 -O3 -fPIC -pthread -fvisibility=hidden)
compile() {  # source [extra flags...]
  local src="$1"; shift
  local obj="$out/core_$(echo "$src" | tr '/' '_').o"
  "$cxx" "${cflags[@]}" "$@" -c "$root/$src" -o "$obj" || { echo "compiling $src failed"; exit 2; }
  objs+=("$obj")
}
for s in "${core[@]}"; do compile "$s"; done
case "$(uname -m)" in
  x86_64)
    for family in bnstats convbn; do
      compile native/core/$family/kernels_avx2.cc -Wno-maybe-uninitialized -mavx2 -mfma -mf16c -mpopcnt
      compile native/core/$family/kernels_avx512.cc -Wno-maybe-uninitialized -mavx512f -mavx512bw -mavx512vl \
        -mavx512dq -mavx512vpopcntdq -mavx2 -mfma -mf16c -mpopcnt
    done ;;
  *) compile scripts/gpu-check/isa_stubs.cc ;;
esac
"$cxx" -shared -pthread -o "$out/libxnorm_core_check.so" "${objs[@]}" || { echo "linking the core failed"; exit 2; }
echo "   built in $((SECONDS - t0)) s"

echo "== running the check"
budget=$((270 - (SECONDS - t0)))
plugin="$out/libxnorm_cuda.so"
extra=()
if [ "$emulated" = 1 ]; then plugin="$out/emu/libxnorm_cuda.so"; extra=(--no-bench); fi
exec "$py" "$root/scripts/gpu-check/gpu_check.py" --plugin "$plugin" --core "$out/libxnorm_core_check.so" \
  --budget "$budget" "${extra[@]}" "$@"
