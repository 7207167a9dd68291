#!/usr/bin/env bash
# Runs the CPU test suites against the linux-arm64 addon (prebuilds/linux-arm64/node.glibc.node, built by
# scripts/build-arm64.sh when missing) on an arm64 Node under qemu-user (Debian: apt-get install
# qemu-user g++-aarch64-linux-gnu; the arm64 Node comes from scripts/arm64-node.sh), twice: at the
# default ISA level (neon) and with XNORM_ISA=portable. Prints "N passed, N failed" over both runs and
# exits 1 on any failure.
#
# How: vitest's main process (test collection, TypeScript transforms: vite's native rolldown binding has
# no arm64 copy installed) stays on this machine's Node, and a preload sets process.execPath to a
# wrapper that starts the arm64 Node under qemu-aarch64, so every test worker vitest forks, and every
# child process a test starts with process.execPath (the forced-ISA children, workers' processes), runs
# the tests and the addon as arm64 code. PREBUILDS_ONLY=1 keeps node-gyp-build (the test children's
# loader) off an x64 build/Release; lib/native.ts tries prebuilds/linux-<arch>/ before build/ anyway.
#
# The files: the core correctness suites of the three families plus error handling and async ops (the ones that
# compare every kernel with the plain references), chosen to finish in 10-25 minutes on 2 cores under
# qemu; XNORM_ARM64_TESTS="test/a.test.ts test/b.test.ts" picks others. No arm64 speed is measured here.
# One test worker at a time (XNORM_ARM64_WORKERS), and timeouts 5x vitest.config's: under qemu a test runs
# ~10-20x slower, and a test that times out keeps running in the background, where its XNORM_CONV_ALGO
# changes (withAlgo) made the next tests in its file fail spuriously.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
fail() { echo "test-arm64: $*" >&2; exit 1; }
command -v qemu-aarch64 >/dev/null 2>&1 || fail "qemu-aarch64 not found (apt-get install qemu-user)"
sysroot="${XNORM_ARM64_SYSROOT:-/usr/aarch64-linux-gnu}"
[ -f "$sysroot/lib/ld-linux-aarch64.so.1" ] || fail "no aarch64 glibc in $sysroot (apt-get install g++-aarch64-linux-gnu)"
nodedir="$(bash scripts/arm64-node.sh)" || fail "could not get the arm64 Node"
addon="prebuilds/linux-arm64/node.glibc.node"
if [ ! -f "$addon" ] || [ -n "${XNORM_ARM64_REBUILD:-}" ]; then
  bash scripts/build-arm64.sh || fail "the arm64 build failed"
fi
[ -d dist/cjs ] || node scripts/build-ts.js >/dev/null || fail "build-ts failed"

core="test/convbn.test.ts test/convbn-grad.test.ts test/mst.test.ts test/bnstats.test.ts test/errors.test.ts test/validate.test.ts"
# At the default level also the backward conv and the binary conv. binary.test.ts and convbn.test.ts
# check every kernel of the portable level too (in children with XNORM_ISA=portable), so the portable
# run leaves them out (convbn.test.ts alone took 12 of CI's minutes there).
neon_files=(${XNORM_ARM64_TESTS:-$core test/conv2d-backward.test.ts test/binary.test.ts test/tensor.test.ts test/async-ops.test.ts})
portable_files=(${XNORM_ARM64_TESTS:-${core/test\/convbn.test.ts /}})

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/node" <<WRAP
#!/bin/sh
exec qemu-aarch64 -L "$sysroot" "$nodedir/bin/node" "\$@"
WRAP
chmod +x "$tmp/node"
cat >"$tmp/preload.cjs" <<'PRE'
// Children started with process.execPath (vitest's forks, the tests' own) run the arm64 Node under qemu.
if (process.env.XNORM_QEMU_NODE) process.execPath = process.env.XNORM_QEMU_NODE;
PRE

# The addon must load on the arm64 Node and pick NEON by default (else the NEON kernels go untested).
probe='const a = require(process.argv[1]); console.log(process.arch, a.info().isaLevel, a.info().isaWarning || "")'
for isa in "" portable; do
  got="$(XNORM_ISA="$isa" "$tmp/node" -e "$probe" "$root/$addon")" || fail "the arm64 addon does not load under qemu"
  echo "test-arm64: XNORM_ISA=${isa:-(default)}: $got"
  [ "$got" = "arm64 ${isa:-neon} " ] || fail "expected arm64 ${isa:-neon}, got: $got"
done

mkdir -p test-results
status=0
reports=()
# One vitest run per file: a worker that dies (qemu prints "uncaught target signal") is then named by
# its file's run. onnxruntime-node's arm64 binary segfaults on loading under qemu-user, so no file here
# may import it (its interop tests live in test/interop-ort.test.ts).
for isa in neon portable; do
  if [ "$isa" = neon ]; then files=("${neon_files[@]}"); else files=("${portable_files[@]}"); fi
  echo "== arm64 under qemu, XNORM_ISA=$isa: ${files[*]} =="
  started=$(date +%s)
  for file in "${files[@]}"; do
    report="test-results/arm64-$isa-$(basename "$file" .test.ts).json"
    rm -f "$report"
    # neon: XNORM_ISA unset (empty), the level the addon picks by itself (checked above to be neon).
    XNORM_ISA="${isa/neon/}" PREBUILDS_ONLY=1 XNORM_QEMU_NODE="$tmp/node" NODE_OPTIONS="--require $tmp/preload.cjs" \
      npx vitest run --project main --maxWorkers="${XNORM_ARM64_WORKERS:-1}" --testTimeout=600000 --hookTimeout=300000 \
      --outputFile.json="$report" "$file" || { status=1; echo "test-arm64: $file failed at $isa"; }
    reports+=("$report")
  done
  echo "test-arm64: XNORM_ISA=$isa took $(( $(date +%s) - started ))s"
done
echo -n "test-arm64 (both ISA levels): "
node scripts/test-summary.js "${reports[@]}" || status=1
exit $status
