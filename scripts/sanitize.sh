#!/usr/bin/env bash
# The CPU test suites under AddressSanitizer + UBSan, then the binary-conv core fuzzer at every ISA level,
# then the thread pool's stress test under ThreadSanitizer.
# The addon is built with -fsanitize=address,undefined in a scratch copy (the regular build stays as it
# is) and loaded through XNORM_ADDON, with libasan and libubsan preloaded into Node. Leak detection is off
# (Node itself keeps memory until exit); any other report aborts the process, which fails the run.
# Child processes that load build/Release directly (forced-ISA tests) run the regular build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"

start=$SECONDS
cp -r "$root/native" "$root/binding.gyp" "$root/scripts" "$root/package.json" "$work/"
ln -s "$root/node_modules" "$work/node_modules"
(cd "$work" && CFLAGS="$san" CXXFLAGS="$san" LDFLAGS="-fsanitize=address,undefined" npx node-gyp rebuild -j 2 >"$work/build.log" 2>&1) ||
  { tail -30 "$work/build.log"; exit 1; }
echo "sanitizer build: $((SECONDS - start)) s"

start=$SECONDS
(cd "$root" && XNORM_ADDON="$work/build/Release/xnorm.node" \
  LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  npx vitest run --reporter=default test/binary.test.ts test/mst.test.ts test/mst-compress.test.ts test/convbn.test.ts test/convbn-grad.test.ts \
    test/bnstats.test.ts test/bnstats-torch.test.ts test/errors.test.ts test/tensor.test.ts test/validate.test.ts \
    test/reliability.test.ts test/fuzz-boundary.test.ts test/prepared.test.ts test/output-pool.test.ts \
    test/conv2d-backward.test.ts test/tfjs-backend.test.ts test/tfjs-models.test.ts test/async-ops.test.ts test/workers.test.ts)
echo "CPU suites under ASan + UBSan: $((SECONDS - start)) s"

# native/core/bconv/asan_fuzz.cpp: fast path vs dense vs reference on random shapes and MST forests.
start=$SECONDS
N="$root/native/core"
F="-O1 -g $san -std=c++17 -I$N"
g++ $F -c "$N/bconv/kernels_avx512.cc" -o "$work/k512.o" -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vpopcntdq -mavx2 -mfma -mpopcnt
g++ $F -c "$N/bconv/kernels_avx2.cc" -o "$work/k2.o" -mavx2 -mfma -mpopcnt
g++ $F "$N/bconv/asan_fuzz.cpp" "$N/bconv/bconv.cc" "$N/bconv/conv.cc" "$N/bconv/kernels_portable.cc" "$N"/mst/*.cc \
  "$N/common/cpu.cc" "$N/common/thread_pool.cc" "$N/common/debug.cc" "$work/k512.o" "$work/k2.o" -o "$work/bconv_fuzz" -pthread
for isa in avx512 avx2 portable; do
  XNORM_ISA=$isa ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1 "$work/bconv_fuzz"
done
echo "bconv fuzzer under ASan + UBSan: $((SECONDS - start)) s"

# native/core/common/thread_pool_test.cpp under ThreadSanitizer: the pool's compute slots and failures.
start=$SECONDS
g++ -O1 -g -fsanitize=thread -std=c++17 -I"$N/common" "$N/common/thread_pool_test.cpp" "$N/common/thread_pool.cc" \
  -o "$work/thread_pool_test" -pthread
TSAN_OPTIONS=halt_on_error=1 "$work/thread_pool_test"
echo "thread pool under TSan: $((SECONDS - start)) s"
