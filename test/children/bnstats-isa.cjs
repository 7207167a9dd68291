// Child process for the forced-ISA tests: loads the addon directly (XNORM_ISA is read at load time),
// runs moments (fast and reference) and batchNorm on the data given on stdin, prints JSON.
'use strict';
const path = require('path');
// The addon under test: $XNORM_ADDON where set (scripts/sanitize.sh's ASan build), else this checkout's.
const addon = process.env.XNORM_ADDON ? require(path.resolve(process.env.XNORM_ADDON)) : require('node-gyp-build')(path.join(__dirname, '..', '..'));

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = { level: addon.info().isaLevel, cases: [] };
for (const c of input.cases) {
  const Ctor = c.dtype === 'float32' ? Float32Array : Uint16Array;
  const x = Ctor.from(c.x);
  const slots = c.slots;
  const fast = { mean: new Float64Array(slots), m2: new Float64Array(slots) };
  const ref = { mean: new Float64Array(slots), m2: new Float64Array(slots) };
  const args = { x, dtype: c.dtype, shape: c.shape, layout: c.layout, over: c.over, groups: c.groups };
  addon.moments({ ...args, ...fast });
  addon.momentsReference({ ...args, ...ref });
  const y = new Ctor(x.length);
  addon.batchNorm({ x, y, dtype: c.dtype, shape: c.shape, layout: c.layout, perInstance: false,
    mean: Float32Array.from(c.bn.mean), meanLo: new Float32Array(c.bn.mean.length), scale: Float32Array.from(c.bn.scale), beta: Float32Array.from(c.bn.beta), relu: c.bn.relu });
  out.cases.push({ mean: Array.from(fast.mean), m2: Array.from(fast.m2), refMean: Array.from(ref.mean), refM2: Array.from(ref.m2), y: Array.from(y) });
}
process.stdout.write(JSON.stringify(out));
