// Child process for test/debug.test.ts: a few ops whose choices XNORM_DEBUG reports (set or not by the
// parent): the addon load, conv paths, an 'auto' MST plan's calibration and trial and which execution a
// binary conv ran, and the CUDA probe.
'use strict';
const path = require('path');
const x = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));

function rand(n, seed) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(seed + i * 12.9898) * 0.5;
  return a;
}

(async () => {
  const xs = x.tensor(rand(64 * 8 * 8, 1), [1, 64, 8, 8]);
  const w3 = x.tensor(rand(64 * 64 * 9, 2), [64, 64, 3, 3]);
  for (let i = 0; i < 3; i++) x.conv2dSync(xs, w3, undefined, { padding: 1 });  // logged once
  const w1 = x.tensor(rand(32 * 64, 3), [32, 64, 1, 1]);
  x.conv2dSync(xs, w1);
  x.conv2dSync(x.tensor(rand(2 * 64 * 8 * 8, 6), [2, 64, 8, 8]), x.prepareConvSync(w1));
  // binary weights where each channel is the previous one with two bits flipped: 'auto' considers reuse
  const cout = 128, cin = 256, k = cin * 9, wb = rand(cout * k, 4);
  for (let c = 1; c < cout; c++) {
    wb.set(wb.subarray((c - 1) * k, c * k), c * k);
    wb[c * k + ((c * 37) % k)] *= -1;
    wb[c * k + ((c * 91 + 5) % k)] *= -1;
  }
  const plan = x.mstPlanSync(x.packWeightsSync(x.tensor(wb, [cout, cin, 3, 3])), { reuse: 'auto' });
  const bits = x.packBitsSync(x.tensor(rand(cin * 4 * 4, 5), [1, cin, 4, 4]));
  x.binaryConv2dSync(bits, plan, { padding: 1 });
  await x.cudaStatus();
})();
