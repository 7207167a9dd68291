// Child process for the forced-ISA conv tests: loads the addon directly (XNORM_ISA is read at load
// time), runs the fast conv passes and the C++ references on seeded random data in both layouts, and
// prints the largest differences as JSON.
'use strict';
const path = require('path');
// The addon under test: $XNORM_ADDON where set (scripts/sanitize.sh's ASan build), else this checkout's.
const addon = process.env.XNORM_ADDON ? require(path.resolve(process.env.XNORM_ADDON)) : require('node-gyp-build')(path.join(__dirname, '..', '..'));
// lib/ does this at load; ConvBnSaved keeps arrays beyond the call and needs it.
addon.setup(Error, require('worker_threads').markAsUntransferable);

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

function maxDiff(a, b) {
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return { diff: d, scale: m };
}

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
// The forward algorithm to force (the addon reads XNORM_CONV_ALGO on every call), if any.
if (input.algo) process.env.XNORM_CONV_ALGO = input.algo;
const out = { level: addon.info().isaLevel, tile: addon.convInfo({}), cases: [] };
input.cases.forEach((t, idx) => {
  const r = rng(1000 + idx);
  const oh = Math.floor((t.h + 2 * t.p[0] - (t.k[0] - 1) * t.d[0] - 1) / t.s[0]) + 1;
  const ow = Math.floor((t.w + 2 * t.p[1] - (t.k[1] - 1) * t.d[1] - 1) / t.s[1]) + 1;
  const xSize = t.n * t.c * t.h * t.w, ySize = t.n * t.cout * oh * ow, wSize = t.cout * (t.c / t.g) * t.k[0] * t.k[1];
  const x = Float32Array.from({ length: xSize }, r);
  const w = Float32Array.from({ length: wSize }, r);
  const b = Float32Array.from({ length: t.cout }, r);
  const dy = Float32Array.from({ length: ySize }, r);
  const res = {};
  for (const layout of ['nchw', 'nhwc']) {
    const geo = {
      dtype: 'float32', layout, groups: t.g,
      xShape: layout === 'nchw' ? [t.n, t.c, t.h, t.w] : [t.n, t.h, t.w, t.c],
      wShape: [t.cout, t.c / t.g, t.k[0], t.k[1]],
      strideH: t.s[0], strideW: t.s[1], padH: t.p[0], padW: t.p[1], dilationH: t.d[0], dilationW: t.d[1],
    };
    const run = (reference) => {
      const y = new Float32Array(ySize), dx = new Float32Array(xSize), dw = new Float32Array(wSize);
      addon.convKernel({ ...geo, which: 'forward', reference, x, weight: w, bias: b, y });
      addon.convKernel({ ...geo, which: 'backwardData', reference, dy, weight: w, dx });
      addon.convKernel({ ...geo, which: 'backwardFilter', reference, x, dy, weight: dw });
      return { y, dx, dw };
    };
    const fast = run(false), ref = run(true);
    res[layout] = { y: maxDiff(fast.y, ref.y), dx: maxDiff(fast.dx, ref.dx), dw: maxDiff(fast.dw, ref.dw) };
    // Prepared weights (this ISA's packing) must give the raw-weight conv2d bit for bit: count differences.
    // Forced to winograd_rows (raw weights transformed per call): also compared with the reference.
    const yRaw = new Float32Array(ySize), yPre = new Float32Array(ySize);
    const prepared = addon.prepareConv({ weight: w, wShape: geo.wShape, groups: t.g });
    addon.conv2d({ ...geo, wDtype: 'float32', relu: true, x, weight: w, bias: b, y: yRaw });
    addon.conv2d({ ...geo, wDtype: 'float32', relu: true, x, prepared, bias: b, y: yPre });
    if (input.algo === 'winograd_rows') res[layout].prepared = maxDiff(yPre, ref.y.map((v) => Math.max(v, 0)));
    res[layout].preparedDiffers = { diff: yRaw.filter((v, i) => !Object.is(v, yPre[i])).length, scale: 0 };
    // Tune with fused ReLU: the 1-bit mask must say y > 0, and backward through it must match Eval's.
    const bn = { mean: b, var: Float32Array.from(b, (v) => 1 + v * v), gamma: Float32Array.from(b, (v) => 1 - v), beta: b, eps: 1e-5 };
    const y = new Float32Array(ySize), ye = new Float32Array(ySize);
    const tune = { ...geo, wDtype: 'float32', mode: 'tune', relu: true, x, weight: w, bias: b, ...bn, y };
    const tuneSaved = addon.convBnSaved(tune);
    addon.convBnForward({ ...tune, saved: tuneSaved });
    const evalArgs = { ...geo, wDtype: 'float32', mode: 'eval', relu: true, x, weight: w, bias: b, ...bn, y: ye };
    const evalSaved = addon.convBnSaved(evalArgs);
    addon.convBnForward({ ...evalArgs, saved: evalSaved });
    const { mask } = addon.savedState({ saved: tuneSaved });
    // the mask is in y's storage order, whatever the layout: bit i says y[i] > 0
    let maskErrors = 0;
    for (let i = 0; i < ySize; i++) maskErrors += ((mask[i >> 5] >>> (i & 31)) & 1) !== (y[i] > 0 ? 1 : 0) ? 1 : 0;
    const gt = { dx: new Float32Array(xSize), dWeight: new Float32Array(wSize), dGamma: new Float32Array(t.cout) };
    const ge = { dx: new Float32Array(xSize), dWeight: new Float32Array(wSize), dGamma: new Float32Array(t.cout) };
    addon.convBnBackward({ saved: tuneSaved, dy, ...gt });
    addon.convBnBackward({ saved: evalSaved, dy, ...ge });
    res[layout].mask = { diff: maskErrors, scale: 0 };
    res[layout].tuneY = maxDiff(y, ye);
    // An output that Tune and Eval round to opposite sides of 0 passes dy in one and not the other: their
    // gradients then differ by design. Such flips must lie within the forward error of 0 (checked with
    // tuneY's tolerance); the gradients are compared where there are none.
    let flips = 0, flipAt = 0;
    for (let i = 0; i < ySize; i++)
      if ((y[i] > 0) !== (ye[i] > 0)) flips++, flipAt = Math.max(flipAt, Math.abs(ye[i]));
    res[layout].tuneFlips = { diff: flipAt, scale: maxDiff(ye, ye).scale };
    if (flips === 0) {
      res[layout].tuneDx = maxDiff(gt.dx, ge.dx);
      res[layout].tuneDw = maxDiff(gt.dWeight, ge.dWeight);
      res[layout].tuneDgamma = maxDiff(gt.dGamma, ge.dGamma);
    }
  }
  out.cases.push(res);
});
process.stdout.write(JSON.stringify(out));
