#!/usr/bin/env bash
# Builds the CUDA plugin libxnorm_cuda.so with nvcc alone (no CMake needed), linked with the static CUDA
# runtime so that only the NVIDIA driver is needed at run time.
#   scripts/build-cuda.sh [output-dir]            default output: build/cuda (prebuilds: prebuilds/linux-x64)
#   XNORM_CUDA_ARCHS="75 80 86 89 90"             machine code for each; PTX for the last (newest)
#   NVCC=/path/to/nvcc  XNORM_CUDA_JOBS=2         compiler and parallel translation units
# Exit status 0 and the path of the library on stdout when it built.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/cuda}"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
archs="${XNORM_CUDA_ARCHS:-75 80 86 89 90}"
jobs="${XNORM_CUDA_JOBS:-2}"
if [ ! -x "$nvcc" ]; then echo "build-cuda: nvcc not found (set NVCC or add it to PATH)" >&2; exit 1; fi

gencode=()
last=""
for a in $archs; do gencode+=("-gencode" "arch=compute_$a,code=sm_$a"); last="$a"; done
gencode+=("-gencode" "arch=compute_$last,code=compute_$last")

flags=(-std=c++17 -O3 -Xcompiler -fPIC,-fvisibility=hidden -I"$root" "${gencode[@]}")
obj="$root/build/cuda-obj"  # objects stay out of the output folder, which may be prebuilds/
mkdir -p "$out" "$obj"
srcs=(cuda/runtime.cu cuda/bnstats/bnstats.cu cuda/bconv/bconv.cu cuda/bconv/bitpack.cu cuda/convbn/convbn.cu cuda/glibc_floor.cc)
objs=()
pids=()
for s in "${srcs[@]}"; do
  o="$obj/$(echo "$s" | tr '/' '_').o"
  objs+=("$o")
  "$nvcc" "${flags[@]}" -c "$root/$s" -o "$o" &
  pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
for p in "${pids[@]}"; do wait "$p"; done
# The libraries where glibc < 2.34 defines what cuda/glibc_floor.cc binds to, kept as needed libraries;
# stripped of symbols nothing outside uses (the exports stay).
"$nvcc" -shared -cudart static "${gencode[@]}" -o "$out/libxnorm_cuda.so" "${objs[@]}" \
  -Xlinker -z,defs -Xlinker --no-as-needed -l:libpthread.so.0 -l:libdl.so.2 -l:librt.so.1 -Xlinker --strip-all
echo "$out/libxnorm_cuda.so"
