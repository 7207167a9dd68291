// Child process for test/mst.test.ts (run with XNORM_DEBUG=1): an adopted 'auto' plan (no build trial)
// called below and above mst::kTrialPixels output pixels, each size twice, and one size with two output
// kinds; an 'always' plan at one image; the 'auto' plan read back with the 'bits'-output-only flag set
// in its bytes, called at 512 and 196 output pixels with each kind (runs dense, no trial, but for
// bit-sliced 'bits' output: no 'zero' padding). The parent matches each trial's verdict to the execution logged
// after it. Prints whether every output equals the dense weights' on stdout.
'use strict';
const path = require('path');
const zlib = require('zlib');
const dist = path.join(__dirname, '..', '..', 'dist', 'cjs');
const x = require(path.join(dist, 'index.js'));
const { native } = require(path.join(dist, 'native.js'));
const { weightsHandle } = require(path.join(dist, 'handles.js'));

function rand(n, seed) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(seed + i * 12.9898) * 0.5;
  return a;
}

const cout = 64, cin = 128, k = cin * 9, wb = rand(cout * k, 4);
const parent = new Int32Array(cout).fill(-1);
for (let c = 16; c < cout; c++) {  // channels 16.. copy channel c - 16 with two bits flipped
  parent[c] = c - 16;
  wb.set(wb.subarray((c - 16) * k, (c - 15) * k), c * k);
  wb[c * k + ((c * 37) % k)] *= -1;
  wb[c * k + ((c * 91 + 5) % k)] *= -1;
}
const w = x.packWeightsSync(x.tensor(wb, [cout, cin, 3, 3]));
const adopt = (reuse) => new x.MstPlan(w, native().mstPlan({ weights: weightsHandle(w), reuse, maxDepth: 4, parent }));
const auto = adopt('auto'), always = adopt('always');
let same = true;
function fixCrc(b) {  // the plan's CRC-32 is zlib's
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(b.length - 4, zlib.crc32(b.subarray(0, b.length - 4)), true);
  return b;
}
function call(plan, n, hw, output, padValue = 'one') {
  const bits = x.packBitsSync(x.tensor(rand(n * cin * hw * hw, 5 + n + hw), [n, cin, hw, hw]));
  const y = x.binaryConv2dSync(bits, plan, { padding: 1, output, padValue }).dataSync();
  const d = x.binaryConv2dSync(bits, w, { padding: 1, output, padValue }).dataSync();
  same = same && y.length === d.length && y.every((v, i) => v === d[i]);
}
for (let i = 0; i < 2; i++) {
  call(auto, 1, 14, 'bits');   // 196 output pixels: a trial on the first call only
  call(auto, 1, 14, 'float');  // the same size, another output kind: its own trial
  call(auto, 2, 16, 'float');  // 512: the build's verdict, no trial
}
call(always, 1, 14, 'bits');
const bytes = auto.serialize();
bytes[9] |= 1;  // bit 8 of the reuse field
const bitsOnly = x.MstPlan.deserialize(fixCrc(bytes), w);
if (bitsOnly.edgesFor !== 'bits' || auto.edgesFor !== 'all') same = false;
call(bitsOnly, 2, 16, 'float');
call(bitsOnly, 2, 16, 'int32');
call(bitsOnly, 2, 16, 'bits', 'zero');  // 'zero' padding: the counts are expanded, as for int32
call(bitsOnly, 2, 16, 'bits');
call(bitsOnly, 1, 14, 'float');
call(bitsOnly, 1, 14, 'bits');  // below 512 output pixels: a trial of its own
process.stdout.write(same ? 'same\n' : 'different\n');
