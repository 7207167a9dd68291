// Two small tfjs-layers models built in code with deterministic weights, for the tfjs backend tests
// (test/tfjs-models.test.ts) and the tfjs benchmark (bench/tfjs.ts).
// Input NHWC [batch, size, size, 3]; every weight, BN moving statistics included, is drawn from a seeded
// PRNG in JavaScript, so the same (size, width, seed) builds bit-identical models on every backend.
//
// - ResNet-style: conv3x3(+bias)+BN+ReLU stem, 2x2 max-pool, a basic residual block at stride 1
//   (conv+BN+ReLU, conv+BN, add, ReLU), a second one at stride 2 (3x3 stride-2 conv, 1x1 stride-2
//   projection + BN on the shortcut), global average pool, dense C -> C + ReLU, dense logits, softmax.
// - MobileNet-style: conv3x3 stride-2 stem + BN + ReLU6, depthwise-separable blocks (depthwise 3x3 + BN +
//   ReLU6, pointwise 1x1 + BN + ReLU6), two of them with a stride-2 depthwise, global average pool,
//   dense C -> C + ReLU, dense logits, softmax.
//
// Each builder returns the softmax model (the one to train: categoricalCrossentropy) and a second model
// sharing its layers that stops at the logits, so comparisons are not flattened by the softmax.
import * as tf from '@tensorflow/tfjs';
import { rng as prng } from '../rng';

export interface BuiltModel {
  /** Input -> softmax probabilities [batch, classes]. */
  model: tf.LayersModel;
  /** Same layers, input -> pre-softmax logits [batch, classes]. */
  logits: tf.LayersModel;
  inputSize: number;
  classes: number;
  /** Disposes the weights (shared by both models) and the optimizer, if the model was compiled. */
  dispose(): void;
}

export type ModelKind = 'resnet' | 'mobilenet';

/** Sizes used by the tests (small, fast on the 'cpu' backend) and by the benchmark (convs dominate). */
export const TEST_SIZE = { inputSize: 16, width: 8 } as const;
export const BENCH_SIZE = { inputSize: 56, width: 32 } as const;

function uniform(n: number, rand: () => number, lo: number, hi: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rand();
  return out;
}

/** Values for one weight, by its name: He-uniform kernels, small biases, non-trivial BN parameters and statistics. */
function valuesFor(name: string, shape: number[], rand: () => number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const leaf = name.split('/').pop()!.replace(/_\d+$/, '');
  if (leaf === 'kernel' || leaf === 'depthwise_kernel') {
    // conv [kh, kw, cin, cout], dense [in, out]: fan-in is everything but the last axis;
    // depthwise [kh, kw, cin, mult]: each output sees kh * kw inputs.
    const fanIn = leaf === 'depthwise_kernel' ? shape[0] * shape[1] : n / shape[shape.length - 1];
    const a = Math.sqrt(6 / fanIn);
    return uniform(n, rand, -a, a);
  }
  switch (leaf) {
    case 'bias': return uniform(n, rand, -0.1, 0.1);
    case 'gamma': return uniform(n, rand, 0.5, 1.5);
    case 'beta': return uniform(n, rand, -0.2, 0.2);
    case 'moving_mean': return uniform(n, rand, -0.3, 0.3);
    case 'moving_variance': return uniform(n, rand, 0.5, 1.5);
    default: throw new Error(`models: no initialiser for weight ${name}`);
  }
}

/** Overwrites every weight of `model` (trainable or not) with values from a PRNG seeded with `seed`. */
export function seedWeights(model: tf.LayersModel, seed: number): void {
  const rand = prng(seed);
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const values = layer.weights.map((w) => tf.tensor(valuesFor(w.originalName, w.shape as number[], rand), w.shape as number[]));
    layer.setWeights(values);
    tf.dispose(values);
  }
}

type Sym = tf.SymbolicTensor;
const apply = (layer: tf.layers.Layer, x: Sym | Sym[]) => layer.apply(x) as Sym;
const BN = { axis: -1, momentum: 0.9, epsilon: 1e-3 };
const act = (name: string, activation: 'relu' | 'relu6' | 'softmax') => tf.layers.activation({ name, activation });

/** conv (+ bias) + BN (+ activation), layers named `${name}`, `${name}_bn`, `${name}_${activation}`. */
function convBn(x: Sym, name: string, filters: number, kernelSize: number, strides: number, activation: 'relu' | 'relu6' | null, useBias = false): Sym {
  let y = apply(tf.layers.conv2d({ name, filters, kernelSize, strides, padding: 'same', useBias }), x);
  y = apply(tf.layers.batchNormalization({ name: `${name}_bn`, ...BN }), y);
  return activation ? apply(act(`${name}_${activation}`, activation), y) : y;
}

/** Basic residual block: conv+BN+ReLU, conv+BN, add (projection conv+BN shortcut when the shape changes), ReLU. */
function residual(x: Sym, name: string, filters: number, strides: number): Sym {
  const inC = x.shape[3] as number;
  let y = convBn(x, `${name}_conv1`, filters, 3, strides, 'relu');
  y = convBn(y, `${name}_conv2`, filters, 3, 1, null);
  const shortcut = strides !== 1 || inC !== filters ? convBn(x, `${name}_proj`, filters, 1, strides, null) : x;
  return apply(act(`${name}_out_relu`, 'relu'), apply(tf.layers.add({ name: `${name}_add` }), [y, shortcut]));
}

function head(input: Sym, features: Sym, classes: number, inputSize: number, seed: number): BuiltModel {
  const pooled = apply(tf.layers.globalAveragePooling2d({ name: 'gap' }), features);
  // A square hidden layer (C -> C): its kernel serves as B in the forward matmul and as Bᵀ in the gradient.
  const hidden = apply(tf.layers.dense({ name: 'fc', units: features.shape[3] as number, activation: 'relu' }), pooled);
  const logitsT = apply(tf.layers.dense({ name: 'logits', units: classes }), hidden);
  const probs = apply(act('softmax', 'softmax'), logitsT);
  const model = tf.model({ inputs: input, outputs: probs });
  const logits = tf.model({ inputs: input, outputs: logitsT });
  seedWeights(model, seed);
  return {
    model,
    logits,
    inputSize,
    classes,
    dispose() {
      // The logits model shares every layer with `model`: disposing `model` frees all the weights.
      const opt = (model as unknown as { optimizer?: tf.Optimizer }).optimizer;
      model.dispose();
      opt?.dispose();
    },
  };
}

/** ResNet-style model on [batch, inputSize, inputSize, 3] (inputSize a multiple of 4), `width` channels after the stem. */
export function buildResNet(inputSize: number, width: number, seed: number, classes = 10): BuiltModel {
  const input = tf.input({ name: 'image', shape: [inputSize, inputSize, 3] });
  let x = convBn(input, 'stem', width, 3, 1, 'relu', true); // the stem conv has a bias before its BN
  x = apply(tf.layers.maxPooling2d({ name: 'stem_pool', poolSize: 2, strides: 2 }), x);
  x = residual(x, 'block1', width, 1);
  x = residual(x, 'block2', 2 * width, 2); // 3x3 stride-2 conv + 1x1 stride-2 projection shortcut
  return head(input, x, classes, inputSize, seed);
}

function separable(x: Sym, name: string, filters: number, strides: number): Sym {
  let y = apply(tf.layers.depthwiseConv2d({ name: `${name}_dw`, kernelSize: 3, strides, padding: 'same', useBias: false }), x);
  y = apply(tf.layers.batchNormalization({ name: `${name}_dw_bn`, ...BN }), y);
  y = apply(act(`${name}_dw_relu6`, 'relu6'), y);
  return convBn(y, `${name}_pw`, filters, 1, 1, 'relu6');
}

/** MobileNet-style model on [batch, inputSize, inputSize, 3] (inputSize a multiple of 8), `width` channels after the stem. */
export function buildMobileNet(inputSize: number, width: number, seed: number, classes = 10): BuiltModel {
  const input = tf.input({ name: 'image', shape: [inputSize, inputSize, 3] });
  let x = convBn(input, 'stem', width, 3, 2, 'relu6');
  x = separable(x, 'sep1', 2 * width, 1);
  x = separable(x, 'sep2', 2 * width, 2); // stride-2 depthwise
  x = separable(x, 'sep3', 4 * width, 1);
  x = separable(x, 'sep4', 4 * width, 2);
  x = separable(x, 'sep5', 4 * width, 1);
  return head(input, x, classes, inputSize, seed);
}

export function buildModel(kind: ModelKind, inputSize: number, width: number, seed: number, classes = 10): BuiltModel {
  return kind === 'resnet' ? buildResNet(inputSize, width, seed, classes) : buildMobileNet(inputSize, width, seed, classes);
}

/** Seeded NHWC input batch [batch, size, size, 3], uniform in [-1, 1). */
export function makeInput(batch: number, inputSize: number, seed: number): tf.Tensor4D {
  return tf.tensor4d(uniform(batch * inputSize * inputSize * 3, prng(seed), -1, 1), [batch, inputSize, inputSize, 3]);
}

/** Seeded one-hot labels [batch, classes]. */
export function makeLabels(batch: number, classes: number, seed: number): tf.Tensor2D {
  const rand = prng(seed);
  const y = new Float32Array(batch * classes);
  for (let i = 0; i < batch; i++) y[i * classes + Math.floor(rand() * classes)] = 1;
  return tf.tensor2d(y, [batch, classes]);
}

/**
 * Relative difference of `got` against the reference `want`:
 *   max_i |got_i - want_i| / max(max_i |want_i|, floor)
 * i.e. the largest elementwise error measured against the reference tensor's own scale. Infinity when the
 * lengths differ or any value is NaN or infinite, so a broken result can never compare as close.
 */
export function relDiff(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-6): number {
  if (got.length !== want.length) return Infinity;
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (!Number.isFinite(g) || !Number.isFinite(w)) return Infinity;
    err = Math.max(err, Math.abs(g - w));
    scale = Math.max(scale, Math.abs(w));
  }
  return err / Math.max(scale, floor);
}
