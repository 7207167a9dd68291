// opts.out: every op that makes a tensor writes into a caller's tensor when given one (checked: live,
// the exact shape and dtype, the op's device, no memory shared with an input) and returns it.
import { describe, expect, it } from 'vitest';
import {
  Tensor,
  batchNorm,
  batchNormSync,
  binaryConv2dSync,
  binaryLinearSync,
  conv2d,
  conv2dSync,
  convBnBackwardSync,
  convBnSync,
  from,
  momentsSync,
  packBitsSync,
  packWeightsSync,
  prepareConvSync,
  tensor,
  unpackBitsSync,
  zeros,
} from '../lib';
import { expectCode, expectSameValues, randomArray } from './helpers';

const x = tensor(randomArray(2 * 8 * 6 * 6, 1), [2, 8, 6, 6]);
const w = tensor(randomArray(8 * 8 * 9, 2, 0.3), [8, 8, 3, 3]);
const ch = (seed: number, off = 0) => tensor(randomArray(8, seed, 0.5, off), [8]);
const p = { weight: w, bias: ch(3), bn: { mean: ch(4), var: ch(5, 1.5), gamma: ch(6, 1), beta: ch(7) } };

/** Runs `op` without and with `out` (pre-filled with garbage): the same values, into `out` itself. */
function expectWritesInto(what: string, out: Tensor, op: (o: { out?: Tensor }) => Tensor) {
  const want = op({}).dataSync();
  const s = out.dataSync();
  const got = op({ out });
  expect(got, what).toBe(out);
  expectSameValues(got.dataSync() as ArrayLike<number>, want as ArrayLike<number>, what);
  expect(s.length).toBe(want.length);
}

describe('opts.out', () => {
  it('conv2d, convBn (every mode), batchNorm, packBits, unpackBits, binaryConv2d and binaryLinear write into it', async () => {
    const o = { padding: 1, activation: 'relu' as const };
    expectWritesInto('conv2d', zeros([2, 8, 6, 6]), (e) => conv2dSync(x, w, undefined, { ...o, ...e }));
    expectWritesInto('conv2d prepared nhwc', zeros([2, 6, 6, 8]),
      (e) => conv2dSync(tensor(randomArray(2 * 8 * 36, 9), [2, 6, 6, 8]), prepareConvSync(w), ch(3), { ...o, layout: 'nhwc', ...e }));
    for (const mode of ['tune', 'eval', 'deploy'] as const)
      expectWritesInto(`convBn ${mode}`, zeros([2, 8, 6, 6]), (e) => convBnSync(x, p, { ...o, mode, ...e }).y);
    expectWritesInto('batchNorm', zeros([2, 8, 6, 6]), (e) => batchNormSync(x, momentsSync(x), { activation: 'relu', ...e }));
    const bits = packBitsSync(x);
    expectWritesInto('packBits', zeros(bits.shape, { dtype: 'bit' }), (e) => packBitsSync(x, e));
    expectWritesInto('unpackBits', zeros([2, 8, 6, 6]), (e) => unpackBitsSync(bits, e));
    const wb = packWeightsSync(w);
    expectWritesInto('binaryConv2d', zeros([2, 6, 6, 8]), (e) => binaryConv2dSync(bits, wb, { padding: 1, ...e }));
    expectWritesInto('binaryConv2d int32', zeros([2, 6, 6, 8], { dtype: 'int32' }), (e) => binaryConv2dSync(bits, wb, { padding: 1, output: 'int32', ...e }));
    const xl = packBitsSync(tensor(randomArray(3 * 72, 10), [3, 72]));
    expectWritesInto('binaryLinear', zeros([3, 8]), (e) => binaryLinearSync(xl, packWeightsSync(tensor(randomArray(8 * 72, 11), [8, 72])), e));
    // The Promise forms too.
    const y = zeros([2, 8, 6, 6]);
    expect(await conv2d(x, w, undefined, { ...o, out: y })).toBe(y);
    expect(await batchNorm(x, momentsSync(x), { out: y })).toBe(y);
  });

  it('is refused with a clear code when it cannot hold the result', () => {
    const o = { padding: 1 };
    expectCode(() => conv2dSync(x, w, undefined, { ...o, out: zeros([2, 8, 6, 5]) }), 'ERR_XNORM_SHAPE');
    expectCode(() => conv2dSync(x, w, undefined, { ...o, out: zeros([2, 8, 6, 6], { dtype: 'float16' }) }), 'ERR_XNORM_DTYPE');
    expectCode(() => conv2dSync(x, w, undefined, { ...o, out: [1, 2, 3] as never }), 'ERR_XNORM_ARGUMENT');
    const gone = zeros([2, 8, 6, 6]);
    gone.dispose();
    expectCode(() => conv2dSync(x, w, undefined, { ...o, out: gone }), 'ERR_XNORM_DISPOSED');
    // In place would read what it already overwrote: refused, also for a view of the same memory.
    expectCode(() => conv2dSync(x, w, undefined, { ...o, out: x }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => batchNormSync(x, momentsSync(x), { out: x }), 'ERR_XNORM_ARGUMENT');
    // Views of one buffer (from() shares the caller's memory): overlapping is refused, disjoint is fine.
    const store = randomArray(2 * 8 * 36 * 2, 12);
    const view = (at: number) => from({ data: store.subarray(at, at + 2 * 8 * 36), shape: [2, 8, 6, 6] });
    expectCode(() => conv2dSync(view(0), w, undefined, { ...o, out: view(8) }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => batchNormSync(view(8), momentsSync(view(8)), { out: view(0) }), 'ERR_XNORM_ARGUMENT');
    const y = conv2dSync(view(0), w, undefined, { ...o, out: view(2 * 8 * 36) });
    expectSameValues(y.dataSync() as Float32Array, conv2dSync(view(0), w, undefined, o).dataSync() as Float32Array, 'disjoint');
  });

  it('convBnBackward writes the gradients it is given tensors for, and refuses shared or unwanted ones', () => {
    const o = { padding: 1, activation: 'relu' as const, saveForBackward: true };
    const dy = tensor(randomArray(2 * 8 * 36, 22), [2, 8, 6, 6]);
    for (const mode of ['tune', 'eval'] as const) {
      const { saved } = convBnSync(x, p, { ...o, mode });
      const want = convBnBackwardSync(saved!, dy);
      const out = { dx: zeros([2, 8, 6, 6]), dWeight: zeros([8, 8, 3, 3]), dGamma: zeros([8]) };
      const got = convBnBackwardSync(saved!, dy, { out });
      expect(got.dx).toBe(out.dx);
      expect(got.dWeight).toBe(out.dWeight);
      expect(got.dGamma).toBe(out.dGamma);
      expectSameValues(got.dx!.dataSync() as Float32Array, want.dx!.dataSync() as Float32Array, `${mode} dx`);
      expectSameValues(got.dWeight!.dataSync() as Float32Array, want.dWeight!.dataSync() as Float32Array, `${mode} dWeight`);
      expectSameValues(got.dBias!.dataSync() as Float32Array, want.dBias!.dataSync() as Float32Array, `${mode} dBias`);
      expectCode(() => convBnBackwardSync(saved!, dy, { out: { dx: x } }), 'ERR_XNORM_ARGUMENT');       // the saved x
      expectCode(() => convBnBackwardSync(saved!, dy, { out: { dx: dy } }), 'ERR_XNORM_ARGUMENT');      // dy itself
      const g = zeros([8]);
      expectCode(() => convBnBackwardSync(saved!, dy, { out: { dGamma: g, dBeta: g } }), 'ERR_XNORM_ARGUMENT');
      expectCode(() => convBnBackwardSync(saved!, dy, { needs: { x: false }, out: { dx: zeros([2, 8, 6, 6]) } }), 'ERR_XNORM_ARGUMENT');
      expectCode(() => convBnBackwardSync(saved!, dy, { out: { dW: zeros([8, 8, 3, 3]) } as never }), 'ERR_XNORM_ARGUMENT');
      expectCode(() => convBnBackwardSync(saved!, dy, { out: { dWeight: zeros([8, 8, 3, 2]) } }), 'ERR_XNORM_SHAPE');
      saved!.dispose();
    }
  });

  it('a caller\'s out survives a failing op (it is not disposed)', async () => {
    const y = zeros([2, 8, 6, 6]);
    await expect(conv2d(x, w, undefined, { padding: 1, groups: 3, out: y })).rejects.toMatchObject({ code: 'ERR_XNORM_SHAPE' });
    expect(y.disposed).toBe(false);
  });
});
