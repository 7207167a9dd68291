// Fuzz of the public JS boundary: every export, called with arguments drawn from valid tensors, weights
// and plans mixed with junk (null, NaN, strings, detached and shared arrays, proxies, BigInt arrays,
// disposed tensors, objects that only look like ours, null options). Every call must either return or
// throw (reject, for the Promise forms) an XnormError with one of the documented codes: never another
// error, never a crash.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as X from '../lib';
import { randomArray } from './helpers';

// A fixed seed keeps CI repeatable; FUZZ_SEED explores others.
const SEED = Number(process.env.FUZZ_SEED ?? 7);

const CODES = new Set([
  'ERR_XNORM_SHAPE', 'ERR_XNORM_DTYPE', 'ERR_XNORM_DEVICE', 'ERR_XNORM_ARGUMENT', 'ERR_XNORM_DISPOSED',
  'ERR_XNORM_CUDA_UNAVAILABLE', 'ERR_XNORM_OUT_OF_MEMORY', 'ERR_XNORM_CORRUPT_PLAN',
]);

function detachedArray(): Float32Array {
  const a = new Float32Array(24);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

// A pool of values, valid and not, that the calls draw their arguments from.
function pool(): unknown[] {
  const x4 = X.tensor(randomArray(2 * 4 * 5 * 5, 1), [2, 4, 5, 5]);
  const x2 = X.tensor(randomArray(3 * 8, 2), [3, 8]);
  const w4 = X.tensor(randomArray(4 * 4 * 3 * 3, 3), [4, 4, 3, 3]);
  const half = X.tensor(randomArray(2 * 4 * 5 * 5, 4), [2, 4, 5, 5], { dtype: 'float16' });
  const bits = X.packBitsSync(X.tensor(randomArray(1 * 5 * 5 * 40, 5), [1, 5, 5, 40]), { layout: 'nhwc' });
  const bw = X.packWeightsSync(X.tensor(randomArray(8 * 40 * 9, 6), [8, 40, 3, 3]));
  const plan = X.mstPlanSync(bw, { reuse: 'always' });
  const m = X.momentsSync(x4);
  const disposed = X.tensor([1, 2], [2]);
  disposed.dispose();
  const stats = { mean: X.zeros([4]), var: X.tensor([1, 1, 1, 1], [4]) };
  const saved = X.convBnSync(x4, { weight: w4, bn: stats }, { padding: 1, saveForBackward: true }).saved;
  const shared = new Float32Array(4);
  const detachedTensor = X.from({ data: shared, shape: [2, 2] });
  structuredClone(shared.buffer, { transfer: [shared.buffer] });
  return [
    undefined, null, 0, -1, 1, 2 ** 31, NaN, Infinity, 'nchw', 'nhwc', 'relu', '', true, [], [1, 2], [0, 0],
    {}, { padding: 1 }, { layout: 'nhwc' }, { over: 'group', groups: 2 }, { output: 'bits' }, { reuse: 'never' },
    { pad: 1 }, { mode: 'eval' }, { mode: 'deploy' }, { saveForBackward: true }, { clamp: [-Infinity, 1] }, () => 1,
    new Float32Array(4), new Float64Array(4), new BigInt64Array(4), new Uint32Array(3), detachedArray(),
    new Float32Array(new SharedArrayBuffer(16)), new Uint8Array(52), x4, x2, w4, half, bits, bw, plan, m,
    disposed, stats, saved, { weight: w4, bn: stats }, { weight: w4, bn: { mean: X.zeros([4]), var: X.zeros([4]) } },
    new Proxy(x4, {}), Object.create(X.Tensor.prototype), Object.create(X.BinaryWeights.prototype),
    Object.create(X.MstPlan.prototype), { data: new Float32Array(4), shape: [2, 2] }, { dims: [2], data: [1, 2] },
    X.tensor(randomArray(2 * 5 * 5 * 8, 7), [2, 5, 5, 8]), X.tensor(randomArray(4, 8), [4]), detachedTensor,
  ];
}

const OPS: Record<string, (...args: unknown[]) => unknown> = {
  momentsSync: X.momentsSync, moments: X.moments, variance: X.variance, mergeMoments: X.mergeMoments,
  updateRunningStats: X.updateRunningStats, mixStats: X.mixStats, priorStats: X.priorStats,
  batchNormSync: X.batchNormSync, batchNorm: X.batchNorm, convBnSync: X.convBnSync, convBn: X.convBn,
  convBnBackwardSync: X.convBnBackwardSync, convBnBackward: X.convBnBackward, foldConvBn: X.foldConvBn,
  conv2dSync: X.conv2dSync, conv2d: X.conv2d, packBitsSync: X.packBitsSync, packBits: X.packBits,
  unpackBitsSync: X.unpackBitsSync, unpackBits: X.unpackBits, packWeights: X.packWeights,
  packWeightsSync: X.packWeightsSync, mstPlan: X.mstPlan, mstPlanSync: X.mstPlanSync,
  binaryConv2dSync: X.binaryConv2dSync, binaryConv2d: X.binaryConv2d, binaryLinearSync: X.binaryLinearSync,
  binaryLinear: X.binaryLinear, binaryConv2dReferenceSync: X.binaryConv2dReferenceSync, from: X.from,
  tensor: X.tensor, zeros: X.zeros, deserialize: (b: unknown, w: unknown) => X.MstPlan.deserialize(b as never, w as never),
} as never;

async function outcome(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    if (!(e instanceof X.XnormError) || !CODES.has(e.code)) return `not coded: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    return e.code;
  }
}

describe('the public boundary', () => {
  const values = pool();
  for (const [name, fn] of Object.entries(OPS))
    it(`${name}: every call returns or throws a coded XnormError`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.nat(values.length - 1), { minLength: 0, maxLength: 4 }), async (picks) => {
          const args = picks.map((i) => values[i]);
          const o = await outcome(() => fn(...args));
          expect(o, `${name}(${picks.join(', ')})`).not.toMatch(/^not coded/);
        }),
        { numRuns: 150, seed: SEED },
      );
    });
});
