#!/usr/bin/env bash
# npm run prebuild: the CPU addon for this platform into prebuilds/<platform>-<arch>/ (prebuildify), and,
# where nvcc is present, the CUDA plugin beside it, where the addon's plugin loader looks. On x86-64 with
# the aarch64 cross compiler (Debian: g++-aarch64-linux-gnu), also the linux-arm64 addon (NEON kernels,
# scripts/build-arm64.sh), so one npm pack ships both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
npx prebuildify --napi --strip --tag-libc
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  bash scripts/build-cuda.sh "prebuilds/$(node -p 'process.platform + "-" + process.arch')"
else
  echo "prebuild: nvcc not found, no CUDA plugin in this prebuild"
fi
if [ "$(node -p process.arch)" = x64 ]; then
  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    bash scripts/build-arm64.sh prebuilds/linux-arm64
  else
    echo "prebuild: aarch64-linux-gnu-g++ not found, no linux-arm64 addon in this prebuild (apt-get install g++-aarch64-linux-gnu)"
  fi
fi
