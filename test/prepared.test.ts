// Prepared conv weights (prepareConv / ConvWeights): bit-identical to the raw-weight conv on every path
// (GEMM per image, batch-spanning GEMM, pointwise, direct/depthwise, Winograd), both layouts, dtypes,
// sync and async, shared by concurrent calls; foldConvBn({ prepare: true }); lifetime and bad input.
// Every ISA level is covered by the forced-ISA child in convbn.test.ts (preparedDiffers). Winograd with
// the tiles as rows, where raw weights make U per call, is also checked against the float64 reference.
import { describe, expect, it } from 'vitest';
import {
  ConvWeights,
  conv2d,
  conv2dSync,
  convBnSync,
  foldConvBn,
  prepareConv,
  prepareConvSync,
  setNumThreads,
  info,
  tensor,
} from '../lib';
import { native } from '../lib/native';
import { AWKWARD, ConvCase, conv64, forwardTolerance, outSize, sizes } from './convbn-reference';
import { expectCode, randomArray, runChild, supportedIsaLevels, withAlgo } from './helpers';

const raw = () => native() as unknown as Record<string, (args: object) => unknown>;

const c3 = (n: number, c: number, h: number, w: number, cout: number, p: number, g = 1): ConvCase =>
  ({ n, c, h, w, cout, k: [3, 3], s: [1, 1], p: [p, p], d: [1, 1], g });
const CASES: ConvCase[] = [
  ...AWKWARD,
  c3(1, 40, 13, 11, 36, 1),   // Winograd, one tile block
  c3(2, 33, 21, 17, 35, 1),   // Winograd, several tile blocks
  c3(3, 64, 5, 5, 70, 1),     // batch-spanning GEMM (small map)
  { n: 2, c: 24, h: 6, w: 7, cout: 40, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },  // pointwise
  { n: 2, c: 24, h: 9, w: 8, cout: 24, k: [3, 3], s: [2, 1], p: [1, 1], d: [1, 1], g: 24 }, // depthwise
  { n: 1, c: 12, h: 9, w: 8, cout: 18, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 3 },  // grouped
  // NCHW narrow maps through the pixels-as-rows GEMM, written back per channel: 1024 channels (C's
  // rows padded), runs of pixels crossing images; wider N tiles (256 pixels, more than one M block).
  { n: 2, c: 40, h: 7, w: 7, cout: 1024, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 4, c: 20, h: 16, w: 16, cout: 130, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 1 },
  // Enough pixels times patch (> 2^22) for the channels-last GEMM with pixels as N (the others take pixels as M).
  { n: 2, c: 64, h: 127, w: 129, cout: 40, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 1 },
];

function opts(t: ConvCase, layout: 'nchw' | 'nhwc' = 'nchw') {
  return { stride: t.s, padding: t.p, dilation: t.d, groups: t.g, layout };
}

function inputs(t: ConvCase, seed: number) {
  const s = sizes(t);
  return {
    x: randomArray(s.x, seed),
    w: tensor(randomArray(s.w, seed + 1, 0.3), [t.cout, t.c / t.g, t.k[0], t.k[1]]),
    b: tensor(randomArray(t.cout, seed + 2), [t.cout]),
  };
}

function xTensor(t: ConvCase, x: Float32Array, layout: 'nchw' | 'nhwc', dtype: 'float32' | 'float16' = 'float32') {
  if (layout === 'nchw') return tensor(x, [t.n, t.c, t.h, t.w], { dtype });
  const nhwc = new Float32Array(x.length);
  const hw = t.h * t.w;
  for (let n = 0; n < t.n; n++)
    for (let c = 0; c < t.c; c++)
      for (let p = 0; p < hw; p++) nhwc[(n * hw + p) * t.c + c] = x[(n * t.c + c) * hw + p];
  return tensor(nhwc, [t.n, t.h, t.w, t.c], { dtype });
}

/** y (in `layout`) against the float64 reference (NCHW): max |y - ref| <= 2e-6 * max(1, max |ref|). */
function expectNearRef(t: ConvCase, y: Float32Array, ref: ArrayLike<number>, layout: 'nchw' | 'nhwc', what: string, tol = 2e-6) {
  const [oh, ow] = outSize(t), pix = oh * ow;
  let scale = 1, diff = 0;
  for (let i = 0; i < ref.length; i++) {
    const n = Math.floor(i / (t.cout * pix)), c = Math.floor(i / pix) % t.cout, p = i % pix;
    const got = layout === 'nchw' ? y[i] : y[(n * pix + p) * t.cout + c];
    scale = Math.max(scale, Math.abs(ref[i]));
    diff = Math.max(diff, Math.abs(got - ref[i]));
  }
  expect(diff, what).toBeLessThanOrEqual(tol * scale);
}

function expectIdentical(a: ArrayLike<number>, b: ArrayLike<number>, what: string) {
  expect(a.length, what).toBe(b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) throw new Error(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
}

describe('prepared conv weights', () => {
  it('give the raw-weight conv2d bit for bit on every path, both layouts, with ReLU', async () => {
    for (const [k, t] of CASES.entries()) {
      const { x, w, b } = inputs(t, 10 + k);
      const cw = await prepareConv(w, { groups: t.g });
      for (const layout of ['nchw', 'nhwc'] as const) {
        const xt = xTensor(t, x, layout);
        const o = { ...opts(t, layout), activation: 'relu' as const };
        expectIdentical(conv2dSync(xt, cw, b, o).dataSync() as Float32Array, conv2dSync(xt, w, b, o).dataSync() as Float32Array,
          `case ${k} ${layout}`);
      }
      cw.dispose();
    }
  });

  it('match the float64 reference in both layouts', () => {
    for (const [k, t] of CASES.entries()) {
      const { x, w, b } = inputs(t, 30 + k);
      const cw = prepareConvSync(w, { groups: t.g });
      const ref = conv64(t, x, w.dataSync() as Float32Array, b.dataSync() as Float32Array);
      for (const layout of ['nchw', 'nhwc'] as const) {
        const y = conv2dSync(xTensor(t, x, layout), cw, b, opts(t, layout)).dataSync() as Float32Array;
        expectNearRef(t, y, ref, layout, `case ${k} ${layout}`, forwardTolerance(t));
      }
    }
  });

  it('take float16 weights and inputs (weights converted to float32 once, as conv2d does per call)', () => {
    const t = CASES[1];
    const { x, w, b } = inputs(t, 50);
    const wh = tensor(w.dataSync() as Float32Array, w.shape, { dtype: 'float16' });
    const xh = xTensor(t, x, 'nchw', 'float16');
    const y = conv2dSync(xh, prepareConvSync(wh), b, opts(t));
    expect(y.dtype).toBe('float16');
    expectIdentical(y.dataSync() as Uint16Array, conv2dSync(xh, wh, b, opts(t)).dataSync() as Uint16Array, 'float16');
  });

  it('are shared by concurrent async calls, and by 1 or 2 threads, with identical results', async () => {
    const t = c3(2, 48, 14, 14, 64, 1);
    const { x, w, b } = inputs(t, 60);
    const cw = prepareConvSync(w);
    const xt = xTensor(t, x, 'nchw');
    const want = conv2dSync(xt, w, b, opts(t)).dataSync() as Float32Array;
    const ys = await Promise.all(Array.from({ length: 6 }, () => conv2d(xt, cw, b, opts(t))));
    for (const y of ys) expectIdentical(y.dataSync() as Float32Array, want, 'concurrent');
    const threads = info().cpu.threads;
    try {
      setNumThreads(1);
      expectIdentical(conv2dSync(xt, cw, b, opts(t)).dataSync() as Float32Array, want, '1 thread');
    } finally {
      setNumThreads(threads);
    }
  });

  it('make the Winograd form on the first call that needs it, once', () => {
    const t = c3(2, 33, 21, 17, 35, 1);
    const { x, w } = inputs(t, 70);
    const cw = prepareConvSync(w);
    const before = cw.bytes;
    expect(before).toBeGreaterThanOrEqual(2 * sizes(t).w * 4);  // the copy and the packed panels
    conv2dSync(xTensor(t, x, 'nchw'), cw, undefined, opts(t));
    const after = cw.bytes;
    expect(after).toBeGreaterThan(before);
    conv2dSync(xTensor(t, x, 'nhwc'), cw, undefined, opts(t, 'nhwc'));
    expect(cw.bytes).toBe(after);
  });

  it('keep the F(2x2) and F(4x4) Winograd forms apart, each made once and equal to the raw-weight conv', async () => {
    const t = c3(3, 37, 11, 13, 41, 1);
    const { x, w, b } = inputs(t, 75);
    const cw = prepareConvSync(w);
    const held: number[] = [cw.bytes];
    for (const algo of ['winograd', 'winograd4', 'winograd', 'winograd4'] as const) {
      await withAlgo(algo, () => {
        for (const layout of ['nchw', 'nhwc'] as const) {
          const xt = xTensor(t, x, layout), o = { ...opts(t, layout), activation: 'relu' as const };
          expectIdentical(conv2dSync(xt, cw, b, o).dataSync() as Float32Array, conv2dSync(xt, w, b, o).dataSync() as Float32Array,
            `${algo} ${layout}`);
        }
      });
      held.push(cw.bytes);
    }
    const pair = t.c * t.cout * 4;  // bytes of one transformed value per channel pair
    expect(held[1] - held[0]).toBeGreaterThanOrEqual(16 * pair);  // F(2x2): 16 values per pair
    expect(held[2] - held[1]).toBeGreaterThanOrEqual(36 * pair);  // F(4x4): 36
    expect(held.slice(3)).toEqual([held[2], held[2]]);  // each made once
    // 96 F(4x4) tiles on 100 output channels: prepared U runs them in blocks of 48, raw U in one block
    // (wino_plan), with the same sums.
    const t2 = c3(4, 64, 14, 14, 100, 1);
    const i2 = inputs(t2, 76);
    const cw2 = prepareConvSync(i2.w);
    await withAlgo('winograd4', () => {
      for (const layout of ['nchw', 'nhwc'] as const) {
        const xt = xTensor(t2, i2.x, layout), o = opts(t2, layout);
        expectIdentical(conv2dSync(xt, cw2, i2.b, o).dataSync() as Float32Array, conv2dSync(xt, i2.w, i2.b, o).dataSync() as Float32Array,
          `blocks ${layout}`);
      }
    });
  });

  it('keep what an op in flight reads when disposed under it', async () => {
    const t = c3(2, 64, 28, 28, 64, 1);
    const { x, w, b } = inputs(t, 80);
    const xt = xTensor(t, x, 'nchw');
    const want = conv2dSync(xt, w, b, opts(t)).dataSync() as Float32Array;
    const cw = prepareConvSync(w);
    const pending = conv2d(xt, cw, b, opts(t));
    cw.dispose();
    expectIdentical((await pending).dataSync() as Float32Array, want, 'disposed in flight');
    expect(cw.disposed).toBe(true);
    expect(cw.bytes).toBe(0);
  });

  it('foldConvBn({ prepare: true }) gives what Deploy mode gives', () => {
    const t = c3(1, 20, 9, 9, 24, 1, 2);
    const { x, w, b } = inputs(t, 90);
    const c = t.cout;
    const bn = {
      mean: tensor(randomArray(c, 91, 0.5), [c]), var: tensor(randomArray(c, 92, 0.3).map((v) => 0.5 + v * v), [c]),
      gamma: tensor(randomArray(c, 93, 0.5, 1), [c]), beta: tensor(randomArray(c, 94), [c]), eps: 1e-3,
    };
    const p = { weight: w, bias: b, bn };
    const folded = foldConvBn(p, { prepare: true, groups: 2 });
    expect(folded.weight).toBeInstanceOf(ConvWeights);
    expect(folded.weight.groups).toBe(2);
    const xt = xTensor(t, x, 'nchw');
    const o = { ...opts(t), activation: 'relu' as const };
    expectIdentical(conv2dSync(xt, folded.weight, folded.bias, o).dataSync() as Float32Array,
      convBnSync(xt, p, { ...o, mode: 'deploy' }).y.dataSync() as Float32Array, 'deploy');
  });
});

// Winograd F(2x2, 3x3) with the tiles as the GEMM's rows (few tiles: deep layers at batch 1; U prepared
// once, or made from raw weights per call with the same bits). Forced on awkward shapes: channels off the vector width and output channels off the 48-wide
// panels, odd and tiny maps, paddings 0..3 and asymmetric, K over one slice (c > 320), batch 1..3.
const ROWS: ConvCase[] = [
  c3(1, 130, 5, 9, 140, 1),
  c3(2, 129, 6, 3, 200, 1),
  c3(1, 128, 7, 7, 136, 0),
  { n: 3, c: 33, h: 4, w: 5, cout: 17, k: [3, 3], s: [1, 1], p: [0, 2], d: [1, 1], g: 1 },
  c3(2, 20, 1, 2, 50, 1),
  c3(1, 300, 5, 6, 20, 1),
  c3(1, 520, 3, 3, 64, 1),
  c3(1, 16, 9, 10, 33, 3),
];

describe('prepared conv weights: Winograd with the tiles as rows', () => {
  it('matches the float64 reference in both layouts, with bias and ReLU', async () => {
    for (const [k, t] of ROWS.entries()) {
      const { x, w, b } = inputs(t, 110 + k);
      const cw = prepareConvSync(w);
      const ref = conv64(t, x, w.dataSync() as Float32Array, b.dataSync() as Float32Array).map((v) => Math.max(v, 0));
      for (const layout of ['nchw', 'nhwc'] as const) {
        const o = { ...opts(t, layout), activation: 'relu' as const };
        const y = (await withAlgo('winograd_rows', () => conv2dSync(xTensor(t, x, layout), cw, b, o))).dataSync() as Float32Array;
        expectNearRef(t, y, ref, layout, `case ${k} ${layout}`);
      }
    }
  });

  it('1 and 2 threads, sync, async and concurrent calls: bit-identical', async () => {
    for (const t of [ROWS[0], ROWS[5]]) {
      const { x, w, b } = inputs(t, 130);
      const cw = prepareConvSync(w);
      const xt = xTensor(t, x, 'nhwc');
      const o = { ...opts(t, 'nhwc'), activation: 'relu' as const };
      const threads = info().cpu.threads;
      const ys = await withAlgo('winograd_rows', async () => {
        const out: Float32Array[] = [];
        try {
          for (const n of [1, 2]) {
            setNumThreads(n);
            out.push(conv2dSync(xt, cw, b, o).dataSync() as Float32Array, (await conv2d(xt, cw, b, o)).dataSync() as Float32Array);
          }
        } finally {
          setNumThreads(threads);
        }
        for (const y of await Promise.all(Array.from({ length: 4 }, () => conv2d(xt, cw, b, o)))) out.push(y.dataSync() as Float32Array);
        return out;
      });
      for (const [i, y] of ys.entries()) expectIdentical(y, ys[0], `run ${i}`);
    }
  });

  it('is what a deep layer on a small map runs unforced, raw or prepared weights, with the same bits', async () => {
    // 128 -> 128 channels on 5x5 at batch 1: 9 tiles. Raw weights make U per call, panel by panel, in
    // the prepared panels' order and K slices. With 64 channels the GEMM runs (no Winograd below 32 tiles).
    const t = c3(1, 128, 5, 5, 128, 1);
    const { x, w, b } = inputs(t, 140);
    const xt = xTensor(t, x, 'nhwc');
    const o = opts(t, 'nhwc');
    const unforced = conv2dSync(xt, prepareConvSync(w), b, o).dataSync() as Float32Array;
    expect(unforced).toEqual(await withAlgo('winograd_rows', () => conv2dSync(xt, prepareConvSync(w), b, o).dataSync()));
    expect(conv2dSync(xt, w, b, o).dataSync()).toEqual(unforced);
    expect(conv2dSync(xt, w, b, o).dataSync()).not.toEqual(await withAlgo('gemm', () => conv2dSync(xt, w, b, o).dataSync()));
    const t64 = c3(1, 64, 5, 5, 64, 1);
    const small = inputs(t64, 141);
    const xs = xTensor(t64, small.x, 'nhwc');
    expect(conv2dSync(xs, small.w, small.b, opts(t64, 'nhwc')).dataSync())
      .toEqual(await withAlgo('gemm', () => conv2dSync(xs, small.w, small.b, opts(t64, 'nhwc')).dataSync()));
  });

  it('runs for raw weights up to more tiles than for prepared ones (raw U is made per call, in cache)', async () => {
    // 128 channels on 14x14, NCHW at batch 2 (98 tiles) and NHWC at batch 3 (147): prepared weights
    // take F(4x4) there (the rows end at 49 NCHW and 100 NHWC tiles), raw ones the rows. On AVX-512's 48-wide panels
    // only: narrower micro-kernels take the rows below one panel of tiles, raw or prepared.
    if (info().cpu.level !== 'avx512') return;
    for (const [t, layout] of [[c3(2, 128, 14, 14, 128, 1), 'nchw'], [c3(3, 128, 14, 14, 128, 1), 'nhwc']] as const) {
      const { x, w, b } = inputs(t, 150);
      const xt = xTensor(t, x, layout);
      const o = opts(t, layout);
      const raw = conv2dSync(xt, w, b, o).dataSync() as Float32Array;
      expect(raw, `${layout} raw`).toEqual(await withAlgo('winograd_rows', () => conv2dSync(xt, w, b, o).dataSync()));
      expectNearRef(t, raw, conv64(t, x, w.dataSync() as Float32Array, b.dataSync() as Float32Array), layout, `${layout} raw`);
      const cw = prepareConvSync(w);
      expect(conv2dSync(xt, cw, b, o).dataSync(), `${layout} prepared`).toEqual(await withAlgo('winograd4', () => conv2dSync(xt, cw, b, o).dataSync()));
      // An empty XNORM_CONV_ALGO forces nothing.
      expect(await withAlgo('', () => conv2dSync(xt, w, b, o).dataSync()), `${layout} empty XNORM_CONV_ALGO`).toEqual(raw);
    }
  });

  it('every supported ISA level (forced in a child process) matches the references', () => {
    for (const level of supportedIsaLevels(info().cpu.level)) {
      type R = { diff: number; scale: number };
      const out = runChild<{ level: string; cases: Record<string, Record<string, R>>[] }>(
        'convbn-isa.cjs', level, { cases: ROWS, algo: 'winograd_rows' });
      expect(out.level).toBe(level);
      out.cases.forEach((c, k) => {
        for (const [layout, r] of Object.entries(c)) {
          expect(r.prepared, `${level} ${layout} case ${k}`).toBeDefined();
          for (const [what, d] of Object.entries(r))
            if (!(d.diff <= (what.startsWith('tune') ? 2e-5 : 2e-6) * Math.max(1, d.scale)))
              throw new Error(`winograd_rows ${level} ${layout} ${what} case ${k}: diff ${d.diff} (scale ${d.scale})`);
        }
      });
    }
  });
});

describe('prepared conv weights: bad input', () => {
  const t = c3(1, 8, 6, 6, 8, 1);
  const { x, w } = inputs(t, 100);
  const xt = xTensor(t, x, 'nchw');

  it('refuses disposed weights, mismatched shapes or groups, and unknown options', () => {
    const cw = prepareConvSync(w);
    expectCode(() => conv2dSync(xt, cw, undefined, { groups: 2 }), 'ERR_XNORM_SHAPE');
    const other = prepareConvSync(tensor(randomArray(8 * 4 * 9, 1), [8, 4, 3, 3]));
    expectCode(() => conv2dSync(xt, other, undefined, { padding: 1 }), 'ERR_XNORM_SHAPE');
    const grouped = prepareConvSync(tensor(randomArray(8 * 4 * 9, 1), [8, 4, 3, 3]), { groups: 2 });
    expect(conv2dSync(xt, grouped, undefined, { padding: 1 }).shape).toEqual([1, 8, 6, 6]);  // groups from the weights
    expectCode(() => prepareConvSync(w, { groups: 3 }), 'ERR_XNORM_SHAPE');
    expectCode(() => prepareConvSync(tensor(new Float32Array(8), [8])), 'ERR_XNORM_SHAPE');
    expectCode(() => prepareConvSync(w, { group: 2 } as never), 'ERR_XNORM_ARGUMENT');
    expectCode(() => foldConvBn({ weight: w, bn: { mean: tensor(new Float32Array(8), [8]), var: tensor(new Float32Array(8).fill(1), [8]) } },
      { groups: 2 }), 'ERR_XNORM_ARGUMENT');
    cw.dispose();
    cw.dispose();
    expectCode(() => conv2dSync(xt, cw), 'ERR_XNORM_DISPOSED');
    expectCode(() => conv2dSync(xt, Object.create(ConvWeights.prototype)), 'ERR_XNORM_ARGUMENT');
  });

  it('the native boundary checks the handle and its shape', () => {
    const cw = prepareConvSync(w);
    const good = raw().prepareConv({ weight: w.dataSync(), wShape: [8, 8, 3, 3], groups: 1 });
    const geo = {
      dtype: 'float32', wDtype: 'float32', layout: 'nchw', groups: 1, relu: false, xShape: [1, 8, 6, 6],
      strideH: 1, strideW: 1, padH: 1, padW: 1, dilationH: 1, dilationW: 1, x: xt.dataSync(), y: new Float32Array(288),
    };
    expect(() => raw().conv2d({ ...geo, wShape: [8, 8, 3, 3], prepared: good })).not.toThrow();
    expectCode(() => raw().conv2d({ ...geo, wShape: [8, 8, 3, 3], prepared: {} }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => raw().conv2d({ ...geo, xShape: [1, 16, 6, 6], x: new Float32Array(576), wShape: [8, 16, 3, 3], prepared: good }),
      'ERR_XNORM_SHAPE');
    expectCode(() => raw().prepareConv({ weight: new Float32Array(10), wShape: [8, 8, 3, 3], groups: 1 }), 'ERR_XNORM_SHAPE');
    expectCode(() => raw().prepareConv({ weight: w.dataSync(), wShape: [8, 8, 3, 3], groups: 3 }), 'ERR_XNORM_SHAPE');
    raw().releaseConvWeights({ prepared: good });
    expectCode(() => raw().conv2d({ ...geo, wShape: [8, 8, 3, 3], prepared: good }), 'ERR_XNORM_DISPOSED');
    cw.dispose();
  });
});
