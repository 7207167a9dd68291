// Bad input must give an XnormError with a stable code: never a crash, hang or silent garbage.
// Checked at both layers: the TypeScript API, and the native boundary called directly.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  XnormError,
  batchNormSync,
  mergeMoments,
  mixStats,
  moments,
  momentsSync,
  priorStats,
  setNumThreads,
  tensor,
  updateRunningStats,
  zeros,
} from '../lib';
import type { XnormErrorCode } from '../lib';
import { native } from '../lib/native';
import { expectCode } from './helpers';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(XnormError);
    expect((e as Error).message.length).toBeGreaterThan(10);
    return (e as XnormError).code;
  }
  return 'no error';
}

const x = tensor(new Float32Array(2 * 4 * 3), [2, 4, 3]);
const m = momentsSync(tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 4, 3]));
const stats = { mean: tensor([0, 0, 0, 0], [4]), var: tensor([1, 1, 1, 1], [4]) };

describe('XnormError codes from the TypeScript API', () => {
  const cases: [string, () => unknown, XnormErrorCode][] = [
    ['rank 1 input', () => momentsSync(tensor([1, 2], [2])), 'ERR_XNORM_SHAPE'],
    ['int32 input', () => momentsSync(zeros([2, 2], { dtype: 'int32' })), 'ERR_XNORM_DTYPE'],
    ['not a tensor', () => momentsSync({ data: [1], shape: [1] } as never), 'ERR_XNORM_ARGUMENT'],
    ['bad layout', () => momentsSync(x, { layout: 'nwhc' as never }), 'ERR_XNORM_ARGUMENT'],
    ['groups not dividing C', () => momentsSync(x, { over: 'group', groups: 3 }), 'ERR_XNORM_ARGUMENT'],
    ['groups zero', () => momentsSync(x, { over: 'group', groups: 0 }), 'ERR_XNORM_ARGUMENT'],
    ['empty batch', () => momentsSync(zeros([0, 4, 3])), 'ERR_XNORM_SHAPE'],
    ['length not matching shape', () => tensor([1, 2, 3], [2, 2]), 'ERR_XNORM_SHAPE'],
    ['negative dim', () => zeros([2, -1]), 'ERR_XNORM_SHAPE'],
    ['fractional dim', () => zeros([2, 1.5]), 'ERR_XNORM_SHAPE'],
    ['overflowing shape', () => zeros([2 ** 30, 2 ** 30, 2 ** 30]), 'ERR_XNORM_SHAPE'],
    ['a size the engine cannot allocate', () => zeros([2 ** 52]), 'ERR_XNORM_OUT_OF_MEMORY'],
    ['unknown dtype', () => zeros([2], { dtype: 'float64' as never }), 'ERR_XNORM_DTYPE'],
    ['cuda without a backend', () => zeros([2], { device: 'cuda' }), 'ERR_XNORM_CUDA_UNAVAILABLE'],
    ['unknown device', () => zeros([2], { device: 'tpu' as never }), 'ERR_XNORM_DEVICE'],
    ['NaN momentum', () => updateRunningStats(stats, m, { momentum: NaN }), 'ERR_XNORM_ARGUMENT'],
    ['momentum > 1', () => updateRunningStats(stats, m, { momentum: 1.5 }), 'ERR_XNORM_ARGUMENT'],
    ['Infinity momentum', () => updateRunningStats(stats, m, { momentum: Infinity }), 'ERR_XNORM_ARGUMENT'],
    ['negative numBatchesTracked', () => updateRunningStats(stats, m, { numBatchesTracked: -1 }), 'ERR_XNORM_ARGUMENT'],
    ['running stats of another size', () => updateRunningStats({ mean: tensor([0], [1]), var: tensor([1], [1]) }, m), 'ERR_XNORM_SHAPE'],
    ['sourceWeight NaN', () => mixStats(stats, m, { sourceWeight: NaN }), 'ERR_XNORM_ARGUMENT'],
    ['sourceWeight -0.1', () => mixStats(stats, m, { sourceWeight: -0.1 }), 'ERR_XNORM_ARGUMENT'],
    ['sourceWeight missing', () => mixStats(stats, m, {} as never), 'ERR_XNORM_ARGUMENT'],
    ['priorCount negative', () => priorStats(stats, m, { priorCount: -3 }), 'ERR_XNORM_ARGUMENT'],
    ['merge of different sizes', () => mergeMoments(m, momentsSync(tensor(new Float32Array(6), [2, 3]))), 'ERR_XNORM_SHAPE'],
    ['moments with count 0', () => mergeMoments({ ...m, count: 0 }, m), 'ERR_XNORM_ARGUMENT'],
    ['stats of the wrong size', () => batchNormSync(x, { mean: tensor([0], [1]), var: tensor([1], [1]) }), 'ERR_XNORM_SHAPE'],
    ['negative variance', () => batchNormSync(x, { mean: stats.mean, var: tensor([1, -1, 1, 1], [4]) }), 'ERR_XNORM_ARGUMENT'],
    ['negative eps', () => batchNormSync(x, stats, { eps: -1 }), 'ERR_XNORM_ARGUMENT'],
    ['gamma of the wrong size', () => batchNormSync(x, stats, { gamma: tensor([1, 2], [2]) }), 'ERR_XNORM_SHAPE'],
    ['bad activation', () => batchNormSync(x, stats, { activation: 'gelu' as never }), 'ERR_XNORM_ARGUMENT'],
    ['setNumThreads(0)', () => setNumThreads(0), 'ERR_XNORM_ARGUMENT'],
    ['setNumThreads(NaN)', () => setNumThreads(NaN), 'ERR_XNORM_ARGUMENT'],
  ];
  for (const [name, fn, want] of cases) it(name, () => expect(code(fn)).toBe(want));

  it('a disposed tensor is refused, and dispose is idempotent', async () => {
    const t = tensor([1, 2, 3, 4], [2, 2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(code(() => momentsSync(t))).toBe('ERR_XNORM_DISPOSED');
    expect(code(() => t.dataSync())).toBe('ERR_XNORM_DISPOSED');
    await expect(moments(t)).rejects.toMatchObject({ code: 'ERR_XNORM_DISPOSED' });
  });

  it('the async form rejects (never throws synchronously)', async () => {
    let p: Promise<unknown> | undefined;
    expect(() => (p = moments(tensor([1], [1])))).not.toThrow();
    await expect(p).rejects.toBeInstanceOf(XnormError);
  });

  it('disposing an input while an async op runs does not disturb it', async () => {
    const t = tensor(Float32Array.from({ length: 1 << 20 }, (_, i) => i % 5), [4, 4, 256, 256]);
    const pending = moments(t);
    t.dispose();
    const r = await pending;
    expect(r.mean.dataSync()[0]).toBeCloseTo(2, 1);
  });
});

describe('XnormError codes from the native boundary (lib/ bypassed)', () => {
  const addon = native() as unknown as Record<string, (args: object) => unknown>; // untyped: bad arguments on purpose
  const good = () => ({ x: new Float32Array(24), dtype: 'float32', shape: [2, 4, 3], layout: 'nchw', over: 'channel', groups: 1, mean: new Float64Array(4), m2: new Float64Array(4) });
  const cases: [string, object, XnormErrorCode][] = [
    ['x too short', { x: new Float32Array(23) }, 'ERR_XNORM_SHAPE'],
    ['x of the wrong type', { x: new Float64Array(24) }, 'ERR_XNORM_DTYPE'],
    ['x not an array', { x: 'hello' }, 'ERR_XNORM_ARGUMENT'],
    ['mean too short', { mean: new Float64Array(3) }, 'ERR_XNORM_SHAPE'],
    ['shape overflow', { shape: [2 ** 40, 2 ** 40, 3] }, 'ERR_XNORM_SHAPE'],
    ['shape with NaN', { shape: [2, NaN, 3] }, 'ERR_XNORM_SHAPE'],
    ['shape rank 1', { shape: [24] }, 'ERR_XNORM_SHAPE'],
    ['layout unknown', { layout: 'nhcw' }, 'ERR_XNORM_ARGUMENT'],
    ['groups not dividing', { over: 'group', groups: 3 }, 'ERR_XNORM_ARGUMENT'],
    ['dtype int32', { dtype: 'int32', x: new Int32Array(24) }, 'ERR_XNORM_DTYPE'],
  ];
  for (const [name, patch, want] of cases)
    it(name, () => expect(code(() => addon.moments({ ...good(), ...patch }))).toBe(want));

  it('a non-object argument', () => expect(code(() => addon.moments(42 as never))).toBe('ERR_XNORM_ARGUMENT'));
  it('the messages name the argument, the expectation and the received value', () => {
    try {
      addon.moments({ ...good(), x: new Float32Array(23) });
    } catch (e) {
      expect((e as Error).message).toMatch(/moments: x: expected 24 elements, received 23/);
    }
  });
});

describe('property: random shapes and arguments never crash the process', () => {
  // Sizes stay small or overflow outright: a valid multi-gigabyte shape would really be allocated.
  const dim = fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constantFrom(-1, 1.5, NaN, 2 ** 53));
  it('moments / batchNorm on random shapes and options', () => {
    fc.assert(
      fc.property(
        fc.array(dim, { minLength: 0, maxLength: 5 }),
        fc.constantFrom('nchw', 'nhwc', 'bad', undefined),
        fc.constantFrom('channel', 'instance', 'group', 'bogus', undefined),
        fc.oneof(fc.integer({ min: -2, max: 6 }), fc.constant(undefined)),
        fc.constantFrom('float32', 'float16', 'bfloat16', 'int32'),
        (shape, layout, over, groups, dtype) => {
          let t;
          try {
            t = zeros(shape, { dtype: dtype as never });
          } catch (e) {
            expect(e).toBeInstanceOf(XnormError);
            return;
          }
          try {
            const r = momentsSync(t, { layout: layout as never, over: over as never, groups });
            expect(r.count).toBeGreaterThan(0);
            const st = { mean: r.mean, var: r.m2 };
            if (over === 'channel' || over === undefined) batchNormSync(t, st, { layout: layout as never });
          } catch (e) {
            expect(e).toBeInstanceOf(XnormError);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('the native boundary with random typed arrays, lengths and shapes', () => {
    const addon = native() as unknown as Record<string, (args: object) => unknown>; // untyped: bad arguments on purpose
    const arrays = [Float32Array, Float64Array, Uint16Array, Int32Array, Uint8Array, Uint32Array];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: arrays.length - 1 }),
        fc.integer({ min: 0, max: 64 }),
        fc.array(dim, { maxLength: 5 }),
        fc.integer({ min: 0, max: 70 }),
        fc.constantFrom('float32', 'float16', 'bfloat16', 'bit', 'nope'),
        fc.boolean(),
        (k, len, shape, outLen, dtype, relu) => {
          const args = { x: new arrays[k](len), y: new arrays[k](len), dtype, shape, layout: 'nhwc', over: 'instance', groups: 1,
            mean: new Float64Array(outLen), m2: new Float64Array(outLen), meanLo: new Float32Array(outLen), scale: new Float32Array(outLen), beta: new Float32Array(outLen), relu };
          for (const fn of [addon.moments, addon.batchNorm]) {
            try {
              fn({ ...args, mean: fn === addon.batchNorm ? new Float32Array(outLen) : args.mean });
            } catch (e) {
              expect(e).toBeInstanceOf(XnormError);
            }
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe('shape errors that another layout would explain name it', () => {
  it('channels-last data without layout, and a TensorFlow HWIO kernel', async () => {
    const { conv2dSync, tensor: t } = await import('../lib');
    const nhwc = t(new Float32Array(1 * 8 * 8 * 3), [1, 8, 8, 3]);
    const w = t(new Float32Array(16 * 3 * 9), [16, 3, 3, 3]);
    expect(expectCode(() => conv2dSync(nhwc, w), 'ERR_XNORM_SHAPE').message).toMatch(/looks channels-last: pass \{ layout: 'nhwc' \}/);
    const nchw = t(new Float32Array(1 * 3 * 8 * 8), [1, 3, 8, 8]);
    expect(expectCode(() => conv2dSync(nchw, w, undefined, { layout: 'nhwc' }), 'ERR_XNORM_SHAPE').message).toMatch(/looks channels-first/);
    const x4 = t(new Float32Array(1 * 4 * 8 * 8), [1, 4, 8, 8]);
    const hwio = t(new Float32Array(3 * 3 * 4 * 16), [3, 3, 4, 16]);
    expect(expectCode(() => conv2dSync(x4, hwio), 'ERR_XNORM_SHAPE').message).toMatch(/looks HWIO/);
    // a plain mismatch gets no hint
    expect(expectCode(() => conv2dSync(nchw, t(new Float32Array(16 * 5 * 9), [16, 5, 3, 3])), 'ERR_XNORM_SHAPE').message).not.toMatch(/looks/);
  });
});
