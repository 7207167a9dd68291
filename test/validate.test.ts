// The shared argument checks of lib/validate.ts as users meet them: unknown option keys are refused with
// ERR_XNORM_ARGUMENT naming the key (a misspelt option used to run silently with its default), and the
// native weight objects cannot be edited into wrong results.
import { describe, expect, it } from 'vitest';
import {
  XnormError,
  batchNormSync,
  binaryConv2dSync,
  binaryLinearSync,
  convBnBackwardSync,
  convBnSync,
  conv2dSync,
  momentsSync,
  mstPlanSync,
  packBitsSync,
  packWeightsSync,
  tensor,
  unpackBitsSync,
  variance,
} from '../lib';
import { randomArray, xnormErrorOf } from './helpers';

function refused(fn: () => unknown): XnormError {
  const e = xnormErrorOf(fn);
  if (!e) throw new Error('expected an XnormError, got none');
  return e;
}

describe('unknown option keys', () => {
  const x = tensor(randomArray(2 * 3 * 5 * 5, 1), [2, 3, 5, 5]);
  const weight = tensor(randomArray(4 * 3 * 3 * 3, 2), [4, 3, 3, 3]);
  const bn = { mean: tensor(new Float32Array(4), [4]), var: tensor(new Float32Array(4).fill(1), [4]) };
  const bits = packBitsSync(tensor(randomArray(2 * 5 * 5 * 40, 3), [2, 5, 5, 40]), { layout: 'nhwc' });
  const w = packWeightsSync(tensor(randomArray(8 * 40 * 9, 4), [8, 40, 3, 3]));

  it("convBn(x, p, { pad: 1 }) is refused, naming the key, instead of running unpadded", () => {
    const e = refused(() => convBnSync(x, { weight, bn }, { pad: 1 } as never));
    expect(e.code).toBe('ERR_XNORM_ARGUMENT');
    expect(e.message).toMatch(/convBn: opts: unknown option 'pad'/);
    expect(e.message).toMatch(/'padding'/);
    // the spelling it meant runs
    expect(convBnSync(x, { weight, bn }, { padding: 1 }).y.shape).toEqual([2, 4, 5, 5]);
  });

  const cases: [string, () => unknown, string][] = [
    ['conv2d', () => conv2dSync(x, weight, undefined, { strides: 2 } as never), 'strides'],
    ['convBnBackward', () => convBnBackwardSync(convBnSync(x, { weight, bn }, { saveForBackward: true }).saved!, tensor(new Float32Array(2 * 4 * 3 * 3), [2, 4, 3, 3]), { need: {} } as never), 'need'],
    ['convBnBackward needs', () => convBnBackwardSync(convBnSync(x, { weight, bn }, { saveForBackward: true }).saved!, tensor(new Float32Array(2 * 4 * 3 * 3), [2, 4, 3, 3]), { needs: { dx: false } } as never), 'dx'],
    ['moments', () => momentsSync(x, { layout: 'nchw', axis: 1 } as never), 'axis'],
    ['variance', () => variance(momentsSync(x), { unbiassed: true } as never), 'unbiassed'],
    ['batchNorm', () => batchNormSync(x, momentsSync(x), { epsilon: 1e-3 } as never), 'epsilon'],
    ['packBits', () => packBitsSync(x, { thresh: 0 } as never), 'thresh'],
    ['unpackBits', () => unpackBitsSync(bits, { layuot: 'nhwc' } as never), 'layuot'],
    ['packWeights', () => packWeightsSync(weight, { group: 1 } as never), 'group'],
    ['mstPlan', () => mstPlanSync(w, { depth: 3 } as never), 'depth'],
    ['binaryConv2d', () => binaryConv2dSync(bits, w, { pad: 1 } as never), 'pad'],
    // binaryLinear has no window: a stride or padding is an unknown key there
    ['binaryLinear', () => binaryLinearSync(packBitsSync(tensor(randomArray(2 * 40, 5), [2, 40])), packWeightsSync(tensor(randomArray(3 * 40, 6), [3, 40])), { padding: 1 } as never), 'padding'],
  ];
  for (const [op, fn, key] of cases)
    it(`${op} refuses '${key}'`, () => {
      const e = refused(fn);
      expect(e.code).toBe('ERR_XNORM_ARGUMENT');
      expect(e.message).toContain(`unknown option '${key}'`);
    });
});

describe('native weight objects', () => {
  it('editing what JS sees of weights and plans changes no result', () => {
    const bits = packBitsSync(tensor(randomArray(1 * 6 * 6 * 64, 7), [1, 6, 6, 64]), { layout: 'nhwc' });
    // prototype channels so the plan has edges
    const proto = randomArray(64 * 9, 8);
    const wf = Float32Array.from({ length: 32 * 64 * 9 }, (_, i) => proto[i % (64 * 9)] * (i % 97 === 0 ? -1 : 1));
    const w = packWeightsSync(tensor(wf, [32, 64, 3, 3]));
    const plan = mstPlanSync(w, { reuse: 'always' });
    expect(plan.levels.length).toBeGreaterThan(1);
    const o = { padding: 1, output: 'int32' as const };
    const want = Array.from(binaryConv2dSync(bits, w, o).dataSync());
    expect(Array.from(binaryConv2dSync(bits, plan, o).dataSync())).toEqual(want);
    w.words.fill(0xffffffff);
    plan.parent.fill(-1);
    plan.levels[0].fill(0);
    expect(Array.from(binaryConv2dSync(bits, w, o).dataSync())).toEqual(want);
    expect(Array.from(binaryConv2dSync(bits, plan, o).dataSync())).toEqual(want);
    // a plan round-trips through its bytes after the edits too: the bytes come from the native copy
    expect(Array.from(binaryConv2dSync(bits, mstPlanSync(w, { reuse: 'never' }), o).dataSync())).toEqual(want);
  });

  it('an object that merely looks like weights is refused', () => {
    const bits = packBitsSync(tensor(randomArray(1 * 3 * 3 * 32, 9), [1, 3, 3, 32]), { layout: 'nhwc' });
    const w = packWeightsSync(tensor(randomArray(4 * 32, 10), [4, 32, 1, 1]));
    const fake = Object.create(Object.getPrototypeOf(w), { shape: { value: w.shape }, groups: { value: 1 }, words: { value: w.words } });
    expect(refused(() => binaryConv2dSync(bits, fake)).code).toBe('ERR_XNORM_ARGUMENT');
  });

  it('ConvBnSaved holds what backward reads: disposing the forward inputs or editing them afterwards changes nothing', () => {
    const xs = randomArray(2 * 3 * 6 * 6, 11), ws = randomArray(5 * 3 * 3 * 3, 12);
    const bn = { mean: tensor(randomArray(5, 13), [5]), var: tensor(new Float32Array(5).fill(2), [5]), gamma: tensor(randomArray(5, 14), [5]) };
    const dy = tensor(randomArray(2 * 5 * 6 * 6, 15), [2, 5, 6, 6]);
    const grads = (dispose: boolean) => {
      const x = tensor(xs.slice(), [2, 3, 6, 6]), weight = tensor(ws.slice(), [5, 3, 3, 3]);
      const { saved } = convBnSync(x, { weight, bn }, { padding: 1, activation: 'relu', saveForBackward: true });
      if (dispose) {
        x.dispose();
        weight.dispose();
        bn.gamma.dataSync(); // the BN parameters were copied when the state was made
      }
      const g = convBnBackwardSync(saved!, dy);
      saved!.dispose();
      expect(refused(() => convBnBackwardSync(saved!, dy)).code).toBe('ERR_XNORM_DISPOSED');
      return [g.dx!, g.dWeight!, g.dGamma!].map((t) => Array.from(t.dataSync()));
    };
    expect(grads(true)).toEqual(grads(false));
  });
});
