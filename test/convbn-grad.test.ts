// Conv + BN backward: all five Tune-mode gradients against central finite differences of the float64
// unfused layer, against Eval-mode backward (through the BN) on larger shapes, and against PyTorch
// (conv -> eval-mode BatchNorm2d -> ReLU) fixtures from scripts/gen_convbn_fixtures.py.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { Tensor, convBn, convBnBackward, tensor } from '../lib';
import type { ConvBnGrads } from '../lib';
import { AWKWARD, ConvCase, convBn64, outSize, sizes, toNchw, toNhwc } from './convbn-reference';
import { randomArray } from './helpers';

type Grad = keyof ConvBnGrads;
const GRADS: Grad[] = ['dx', 'dWeight', 'dBias', 'dGamma', 'dBeta'];

function expectNear(a: ArrayLike<number>, b: ArrayLike<number>, rel: number, what: string) {
  expect(a.length, what).toBe(b.length);
  let scale = 1e-3, diff = 0, at = -1;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) { diff = d; at = i; }
  }
  if (!(diff <= rel * scale)) throw new Error(`${what}: max diff ${diff} at ${at} (${a[at]} vs ${b[at]}), tolerance ${rel * scale}`);
}

function opts(t: ConvCase) {
  return { stride: t.s, padding: t.p, dilation: t.d, groups: t.g };
}

interface Vals { x: Float64Array; w: Float64Array; b: Float64Array; gamma: Float64Array; beta: Float64Array; mean: Float64Array; var: Float64Array }

/** Values exactly representable in float32, so xnorm and the float64 reference see the same numbers. */
function values(t: ConvCase, seed: number): Vals {
  const s = sizes(t);
  const f = (n: number, k: number, scale = 1, offset = 0) => Float64Array.from(randomArray(n, seed + k, scale, offset));
  return {
    x: f(s.x, 1), w: f(s.w, 2, 0.4), b: f(t.cout, 3, 0.3), gamma: f(t.cout, 4, 0.5, 1), beta: f(t.cout, 5, 0.5),
    mean: f(t.cout, 6, 0.3), var: Float64Array.from(randomArray(t.cout, seed + 7, 0.5), (v) => Math.fround(0.5 + v * v)),
  };
}

function params(t: ConvCase, v: Vals) {
  return {
    weight: tensor(v.w, [t.cout, t.c / t.g, t.k[0], t.k[1]]),
    bias: tensor(v.b, [t.cout]),
    bn: { mean: tensor(v.mean, [t.cout]), var: tensor(v.var, [t.cout]), gamma: tensor(v.gamma, [t.cout]), beta: tensor(v.beta, [t.cout]), eps: 1e-3 },
  };
}

describe('Tune-mode gradients against central finite differences (float64)', () => {
  const cases: [string, ConvCase, boolean][] = [
    ['3x3 pad 1', { n: 2, c: 3, h: 5, w: 6, cout: 4, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 }, false],
    ['stride 2, dilation 2, groups 2, relu', { n: 1, c: 4, h: 7, w: 6, cout: 4, k: [2, 3], s: [2, 1], p: [2, 1], d: [2, 2], g: 2 }, true],
    ['depthwise + relu', { n: 2, c: 3, h: 5, w: 5, cout: 6, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 3 }, true],
  ];
  for (const [name, t, relu] of cases) {
    it(name, async () => {
      const v = values(t, 50);
      const s = sizes(t);
      const r = Float64Array.from(randomArray(s.y, 99));  // L = sum(y * r), so dL/dy = r
      const loss = (u: Vals) => {
        const y = convBn64(t, u.x, u.w, u.b, { mean: u.mean, var: u.var, gamma: u.gamma, beta: u.beta, eps: 1e-3 }, relu);
        let l = 0;
        for (let i = 0; i < y.length; i++) l += y[i] * r[i];
        return l;
      };
      const fd = (key: keyof Vals) => {
        const h = 1e-6;
        const arr = v[key], g = new Float64Array(arr.length);
        for (let i = 0; i < arr.length; i++) {
          const keep = arr[i];
          arr[i] = keep + h;
          const lp = loss(v);
          arr[i] = keep - h;
          const lm = loss(v);
          arr[i] = keep;
          g[i] = (lp - lm) / (2 * h);
        }
        return g;
      };
      const x = tensor(v.x, [t.n, t.c, t.h, t.w]);
      const { y, saved } = await convBn(x, params(t, v), { ...opts(t), activation: relu ? 'relu' : null, saveForBackward: true });
      const g = await convBnBackward(saved!, tensor(r, y.shape));
      expectNear(g.dx!.dataSync(), fd('x'), 1e-4, 'dx');
      expectNear(g.dWeight!.dataSync(), fd('w'), 1e-4, 'dWeight');
      expectNear(g.dBias!.dataSync(), fd('b'), 1e-4, 'dBias');
      expectNear(g.dGamma!.dataSync(), fd('gamma'), 1e-4, 'dGamma');
      expectNear(g.dBeta!.dataSync(), fd('beta'), 1e-4, 'dBeta');
    });
  }
});

describe('Tune-mode backward against Eval-mode backward', () => {
  // The last two are wide enough (K = 576) that dW' is finished in several blocks along K and along
  // Cout, one batch-spanning and one per image, grouped: Tune's per-block weight epilogue covers them all.
  const wide: ConvCase[] = [
    { n: 3, c: 64, h: 6, w: 5, cout: 20, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
    { n: 2, c: 128, h: 17, w: 16, cout: 26, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 2 },
    // dx as a forward Winograd conv of dy, Tune's with W * s (conv_passes.cc, data_as_forward)
    { n: 2, c: 40, h: 9, w: 11, cout: 36, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  ];
  for (const [k, t] of [AWKWARD[1], AWKWARD[2], AWKWARD[3], AWKWARD[5], AWKWARD[7], AWKWARD[9], ...wide].entries()) {
    it(JSON.stringify(t), async () => {
      const v = values(t, 300 + k);
      const p = params(t, v);
      const x = tensor(v.x, [t.n, t.c, t.h, t.w]);
      for (const activation of [null, 'relu'] as const) {
        const tune = await convBn(x, p, { ...opts(t), activation, saveForBackward: true });
        const ev = await convBn(x, p, { ...opts(t), activation, mode: 'eval', saveForBackward: true });
        const dy = tensor(randomArray(sizes(t).y, 400 + k), tune.y.shape);
        const gt = await convBnBackward(tune.saved!, dy);
        const ge = await convBnBackward(ev.saved!, dy);
        for (const name of GRADS) expectNear(gt[name]!.dataSync(), ge[name]!.dataSync(), 2e-5, `${name} ${activation}`);
        expect(tune.saved!.bytes).toBeLessThan(ev.saved!.bytes);
      }
    });
  }
});

describe('channels-last backward gives the NCHW gradients', () => {
  // Every conv but depthwise ones with channel multipliers runs on the NHWC tensors as they are
  // (conv_passes.cc, backward_as_is): 1x1 (ungrouped, grouped, a depthwise 1x1 with multiplier 2), 3x3
  // (dx as a forward conv of dy), stride 2 and dilated (dx gathered from columns), Tune's dW epilogue on
  // each reordered row, depthwise (stride 1 and 2); the 5x5 depthwise with multiplier 2 through NCHW
  // copies, the ReLU mask (y's order) applied to dy before its transpose.
  const depthwise1x1: ConvCase = { n: 2, c: 6, h: 4, w: 5, cout: 12, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 6 };
  const cases = [AWKWARD[12], AWKWARD[14], depthwise1x1, AWKWARD[0], AWKWARD[5], AWKWARD[1], AWKWARD[2], AWKWARD[3],
    AWKWARD[6], AWKWARD[8]];
  for (const [k, t] of cases.entries()) {
    it(JSON.stringify(t), async () => {
      const v = values(t, 600 + k);
      const p = params(t, v);
      const [oh, ow] = outSize(t);
      const dyv = randomArray(sizes(t).y, 700 + k);
      // float16 activations (x, dy, dx) on the 1x1 cases: converted at the boundary, dx rounded once
      for (const dtype of k < 3 ? (['float32', 'float16'] as const) : (['float32'] as const)) {
        const x = tensor(v.x, [t.n, t.c, t.h, t.w], { dtype });
        const xh = tensor(toNhwc(v.x, t.n, t.c, t.h, t.w), [t.n, t.h, t.w, t.c], { dtype });
        const tol = dtype === 'float16' ? 2e-3 : 2e-5;
        for (const mode of ['tune', 'eval'] as const)
          for (const activation of [null, 'relu'] as const) {
            const what = `${dtype} ${mode} ${activation}`;
            const a = await convBn(x, p, { ...opts(t), mode, activation, saveForBackward: true });
            const b = await convBn(xh, p, { ...opts(t), mode, activation, layout: 'nhwc', saveForBackward: true });
            const ga = await convBnBackward(a.saved!, tensor(dyv, a.y.shape, { dtype }));
            const gb = await convBnBackward(b.saved!, tensor(toNhwc(dyv, t.n, t.cout, oh, ow), b.y.shape, { dtype }));
            expect(gb.dx!.shape, what).toEqual([t.n, t.h, t.w, t.c]);
            expect(gb.dx!.dtype, what).toBe(dtype);
            expectNear(toNchw(gb.dx!.float32Sync(), t.n, t.c, t.h, t.w), ga.dx!.float32Sync(), tol, `dx ${what}`);
            for (const name of GRADS.slice(1)) expectNear(gb[name]!.dataSync(), ga[name]!.dataSync(), tol, `${name} ${what}`);
          }
      }
    });
  }
});

interface TorchCase {
  name: string;
  x_shape: number[]; w_shape: number[]; y_shape: number[];
  stride: number; padding: number; dilation: number; groups: number; relu: boolean; eps: number;
  x: number[]; weight: number[]; bias: number[] | null; mean: number[]; var: number[]; gamma: number[]; beta: number[];
  y: number[]; dy: number[]; dx: number[]; dWeight: number[]; dBias: number[] | null; dGamma: number[]; dBeta: number[];
}

describe('PyTorch conv -> eval BatchNorm2d (-> ReLU) fixtures', () => {
  const fixtures: { cases: TorchCase[] } = JSON.parse(
    fs.readFileSync(path.join(__dirname, 'fixtures', 'convbn_torch.json'), 'utf8'),
  );
  it('has cases', () => expect(fixtures.cases.length).toBeGreaterThanOrEqual(5));
  for (const c of fixtures.cases) {
    it(c.name, async () => {
      const cout = c.w_shape[0];
      const p = {
        weight: tensor(c.weight, c.w_shape),
        bias: c.bias ? tensor(c.bias, [cout]) : undefined,
        bn: { mean: tensor(c.mean, [cout]), var: tensor(c.var, [cout]), gamma: tensor(c.gamma, [cout]), beta: tensor(c.beta, [cout]), eps: c.eps },
      };
      const o = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups, activation: c.relu ? ('relu' as const) : null };
      const x = tensor(c.x, c.x_shape);
      for (const mode of ['tune', 'eval', 'deploy'] as const) {
        const { y } = await convBn(x, p, { ...o, mode });
        expect(y.shape).toEqual(c.y_shape);
        expectNear(y.dataSync(), c.y, 1e-5, `${mode} y`);
      }
      for (const mode of ['tune', 'eval'] as const) {
        const { saved } = await convBn(x, p, { ...o, mode, saveForBackward: true });
        const g = await convBnBackward(saved!, tensor(c.dy, c.y_shape));
        const want: Record<Grad, number[] | null> = { dx: c.dx, dWeight: c.dWeight, dBias: c.dBias, dGamma: c.dGamma, dBeta: c.dBeta };
        for (const name of GRADS) {
          const w = want[name];
          if (w) expectNear((g[name] as Tensor).dataSync(), w, 1e-5, `${mode} ${name}`);
        }
      }
    });
  }
});
