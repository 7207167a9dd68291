// Part 2: a binary network trained as a float simulation with a straight-through estimator, then
// deployed on xnorm's XNOR/popcount kernels with MST channel reuse.
//
// Net: input pixels binarized (x < 0.5 -> -1, else +1; packBits with threshold 0.5), binary conv3x3
// 1->32 stride 2 (28 -> 14), BN, sign, binary conv3x3 32->64 stride 2 (14 -> 7), BN, sign, binary linear
// 7·7·64 = 3136 -> 10 (the class is the largest integer dot). Padding 1 with padValue 'zero' (padded taps
// add nothing), which the simulation gets from conv2d's zero padding.
//
// The simulation computes exactly what the kernels compute: each conv of ±1 values with ±1 weights is an
// integer dot (= K − 2·popcount), exact in float32 (|dot| ≤ 288 < 2^24; rounded to be safe against any
// conv algorithm's rounding); the BN fold is v = fround(fround(dot·scale) + bias) with the same float32
// scale and bias binaryConv2d gets; sign is v < 0 -> -1, else +1 ('bits' output: bit 1 where v < 0, so 0
// counts as +1); weights are -1 where latent < 0, else +1 (packWeights). Training uses each batch's BN
// statistics (not differentiated); deployment uses statistics measured over the training images after
// training. Backward (STE): d sign(v)/dv = 1 where |v| ≤ 1, d sign(w)/dw = 1 where |w| ≤ 1; latents are
// clipped to [-1, 1] after each Adam step.
import {
  BinaryWeights,
  MstPlan,
  Moments,
  binaryConv2dSync,
  binaryLinearSync,
  conv2dBackwardSync,
  conv2dSync,
  mergeMoments,
  momentsSync,
  mstPlanSync,
  mstRegularizer,
  packBitsSync,
  packWeightsSync,
  tensor,
  variance,
} from '../../lib';
import { Adam, argmax, median, softmaxCrossEntropy, uniform } from './common';
import { Digits, batch, loadMnist, subset } from './data';

export const CH = [32, 64];
const SHAPES = [[CH[0], 1, 3, 3], [CH[1], CH[0], 3, 3]];
const HW = [14, 7]; // output sizes of the two convs
export const FEAT = HW[1] * HW[1] * CH[1]; // 3136, in NHWC order (h, w, c) as binaryConv2d writes bits
const CONV = { stride: 2, padding: 1 };
const EPS = 1e-5;

export interface BinaryNet {
  w: [Float32Array, Float32Array]; // latent conv weights
  fc: Float32Array; // latent [10, 3136]
  gamma: [Float32Array, Float32Array];
  beta: [Float32Array, Float32Array];
  alpha: Float32Array; // [1]: logits = alpha · dot while training (argmax does not need it)
  /** Deployment BN fold (float32): v = dot·scale + bias. */
  scale: [Float32Array, Float32Array];
  bias: [Float32Array, Float32Array];
}

export function initBinaryNet(seed: number): BinaryNet {
  return {
    w: [uniform(CH[0] * 9, 0.1, seed), uniform(CH[1] * CH[0] * 9, 0.1, seed + 1)],
    fc: uniform(10 * FEAT, 0.1, seed + 2),
    gamma: [new Float32Array(CH[0]).fill(1), new Float32Array(CH[1]).fill(1)],
    beta: [new Float32Array(CH[0]), new Float32Array(CH[1])],
    alpha: Float32Array.of(1 / Math.sqrt(FEAT)),
    scale: [new Float32Array(CH[0]), new Float32Array(CH[1])],
    bias: [new Float32Array(CH[0]), new Float32Array(CH[1])],
  };
}

// Plain loops: Float32Array.from with a map function is far slower on arrays this size.
function map(a: ArrayLike<number>, fn: (v: number) => number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = fn(a[i]);
  return out;
}
const signs = (w: Float32Array) => map(w, (v) => (v < 0 ? -1 : 1));
const binarizeInput = (x: Float32Array) => map(x, (v) => (v < 0.5 ? -1 : 1));

/** The float32 BN fold from statistics: scale = gamma / sqrt(var + eps), bias = beta − mean·scale. */
function fold(gamma: Float32Array, beta: Float32Array, mean: ArrayLike<number>, vr: ArrayLike<number>) {
  const scale = Float32Array.from(gamma, (g, c) => g / Math.sqrt(vr[c] + EPS));
  const bias = Float32Array.from(beta, (b, c) => b - mean[c] * scale[c]);
  return { scale, bias };
}

interface Layer {
  input: Float32Array; // ±1, NCHW
  dot: Float32Array; // integer dots, NCHW
  v: Float32Array; // dot·scale + bias in float32
  out: Float32Array; // sign(v), ±1
  mean: Float32Array;
  std: Float32Array;
}

/**
 * The float simulation of the first `onlyLayers` conv layers. statsMode 'batch': BN statistics of this
 * batch (training); 'deploy': the net's float32 scale and bias (what binaryConv2d gets).
 */
function simulate(net: BinaryNet, x: Float32Array, n: number, statsMode: 'batch' | 'deploy', onlyLayers = 2) {
  let input = binarizeInput(x);
  let h = 28;
  const layers: Layer[] = [];
  for (let l = 0; l < onlyLayers; l++) {
    const z = conv2dSync(tensor(input, [n, SHAPES[l][1], h, h]), tensor(signs(net.w[l]), SHAPES[l]), undefined, CONV);
    const dot = map(z.dataSync() as Float32Array, Math.round);
    let scale = net.scale[l], bias = net.bias[l];
    let mean: Float32Array = new Float32Array(0), std: Float32Array = new Float32Array(0);
    if (statsMode === 'batch') {
      const m = momentsSync(tensor(dot, z.shape));
      mean = m.mean.dataSync() as Float32Array;
      const vr = variance(m).dataSync() as Float32Array;
      std = Float32Array.from(vr, (v) => Math.sqrt(v + EPS));
      ({ scale, bias } = fold(net.gamma[l], net.beta[l], mean, vr));
    }
    z.dispose();
    const c = CH[l], s = HW[l] * HW[l];
    const v = new Float32Array(dot.length), out = new Float32Array(dot.length);
    for (let i = 0; i < dot.length; i++) {
      const ch = Math.floor(i / s) % c;
      v[i] = Math.fround(Math.fround(dot[i] * scale[ch]) + bias[ch]);
      out[i] = v[i] < 0 ? -1 : 1;
    }
    layers.push({ input, dot, v, out, mean, std });
    input = out;
    h = HW[l];
  }
  return layers;
}

/** NCHW ±1 activations of the last conv -> features in NHWC order, and back. */
function toFeatures(a: Float32Array, n: number): Float32Array {
  const f = new Float32Array(n * FEAT), c = CH[1], s = HW[1] * HW[1];
  for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) for (let p = 0; p < s; p++) f[i * FEAT + p * c + ch] = a[i * FEAT + ch * s + p];
  return f;
}
function fromFeatures(f: Float32Array, n: number): Float32Array {
  const a = new Float32Array(n * FEAT), c = CH[1], s = HW[1] * HW[1];
  for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) for (let p = 0; p < s; p++) a[i * FEAT + ch * s + p] = f[i * FEAT + p * c + ch];
  return a;
}

/** Integer class scores [n, 10] of the float simulation (deploy statistics). */
export function simulatedDots(net: BinaryNet, x: Float32Array, n: number): Float32Array {
  const layers = simulate(net, x, n, 'deploy');
  return headDots(toFeatures(layers[1].out, n), signs(net.fc), n);
}

/** The binary linear layer: dots[n, m] = features[n, :]·sw[m, :] (integers, exact). */
function headDots(f: Float32Array, sw: Float32Array, n: number): Float32Array {
  const dots = new Float32Array(n * 10);
  for (let i = 0; i < n; i++)
    for (let m = 0; m < 10; m++) {
      let s = 0;
      for (let k = 0; k < FEAT; k++) s += f[i * FEAT + k] * sw[m * FEAT + k];
      dots[i * 10 + m] = s;
    }
  return dots;
}

export interface TrainOptions {
  steps: number;
  batchSize: number;
  lr?: number;
  /** Weight of mstRegularizer's gradient on the two conv layers (0: off). */
  lambda: number;
  temperature?: number;
  seed?: number;
}

export function trainBinary(train: Digits, o: TrainOptions): BinaryNet {
  const net = initBinaryNet(o.seed ?? 31);
  const ps = [net.w[0], net.w[1], net.fc, net.gamma[0], net.beta[0], net.gamma[1], net.beta[1], net.alpha];
  const opt = new Adam(ps, o.lr ?? 3e-3);
  const plans: (MstPlan | undefined)[] = [undefined, undefined];
  for (let step = 0; step < o.steps; step++) {
    const i0 = (step * o.batchSize) % (train.n - o.batchSize + 1);
    const b = batch(train, i0, i0 + o.batchSize);
    const n = b.n;
    const layers = simulate(net, b.x, n, 'batch');
    const f = toFeatures(layers[1].out, n);
    const sw = signs(net.fc);
    const dots = headDots(f, sw, n);
    const a = net.alpha[0];
    const ce = softmaxCrossEntropy(dots.map((d) => a * d), b.y, n, 10);
    // Head.
    let dAlpha = 0;
    const df = new Float32Array(n * FEAT), dfc = new Float32Array(10 * FEAT);
    for (let i = 0; i < n; i++)
      for (let m = 0; m < 10; m++) {
        const g = ce.grad[i * 10 + m];
        dAlpha += g * dots[i * 10 + m];
        const gd = a * g;
        for (let k = 0; k < FEAT; k++) {
          df[i * FEAT + k] += gd * sw[m * FEAT + k];
          dfc[m * FEAT + k] += gd * f[i * FEAT + k];
        }
      }
    for (let k = 0; k < dfc.length; k++) if (Math.abs(net.fc[k]) > 1) dfc[k] = 0;
    // Conv layers, last to first.
    const grads: Float32Array[] = [new Float32Array(0), new Float32Array(0)];
    const dGamma: Float32Array[] = [], dBeta: Float32Array[] = [];
    let dOut = fromFeatures(df, n);
    for (let l = 1; l >= 0; l--) {
      const L = layers[l], c = CH[l], s = HW[l] * HW[l];
      const scale = Float32Array.from(net.gamma[l], (g, ch) => g / L.std[ch]);
      const dDot = new Float32Array(dOut.length);
      const dg = new Float32Array(c), db = new Float32Array(c);
      for (let i = 0; i < dOut.length; i++) {
        if (Math.abs(L.v[i]) > 1) continue; // STE window
        const ch = Math.floor(i / s) % c;
        dg[ch] += (dOut[i] * (L.dot[i] - L.mean[ch])) / L.std[ch];
        db[ch] += dOut[i];
        dDot[i] = dOut[i] * scale[ch];
      }
      dGamma[l] = dg;
      dBeta[l] = db;
      const hin = l === 0 ? 28 : HW[0];
      const r = conv2dBackwardSync(tensor(L.input, [n, SHAPES[l][1], hin, hin]), tensor(signs(net.w[l]), SHAPES[l]), tensor(dDot, [n, c, HW[l], HW[l]]), {
        ...CONV,
        needs: { x: l > 0, weight: true },
      });
      const gw = r.dWeight!.dataSync() as Float32Array;
      for (let k = 0; k < gw.length; k++) if (Math.abs(net.w[l][k]) > 1) gw[k] = 0;
      if (o.lambda > 0) {
        // Rebuild the reuse tree every 20 steps, keep it fixed in between.
        if (step % 20 === 0) plans[l] = undefined;
        const reg = mstRegularizer(tensor(net.w[l], SHAPES[l]), { plan: plans[l], temperature: o.temperature ?? 0.05 });
        plans[l] = reg.plan;
        const rg = reg.grad.dataSync() as Float32Array;
        for (let k = 0; k < gw.length; k++) gw[k] += o.lambda * rg[k];
      }
      grads[l] = gw;
      if (l > 0) dOut = r.dx!.dataSync() as Float32Array;
    }
    opt.step([grads[0], grads[1], dfc, dGamma[0], dBeta[0], dGamma[1], dBeta[1], [dAlpha]]);
    for (const p of [net.w[0], net.w[1], net.fc]) for (let k = 0; k < p.length; k++) p[k] = Math.max(-1, Math.min(1, p[k]));
    net.alpha[0] = Math.max(1e-4, net.alpha[0]);
  }
  calibrate(net, train);
  return net;
}

/** Deployment statistics: population moments of each conv's dots over d, layer by layer. */
export function calibrate(net: BinaryNet, d: Digits): void {
  for (let l = 0; l < 2; l++) {
    let acc: Moments | undefined;
    for (let i = 0; i < d.n; i += 250) {
      const b = batch(d, i, Math.min(d.n, i + 250));
      const L = simulate(net, b.x, b.n, 'deploy', l + 1)[l];
      const m = momentsSync(tensor(L.dot, [b.n, CH[l], HW[l], HW[l]]));
      acc = acc ? mergeMoments(acc, m) : m;
    }
    const f = fold(net.gamma[l], net.beta[l], acc!.mean.dataSync() as Float32Array, variance(acc!).dataSync() as Float32Array);
    net.scale[l] = f.scale;
    net.bias[l] = f.bias;
  }
}

export interface Deployed {
  weights: BinaryWeights[]; // conv1, conv2, fc
  plans: MstPlan[]; // 'always' plans of conv1, conv2
  scale: ReturnType<typeof tensor>[];
  bias: ReturnType<typeof tensor>[];
}

export function deploy(net: BinaryNet): Deployed {
  const weights = [packWeightsSync(tensor(net.w[0], SHAPES[0])), packWeightsSync(tensor(net.w[1], SHAPES[1])), packWeightsSync(tensor(net.fc, [10, FEAT]))];
  return {
    weights,
    plans: [mstPlanSync(weights[0], { reuse: 'always' }), mstPlanSync(weights[1], { reuse: 'always' })],
    scale: net.scale.map((s) => tensor(s, [s.length])),
    bias: net.bias.map((b) => tensor(b, [b.length])),
  };
}

/** Integer class scores [n, 10] from the xnorm binary kernels (dense weights or MST plans). */
export function deployedDots(dep: Deployed, x: Float32Array, n: number, mst: boolean): Int32Array {
  let h = packBitsSync(tensor(x, [n, 1, 28, 28]), { threshold: 0.5 }); // [n, 28, 28, 1]
  for (let l = 0; l < 2; l++) {
    const next = binaryConv2dSync(h, mst ? dep.plans[l] : dep.weights[l], { ...CONV, padValue: 'zero', scale: dep.scale[l], bias: dep.bias[l], output: 'bits' });
    h.dispose();
    h = next;
  }
  const out = binaryLinearSync(h.reshape([n, FEAT]), dep.weights[2], { output: 'int32' });
  h.dispose();
  return out.dataSync() as Int32Array;
}

export interface BinaryReport {
  lambda: number;
  simAccuracy: number;
  deployedAccuracy: number;
  mismatches: number; // test images whose 10 deployed dots differ from the simulation's (MST or dense)
  totalDistance: number; // both conv layers, 'always' plans
  opsReduction: number[]; // per conv layer
  compressedBytes: number; // plan.compressedSize() of both conv layers
  packedBytes: number; // dense packed words of both conv layers
  latencyMs: { batch: number; dense: number; mst: number }[];
}

export function evaluateBinary(net: BinaryNet, test: Digits, lambda: number, latencyBatches: number[], reps: number): BinaryReport {
  const dep = deploy(net);
  let simOk = 0, depOk = 0, mismatches = 0;
  for (let i = 0; i < test.n; i += 250) {
    const b = batch(test, i, Math.min(test.n, i + 250));
    const sim = simulatedDots(net, b.x, b.n);
    const dense = deployedDots(dep, b.x, b.n, false);
    const mst = deployedDots(dep, b.x, b.n, true);
    const ps = argmax(sim, b.n, 10), pd = argmax(mst, b.n, 10);
    for (let k = 0; k < b.n; k++) {
      if (ps[k] === b.y[k]) simOk++;
      if (pd[k] === b.y[k]) depOk++;
      let same = true;
      for (let m = 0; m < 10; m++) if (sim[k * 10 + m] !== mst[k * 10 + m] || dense[k * 10 + m] !== mst[k * 10 + m]) same = false;
      if (!same) mismatches++;
    }
  }
  const latencyMs = latencyBatches.map((bs) => {
    const xb = batch(test, 0, bs).x;
    const time = (mst: boolean) => {
      deployedDots(dep, xb, bs, mst); // warm-up
      const t: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        deployedDots(dep, xb, bs, mst);
        t.push(performance.now() - t0);
      }
      return median(t);
    };
    return { batch: bs, dense: time(false), mst: time(true) };
  });
  return {
    lambda,
    simAccuracy: simOk / test.n,
    deployedAccuracy: depOk / test.n,
    mismatches,
    totalDistance: dep.plans[0].totalDistance + dep.plans[1].totalDistance,
    opsReduction: dep.plans.map((p) => p.opsReduction),
    compressedBytes: dep.plans[0].compressedSize() + dep.plans[1].compressedSize(),
    packedBytes: dep.plans.reduce((s, p, l) => s + CH[l] * p.weights.rowWords * 4, 0),
    latencyMs,
  };
}

export interface BinaryOptions {
  trainLimit?: number;
  testLimit?: number;
  steps: number;
  batchSize: number;
  lambdas: number[];
  latencyBatches: number[];
  reps: number;
}

export function runBinary(o: BinaryOptions): BinaryReport[] {
  const { train, test } = loadMnist();
  const tr = subset(train, () => true, o.trainLimit);
  const te = subset(test, () => true, o.testLimit);
  return o.lambdas.map((lambda) => evaluateBinary(trainBinary(tr, { steps: o.steps, batchSize: o.batchSize, lambda }), te, lambda, o.latencyBatches, o.reps));
}
