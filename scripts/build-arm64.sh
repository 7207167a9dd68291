#!/usr/bin/env bash
# Cross-builds the CPU addon for linux-arm64 (NEON kernels) with node-gyp and the aarch64 GNU toolchain
# (Debian: apt-get install g++-aarch64-linux-gnu), into prebuilds/linux-arm64/node.glibc.node, the name
# prebuildify --napi --tag-libc gives it, stripped, then checks that it loads on glibc 2.17.
# Usage: bash scripts/build-arm64.sh [OUT_DIR]   (default prebuilds/linux-arm64)
# The build runs in a copy of the native sources (build/arm64-tree), so the x64 build/ stays as it is.
# Node's headers come from the arm64 Node package (scripts/arm64-node.sh), the one the qemu tests run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${1:-prebuilds/linux-arm64}"
cross="${XNORM_CROSS_PREFIX:-aarch64-linux-gnu-}"
if ! command -v "${cross}g++" >/dev/null 2>&1; then
  echo "build-arm64: ${cross}g++ not found (apt-get install g++-aarch64-linux-gnu)" >&2
  exit 1
fi
nodedir="$(bash scripts/arm64-node.sh)"

tree="$root/build/arm64-tree"
rm -rf "$tree"
mkdir -p "$tree/scripts"
cp -r native binding.gyp package.json "$tree/"
cp scripts/sources.js "$tree/scripts/"
ln -s "$root/node_modules" "$tree/node_modules"

started=$(date +%s)
(
  cd "$tree"
  export CC="${cross}gcc" CXX="${cross}g++" LINK="${cross}g++" AR="${cross}ar" RANLIB="${cross}ranlib"
  export CC_host=gcc CXX_host=g++ LINK_host=g++ AR_host=ar
  npx node-gyp rebuild --arch=arm64 --nodedir="$nodedir" -j "${JOBS:-$(nproc)}" >build.log 2>&1 ||
    { tail -40 build.log >&2; echo "build-arm64: node-gyp failed (full log: $tree/build.log)" >&2; exit 1; }
)
mkdir -p "$out"
"${cross}strip" --strip-unneeded -o "$out/node.glibc.node" "$tree/build/Release/xnorm.node"
file "$out/node.glibc.node" 2>/dev/null || true
OBJDUMP="${cross}objdump" node scripts/abi-requirements.js --max-glibc 2.17 --max-glibcxx 3.4.22 --max-cxxabi 1.3.11 "$out/node.glibc.node"
echo "build-arm64: $out/node.glibc.node in $(( $(date +%s) - started ))s"
