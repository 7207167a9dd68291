// tfjs elementwise, reduction and tiling kernels on xnorm's native loops (native/core/elementwise):
// the glue between convs (BN in training, residual adds, activations, their gradients) that the 'cpu'
// backend runs as generic JavaScript with a fresh array per call. Float32 only; any broadcast that
// folds into [outer, mid, inner] (same shape, per-channel, per-row, scalar and combinations) runs natively.
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../native';
import type { UnaryOp } from '../native';
import type { XnormBackend } from './backend';
import { nativeKernel } from './backend';

type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'squaredDiff';

/** The activations tfjs fuses into FusedConv2D, FusedDepthwiseConv2D and _FusedMatMul. */
export type Activation = 'linear' | 'relu' | 'relu6' | 'prelu' | 'leakyrelu' | 'sigmoid' | 'elu' | undefined;

const ACTIVATION_OPS: Partial<Record<NonNullable<Activation>, UnaryOp>> = {
  relu: 'relu', relu6: 'relu6', leakyrelu: 'leakyRelu', sigmoid: 'sigmoid', elu: 'elu',
};

/** Applies a fused activation in place (PReLU, which needs its weights, is the caller's to refuse). */
export function applyActivation(y: Float32Array, activation: Activation, leakyreluAlpha = 0.2): void {
  const op = activation && ACTIVATION_OPS[activation];
  if (op) native().elementwiseUnary({ op, size: y.length, alpha: leakyreluAlpha, x: y, y });
}

/**
 * The output's dimensions grouped into at most three runs in which each operand either spans every
 * dimension or is broadcast along every one; null when more runs are needed.
 */
export function broadcastView(out: readonly number[], as: readonly number[], bs: readonly number[]) {
  const r = out.length;
  const pa = [...Array(r - as.length).fill(1), ...as], pb = [...Array(r - bs.length).fill(1), ...bs];
  const runs: { size: number; a: boolean; b: boolean }[] = [];
  for (let d = 0; d < r; d++) {
    if (out[d] === 1) continue;
    const a = pa[d] === out[d], b = pb[d] === out[d];
    const last = runs[runs.length - 1];
    if (last && last.a === a && last.b === b) last.size *= out[d];
    else runs.push({ size: out[d], a, b });
  }
  if (runs.length > 3) return null;
  while (runs.length < 3) runs.unshift({ size: 1, a: true, b: true });
  const [o, m, i] = runs;
  return {
    outer: o.size, mid: m.size, inner: i.size,
    aOuter: o.a, aMid: m.a, aInner: i.a, bOuter: o.b, bMid: m.b, bInner: i.b,
  };
}

/** The output shape and [outer, mid, inner] view of a float32 binary op, or null for the 'cpu' kernel. */
function operands(a: TensorInfo, b: TensorInfo) {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const shape = backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
  const view = util.sizeFromShape(shape) > 0 ? broadcastView(shape, a.shape, b.shape) : null;
  return view && { shape, view };
}

function binary(backend: XnormBackend, a: TensorInfo, b: TensorInfo, op: BinaryOp): TensorInfo | null {
  const o = operands(a, b);
  if (!o) return null;
  const y = backend.output(o.shape);
  native().elementwiseBinary({ op, ...o.view, a: backend.float32(a), b: backend.float32(b), y: y.storage() as Float32Array });
  return backend.fromXnorm(y);
}

type CompareOp = 'greater' | 'greaterEqual' | 'less' | 'lessEqual' | 'equal' | 'notEqual';

/** A comparison with tfjs's broadcasting: a 'bool' tensor (one byte per element). */
function compare(backend: XnormBackend, a: TensorInfo, b: TensorInfo, op: CompareOp): TensorInfo | null {
  const o = operands(a, b);
  if (!o) return null;
  const y = backend.output(o.shape, 'uint8');
  native().elementwiseCompare({ op, ...o.view, a: backend.float32(a), b: backend.float32(b), y: y.storage() as Uint8Array });
  return backend.fromXnorm(y, 'bool');
}

/**
 * Cast from 'bool' to float32 (the masks of ReLU-family gradients), as float32 storage the native kernels
 * read without a conversion. The 'cpu' kernel keeps the bytes under the new dtype (so does it for int32,
 * whose exact values that keeps: that cast stays with it).
 */
function cast(backend: XnormBackend, x: TensorInfo, dtype: string): TensorInfo | null {
  const v = backend.data.get(x.dataId)?.values;
  if (dtype !== 'float32' || x.dtype !== 'bool' || !(v instanceof Uint8Array)) return null;
  const y = backend.output(x.shape);
  native().boolToFloat32({ size: v.length, x: v, y: y.storage() as Float32Array });
  return backend.fromXnorm(y);
}

function unary(backend: XnormBackend, x: TensorInfo, op: UnaryOp, alpha?: number): TensorInfo | null {
  if (x.dtype !== 'float32') return null;
  const size = util.sizeFromShape(x.shape);
  const y = backend.output(x.shape);
  native().elementwiseUnary({ op, size, alpha, x: backend.float32(x), y: y.storage() as Float32Array });
  return backend.fromXnorm(y);
}

function reduce(backend: XnormBackend, x: TensorInfo, axis: number | number[], keepDims: boolean, op: 'sum' | 'mean' | 'max' | 'min'): TensorInfo | null {
  if (x.dtype !== 'float32') return null;
  const axes = util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
  if (axes.length === 0) return null;
  const lo = axes[0], hi = axes[axes.length - 1];
  if (hi - lo + 1 !== axes.length) return null;  // not one run of axes
  const size = (from: number, to?: number) => util.sizeFromShape(x.shape.slice(from, to));
  const outer = size(0, lo), mid = size(lo, hi + 1), inner = size(hi + 1);
  if (outer * mid * inner === 0) return null;
  const shape = keepDims ? x.shape.map((d, i) => (i >= lo && i <= hi ? 1 : d)) : x.shape.filter((_, i) => i < lo || i > hi);
  const y = backend.output(shape);
  native().reduceMid({ op, outer, mid, inner, x: backend.float32(x), y: y.storage() as Float32Array });
  return backend.fromXnorm(y);
}

/** x repeated reps[d] times along each axis: the innermost rows copied, then each block doubled in place. */
function tile(backend: XnormBackend, x: TensorInfo, reps: number[]): TensorInfo | null {
  if (x.dtype !== 'float32' || reps.length !== x.shape.length || x.shape.length === 0) return null;
  const shape = x.shape.map((d, i) => d * reps[i]);
  if (util.sizeFromShape(shape) === 0) return null;
  const r = shape.length, src = backend.float32(x);
  const y = backend.output(shape), out = y.storage() as Float32Array;
  const xStride = x.shape.map((_, d) => util.sizeFromShape(x.shape.slice(d + 1)));
  const oStride = shape.map((_, d) => util.sizeFromShape(shape.slice(d + 1)));
  const fill = (d: number, xo: number, oo: number) => {
    if (d === r - 1) out.set(src.subarray(xo, xo + x.shape[d]), oo);
    else for (let i = 0; i < x.shape[d]; i++) fill(d + 1, xo + i * xStride[d], oo + i * oStride[d]);
    const block = x.shape[d] * oStride[d], total = block * reps[d];
    for (let have = block; have < total; have += Math.min(have, total - have))
      out.copyWithin(oo + have, oo, oo + Math.min(have, total - have));
  };
  fill(0, 0, 0);
  return backend.fromXnorm(y);
}

/** The sum of n same-shape tensors (gradient accumulation). */
function addN(backend: XnormBackend, xs: TensorInfo[]): TensorInfo | null {
  if (xs.length < 2 || xs.some((t) => t.dtype !== 'float32' || !util.arraysEqual(t.shape, xs[0].shape))) return null;
  const size = util.sizeFromShape(xs[0].shape);
  if (size === 0) return null;
  const y = backend.output(xs[0].shape), out = y.storage() as Float32Array;
  const view = { outer: 1, mid: 1, inner: size, aOuter: true, aMid: true, aInner: true, bOuter: true, bMid: true, bInner: true };
  native().elementwiseBinary({ op: 'add', ...view, a: backend.float32(xs[0]), b: backend.float32(xs[1]), y: out });
  for (let i = 2; i < xs.length; i++) native().elementwiseBinary({ op: 'add', ...view, a: out, b: backend.float32(xs[i]), y: out });
  return backend.fromXnorm(y);
}

type Attrs = Record<string, unknown>;
const binaryKernel = (name: string, op: BinaryOp) =>
  nativeKernel(name, ({ inputs, backend }) => binary(backend, inputs.a as TensorInfo, inputs.b as TensorInfo, op));
const compareKernel = (name: string, op: CompareOp) =>
  nativeKernel(name, ({ inputs, backend }) => compare(backend, inputs.a as TensorInfo, inputs.b as TensorInfo, op));
const unaryKernel = (name: string, op: UnaryOp, alpha?: (attrs: Attrs) => number) =>
  nativeKernel(name, ({ inputs, backend, attrs }) => unary(backend, inputs.x as TensorInfo, op, alpha?.(attrs as Attrs)));
const reduceKernel = (name: string, op: 'sum' | 'mean' | 'max' | 'min', axisAttr: string) =>
  nativeKernel(name, ({ inputs, backend, attrs }) => {
    const a = attrs as Attrs;
    return reduce(backend, inputs.x as TensorInfo, a[axisAttr] as number | number[], a.keepDims as boolean, op);
  });

export const elementwiseKernels: KernelConfig[] = [
  binaryKernel('Add', 'add'),
  binaryKernel('Sub', 'sub'),
  binaryKernel('Multiply', 'mul'),
  binaryKernel('RealDiv', 'div'),
  binaryKernel('Maximum', 'max'),
  binaryKernel('Minimum', 'min'),
  binaryKernel('SquaredDifference', 'squaredDiff'),
  compareKernel('Greater', 'greater'),
  compareKernel('GreaterEqual', 'greaterEqual'),
  compareKernel('Less', 'less'),
  compareKernel('LessEqual', 'lessEqual'),
  compareKernel('Equal', 'equal'),
  compareKernel('NotEqual', 'notEqual'),
  nativeKernel('Cast', ({ inputs, backend, attrs }) => cast(backend, inputs.x as TensorInfo, (attrs as Attrs).dtype as string)),
  unaryKernel('Relu', 'relu'),
  unaryKernel('Relu6', 'relu6'),
  unaryKernel('Neg', 'neg'),
  unaryKernel('Square', 'square'),
  unaryKernel('Sqrt', 'sqrt'),
  unaryKernel('Rsqrt', 'rsqrt'),
  unaryKernel('Abs', 'abs'),
  unaryKernel('Exp', 'exp'),
  unaryKernel('Sigmoid', 'sigmoid'),
  unaryKernel('Tanh', 'tanh'),
  unaryKernel('Step', 'step', (a) => (a.alpha as number) ?? 0),
  unaryKernel('LeakyRelu', 'leakyRelu', (a) => a.alpha as number),
  unaryKernel('Elu', 'elu'),
  reduceKernel('Sum', 'sum', 'axis'),
  reduceKernel('Mean', 'mean', 'axis'),
  reduceKernel('Max', 'max', 'reductionIndices'),
  reduceKernel('Min', 'min', 'axis'),
  nativeKernel('Tile', ({ inputs, backend, attrs }) => tile(backend, inputs.x as TensorInfo, (attrs as Attrs).reps as number[])),
  nativeKernel('AddN', ({ inputs, backend }) => addN(backend, inputs as unknown as TensorInfo[])),
];
