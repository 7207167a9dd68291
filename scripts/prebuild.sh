#!/usr/bin/env bash
# npm run prebuild: the CPU addon for this platform into prebuilds/<platform>-<arch>/ (prebuildify), and,
# where nvcc is present, the CUDA plugin beside it, where the addon's plugin loader looks.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
npx prebuildify --napi --strip --tag-libc
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  bash scripts/build-cuda.sh "prebuilds/$(node -p 'process.platform + "-" + process.arch')"
else
  echo "prebuild: nvcc not found, no CUDA plugin in this prebuild"
fi
