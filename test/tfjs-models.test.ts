// The 'xnorm' tfjs backend on whole tfjs-layers models (test/tfjs/models.ts: a ResNet-style and a
// MobileNet-style network with seeded weights and non-trivial BN statistics), against tfjs's own 'cpu'
// backend on the same weights and inputs:
// - predict at batch 1 and 8: softmax outputs and pre-softmax logits;
// - one trainOnBatch step (SGD, categoricalCrossentropy, BN in training mode): the loss, every weight after
//   the step (trainable ones and the BN moving statistics), every weight's update (after - before) and the
//   logits predicted after the step (filters the backend packed before it must not be reused);
// - on 'xnorm', kernelStats(): the conv, BN and matmul kernels ran natively, no call fell back to 'cpu'.
//
// "Relative" throughout is relDiff (test/tfjs/models.ts): max_i |got_i - want_i| / max(max_i |want_i|, 1e-6),
// per tensor, against the 'cpu' tensor's own scale; NaN or Infinity anywhere gives Infinity.
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
// The bare import registers the backend, whatever the named imports below become after transpiling.
import '../lib/tfjs';
import { kernelStats } from '../lib/tfjs';
import type { KernelStats } from '../lib/tfjs';
import { buildModel, makeInput, makeLabels, relDiff, TEST_SIZE } from './tfjs/models';
import type { ModelKind } from './tfjs/models';

const TOL = 1e-4;
/**
 * Updates (after - before = -lr * gradient) are compared on their own scale, which is much stricter than
 * comparing the weights, so the tolerance is looser: on 'cpu' alone, perturbing the input by 2e-7 relative
 * moves the updates by up to 1.5e-5. The floor is 1e-4 of the weight's own scale, for updates that are
 * mathematically zero: the stem conv's bias sits right before a training-mode BN, which subtracts the batch
 * mean, so its gradient is pure rounding noise (7e-3 "relative" under that same perturbation).
 */
const UPDATE_TOL = 1e-3;
const LR = 0.1;
const SEED = 1234;
const KINDS: ModelKind[] = ['resnet', 'mobilenet'];
const { inputSize, width } = TEST_SIZE;

async function use(backend: string): Promise<void> {
  expect(await tf.setBackend(backend)).toBe(true);
  await tf.ready();
  expect(tf.getBackend()).toBe(backend);
}

/** The kernels each model must run natively on 'xnorm', every call (none handed back to the 'cpu' kernel). */
function expectNative(stats: KernelStats, names: string[]): void {
  for (const name of names) {
    expect(stats.native[name] ?? 0, `${name} ran natively`).toBeGreaterThan(0);
    expect(stats.fallback[name] ?? 0, `${name} calls handed to the 'cpu' kernel`).toBe(0);
  }
}
const FORWARD = ['FusedConv2D', 'FusedBatchNorm', '_FusedMatMul'];
const forward = (kind: ModelKind) => (kind === 'mobilenet' ? [...FORWARD, 'DepthwiseConv2dNative'] : FORWARD);
const backward = (kind: ModelKind) => [
  ...forward(kind), 'Conv2DBackpropInput', 'Conv2DBackpropFilter', 'BatchMatMul',
  ...(kind === 'mobilenet' ? ['DepthwiseConv2dNativeBackpropInput', 'DepthwiseConv2dNativeBackpropFilter'] : []),
];

interface Prediction { probs: Float32Array; logits: Float32Array }

async function predictAll(backend: string, kind: ModelKind): Promise<{ out: Map<number, Prediction>; stats: KernelStats }> {
  await use(backend);
  const m = buildModel(kind, inputSize, width, SEED);
  const out = new Map<number, Prediction>();
  kernelStats(true);
  try {
    for (const batch of [1, 8]) {
      const x = makeInput(batch, inputSize, SEED + batch);
      const before = tf.memory().numTensors;
      const probs = m.model.predict(x) as tf.Tensor;
      const logits = m.logits.predict(x) as tf.Tensor;
      expect(tf.getBackend()).toBe(backend);
      expect(probs.shape).toEqual([batch, m.classes]);
      expect(logits.shape).toEqual([batch, m.classes]);
      out.set(batch, { probs: (await probs.data()) as Float32Array, logits: (await logits.data()) as Float32Array });
      tf.dispose([probs, logits]);
      // The backend's kernels leave nothing behind.
      expect(tf.memory().numTensors).toBe(before);
      x.dispose();
    }
  } finally {
    m.dispose();
  }
  return { out, stats: kernelStats() };
}

interface Step { stats: KernelStats; loss: number; names: string[]; before: Float32Array[]; after: Float32Array[]; logitsAfter: Float32Array }

async function trainStep(backend: string, kind: ModelKind): Promise<Step> {
  await use(backend);
  const m = buildModel(kind, inputSize, width, SEED);
  const x = makeInput(8, inputSize, SEED + 8);
  const y = makeLabels(8, m.classes, SEED + 9);
  const read = () => Promise.all(m.model.weights.map(async (w) => (await w.read().data()) as Float32Array));
  try {
    // Predicting twice first lets a backend pack the filters it sees again; the step must not leave it
    // predicting with the old ones.
    tf.dispose([m.logits.predict(x) as tf.Tensor, m.logits.predict(x) as tf.Tensor]);
    m.model.compile({ optimizer: tf.train.sgd(LR), loss: 'categoricalCrossentropy' });
    const names = m.model.weights.map((w) => w.originalName);
    const before = await read();
    kernelStats(true);
    const loss = (await m.model.trainOnBatch(x, y)) as number;
    expect(tf.getBackend()).toBe(backend);
    const stats = kernelStats();
    const after = await read();
    const logits = m.logits.predict(x) as tf.Tensor;
    const logitsAfter = (await logits.data()) as Float32Array;
    logits.dispose();
    return { stats, loss, names, before, after, logitsAfter };
  } finally {
    tf.dispose([x, y]);
    m.dispose();
  }
}

afterAll(async () => {
  await tf.setBackend('cpu');
});

describe('relDiff, the measure used below', () => {
  it('catches one element off by 1e-3 of the scale, a NaN and a length mismatch, and passes float rounding', () => {
    const want = Float32Array.from({ length: 80 }, (_, i) => Math.sin(i) * 3);
    const off = want.slice();
    off[17] += 3e-3;
    expect(relDiff(off, want)).toBeGreaterThan(TOL);
    const nan = want.slice();
    nan[5] = NaN;
    expect(relDiff(nan, want)).toBe(Infinity);
    expect(relDiff(want.subarray(1), want)).toBe(Infinity);
    const rounded = want.map((v) => Math.fround(v * (1 + 2e-7)));
    expect(relDiff(rounded, want)).toBeLessThan(TOL);
    expect(relDiff(want, want)).toBe(0);
  });
});

describe.each(KINDS)('tfjs backend xnorm on the %s model', (kind) => {
  it('predict at batch 1 and 8 matches the cpu backend (softmax and logits)', async () => {
    const ref = (await predictAll('cpu', kind)).out;
    const { out: got, stats } = await predictAll('xnorm', kind);
    for (const batch of [1, 8]) {
      const r = ref.get(batch)!;
      const g = got.get(batch)!;
      // The comparison means something: logits of order 1 that differ between the images of the batch.
      const spread = Math.max(...r.logits) - Math.min(...r.logits);
      expect(spread).toBeGreaterThan(0.5);
      expect(relDiff(g.logits, r.logits), `logits, batch ${batch}`).toBeLessThan(TOL);
      expect(relDiff(g.probs, r.probs), `softmax, batch ${batch}`).toBeLessThan(TOL);
    }
    expectNative(stats, forward(kind));
  });

  it('one trainOnBatch step (SGD) from identical weights: loss, every weight, every update and the next prediction match cpu', async () => {
    const ref = await trainStep('cpu', kind);
    const got = await trainStep('xnorm', kind);
    expect(got.names).toEqual(ref.names);
    expect(Number.isFinite(ref.loss)).toBe(true);
    expect(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(TOL);
    const bad: string[] = [];
    let moved = 0;
    for (let i = 0; i < ref.names.length; i++) {
      // Same seed, same weights, bit for bit, before the step.
      expect(relDiff(got.before[i], ref.before[i]), ref.names[i]).toBe(0);
      const delta = (s: Step) => s.after[i].map((v, j) => v - s.before[i][j]);
      const dRef = delta(ref);
      if (dRef.some((v) => v !== 0)) moved++;
      const w = relDiff(got.after[i], ref.after[i]);
      const scale = ref.before[i].reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      const d = relDiff(delta(got), dRef, 1e-4 * scale);
      if (!(w < TOL) || !(d < UPDATE_TOL)) bad.push(`${ref.names[i]}: weight ${w.toExponential(2)}, update ${d.toExponential(2)}`);
    }
    const after = relDiff(got.logitsAfter, ref.logitsAfter);
    if (!(after < TOL)) bad.push(`logits predicted after the step: ${after.toExponential(2)}`);
    // Every weight moves in one step: kernels, biases, gamma/beta by SGD, moving mean/variance by the BN update.
    expect(moved).toBe(ref.names.length);
    expect(bad).toEqual([]);
    expectNative(got.stats, backward(kind));
  });
});
