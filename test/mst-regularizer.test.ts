// mstRegularizer: loss and gradient against a plain loop reference, finite differences, the exact total
// distance, the training behaviour the issue asks for (gradient steps on a fixed or rebuilt tree halve the
// total MST distance, never raise it on a fixed tree, and flip only bits the tree asks to change), tfjs
// interop, and bad input.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, it } from 'vitest';
import { MstPlan, mstPlanSync, mstRegularizer, packWeightsSync, tensor } from '../lib';
import { expectCode, expectSameValues, rng } from './helpers';

const sign = (v: number) => (v < 0 ? -1 : 1); // packWeights' convention: 0 (and -0) is +1

/** Uniform in [-1, 1), with some exact zeros (signed both ways) to exercise the sign convention. */
function latentValues(n: number, seed: number, grid?: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => {
    const u = r();
    if (u < 0.03) return u < 0.015 ? 0 : -0;
    const v = 2 * r() - 1;
    return grid ? Math.round(v * grid) / grid : v;
  });
}

/** The surrogate and its gradient, written out from the definition, in float64. */
function reference(w: ArrayLike<number>, parent: Int32Array, tau: number) {
  const cout = parent.length, k = w.length / cout;
  const grad = new Float64Array(w.length);
  let loss = 0;
  let distance = 0;
  for (let c = 0; c < cout; c++) {
    const p = parent[c];
    if (p === -1) continue;
    for (let i = 0; i < k; i++) {
      const a = w[c * k + i], b = w[p * k + i];
      if (sign(a) !== sign(b)) distance++;
      const ta = Math.tanh(a / tau), tb = Math.tanh(b / tau);
      loss += (1 - ta * tb) / 2;
      grad[c * k + i] -= ((1 - ta * ta) * tb) / (2 * tau);
      grad[p * k + i] -= ((1 - tb * tb) * ta) / (2 * tau);
    }
  }
  return { loss, grad, distance };
}

/**
 * Bits (as flat indices) the tree asks to change: where a channel's sign differs from its parent's or
 * from one of its children's.
 */
function askedBits(w: Float32Array, parent: Int32Array): Set<number> {
  const k = w.length / parent.length;
  const bits = new Set<number>();
  parent.forEach((p, c) => {
    if (p !== -1)
      for (let i = 0; i < k; i++)
        if (sign(w[c * k + i]) !== sign(w[p * k + i])) bits.add(c * k + i).add(p * k + i);
  });
  return bits;
}

/** The total distance counted directly. */
function distanceOf(w: Float32Array, parent: Int32Array): number {
  const k = w.length / parent.length;
  let d = 0;
  parent.forEach((p, c) => {
    if (p !== -1) for (let i = 0; i < k; i++) d += sign(w[c * k + i]) !== sign(w[p * k + i]) ? 1 : 0;
  });
  return d;
}

const SHAPES: { shape: number[]; groups: number }[] = [
  { shape: [6, 37, 3, 3], groups: 1 },
  { shape: [8, 5, 3, 3], groups: 2 },
  { shape: [12, 70, 1, 1], groups: 1 },
  { shape: [10, 45], groups: 1 },
  { shape: [9, 33, 2, 3], groups: 3 },
];

describe('mstRegularizer', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('matches the loop reference (loss, grad, distance) on awkward shapes, temperatures 0.5 and 0.1', () => {
    SHAPES.forEach(({ shape, groups }, si) => {
      const n = shape.reduce((a, b) => a * b);
      const w = latentValues(n, 10 + si);
      for (const temperature of [0.5, 0.1]) {
        const r = mstRegularizer(tensor(w, shape), { groups, temperature, maxDepth: 3 });
        expect(r.grad.shape).toEqual(shape);
        expect(r.grad.dtype).toBe('float32');
        expect(r.plan.depth).toBeLessThanOrEqual(3);
        expect(r.plan.parent.some((p) => p !== -1)).toBe(true);
        const ref = reference(w, r.plan.parent, temperature);
        expect(r.loss).toBeGreaterThan(0);
        expect(Math.abs(r.loss - ref.loss)).toBeLessThanOrEqual(1e-9 * ref.loss);
        expectSameValues(r.grad.dataSync(), Float32Array.from(ref.grad), `grad ${shape} temperature ${temperature}`);
        expect(r.totalDistance).toBe(ref.distance);
      }
    });
  });

  it('reads float16 and bfloat16 latents by their values', () => {
    const shape = [8, 20, 3, 3];
    const w = latentValues(8 * 180, 3, 256); // multiples of 1/256 in [-1, 1]: exact in both formats
    const want = mstRegularizer(tensor(w, shape), { temperature: 0.25 });
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const r = mstRegularizer(tensor(w, shape, { dtype }), { plan: want.plan, temperature: 0.25 });
      expect(r.loss).toBe(want.loss);
      expect(r.totalDistance).toBe(want.totalDistance);
      expectSameValues(r.grad.dataSync(), want.grad.dataSync(), dtype);
    }
  });

  it('its gradient matches central finite differences of the loss (fixed plan)', () => {
    const shape = [16, 21, 3, 3], n = 16 * 189;
    // Values on a 2^-12 grid, so latent ± h is exact in float32 and the library's own loss can be differenced.
    const w = latentValues(n, 21, 4096);
    const h = 2 ** -10;
    for (const temperature of [0.5, 0.1]) {
      const { plan, grad } = mstRegularizer(tensor(w, shape), { temperature });
      const g = grad.dataSync();
      const r = rng(22);
      for (let checked = 0; checked < 200; checked++) {
        const i = Math.floor(r() * n);
        const at = (d: number) => {
          const v = Float64Array.from(w);
          v[i] += d;
          return v;
        };
        const fdReference = (reference(at(h), plan.parent, temperature).loss - reference(at(-h), plan.parent, temperature).loss) / (2 * h);
        const libLoss = (d: number) => mstRegularizer(tensor(Float32Array.from(at(d)), shape), { plan, temperature }).loss;
        const fdLibrary = (libLoss(h) - libLoss(-h)) / (2 * h);
        const tol = 1e-4 * Math.max(1, Math.abs(g[i]));
        expect(Math.abs(fdReference - g[i]), `index ${i}`).toBeLessThan(tol);
        expect(Math.abs(fdLibrary - g[i]), `index ${i}`).toBeLessThan(tol);
      }
    }
  });

  it('totalDistance is the plan\'s own for the same latent, and a brute-force count', () => {
    SHAPES.forEach(({ shape, groups }, si) => {
      const w = latentValues(shape.reduce((a, b) => a * b), 30 + si);
      for (const maxDepth of [1, 2, 8]) {
        const plan = mstPlanSync(packWeightsSync(tensor(w, shape), { groups }), { reuse: 'always', maxDepth });
        const r = mstRegularizer(tensor(w, shape), { plan });
        expect(r.plan).toBe(plan);
        expect(r.totalDistance).toBe(plan.totalDistance);
        expect(r.totalDistance).toBe(distanceOf(w, plan.parent));
        const built = mstRegularizer(tensor(w, shape), { groups, maxDepth });
        expect(built.totalDistance).toBe(built.plan.totalDistance);
        expect(built.plan.maxDepth).toBe(maxDepth);
        expect(built.plan.weights.groups).toBe(groups);
      }
    });
  });

  describe('training (issue 13 acceptance): plain gradient steps halve the total MST distance', () => {
    const shape = [64, 32, 3, 3], n = 64 * 288, lr = 0.02, steps = 300;
    const initial = () => {
      const r = rng(1313);
      return Float32Array.from({ length: n }, () => 2 * r() - 1);
    };

    it('on a fixed tree: never up, and flipping only bits the tree asks to change', () => {
      for (const temperature of [0.5, 1]) {
        const w = initial();
        const { plan } = mstRegularizer(tensor(w, shape), { temperature });
        const start = plan.totalDistance;
        let before = start;
        for (let step = 0; step < steps; step++) {
          const asked = askedBits(w, plan.parent);
          const { grad, totalDistance } = mstRegularizer(tensor(w, shape), { plan, temperature });
          expect(totalDistance).toBe(before);
          const old = Float32Array.from(w);
          const g = grad.dataSync();
          for (let i = 0; i < n; i++) w[i] -= lr * g[i];
          for (let i = 0; i < n; i++)
            if (sign(w[i]) !== sign(old[i])) expect(asked.has(i), `step ${step}: bit ${i} flipped unasked`).toBe(true);
          const now = distanceOf(w, plan.parent);
          expect(now, `step ${step}`).toBeLessThanOrEqual(before);
          before = now;
        }
        expect(before, `temperature ${temperature}: ${start} -> ${before} in ${steps} steps`).toBeLessThanOrEqual(start / 2);
      }
    });

    it('rebuilding the tree each call', () => {
      const w = initial();
      let start = -1;
      let last = -1;
      for (let step = 0; step <= steps; step++) {
        const { grad, totalDistance, plan } = mstRegularizer(tensor(w, shape));
        expect(totalDistance).toBe(plan.totalDistance);
        if (step === 0) start = totalDistance;
        last = totalDistance;
        const g = grad.dataSync();
        for (let i = 0; i < n; i++) w[i] -= lr * g[i];
      }
      expect(last, `${start} -> ${last}`).toBeLessThanOrEqual(start / 2);
    });
  });

  it('hands its gradient to tfjs for a training step', () => {
    const shape = [8, 12, 3, 3];
    const w = latentValues(8 * 108, 50);
    const latent = tensor(w, shape);
    const { grad, plan, totalDistance } = mstRegularizer(latent);
    const gradTf = grad.toTfjs(tf);
    expect(gradTf.shape).toEqual(shape);
    expectSameValues(gradTf.dataSync(), grad.dataSync(), 'toTfjs values');

    const latentTf = latent.toTfjs(tf);
    const lr = 0.05, lambda = 0.5;
    const taskGrad = tf.mul(2, latentTf); // a stand-in task gradient: weight decay's, of sum(latent²)
    const stepped = tf.sub(latentTf, tf.mul(lr, tf.add(taskGrad, tf.mul(lambda, gradTf))));
    const g = grad.dataSync();
    const want = Float32Array.from(w, (v, i) => v - lr * (2 * v + lambda * g[i]));
    const got = stepped.dataSync();
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-6);

    const plain = tf.sub(latentTf, tf.mul(lr, gradTf));
    const after = mstRegularizer(tensor(plain.dataSync() as Float32Array, shape), { plan });
    expect(after.totalDistance).toBeLessThan(totalDistance);
    tf.dispose([gradTf, latentTf, taskGrad, stepped, plain]);
  });

  it('rejects bad input with its code', () => {
    const shape = [4, 6, 3, 3];
    const w = latentValues(4 * 54, 60);
    const latent = tensor(w, shape);
    const { plan } = mstRegularizer(latent, { maxDepth: 2 });
    const bad = (opts: object) => () => mstRegularizer(latent, opts as never);
    expectCode(() => mstRegularizer(w as never), 'ERR_XNORM_ARGUMENT');
    expectCode(() => mstRegularizer(tensor(Int32Array.from(w), shape, { dtype: 'int32' })), 'ERR_XNORM_DTYPE');
    expectCode(() => mstRegularizer(tensor(w, [4, 6, 9])), 'ERR_XNORM_SHAPE');
    expectCode(() => mstRegularizer(tensor([], [0, 6])), 'ERR_XNORM_SHAPE');
    expectCode(() => mstRegularizer(tensor([], [4, 0, 3, 3])), 'ERR_XNORM_SHAPE');
    const disposed = tensor(w, shape);
    disposed.dispose();
    expectCode(() => mstRegularizer(disposed), 'ERR_XNORM_DISPOSED');
    for (const v of [NaN, Infinity, -Infinity]) {
      const withBad = Float32Array.from(w);
      withBad[17] = v;
      expectCode(() => mstRegularizer(tensor(withBad, shape), { plan }), 'ERR_XNORM_ARGUMENT');
    }
    expectCode(bad({ groups: 3 }), 'ERR_XNORM_SHAPE');
    for (const groups of [0, 1.5, '2']) expectCode(bad({ groups }), 'ERR_XNORM_ARGUMENT');
    for (const temperature of [0, -0.1, NaN, Infinity, '0.1']) expectCode(bad({ temperature }), 'ERR_XNORM_ARGUMENT');
    for (const maxDepth of [0, 2.5, 70000]) expectCode(bad({ maxDepth }), 'ERR_XNORM_ARGUMENT');
    expectCode(bad({ lambda: 1 }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => mstRegularizer(latent, 'x' as never), 'ERR_XNORM_ARGUMENT');
    expectCode(bad({ plan: packWeightsSync(latent) }), 'ERR_XNORM_ARGUMENT');
    expectCode(bad({ plan: Object.create(MstPlan.prototype) }), 'ERR_XNORM_ARGUMENT');
    expectCode(bad({ plan, groups: 2 }), 'ERR_XNORM_ARGUMENT');
    expectCode(bad({ plan, maxDepth: 8 }), 'ERR_XNORM_ARGUMENT');
    expect(mstRegularizer(latent, { plan, groups: 1, maxDepth: 2 }).plan).toBe(plan);
    // The same element count under another shape is another layer.
    expectCode(() => mstRegularizer(tensor(w, [4, 54]), { plan }), 'ERR_XNORM_SHAPE');
    expectCode(() => mstRegularizer(tensor(w.subarray(0, 3 * 54), [3, 6, 3, 3]), { plan }), 'ERR_XNORM_SHAPE');
  });
});
