#!/usr/bin/env bash
# Builds a CPU emulation of the CUDA plugin with the host C++ compiler alone: the plugin's own sources
# (runtime and kernels) against cuda/emu/, which runs every CUDA thread as a host thread. It presents one
# fake device, so the GPU test suites (test/cuda-emu.test.ts) run the real kernel code on machines with
# no GPU and no CUDA toolkit. Not for use: slow by design.
#   scripts/build-cuda-emu.sh [output-dir]       default: build/cuda-emu; CXX overrides the compiler
#   XNORM_EMU_FLAGS="-fsanitize=address"        extra compiler flags
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build/cuda-emu}"
cxx="${CXX:-g++}"
mkdir -p "$out"
# shellcheck disable=SC2086
"$cxx" -std=c++17 -O2 -g -fPIC -shared -pthread -fvisibility=hidden -Wall -Wno-unknown-pragmas ${XNORM_EMU_FLAGS:-} \
  -I"$root/cuda/emu/include" -I"$root" \
  -x c++ "$root/cuda/runtime.cu" "$root/cuda/bnstats/bnstats.cu" "$root/cuda/bconv/bconv.cu" "$root/cuda/bconv/bitpack.cu" "$root/cuda/convbn/convbn.cu" -x none "$root/cuda/emu/emu.cc" \
  -o "$out/libxnorm_cuda.so"
echo "$out/libxnorm_cuda.so"
