#!/usr/bin/env bash
# The installed package on an older Linux: Debian 11 (glibc 2.31, libstdc++ from GCC 10), made with
# debootstrap from Debian's registry into a chroot. The prebuilt addon must load there and run one op of
# each family (test/install/consumer.cjs), and the CUDA plugin, where the package has one, must load and
# say that no NVIDIA driver was found. This catches what symbol-version checks can miss (it found the
# addon needing GCC 11's libstdc++ for std::exception_ptr). Root only (chroot).
#   scripts/old-distro-test.sh <app dir with node_modules/xnorm installed>
#   XNORM_OLD_ROOT=/path   where the chroot is kept (default /tmp/xnorm-debian11; reused when present)
set -euo pipefail
app="$1"
chroot_dir="${XNORM_OLD_ROOT:-/tmp/xnorm-debian11}"
if [ ! -x "$chroot_dir/bin/sh" ]; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get install -y -q debootstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
  fi
  rm -rf "$chroot_dir"
  debootstrap --variant=minbase bullseye "$chroot_dir" http://deb.debian.org/debian >/dev/null
fi
rm -rf "$chroot_dir/xnorm-app"
cp -r "$app" "$chroot_dir/xnorm-app"
cp "$(readlink -f "$(command -v node)")" "$chroot_dir/usr/local/bin/node"
cat > "$chroot_dir/xnorm-app/cuda-check.cjs" <<'JS'
const x = require('xnorm');
const s = x.cudaStatusSync();
const plugin = require('fs').existsSync(require.resolve('xnorm/package.json').replace(/package\.json$/, 'prebuilds/linux-x64/libxnorm_cuda.so'));
console.log(`cuda: plugin shipped ${plugin}; ${s.available ? 'available' : s.reason}`);
if (plugin && !/no NVIDIA driver found|NVIDIA driver is too old|no CUDA device|CUDA-capable/.test(s.reason ?? '') && !s.available)
  throw new Error('the CUDA plugin did not load and probe on this distribution');
JS
glibc=$(chroot "$chroot_dir" /usr/local/bin/node -p 'process.report.getReport().header.glibcVersionRuntime' 2>/dev/null)
echo "old-distro test in Debian 11 (glibc $glibc):"
# (pipefail: a failing node fails the script; the grep drops Node's note about the chroot's missing CA file)
chroot "$chroot_dir" /bin/sh -c 'cd /xnorm-app && /usr/local/bin/node consumer.cjs && /usr/local/bin/node cuda-check.cjs' 2>&1 |
  grep -v 'Ignoring extra certs'
