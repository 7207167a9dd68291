#!/usr/bin/env bash
# The real install path: build the prebuild and dist/, npm pack, then install the tarball offline into a
# fresh project on a PATH with no compiler (no g++, cc, make), and run a CommonJS, an ESM and a
# type-checked TypeScript consumer. The runtime dependencies' registry entries are cached first (`npm ci`
# caches tarballs, not the metadata an install resolves versions from), so the install itself is offline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# prebuildify moves the addon out of build/Release; put it back and drop prebuilds/, which would
# otherwise shadow later local builds of this checkout.
restore() {
  mkdir -p "$root/build/Release"
  cp "$root"/prebuilds/linux-x64/*.node "$root/build/Release/xnorm.node" 2>/dev/null || true
  rm -rf "$work" "$root/prebuilds"
}
trap restore EXIT
cd "$root"

rm -rf dist prebuilds                # packing must build what it ships (prepack: prebuilds/, then dist/)
npm pack --pack-destination "$work" >/dev/null
# Both binaries load on glibc 2.17 and libstdc++ from GCC 6 on (the CUDA plugin where nvcc built one).
node scripts/abi-requirements.js --max-glibc 2.17 --max-glibcxx 3.4.22 --max-cxxabi 1.3.11 prebuilds/linux-x64/*.node $(ls prebuilds/linux-x64/libxnorm_cuda.so 2>/dev/null)
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  [ -f prebuilds/linux-x64/libxnorm_cuda.so ] || { echo "nvcc is present but the prebuild has no CUDA plugin"; exit 1; }
  if nm prebuilds/linux-x64/libxnorm_cuda.so 2>&1 | grep -qv 'no symbols'; then echo "the CUDA plugin is not stripped"; exit 1; fi
fi
tarball=$(ls "$work"/xnorm-*.tgz)
echo "packed $(basename "$tarball"): $(tar -tzf "$tarball" | grep -c .) files, prebuilds: $(tar -tzf "$tarball" | grep prebuilds/ | tr '\n' ' ')"
# What users need is in, what only contributors use is out.
contents=$(tar -tzf "$tarball")
for f in package/LICENSE package/dist/cjs/index.js package/dist/esm/index.d.mts package/dist/cjs/tfjs/index.js \
         package/dist/esm/tfjs/index.mjs package/scripts/build-cuda.sh package/binding.gyp; do
  grep -qx "$f" <<<"$contents" || { echo "the package lacks $f"; exit 1; }
done
if grep -E '^package/(cuda/emu/|native/core/bconv/asan_fuzz\.cpp|test/|bench/)' <<<"$contents"; then echo "contributor-only files packed"; exit 1; fi

# A PATH holding everything but compilers and build tools.
mkdir -p "$work/bin"
for dir in /usr/local/bin /usr/bin /bin; do
  for f in "$dir"/*; do
    name=$(basename "$f")
    case "$name" in
      gcc*|g++*|cc|c++|cpp*|clang*|make|gmake|cmake|ld|ld.*|nvcc|x86_64-linux-gnu-*|c89*|c99*) continue ;;
    esac
    [ -e "$work/bin/$name" ] || ln -s "$f" "$work/bin/$name"
  done
done
if PATH="$work/bin" command -v g++ cc make >/dev/null 2>&1; then echo "compilers still visible"; exit 1; fi

# Cache what resolving the runtime dependencies needs; the install below then never touches the network.
node -e 'const d = require("./package.json").dependencies; console.log(Object.entries(d).map(([k, v]) => `${k}@${v}`).join("\n"))' |
  xargs npm cache add >/dev/null

app="$work/app"
mkdir -p "$app"
cp test/install/consumer.* test/install/consumer-tfjs.cjs test/install/consumer-default.mts test/install/tsconfig.json "$app/"
echo '{ "name": "xnorm-consumer", "private": true, "type": "commonjs" }' > "$app/package.json"
cd "$app"
PATH="$work/bin" npm install --offline --no-audit --no-fund "$tarball"
PATH="$work/bin" node consumer.cjs
PATH="$work/bin" node consumer.mjs
# xnorm/tfjs with the user's tfjs (the repository's, as the optional peers are not installed here)
PATH="$work/bin" NODE_PATH="$root/node_modules" node consumer-tfjs.cjs
node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json --typeRoots "$root/node_modules/@types"
# The same install on Debian 11 (older glibc and libstdc++), where root can make a chroot.
if [ "$(id -u)" = 0 ]; then bash "$root/scripts/old-distro-test.sh" "$app"; else echo "old-distro test skipped: needs root for chroot"; fi
echo "pack-install test: ok (installed with no compiler on PATH; CommonJS, ESM, TypeScript and tfjs-backend consumers pass; Debian 11 too)"
