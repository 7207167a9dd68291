import { describe, expect, it } from 'vitest';
import {
  XnormError,
  batchNorm,
  batchNormSync,
  info,
  mergeMoments,
  mixStats,
  moments,
  momentsSync,
  packBits,
  priorStats,
  setNumThreads,
  tensor,
  variance,
} from '../lib';
import type { Moments } from '../lib';
import { Layout, Over, geometry, index, refBatchNorm, refMoments } from './bnstats-reference';
import { maxAbsDiff, randomArray, rng, runChild, settlesAtOnce, supportedIsaLevels } from './helpers';
import { native } from '../lib/native';

/** Relative closeness of float32 results to float64 references, scaled by the reference's magnitude. */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string) {
  expect(actual.length, what).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const tol = rel * Math.max(1, Math.abs(expected[i]));
    if (!(Math.abs(actual[i] - expected[i]) <= tol))
      throw new Error(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tol})`);
  }
}

function checkAgainstReference(m: Moments, x: ArrayLike<number>, shape: number[], layout: Layout, over: Over, groups = 1) {
  const r = refMoments(x, shape, layout, over, groups);
  expect(m.count).toBe(r.count);
  expectClose(m.mean.dataSync(), r.mean, 1e-6, 'mean');
  // m2 is a sum of count squared deviations; compare relative to its own size
  const m2 = m.m2.dataSync();
  for (let i = 0; i < m2.length; i++) expect(Math.abs(m2[i] - r.m2[i])).toBeLessThanOrEqual(1e-5 * Math.max(r.m2[i], 1e-30));
}

const SHAPES: [number[], Layout][] = [
  [[2, 3, 5, 7], 'nchw'],
  [[2, 5, 7, 3], 'nhwc'],
  [[1, 17, 3, 3], 'nchw'],
  [[3, 4, 4, 33], 'nhwc'],
  [[4, 19], 'nchw'],
  [[5, 19], 'nhwc'],
  [[2, 6, 300], 'nchw'],
  [[1, 1, 1, 1], 'nchw'],
  [[2, 40, 3, 70000 / 70], 'nchw'],
  [[3, 2, 2, 2, 5], 'nhwc'],
  // Narrow channels-last rows read folded (several rows as one row of whole vectors) with a tail of rows.
  [[2, 37, 11, 5], 'nhwc'],
  [[1, 301, 3, 16], 'nhwc'],
  [[2, 9, 7, 24], 'nhwc'],
  // Wide channels-last rows read in runs of rows, block by block, split into several tasks per image.
  [[2, 300, 7, 131], 'nhwc'],
  [[1, 530, 1, 1030], 'nhwc'],
];

describe('moments', () => {
  it('matches the float64 reference for every layout and reduction on awkward shapes', async () => {
    let seed = 1;
    for (const [shape, layout] of SHAPES) {
      const size = shape.reduce((a, b) => a * b, 1);
      const x = randomArray(size, seed++, 3, 0.5);
      const t = tensor(x, shape);
      const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
      for (const over of ['channel', 'instance'] as Over[]) checkAgainstReference(await moments(t, { layout, over }), x, shape, layout, over);
      for (const groups of [1, c].concat(c % 2 === 0 ? [2] : [])) {
        checkAgainstReference(await moments(t, { layout, over: 'group', groups }), x, shape, layout, 'group', groups);
      }
    }
  });

  it('returns tensors shaped [C], [N, C] and [N, G]', () => {
    const t = tensor(randomArray(2 * 6 * 4, 3), [2, 6, 2, 2]);
    expect(momentsSync(t).mean.shape).toEqual([6]);
    expect(momentsSync(t, { over: 'instance' }).m2.shape).toEqual([2, 6]);
    expect(momentsSync(t, { over: 'group', groups: 3 }).mean.shape).toEqual([2, 3]);
  });

  it('is accurate when the offset is large against the spread (where E[x^2]-E[x]^2 in float32 fails)', () => {
    for (const [offset, scale] of [[1e6, 1], [1e4, 1e-2]]) {
      const shape = [4, 3, 16, 16];
      const x = randomArray(4 * 3 * 256, 11, scale, offset);
      const r = refMoments(x, shape, 'nchw', 'channel');
      const trueVar = r.m2.map((q) => q / r.count);
      // The textbook float32 formula is badly wrong on this data: that is what the test guards against.
      const f = Math.fround;
      let s1 = 0, s2 = 0;
      for (let i = 0; i < 4 * 256; i++) {
        const v = x[Math.floor(i / 256) * 3 * 256 + (i % 256)];
        s1 = f(s1 + v);
        s2 = f(s2 + f(v * v));
      }
      const naive = f(f(s2 / 1024) - f(f(s1 / 1024) * f(s1 / 1024)));
      expect(Math.abs(naive - trueVar[0]) / trueVar[0]).toBeGreaterThan(0.1);
      for (const layout of ['nchw', 'nhwc'] as Layout[]) {
        const data = layout === 'nchw' ? x : toNhwc(x, shape);
        const sh = layout === 'nchw' ? shape : [4, 16, 16, 3];
        const v = variance(momentsSync(tensor(data, sh), { layout })).dataSync();
        expectClose(v, trueVar, 1e-5, `variance ${layout} offset ${offset}`);
        for (let c = 0; c < 3; c++) expect(Math.abs(v[c] - trueVar[c]) / trueVar[c]).toBeLessThan(1e-5);
      }
    }
  });

  it('gives exactly zero m2 and the exact value for constant channels', () => {
    for (const layout of ['nchw', 'nhwc'] as Layout[]) {
      const x = new Float32Array(3 * 5 * 9).fill(1234567.125);
      const m = momentsSync(tensor(x, layout === 'nchw' ? [3, 5, 9] : [3, 9, 5]), { layout });
      expect(Array.from(m.m2.dataSync())).toEqual([0, 0, 0, 0, 0]);
      expect(Array.from(m.mean.dataSync())).toEqual([1234567.125, 1234567.125, 1234567.125, 1234567.125, 1234567.125]);
    }
  });

  it('handles one element per channel, N = 1 and odd channel counts', () => {
    const x = randomArray(7, 5);
    const m = momentsSync(tensor(x, [1, 7, 1, 1]));
    expect(m.count).toBe(1);
    expect(Array.from(m.mean.dataSync())).toEqual(Array.from(x));
    expect(Array.from(m.m2.dataSync())).toEqual(new Array(7).fill(0));
    expect(Array.from(variance(m).dataSync())).toEqual(new Array(7).fill(0));
    expect(() => variance(m, { unbiased: true })).toThrow(XnormError);
  });

  it('reads float16 and bfloat16 and accumulates in at least float32', () => {
    for (const shape of [[2, 5, 3, 3], [2, 70, 3, 70]]) {
      const x = randomArray(shape.reduce((a, b) => a * b, 1), 8, 2, 1);
      for (const dtype of ['float16', 'bfloat16'] as const) {
        const t = tensor(x, shape, { dtype });
        const decoded = t.float32Sync();
        for (const layout of ['nchw', 'nhwc'] as Layout[]) checkAgainstReference(momentsSync(t, { layout }), decoded, shape, layout, 'channel');
      }
    }
  });

  it('merging the moments of any split of the batch matches the moments of the whole', () => {
    const rand = rng(42);
    for (let trial = 0; trial < 20; trial++) {
      const n = 2 + Math.floor(rand() * 6);
      const c = 1 + Math.floor(rand() * 9);
      const s = 1 + Math.floor(rand() * 40);
      const layout: Layout = rand() < 0.5 ? 'nchw' : 'nhwc';
      const offset = rand() < 0.3 ? 1e4 : 0;
      const x = randomArray(n * c * s, 100 + trial, 1 + rand() * 5, offset);
      const shape = layout === 'nchw' ? [n, c, s] : [n, s, c];
      // split N into random consecutive parts, merge in a random tree order
      const cuts = [0];
      while (cuts[cuts.length - 1] < n) cuts.push(Math.min(n, cuts[cuts.length - 1] + 1 + Math.floor(rand() * 3)));
      const parts = cuts.slice(1).map((end, i) => {
        const start = cuts[i];
        return momentsSync(tensor(x.subarray(start * c * s, end * c * s), [end - start, ...shape.slice(1)]), { layout });
      });
      while (parts.length > 1) {
        const i = Math.floor(rand() * (parts.length - 1));
        parts.splice(i, 2, mergeMoments(parts[i], parts[i + 1]));
      }
      const whole = refMoments(x, shape, layout, 'channel');
      expect(parts[0].count).toBe(whole.count);
      expectClose(parts[0].mean.dataSync(), whole.mean, 1e-6, 'merged mean');
      expectClose(parts[0].m2.dataSync(), whole.m2, 1e-6, 'merged m2');
      expectClose(parts[0].precise!.m2, whole.m2, 1e-12, 'merged m2 (double)');
      expectClose(parts[0].precise!.mean, whole.mean, 1e-12, 'merged mean (double)');
    }
  });

  it('merges splits along a spatial axis too', () => {
    const shape = [2, 3, 8, 5];
    const x = randomArray(2 * 3 * 8 * 5, 77, 2, 10);
    const top: number[] = [], bottom: number[] = [];
    for (let n = 0; n < 2; n++)
      for (let c = 0; c < 3; c++)
        for (let h = 0; h < 8; h++)
          for (let w = 0; w < 5; w++) (h < 3 ? top : bottom).push(x[((n * 3 + c) * 8 + h) * 5 + w]);
    const merged = mergeMoments(momentsSync(tensor(top, [2, 3, 3, 5])), momentsSync(tensor(bottom, [2, 3, 5, 5])));
    const r = refMoments(x, shape, 'nchw', 'channel');
    expectClose(merged.mean.dataSync(), r.mean, 1e-6, 'mean');
    expectClose(merged.m2.dataSync(), r.m2, 1e-5, 'm2');
  });

  it('gives the same bits wherever the data starts in memory (wide channels-last rows are read from whole lines)', () => {
    // C = 272: rows of 17 vectors, swept in runs block by block; the sweep starts before column 0 when the
    // data does not start on a vector boundary. Every start offset within a vector's bytes, both widths.
    const shape = [2, 37, 3, 272];
    const size = shape.reduce((a, b) => a * b, 1);
    const xf = randomArray(size, 41, 2, 3);
    const n = native();
    for (const dtype of ['float32', 'float16'] as const) {
      const t = tensor(xf, shape, { dtype });
      const values = t.dataSync() as Float32Array | Uint16Array;
      let first: number[] | undefined;
      for (let skip = 0; skip < 16; skip++) {
        const x = values instanceof Float32Array ? new Float32Array(size + 16).subarray(skip) : new Uint16Array(size + 16).subarray(skip);
        x.set(values);
        const mean = new Float64Array(272), m2 = new Float64Array(272);
        n.moments({ x: x.subarray(0, size), dtype, shape, layout: 'nhwc', over: 'channel', groups: 1, mean, m2 });
        const bits = [...mean, ...m2];
        first ??= bits;
        expect(bits, `${dtype} starting ${skip} elements in`).toEqual(first);
      }
      const r = refMoments(t.float32Sync(), shape, 'nhwc', 'channel');
      expectClose(first!.slice(0, 272), r.mean, 1e-6, `${dtype} mean`);
      expectClose(first!.slice(272), r.m2, 1e-6, `${dtype} m2`);
    }
  });

  it('gives bit-identical results sync and async, and for any thread count', async () => {
    const x = tensor(randomArray(8 * 64 * 33 * 17, 9, 1, 3), [8, 64, 33, 17]);
    const y = tensor(randomArray(8 * 33 * 17 * 64, 10, 1, 3), [8, 33, 17, 64]);
    const before = info().cpu.threads;
    try {
      const runs = [];
      for (const threads of [1, 2, 3]) {
        setNumThreads(threads);
        runs.push([momentsSync(x), await moments(x), momentsSync(y, { layout: 'nhwc' }), await moments(y, { layout: 'nhwc' })]);
      }
      const key = (m: Moments) => Array.from(m.mean.dataSync()).concat(Array.from(m.m2.dataSync()));
      for (const r of runs) {
        expect(key(r[0])).toEqual(key(runs[0][0]));
        expect(key(r[1])).toEqual(key(runs[0][0]));
        expect(key(r[2])).toEqual(key(runs[0][2]));
        expect(key(r[3])).toEqual(key(runs[0][2]));
      }
    } finally {
      setNumThreads(before);
    }
  });

  it('agrees with the C++ reference and the JS reference at every ISA level', () => {
    const cases = SHAPES.slice(0, 7).map(([shape, layout], k) => {
      const size = shape.reduce((a, b) => a * b, 1);
      const dtype = k % 3 === 2 ? 'float16' : 'float32';
      const xf = randomArray(size, 200 + k, 2, k === 1 ? 1e4 : 0.5);
      const t = tensor(xf, shape, { dtype });
      const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
      const bn = {
        mean: Array.from(randomArray(c, 300 + k)),
        scale: Array.from(randomArray(c, 301 + k)),
        beta: Array.from(randomArray(c, 302 + k)),
        relu: k % 2 === 0,
      };
      return { x: Array.from(t.dataSync()), values: t.float32Sync(), dtype, shape, layout, over: 'channel', groups: 1, slots: c, bn };
    });
    const levels = supportedIsaLevels(info().cpu.level);
    expect(levels.length).toBeGreaterThan(0);
    for (const level of levels) {
      const out = runChild<{ level: string; cases: { mean: number[]; m2: number[]; refMean: number[]; refM2: number[]; y: number[] }[] }>(
        'bnstats-isa.cjs', level, { cases: cases.map(({ values, ...c }) => c) });
      expect(out.level).toBe(level);
      out.cases.forEach((r, k) => {
        const c = cases[k];
        const ref = refMoments(c.values, c.shape, c.layout as Layout, 'channel');
        expectClose(r.mean, ref.mean, 1e-6, `${level} case ${k} mean`);
        expectClose(r.refMean, ref.mean, 1e-6, `${level} case ${k} C++ reference mean`);
        for (let i = 0; i < r.m2.length; i++) {
          expect(Math.abs(r.m2[i] - ref.m2[i])).toBeLessThanOrEqual(1e-5 * ref.m2[i]);
          expect(Math.abs(r.refM2[i] - ref.m2[i])).toBeLessThanOrEqual(1e-5 * ref.m2[i]);
        }
        const y = tensor(Uint16Array.from(r.y), c.shape, { dtype: 'float16' });
        const yv = c.dtype === 'float16' ? y.float32Sync() : Float32Array.from(r.y);
        const g = geometry(c.shape, c.layout as Layout);
        const expected = new Float64Array(c.values.length);
        for (let n = 0; n < g.n; n++)
          for (let ch = 0; ch < g.c; ch++)
            for (let s = 0; s < g.s; s++) {
              const i = index(c.layout as Layout, g, n, ch, s);
              const v = (c.values[i] - Math.fround(c.bn.mean[ch])) * Math.fround(c.bn.scale[ch]) + Math.fround(c.bn.beta[ch]);
              expected[i] = c.bn.relu ? Math.max(0, v) : v;
            }
        const tol = c.dtype === 'float16' ? 2e-3 : 1e-5;
        expectClose(yv, expected, tol, `${level} case ${k} batchNorm`);
      });
    }
  });

  it('Promise forms of small memory-bound ops settle without a trip through the thread pool; larger ones go to it', async () => {
    // Run inline up to 256 KiB read and written.
    const small = tensor(randomArray(4 * 16 * 8 * 8, 3), [4, 16, 8, 8]);
    const large = tensor(randomArray(8 * 16 * 64 * 64, 4), [8, 16, 64, 64]);
    expect(await settlesAtOnce(moments(small))).toBe(true);
    expect(await settlesAtOnce(batchNorm(small, momentsSync(small)))).toBe(true);
    expect(await settlesAtOnce(packBits(small))).toBe(true);
    expect(await settlesAtOnce(moments(large))).toBe(false);
    expect(await settlesAtOnce(batchNorm(large, momentsSync(large)))).toBe(false);
    // The same results either way.
    expect((await moments(small)).mean.dataSync()).toEqual(momentsSync(small).mean.dataSync());
    expect((await batchNorm(small, momentsSync(small))).dataSync()).toEqual(batchNormSync(small, momentsSync(small)).dataSync());
  });

  it('keeps the event loop turning while an async moments runs (and the Sync form does not)', async () => {
    const x = new Float32Array(32 * 1024 * 1024);
    for (let i = 0; i < x.length; i++) x[i] = i % 7;
    const t = tensor(x, [8, 64, 256, 256]);
    const before = info().cpu.threads;
    setNumThreads(1); // slow enough that a blocked loop would miss many 1 ms timers
    try {
      const ticksDuring = async (run: () => unknown) => {
        let ticks = 0;
        let done = false;
        const timer = setInterval(() => {
          if (!done) ticks++;
        }, 1);
        await new Promise((r) => setTimeout(r, 2)); // let the timer start
        ticks = 0;
        const start = performance.now();
        await run();
        done = true;
        const ms = performance.now() - start;
        clearInterval(timer);
        return { ticks, ms };
      };
      const a = await ticksDuring(() => moments(t));
      const s = await ticksDuring(() => momentsSync(t));
      expect(a.ms).toBeGreaterThan(5);
      expect(a.ticks).toBeGreaterThan(0);
      expect(s.ticks).toBe(0);
    } finally {
      setNumThreads(before);
    }
  });
});

function toNhwc(x: Float32Array, shape: number[]): Float32Array {
  const [n, c, h, w] = shape;
  const out = new Float32Array(x.length);
  for (let a = 0; a < n; a++)
    for (let b = 0; b < c; b++)
      for (let s = 0; s < h * w; s++) out[(a * h * w + s) * c + b] = x[(a * c + b) * h * w + s];
  return out;
}

describe('batchNorm', () => {
  it('matches the reference in both layouts, with gamma/beta, eps and ReLU', async () => {
    let seed = 500;
    for (const [shape, layout] of SHAPES) {
      const size = shape.reduce((a, b) => a * b, 1);
      const x = randomArray(size, seed++, 2, 1);
      const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
      const mean = randomArray(c, seed++);
      const v = Float32Array.from(randomArray(c, seed++), (q) => q * q + 0.1);
      const gamma = randomArray(c, seed++);
      const beta = randomArray(c, seed++);
      for (const relu of [false, true]) {
        const y = await batchNorm(tensor(x, shape), { mean: tensor(mean, [c]), var: tensor(v, [c]) }, {
          gamma: tensor(gamma, [c]), beta: tensor(beta, [c]), eps: 1e-3, layout, activation: relu ? 'relu' : null,
        });
        const ref = refBatchNorm(x, shape, layout, mean, v, gamma, beta, 1e-3, relu);
        expectClose(y.dataSync(), ref, 1e-5, `batchNorm ${shape} ${layout} relu=${relu}`);
      }
    }
  });

  it('normalises data with a large offset without losing its spread', () => {
    const x = randomArray(2 * 3 * 100, 61, 1, 1e6);
    const t = tensor(x, [2, 3, 100]);
    const m = momentsSync(t);
    const y = batchNormSync(t, { mean: m.mean, var: variance(m) }, { eps: 0 });
    const back = momentsSync(y);
    // The float32 mean can be off by half an ulp of 1e6 (0.031), which shifts the result by that much;
    // the spread itself must survive intact.
    expectClose(back.mean.dataSync(), [0, 0, 0], 0.032, 'normalised mean');
    expectClose(variance(back).dataSync(), [1, 1, 1], 1e-4, 'normalised variance');
  });

  it('applies per-instance statistics ([N, C]) like instance norm', () => {
    for (const layout of ['nchw', 'nhwc'] as Layout[]) {
      const shape = layout === 'nchw' ? [3, 4, 5, 6] : [3, 5, 6, 4];
      const t = tensor(randomArray(360, 71, 3, 2), shape);
      const m = momentsSync(t, { layout, over: 'instance' });
      const y = batchNormSync(t, { mean: m.mean, var: variance(m) }, { layout, eps: 0 });
      const back = momentsSync(y, { layout, over: 'instance' });
      expect(maxAbsDiff(back.mean.dataSync(), new Float32Array(12))).toBeLessThan(1e-5);
      expect(maxAbsDiff(variance(back).dataSync(), new Float32Array(12).fill(1))).toBeLessThan(1e-4);
    }
  });

  it('keeps the dtype of half-precision inputs', () => {
    const t = tensor(randomArray(2 * 3 * 4, 81), [2, 3, 4], { dtype: 'bfloat16' });
    const y = batchNormSync(t, { mean: tensor([0, 0, 0], [3]), var: tensor([1, 1, 1], [3]) }, { eps: 0 });
    expect(y.dtype).toBe('bfloat16');
    expect(Array.from(y.dataSync())).toEqual(Array.from(t.dataSync()));
  });
});

describe('test-time mixing', () => {
  const src = { mean: tensor([1, -2, 0.5], [3]), var: tensor([2, 0.5, 1], [3]) };
  const tgtX = randomArray(4 * 3 * 10, 91, 1.5, 0.7);
  const tgt = momentsSync(tensor(tgtX, [4, 3, 10]));

  it('mixStats is the weighted average, and the cross term gives the variance of the mixture', () => {
    const w = 0.3;
    const tv = variance(tgt).dataSync();
    const tm = tgt.mean.dataSync();
    const plain = mixStats(src, tgt, { sourceWeight: w });
    const ttn = mixStats(src, tgt, { sourceWeight: w, crossTerm: true });
    for (let c = 0; c < 3; c++) {
      const sm = src.mean.dataSync()[c], sv = src.var.dataSync()[c];
      expect(plain.mean.dataSync()[c]).toBeCloseTo(w * sm + (1 - w) * tm[c], 6);
      expect(plain.var.dataSync()[c]).toBeCloseTo(w * sv + (1 - w) * tv[c], 6);
      expect(ttn.var.dataSync()[c]).toBeCloseTo(w * sv + (1 - w) * tv[c] + w * (1 - w) * (sm - tm[c]) ** 2, 5);
    }
    // With w = n_a / (n_a + n_b) and two real batches, the cross term reproduces the merged variance.
    const a = momentsSync(tensor(randomArray(2 * 3 * 10, 92, 1, 3), [2, 3, 10]));
    const both = mergeMoments(a, tgt);
    const mixed = mixStats({ mean: a.mean, var: variance(a) }, tgt, { sourceWeight: a.count / both.count, crossTerm: true });
    expectClose(mixed.var.dataSync(), variance(both).dataSync(), 1e-5, 'mixture variance');
    expectClose(mixed.mean.dataSync(), both.mean.dataSync(), 1e-6, 'mixture mean');
  });

  it('priorStats weights the source by N / (N + n)', () => {
    const prior = priorStats(src, tgt, { priorCount: 16 });
    const w = 16 / (16 + tgt.count);
    const direct = mixStats(src, tgt, { sourceWeight: w });
    expect(Array.from(prior.mean.dataSync())).toEqual(Array.from(direct.mean.dataSync()));
    expect(Array.from(prior.var.dataSync())).toEqual(Array.from(direct.var.dataSync()));
    expect(w).toBeCloseTo(16 / 56, 12);
  });

  it('sourceWeight 1 and 0 select one side exactly', () => {
    expect(Array.from(mixStats(src, tgt, { sourceWeight: 1 }).mean.dataSync())).toEqual(Array.from(src.mean.dataSync()));
    expect(Array.from(mixStats(src, tgt, { sourceWeight: 0 }).var.dataSync())).toEqual(Array.from(variance(tgt).dataSync()));
  });
});
