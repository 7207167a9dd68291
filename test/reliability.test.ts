// What a careless or hostile caller can do, and the coded XnormError (or correct result) each gets:
// memory detached under an op, fake and proxied objects, shared memory, sizes that overflow, clamp
// bounds, and one rule for BN statistics with NaN or var + eps <= 0.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import {
  BinaryWeights,
  MstPlan,
  Tensor,
  batchNormSync,
  binaryConv2dSync,
  conv2dSync,
  convBnSync,
  momentsSync,
  mstPlanSync,
  packBitsSync,
  packWeightsSync,
  tensor,
  zeros,
} from '../lib';
import { weightsHandle } from '../lib/handles';
import { native } from '../lib/native';
import { codeOf, randomArray } from './helpers';

describe('memory detached under an op', () => {
  it('transfers of memory an async op reads copy instead; detached inputs and getter tricks are coded errors', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'children', 'detach.cjs')], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(report.transferWhilePending).toEqual({ stillAttached: true, momentsSame: true, convSame: true });
    expect(report.detachedBefore).toEqual({ disposed: true, sync: 'ERR_XNORM_DISPOSED', async: 'ERR_XNORM_DISPOSED', dataSync: 'ERR_XNORM_DISPOSED', copy: 'ERR_XNORM_DISPOSED' });
    expect(report.getterDetach).toBe('ERR_XNORM_DISPOSED');
    expect(report.shared).toEqual({ from: 'ERR_XNORM_ARGUMENT', copy: 'no error', raw: 'ERR_XNORM_ARGUMENT' });
  });
});

describe('objects that only look like ours', () => {
  const x = tensor(randomArray(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
  const bits = packBitsSync(tensor(randomArray(1 * 3 * 3 * 32, 2), [1, 3, 3, 32]), { layout: 'nhwc' });
  const w = packWeightsSync(tensor(randomArray(4 * 32, 3), [4, 32, 1, 1]));
  it('a Proxy of a Tensor, or an object made from its prototype', () => {
    expect(codeOf(() => momentsSync(new Proxy(x, {})))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => momentsSync(Object.create(Tensor.prototype)))).toBe('ERR_XNORM_ARGUMENT');
  });
  it('fake BinaryWeights and MstPlan', () => {
    expect(codeOf(() => binaryConv2dSync(bits, Object.create(BinaryWeights.prototype)))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => binaryConv2dSync(bits, Object.create(MstPlan.prototype)))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => mstPlanSync(new Proxy(w, {})))).toBe('ERR_XNORM_ARGUMENT');
  });
  it('hand-built weights and plans are refused; every plan passes the one check deserialize applies', () => {
    expect(codeOf(() => new BinaryWeights(new Uint32Array(8) as never, [4, 40, 1, 1], 1))).toBe('ERR_XNORM_ARGUMENT');
    expect(codeOf(() => new MstPlan(w, new Int32Array(4).fill(-1) as never))).toBe('ERR_XNORM_ARGUMENT');
    const n = native();
    const chain = Int32Array.from([-1, 0, 1, 2]); // depth 3
    expect(codeOf(() => n.mstPlan({ weights: weightsHandle(w), reuse: 'never', maxDepth: 8, parent: chain }))).toBe('ERR_XNORM_CORRUPT_PLAN');
    expect(codeOf(() => n.mstPlan({ weights: weightsHandle(w), reuse: 'always', maxDepth: 2, parent: chain }))).toBe('ERR_XNORM_CORRUPT_PLAN');
    const ok = new MstPlan(w, n.mstPlan({ weights: weightsHandle(w), reuse: 'always', maxDepth: 3, parent: chain }));
    expect(Array.from(MstPlan.deserialize(ok.serialize(), w).parent)).toEqual(Array.from(chain));
  });
  it('tensor() and zeros() with odd data or null options', () => {
    expect(codeOf(() => tensor(new BigInt64Array(4) as never, [4]))).toBe('ERR_XNORM_DTYPE');
    expect(zeros([2], null).shape).toEqual([2]);
    expect(tensor([1, 2], [2], null).shape).toEqual([2]);
    expect(codeOf(() => zeros([2], { dtype: 'float32', devcie: 'cpu' } as never))).toBe('ERR_XNORM_ARGUMENT');
  });
});

describe('sizes', () => {
  it('outputs too large to allocate or to count are coded errors', () => {
    const x = tensor(randomArray(1 * 2 * 3 * 3, 4), [1, 2, 3, 3]);
    const weight = tensor(randomArray(2 * 2 * 3 * 3, 5), [2, 2, 3, 3]);
    const bn = { mean: zeros([2]), var: tensor([1, 1], [2]) };
    expect(['ERR_XNORM_OUT_OF_MEMORY', 'ERR_XNORM_SHAPE']).toContain(codeOf(() => convBnSync(x, { weight, bn }, { padding: 2 ** 17 })));
    expect(['ERR_XNORM_OUT_OF_MEMORY', 'ERR_XNORM_SHAPE']).toContain(codeOf(() => conv2dSync(x, weight, undefined, { padding: 2 ** 17 })));
    const bits = packBitsSync(tensor(randomArray(1 * 3 * 3 * 32, 6), [1, 3, 3, 32]), { layout: 'nhwc' });
    const w = packWeightsSync(tensor(randomArray(4 * 32, 7), [4, 32, 1, 1]));
    expect(codeOf(() => binaryConv2dSync(bits, w, { padding: 2 ** 30 }))).toBe('ERR_XNORM_SHAPE');
  });
});

describe('limits and bounds', () => {
  it('an infinite clamp bound works as no bound on that side', () => {
    const bits = packBitsSync(tensor(randomArray(1 * 4 * 4 * 40, 8), [1, 4, 4, 40]), { layout: 'nhwc' });
    const w = packWeightsSync(tensor(randomArray(8 * 40 * 9, 9), [8, 40, 3, 3]));
    const plain = binaryConv2dSync(bits, w, { padding: 1 }).dataSync();
    expect(binaryConv2dSync(bits, w, { padding: 1, clamp: [-Infinity, Infinity] }).dataSync()).toEqual(plain);
    const low = Array.from(binaryConv2dSync(bits, w, { padding: 1, clamp: [0, Infinity] }).dataSync());
    expect(low).toEqual(Array.from(plain, (v) => Math.max(0, v)));
  });
});

describe('one rule for BN statistics', () => {
  const x = tensor(randomArray(2 * 3 * 4 * 4, 10), [2, 3, 4, 4]);
  it('var + eps <= 0 is refused by batchNorm and convBn alike', () => {
    const zero = { mean: zeros([3]), var: zeros([3]) };
    expect(codeOf(() => batchNormSync(x, zero, { eps: 0 }))).toBe('ERR_XNORM_ARGUMENT');
    const weight = tensor(randomArray(3 * 3 * 9, 11), [3, 3, 3, 3]);
    expect(codeOf(() => convBnSync(x, { weight, bn: { ...zero, eps: 0 } }))).toBe('ERR_XNORM_ARGUMENT');
  });
  it('a NaN statistic makes only its channel NaN, in both ops', () => {
    const data = randomArray(2 * 3 * 4 * 4, 12);
    data[1 * 16 + 5] = NaN; // channel 1 of the first image
    const xn = tensor(data, [2, 3, 4, 4]);
    const y = batchNormSync(xn, momentsSync(xn)).dataSync() as Float32Array;
    const channelOf = (i: number) => Math.floor(i / 16) % 3;
    y.forEach((v, i) => expect(Number.isNaN(v), `batchNorm element ${i}`).toBe(channelOf(i) === 1));
    const weight = tensor(randomArray(3 * 3 * 9, 13), [3, 3, 3, 3]);
    const bn = { mean: zeros([3]), var: tensor([1, NaN, 1], [3]) };
    const yc = convBnSync(x, { weight, bn }, { padding: 1 }).y.dataSync() as Float32Array;
    yc.forEach((v, i) => expect(Number.isNaN(v), `convBn element ${i}`).toBe(channelOf(i) === 1));
  });
});
