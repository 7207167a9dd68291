// The 'xnorm' tfjs backend (lib/tfjs) kernel by kernel against the 'cpu' backend on random shapes
// (fast-check): broadcasts, reductions, tiling, pooling, convs with every padding form, matmul; its
// memory rules (pooled outputs reused, escaped arrays kept valid, slices of pooled outputs safe), the
// prepared-filter cache, the fallbacks, and the native entries' own argument checks.
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outputPool } from '../lib';
import { native } from '../lib/native';
import { XnormBackend, kernelStats, nativeKernelNames } from '../lib/tfjs';
import { broadcastView } from '../lib/tfjs/elementwise';
import { codeOf } from './helpers';

/** Runs f on 'cpu' and on 'xnorm' with the same inputs and returns both results' values. */
async function onBoth(f: () => tf.Tensor): Promise<[Float32Array, Float32Array, number[]]> {
  await tf.setBackend('cpu');
  const a = f();
  const av = a.dataSync() as Float32Array, shape = a.shape;
  await tf.setBackend('xnorm');
  const b = f();
  expect(b.shape).toEqual(shape);
  return [av, b.dataSync() as Float32Array, shape];
}

function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5) {
  expect(b.length).toBe(a.length);
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i])) expect(b[i]).toBeNaN();
    else if (!Number.isFinite(a[i])) expect(b[i]).toBe(a[i]);
    else expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(a[i])));
  }
}

const seeded = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);

beforeAll(async () => {
  await tf.setBackend('xnorm');
  expect(tf.getBackend()).toBe('xnorm');
  expect(tf.backend()).toBeInstanceOf(XnormBackend);
});

afterAll(async () => {
  await tf.setBackend('cpu');
});

describe('broadcastView', () => {
  it('folds shapes into [outer, mid, inner] runs, or gives up past three', () => {
    expect(broadcastView([2, 3, 4], [2, 3, 4], [4])).toMatchObject({ outer: 1, mid: 6, inner: 4, aMid: true, bMid: false, bInner: true });
    expect(broadcastView([2, 3, 4], [2, 1, 4], [2, 3, 4])).toMatchObject({ outer: 2, mid: 3, inner: 4, aMid: false, bMid: true });
    expect(broadcastView([], [], [])).toMatchObject({ outer: 1, mid: 1, inner: 1 });
    expect(broadcastView([2, 3, 4, 5], [2, 1, 4, 1], [2, 3, 4, 5])).toBeNull();
  });
});

describe('elementwise and reductions against the cpu backend', () => {
  const dim = fc.integer({ min: 1, max: 5 });
  const shapes = fc.array(dim, { minLength: 0, maxLength: 4 }).chain((out) =>
    fc.tuple(fc.constant(out), fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }),
      fc.array(fc.boolean(), { minLength: out.length, maxLength: out.length }), fc.integer({ min: 0, max: out.length })));

  it('binary ops with random broadcasts', async () => {
    const ops = [tf.add, tf.sub, tf.mul, tf.div, tf.maximum, tf.minimum, tf.squaredDifference] as const;
    await fc.assert(fc.asyncProperty(shapes, fc.integer({ min: 0, max: ops.length - 1 }), async ([out, ka, kb, drop], k) => {
      // a keeps the dims flagged in ka (1 elsewhere); b the same and also drops `drop` leading dims
      const as = out.map((d, i) => (ka[i] ? d : 1)), bs = out.map((d, i) => (kb[i] ? d : 1)).slice(drop);
      const [c, x] = await onBoth(() => ops[k](seeded(as, 1), seeded(bs, 2)));
      expectClose(c, x);
    }), { numRuns: 60 });
  });

  it('comparisons with random broadcasts give bool tensors; casts from bool and int32', async () => {
    const ops = [tf.greater, tf.greaterEqual, tf.less, tf.lessEqual, tf.equal, tf.notEqual] as const;
    await fc.assert(fc.asyncProperty(shapes, fc.integer({ min: 0, max: ops.length - 1 }), async ([out, ka, kb, drop], k) => {
      const as = out.map((d, i) => (ka[i] ? d : 1)), bs = out.map((d, i) => (kb[i] ? d : 1)).slice(drop);
      // rounded values so that equal elements occur
      const [c, x] = await onBoth(() => tf.cast(ops[k](tf.round(seeded(as, 1)), tf.round(seeded(bs, 2))), 'float32'));
      expect(Array.from(x)).toEqual(Array.from(c));  // the cpu backend keeps the bytes (a cast without loss)
    }), { numRuns: 40 });
    const st = kernelStats();
    expect(st.native.Greater).toBeGreaterThan(0);
    expect(st.native.Cast).toBeGreaterThan(0);
    // int32 -> float32 stays with the cpu kernel, which keeps the exact integers
    const [c, x] = await onBoth(() => tf.cast(tf.tensor([-3, 0, 7, 2147483647], [4], 'int32'), 'float32'));
    expect(Array.from(x)).toEqual(Array.from(c));
  });

  it('unary ops, NaN included', async () => {
    const v = new Float32Array([-3, -0.5, 0, 0.5, 7, NaN, -Infinity, 100]);
    for (const f of [tf.relu, tf.relu6, tf.neg, tf.square, tf.sqrt, tf.rsqrt, tf.abs, tf.exp, tf.sigmoid, tf.tanh, tf.elu,
      (t: tf.Tensor) => tf.step(t, 0.3), (t: tf.Tensor) => tf.leakyRelu(t, 0.1)]) {
      const [c, x] = await onBoth(() => f(tf.tensor(v)));
      expectClose(c, x, 1e-6);
    }
  });

  it('sum, mean, max, min over any run of axes, keepDims or not', async () => {
    const arb = fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 4 }).chain((s) =>
      fc.tuple(fc.constant(s), fc.integer({ min: 0, max: s.length - 1 }), fc.integer({ min: 0, max: s.length - 1 }), fc.boolean()));
    await fc.assert(fc.asyncProperty(arb, fc.integer({ min: 0, max: 3 }), async ([s, i, j, keep], k) => {
      const axes = Array.from({ length: Math.abs(i - j) + 1 }, (_, t) => Math.min(i, j) + t);
      const f = [tf.sum, tf.mean, tf.max, tf.min][k];
      const [c, x] = await onBoth(() => f(seeded(s, 3), axes, keep));
      expectClose(c, x, 1e-5);
    }), { numRuns: 60 });
    expect(kernelStats().native.Sum).toBeGreaterThan(0);
  });

  it('tile and addN', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 })), { minLength: 1, maxLength: 4 }),
      async (dims) => {
        const [c, x] = await onBoth(() => tf.tile(seeded(dims.map((d) => d[0]), 4), dims.map((d) => d[1])));
        expect(x).toEqual(c);
      }), { numRuns: 40 });
    const [c, x] = await onBoth(() => tf.addN([seeded([3, 5], 5), seeded([3, 5], 6), seeded([3, 5], 7)]));
    expectClose(c, x, 1e-6);
  });
});

describe('pooling and convs against the cpu backend', () => {
  const pads = ['same', 'valid', [[0, 0], [1, 0], [0, 2], [0, 0]]] as const;
  it('max and avg pooling and their gradients', async () => {
    const arb = fc.record({
      n: fc.integer({ min: 1, max: 2 }), h: fc.integer({ min: 3, max: 9 }), w: fc.integer({ min: 3, max: 9 }), c: fc.integer({ min: 1, max: 70 }),
      k: fc.integer({ min: 1, max: 3 }), s: fc.integer({ min: 1, max: 3 }), pad: fc.integer({ min: 0, max: 2 }),
    });
    await fc.assert(fc.asyncProperty(arb, async ({ n, h, w, c, k, s, pad }) => {
      const x = () => seeded([n, h, w, c], 8) as tf.Tensor4D;
      const p = pads[pad] as 'same';
      for (const f of [(t: tf.Tensor4D) => tf.maxPool(t, k, s, p), (t: tf.Tensor4D) => tf.avgPool(t, k, s, p)]) {
        const [c0, x0] = await onBoth(() => f(x()));
        expectClose(c0, x0, 1e-6);
        const [c1, x1] = await onBoth(() => tf.grad((t: tf.Tensor) => f(t as tf.Tensor4D).square().sum())(x()));
        expectClose(c1, x1, 1e-5);
      }
    }), { numRuns: 25 });
  });

  it('conv2d, depthwise and fused forms, with their gradients, every padding form', async () => {
    const arb = fc.record({
      n: fc.integer({ min: 1, max: 2 }), h: fc.integer({ min: 4, max: 9 }), w: fc.integer({ min: 4, max: 9 }),
      c: fc.integer({ min: 1, max: 6 }), co: fc.integer({ min: 1, max: 6 }), k: fc.integer({ min: 1, max: 3 }),
      s: fc.integer({ min: 1, max: 2 }), pad: fc.integer({ min: 0, max: 2 }), nchw: fc.boolean(),
      act: fc.constantFrom('linear', 'relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu'),
    });
    await fc.assert(fc.asyncProperty(arb, async ({ n, h, w, c, co, k, s, pad, nchw, act }) => {
      const x = () => seeded(nchw ? [n, c, h, w] : [n, h, w, c], 9) as tf.Tensor4D;
      const f = () => seeded([k, k, c, co], 10) as tf.Tensor4D, fd = () => seeded([k, k, c, 2], 11) as tf.Tensor4D;
      const p = (nchw && pad === 2 ? 'same' : pads[pad]) as 'same';
      const fmt = nchw ? 'NCHW' : 'NHWC';
      const conv = (t: tf.Tensor4D, ff: tf.Tensor4D) => tf.conv2d(t, ff, s, p, fmt);
      const fused = (t: tf.Tensor4D, ff: tf.Tensor4D) =>
        tf.fused.conv2d({ x: t, filter: ff, strides: s, pad: p, dataFormat: fmt, bias: seeded([co], 12), activation: act as 'relu', leakyreluAlpha: 0.3 });
      for (const g of [conv, fused]) {
        const [c0, x0] = await onBoth(() => g(x(), f()));
        expectClose(c0, x0, 1e-5);
      }
      const [c1, x1] = await onBoth(() => tf.grad((t: tf.Tensor) => conv(t as tf.Tensor4D, f()).square().sum())(x()));
      expectClose(c1, x1, 1e-4);
      const [c2, x2] = await onBoth(() => tf.grad((ff: tf.Tensor) => conv(x(), ff as tf.Tensor4D).square().sum())(f()));
      expectClose(c2, x2, 1e-4);
      if (!nchw) {
        const dw = (t: tf.Tensor4D, ff: tf.Tensor4D) => tf.depthwiseConv2d(t, ff, s, p);
        const [c3, x3] = await onBoth(() => dw(x(), fd()));
        expectClose(c3, x3, 1e-5);
        const [c4, x4] = await onBoth(() => tf.grads((t: tf.Tensor, ff: tf.Tensor) => dw(t as tf.Tensor4D, ff as tf.Tensor4D).square().sum())([x(), fd()])[1]);
        expectClose(c4, x4, 1e-4);
      }
    }), { numRuns: 30 });
    const st = kernelStats();
    for (const k of ['Conv2D', 'FusedConv2D', 'DepthwiseConv2dNative', 'Conv2DBackpropInput', 'Conv2DBackpropFilter',
      'DepthwiseConv2dNativeBackpropFilter']) expect(st.native[k], k).toBeGreaterThan(0);
  });

  it('matMul with transposes, batches, broadcast batches and fused bias/activation', async () => {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      const a = () => seeded(ta ? [3, 5, 4] : [3, 4, 5], 13), b = () => seeded(tb ? [3, 6, 5] : [3, 5, 6], 14);
      const [c0, x0] = await onBoth(() => tf.matMul(a(), b(), ta, tb));
      expectClose(c0, x0, 1e-5);
      const b1 = () => seeded(tb ? [6, 5] : [5, 6], 15);
      for (const activation of ['relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu'] as const) {
        const [c1, x1] = await onBoth(() => tf.fused.matMul({ a: a(), b: b1(), transposeA: ta, transposeB: tb, bias: seeded([6], 16), activation }));
        expectClose(c1, x1, 1e-5);
      }
    }
  });
});

describe('memory and caches', () => {
  it('returns pooled outputs when tfjs frees them, and keeps escaped or shared memory valid', async () => {
    await tf.setBackend('xnorm');
    const x = seeded([64, 64, 64], 17);  // 1 MiB: pooled outputs
    const before = outputPool().liveBytes;
    for (let i = 0; i < 5; i++) tf.tidy(() => { tf.relu(tf.add(x, x)); });
    expect(outputPool().liveBytes).toBe(before);  // every intermediate went back at once
    // An array read out by dataSync stays valid after dispose (it escaped), as on the cpu backend.
    const y = tf.relu(x);
    const values = y.dataSync();
    const copy = Float32Array.from(values);
    y.dispose();
    expect(values).toEqual(copy);
    // A slice of a pooled output may share its memory: disposing the source must not detach it.
    const z = tf.relu(x);
    const s = tf.slice(z, [1, 0, 0], [1, 64, 64]);
    const want = Float32Array.from(z.dataSync().subarray(4096, 8192));
    z.dispose();
    expect(s.dataSync()).toEqual(want);
    s.dispose();
    x.dispose();
  });

  it('packs a filter on its second use and releases it when tfjs disposes the tensor', async () => {
    await tf.setBackend('xnorm');
    const be = tf.backend() as XnormBackend;
    const x = seeded([1, 8, 8, 4], 18) as tf.Tensor4D, f = seeded([3, 3, 4, 5], 19) as tf.Tensor4D;
    const start = be.preparedFilters;
    const y1 = tf.conv2d(x, f, 1, 'same');
    expect(be.preparedFilters).toBe(start);
    const y2 = tf.conv2d(x, f, 1, 'same');
    expect(be.preparedFilters).toBe(start + 1);
    expect(y2.dataSync()).toEqual(y1.dataSync());  // bit-identical with the packed filter
    f.dispose();
    expect(be.preparedFilters).toBe(start);
    tf.dispose([x, y1, y2]);
  });

  it('a weight packed for one use is not reused for another (matMul plain, then transposed)', async () => {
    const a = seeded([4, 16], 22), w = seeded([16, 16], 23);
    await tf.setBackend('cpu');
    const want = tf.matMul(a, w, false, true).dataSync();
    await tf.setBackend('xnorm');
    tf.matMul(a, w);
    tf.matMul(a, w);  // packs w as the plain product's weight
    expectClose(want, tf.matMul(a, w, false, true).dataSync(), 1e-5);
  });

  it('hands what it does not run natively to the cpu kernels (int32, odd broadcasts)', async () => {
    await tf.setBackend('xnorm');
    const before = kernelStats().fallback.Add ?? 0;
    const r = tf.add(tf.tensor([1, 2, 3], [3], 'int32'), tf.tensor([4, 5, 6], [3], 'int32'));
    expect(Array.from(r.dataSync())).toEqual([5, 7, 9]);
    expect(kernelStats().fallback.Add).toBe(before + 1);
    const odd = tf.add(seeded([2, 1, 3, 1], 20), seeded([1, 2, 1, 3], 21));  // four runs of broadcast
    expect(odd.shape).toEqual([2, 2, 3, 3]);
    expect(kernelStats().fallback.Add).toBe(before + 2);
    expect(nativeKernelNames).toContain('FusedConv2D');
  });

  it('the native entries check their arrays against the views they are given', () => {
    const raw = native() as unknown as Record<string, (a: object) => unknown>;
    const a = new Float32Array(6), y = new Float32Array(6);
    const view = { outer: 1, mid: 2, inner: 3, aOuter: true, aMid: true, aInner: true, bOuter: false, bMid: false, bInner: true };
    expect(() => raw.elementwiseBinary({ op: 'add', ...view, a, b: new Float32Array(3), y })).not.toThrow();
    expect(codeOf(() => raw.elementwiseBinary({ op: 'add', ...view, a, b: new Float32Array(2), y }))).toBe('ERR_XNORM_SHAPE');
    expect(codeOf(() => raw.elementwiseBinary({ op: 'pow', ...view, a, b: new Float32Array(3), y }))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => raw.elementwiseUnary({ op: 'relu', size: 7, x: a, y }))).toBe('ERR_XNORM_SHAPE');
    expect(codeOf(() => raw.reduceMid({ op: 'sum', outer: 1, mid: 2, inner: 3, x: a, y: new Float32Array(2) }))).toBe('ERR_XNORM_SHAPE');
    const pool = { op: 'max', n: 1, h: 2, w: 3, c: 1, kh: 2, kw: 2, sh: 1, sw: 1, padTop: 0, padLeft: 0, oh: 1, ow: 2 };
    expect(() => raw.pool2d({ ...pool, x: a, y: new Float32Array(2) })).not.toThrow();
    expect(codeOf(() => raw.pool2d({ ...pool, x: a, y: new Float32Array(3) }))).toBe('ERR_XNORM_SHAPE');
    expect(codeOf(() => raw.pool2d({ ...pool, kh: 0, x: a, y: new Float32Array(2) }))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => raw.pool2d({ ...pool, op: 'maxGrad', x: a, y: new Float32Array(6) }))).toBe('ERR_XNORM_ARGUMENT');
  });
});
