// Part 1: transfer learning with frozen BN statistics, Tune mode vs Eval mode.
// Net: conv3x3 1->8 + BN + ReLU, maxpool 2, conv3x3 8->16 + BN + ReLU, maxpool 2, linear 784 -> classes.
// Pre-training on digits 0-4 uses each batch's own BN statistics (moments of conv2d's output, held
// fixed in the backward pass); the source statistics are then measured over the training images. Fine-
// tuning on digits 5-9 keeps those statistics frozen and trains every weight, gamma and beta and a new
// head, once with convBn mode 'tune' and once with mode 'eval' (same start, same batches).
import {
  ConvBnMode,
  Moments,
  Stats,
  Tensor,
  batchNormSync,
  conv2dSync,
  convBnBackwardSync,
  convBnSync,
  mergeMoments,
  momentsSync,
  tensor,
  variance,
} from '../../lib';
import { Adam, argmax, dense, denseBackward, maxPool2, maxPool2Backward, softmaxCrossEntropy, uniform } from './common';
import { Digits, batch, loadMnist, subset } from './data';

export const C1 = 8, C2 = 16, FEAT = C2 * 7 * 7;
// Spatial pixels per image at each BN layer (28x28, then 14x14 after the first pool).
export const LAYER_PIXELS = [28 * 28, 14 * 14];

export interface ConvNet {
  w: [Float32Array, Float32Array]; // [8,1,3,3], [16,8,3,3]
  b: [Float32Array, Float32Array];
  gamma: [Float32Array, Float32Array];
  beta: [Float32Array, Float32Array];
  fc: Float32Array; // [classes, 784], features in NCHW order
  fcb: Float32Array;
  classes: number;
  /** Source BN statistics (population mean and variance of each conv's output). */
  mean: [Float32Array, Float32Array];
  var: [Float32Array, Float32Array];
}

const SHAPES: [number[], number[]] = [[C1, 1, 3, 3], [C2, C1, 3, 3]];

export function initNet(classes: number, seed: number): ConvNet {
  return {
    w: [uniform(C1 * 9, 1 / 3, seed), uniform(C2 * C1 * 9, 1 / Math.sqrt(C1 * 9), seed + 1)],
    b: [new Float32Array(C1), new Float32Array(C2)],
    gamma: [new Float32Array(C1).fill(1), new Float32Array(C2).fill(1)],
    beta: [new Float32Array(C1), new Float32Array(C2)],
    fc: uniform(classes * FEAT, 1 / Math.sqrt(FEAT), seed + 2),
    fcb: new Float32Array(classes),
    classes,
    mean: [new Float32Array(C1), new Float32Array(C2)],
    var: [new Float32Array(C1).fill(1), new Float32Array(C2).fill(1)],
  };
}

const copy = (a: Float32Array) => Float32Array.from(a);
function withHead(net: ConvNet, classes: number, seed: number): ConvNet {
  const fresh = initNet(classes, seed);
  return {
    w: [copy(net.w[0]), copy(net.w[1])],
    b: [copy(net.b[0]), copy(net.b[1])],
    gamma: [copy(net.gamma[0]), copy(net.gamma[1])],
    beta: [copy(net.beta[0]), copy(net.beta[1])],
    fc: fresh.fc,
    fcb: fresh.fcb,
    classes,
    mean: [copy(net.mean[0]), copy(net.mean[1])],
    var: [copy(net.var[0]), copy(net.var[1])],
  };
}

function layerTensors(net: ConvNet, l: 0 | 1) {
  const c = SHAPES[l][0];
  return {
    weight: tensor(net.w[l], SHAPES[l]),
    bias: tensor(net.b[l], [c]),
    gamma: tensor(net.gamma[l], [c]),
    beta: tensor(net.beta[l], [c]),
    source: { mean: tensor(net.mean[l], [c]), var: tensor(net.var[l], [c]) } as Stats,
  };
}

export interface StepResult {
  loss: number;
  correct: number;
  convMs: number; // convBn forward + backward of both layers
  savedBytes: number; // ConvBnSaved.bytes of both layers
}

/**
 * One Adam step on a batch. frozen: BN uses the net's source statistics (fine-tuning); otherwise the
 * batch's own statistics, not differentiated (pre-training).
 */
export function trainStep(net: ConvNet, opt: Adam, b: Digits, labelOffset: number, mode: ConvBnMode, frozen: boolean): StepResult {
  const n = b.n;
  const x = tensor(b.x, [n, 1, 28, 28]);
  let convMs = 0;
  const forward = (l: 0 | 1, inp: Tensor) => {
    const t = layerTensors(net, l);
    let stats = t.source;
    if (!frozen) {
      const z = conv2dSync(inp, t.weight, t.bias, { padding: 1 });
      const m = momentsSync(z);
      stats = { mean: m.mean, var: variance(m) };
      z.dispose();
    }
    const t0 = performance.now();
    const r = convBnSync(inp, { weight: t.weight, bias: t.bias, bn: { ...stats, gamma: t.gamma, beta: t.beta } }, { padding: 1, activation: 'relu', mode, saveForBackward: true });
    convMs += performance.now() - t0;
    return r;
  };
  const c1 = forward(0, x);
  const p1 = maxPool2(c1.y.dataSync() as Float32Array, n, C1, 28, 28);
  const c2 = forward(1, tensor(p1.y, [n, C1, 14, 14]));
  const p2 = maxPool2(c2.y.dataSync() as Float32Array, n, C2, 14, 14);
  const labels = Int32Array.from(b.y, (v) => v - labelOffset);
  const logits = dense(p2.y, n, FEAT, net.fc, net.fcb, net.classes);
  const ce = softmaxCrossEntropy(logits, labels, n, net.classes);
  const head = denseBackward(p2.y, ce.grad, net.fc, n, FEAT, net.classes);
  const dy2 = tensor(maxPool2Backward(head.dx, p2.idx, c2.y.size), c2.y.shape);
  let t0 = performance.now();
  const g2 = convBnBackwardSync(c2.saved!, dy2);
  convMs += performance.now() - t0;
  const dy1 = tensor(maxPool2Backward(g2.dx!.dataSync(), p1.idx, c1.y.size), c1.y.shape);
  t0 = performance.now();
  const g1 = convBnBackwardSync(c1.saved!, dy1, { needs: { x: false } });
  convMs += performance.now() - t0;
  const savedBytes = c1.saved!.bytes + c2.saved!.bytes;
  c1.saved!.dispose();
  c2.saved!.dispose();
  const d = (t: Tensor | undefined) => t!.dataSync() as Float32Array;
  opt.step([d(g1.dWeight), d(g1.dBias), d(g1.dGamma), d(g1.dBeta), d(g2.dWeight), d(g2.dBias), d(g2.dGamma), d(g2.dBeta), head.dw, head.db]);
  return { loss: ce.loss, correct: ce.correct, convMs, savedBytes };
}

const params = (net: ConvNet) => [net.w[0], net.b[0], net.gamma[0], net.beta[0], net.w[1], net.b[1], net.gamma[1], net.beta[1], net.fc, net.fcb];

/** How a BN layer picks its statistics at test time: from the source ones and its input's conv output. */
export type StatsRule = (layer: 0 | 1, z: Tensor, source: Stats) => Stats | Moments;

/** Logits of a batch: conv2d, then batchNorm with the rule's statistics (default: source), ReLU, pool. */
export function logits(net: ConvNet, x: Float32Array, n: number, rule?: StatsRule): Float32Array {
  let inp = tensor(x, [n, 1, 28, 28]);
  let h = 28;
  let pooled = new Float32Array(0);
  for (const l of [0, 1] as const) {
    const t = layerTensors(net, l);
    const z = conv2dSync(inp, t.weight, t.bias, { padding: 1 });
    const stats = rule ? rule(l, z, t.source) : t.source;
    const y = batchNormSync(z, stats, { gamma: t.gamma, beta: t.beta, activation: 'relu' });
    pooled = maxPool2(y.dataSync() as Float32Array, n, SHAPES[l][0], h, h).y;
    z.dispose();
    y.dispose();
    h /= 2;
    inp = tensor(pooled, [n, SHAPES[l][0], h, h]);
  }
  return dense(pooled, n, FEAT, net.fc, net.fcb, net.classes);
}

export function accuracy(net: ConvNet, d: Digits, labelOffset: number, batchSize = 200, rule?: StatsRule): number {
  let correct = 0;
  for (let i = 0; i < d.n; i += batchSize) {
    const b = batch(d, i, Math.min(d.n, i + batchSize));
    const pred = argmax(logits(net, b.x, b.n, rule), b.n, net.classes);
    for (let k = 0; k < b.n; k++) if (pred[k] === b.y[k] - labelOffset) correct++;
  }
  return correct / d.n;
}

/** Population BN statistics of the net's conv outputs over d, layer by layer (mergeMoments of batches). */
export function measureSourceStats(net: ConvNet, d: Digits): void {
  for (const l of [0, 1] as const) {
    let acc: Moments | undefined;
    for (let i = 0; i < d.n; i += 200) {
      const b = batch(d, i, Math.min(d.n, i + 200));
      // The input of layer l under the statistics measured so far.
      const rule: StatsRule = (layer, z, source) => {
        if (layer === l) {
          const m = momentsSync(z);
          acc = acc ? mergeMoments(acc, m) : m;
        }
        return source;
      };
      logits(net, b.x, b.n, rule);
    }
    net.mean[l] = acc!.mean.dataSync() as Float32Array;
    net.var[l] = variance(acc!).dataSync() as Float32Array;
  }
}

export interface TransferOptions {
  pretrainSteps: number;
  finetuneSteps: number;
  batchSize: number;
  /** At most this many training / test images per half (0-4, 5-9). */
  trainLimit?: number;
  testLimit?: number;
}

export interface TransferResult {
  source: ConvNet; // pre-trained on 0-4, with source statistics
  sourceAccuracy: number; // on held-out 0-4
  rows: { mode: ConvBnMode; accuracy: number; msPerStep: number; convMsPerStep: number; savedBytes: number }[];
}

export function runTransfer(o: TransferOptions): TransferResult {
  const { train, test } = loadMnist();
  const src = subset(train, (d) => d < 5, o.trainLimit);
  const tgt = subset(train, (d) => d >= 5, o.trainLimit);
  const srcTest = subset(test, (d) => d < 5, o.testLimit);
  const tgtTest = subset(test, (d) => d >= 5, o.testLimit);
  const nextBatch = (d: Digits, step: number) => {
    const i0 = (step * o.batchSize) % (d.n - o.batchSize + 1);
    return batch(d, i0, i0 + o.batchSize);
  };

  const source = initNet(5, 11);
  const opt = new Adam(params(source), 3e-3);
  for (let s = 0; s < o.pretrainSteps; s++) trainStep(source, opt, nextBatch(src, s), 0, 'tune', false);
  measureSourceStats(source, src);
  const sourceAccuracy = accuracy(source, srcTest, 0);

  const rows: TransferResult['rows'] = [];
  for (const mode of ['tune', 'eval'] as const) {
    const net = withHead(source, 5, 21);
    const ft = new Adam(params(net), 2e-3);
    let convMs = 0, savedBytes = 0;
    const t0 = performance.now();
    for (let s = 0; s < o.finetuneSteps; s++) {
      const r = trainStep(net, ft, nextBatch(tgt, s), 5, mode, true);
      convMs += r.convMs;
      savedBytes = r.savedBytes;
    }
    const ms = performance.now() - t0;
    rows.push({ mode, accuracy: accuracy(net, tgtTest, 5), msPerStep: ms / o.finetuneSteps, convMsPerStep: convMs / o.finetuneSteps, savedBytes });
  }
  return { source, sourceAccuracy, rows };
}
