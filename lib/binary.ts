// Symbol.dispose: consumers compiling with an older `lib` get it from this reference in the .d.ts.
/// <reference lib="esnext.disposable" preserve="true" />
// Binary (XNOR/popcount) convolution on bit-packed ±1 tensors, and MST channel reuse plans.
// Conventions: bit 1 = -1, bit 0 = +1 (sign(0) = +1); channels packed innermost (NHWC) in 32-bit words.
// Packed weights and plans are native objects (native/addon/weights.cc): made and checked once, passed to
// each call as handles; the arrays they show here are copies, so editing them changes no result.
import { describe, fail } from './errors';
import { native } from './native';
import type { PlanInfo, WeightsHandle } from './native';
import { planHandle, planHandles, weightsHandle, weightsHandles } from './handles';
import { defineOp } from './op';
import { FLOAT_DTYPES, Tensor, checkSameDevice, checkTensor, freeOnFailure, nativeDevice, nativeRef, outputFor, packedWordsFor, shapeSize } from './tensor';
import type { FloatDType } from './tensor';
import { choice, flag, float32Of, integer, layoutOf, options, pair, perChannel } from './validate';
import type { Layout } from './validate';

// ---------------------------------------------------------------------------------------------------
// packBits / unpackBits

/** [N, C, S] of x in the given layout (S = product of the spatial dims). */
function ncs(shape: readonly number[], layout: Layout): { n: number; c: number; s: number } {
  const n = shape[0];
  const c = layout === 'nchw' || shape.length === 2 ? shape[1] : shape[shape.length - 1];
  return { n, c, s: shapeSize(shape) / (n * c) };
}

function nhwcShape(shape: readonly number[], layout: Layout): number[] {
  if (layout === 'nhwc' || shape.length === 2) return shape.slice();
  return [shape[0], ...shape.slice(2), shape[1]];
}

/** Options of packBits / packBitsSync. */
export interface PackBitsOptions {
  /** Layout of the float input; default 'nchw'. The result is always channels-last. */
  layout?: Layout;
  /** bit = x < threshold (per channel [C], or one number); default 0, so sign(0) = +1. */
  threshold?: Tensor | number;
  /** Where to write the result: a 'bit' tensor of its shape on x's device; default a new one. */
  out?: Tensor;
}

const packBitsOp = defineOp((x: Tensor, opts?: PackBitsOptions) => {
  const o = options(opts, 'packBits: opts', ['layout', 'threshold', 'out']);
  checkTensor(x, 'packBits: x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 2)
    fail('ERR_XNORM_SHAPE', `packBits: x: expected rank >= 2 ([N, C, ...]), received shape [${x.shape.join(', ')}]`);
  const layout = layoutOf(o.layout, 'packBits: opts.layout');
  if (x.size === 0) fail('ERR_XNORM_SHAPE', `packBits: x: expected a non-empty tensor, received shape [${x.shape.join(', ')}]`);
  const { n, c, s } = ncs(x.shape, layout);
  let threshold = 0;
  let thresholds: Float32Array | undefined;
  const t = o.threshold;
  if (typeof t === 'number') {
    if (!Number.isFinite(t)) fail('ERR_XNORM_ARGUMENT', `packBits: opts.threshold: expected a finite number, received ${describe(t)}`);
    threshold = t;
  } else if (t !== undefined) {
    checkTensor(t, 'packBits: opts.threshold', { dtypes: FLOAT_DTYPES });
    checkSameDevice({ 'packBits: x': x, 'packBits: opts.threshold': t as Tensor });
    if ((t as Tensor).size !== c)
      fail('ERR_XNORM_SHAPE', `packBits: opts.threshold: expected shape [${c}], received [${(t as Tensor).shape.join(', ')}]`);
    thresholds = Float32Array.from(float32Of(t as Tensor, 'packBits: opts.threshold'));
  }
  const outShape = nhwcShape(x.shape, layout);
  // The CPU kernel reads float32 (converted here); the GPU one reads x's own dtype.
  const xs = x.device === 'cpu' ? float32Of(x, 'packBits: x') : nativeRef(x, 'packBits: x');
  const dtype = x.device === 'cpu' ? 'float32' : (x.dtype as FloatDType);
  const { y, fresh } = outputFor(o.out, x.device, outShape, 'bit', 'packBits: opts.out', [x]);
  const args = { device: nativeDevice(x), x: xs, dtype, layout, n, c, s, thresholds, threshold, out: nativeRef(y) };
  return { call: freeOnFailure(fresh, (async) => native().packBits(args, async)), finish: () => y };
});

/**
 * float (NCHW by default, or NHWC) -> 'bit' NHWC: bit 1 (-1) where x < threshold (0 and NaN give +1).
 * Shape: nchw [N, C, ...S] -> [N, ...S, C]; nhwc and rank 2 keep x's shape.
 * @param x float, rank >= 2, not empty
 * @param opts `layout` ('nchw' default; channels-last data needs 'nhwc'), `threshold` (default 0; a
 * number or a float [C] tensor), `out` (a 'bit' tensor to write into)
 * @throws XnormError ERR_XNORM_SHAPE (rank, empty, threshold size), ERR_XNORM_ARGUMENT
 * @example
 * const x = tensor(new Float32Array(1 * 64 * 8 * 8).map(() => Math.random() - 0.5), [1, 64, 8, 8]);
 * const b = await packBits(x); // 'bit' [1, 8, 8, 64]
 */
export const packBits = packBitsOp.async;
/**
 * packBits run on the calling thread (blocks it; for small inputs and scripts).
 * @param x float, rank >= 2, not empty
 * @param opts `layout` ('nchw' default), `threshold` (default 0), `out`, as packBits
 * @example
 * const b = packBitsSync(tensor([0.5, -1, 0, -0.1], [1, 4]), { threshold: 0 }); // signs + - + -
 */
export const packBitsSync = packBitsOp.sync;

const unpackBitsOp = defineOp((b: Tensor, opts?: { layout?: Layout; out?: Tensor }) => {
  const o = options(opts, 'unpackBits: opts', ['layout', 'out']);
  checkTensor(b, 'unpackBits: b', { dtypes: ['bit'] });
  if (b.shape.length < 2 || b.size === 0)
    fail('ERR_XNORM_SHAPE', `unpackBits: b: expected a non-empty [N, ..., C] tensor, received shape [${b.shape.join(', ')}]`);
  const layout = layoutOf(o.layout, 'unpackBits: opts.layout');
  const { n, c, s } = ncs(b.shape, 'nhwc');
  const r = b.shape.length;
  const outShape = layout === 'nhwc' || r === 2 ? b.shape.slice() : [b.shape[0], b.shape[r - 1], ...b.shape.slice(1, r - 1)];
  const { y, fresh } = outputFor(o.out, b.device, outShape, 'float32', 'unpackBits: opts.out', [b]);
  const args = { device: nativeDevice(b), b: nativeRef(b, 'unpackBits: b'), layout, n, c, s, out: nativeRef(y) };
  return { call: freeOnFailure(fresh, (async) => native().unpackBits(args, async)), finish: () => y };
});

/**
 * 'bit' NHWC -> float32 ±1, in NCHW (default) or NHWC.
 * @param b 'bit', rank >= 2, not empty
 * @param opts `layout` (default 'nchw': [N, ...S, C] -> [N, C, ...S]; 'nhwc' keeps b's shape), `out` (a
 * float32 tensor to write into)
 * @throws XnormError ERR_XNORM_SHAPE, ERR_XNORM_ARGUMENT
 * @example
 * const x = tensor(new Float32Array(1 * 64 * 8 * 8).map(() => Math.random() - 0.5), [1, 64, 8, 8]);
 * const signs = await unpackBits(await packBits(x)); // ±1, [1, 64, 8, 8]
 */
export const unpackBits = unpackBitsOp.async;
/**
 * unpackBits run on the calling thread.
 * @param b 'bit', rank >= 2, not empty
 * @param opts `layout` (default 'nchw'), `out`, as unpackBits
 * @example
 * const b = packBitsSync(tensor([0.5, -1, 0, -0.1], [1, 4]));
 * const signs = unpackBitsSync(b).float32Sync(); // [1, -1, 1, -1]
 */
export const unpackBitsSync = unpackBitsOp.sync;

// ---------------------------------------------------------------------------------------------------
// Weights and plans


/**
 * Sign-packed weights: a native object holding the canonical words and the kernels' panel layout. Made
 * by packWeights(); used by binaryConv2d, binaryLinear and mstPlan. Disposable (frees device copies).
 * @example
 * const w = await packWeights(tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]));
 * console.log(w.shape, w.groups, w.rowWords); // [32, 64, 3, 3] 1 18
 */
export class BinaryWeights {
  /** [Cout, Cin/groups, kh, kw] */
  readonly shape: readonly number[];
  readonly groups: number;
  /** A copy of the canonical packed words, [Cout][kh][kw][ceil(Cin_g / 32)]; tail bits are 0. */
  readonly words: Uint32Array;

  /** @internal Use packWeights(). */
  constructor(handle: WeightsHandle, shape: readonly number[], groups: number) {
    weightsHandles.set(this, handle);
    this.shape = Object.freeze(shape.slice());
    this.groups = groups;
    this.words = native().weightsWords({ weights: handle });
  }

  /** Words per output channel (kh * kw * ceil(Cin_g / 32)). */
  get rowWords(): number {
    return this.shape[2] * this.shape[3] * packedWordsFor(this.shape[1]);
  }

  /**
   * Frees the device copies of the weights now (ops in flight keep theirs until they end); a later op on
   * a GPU uploads them again. The CPU words stay usable. Idempotent.
   */
  dispose(): void {
    native().releaseDeviceCopies({ weights: weightsHandle(this) });
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

const packWeightsOp = defineOp((w: Tensor, opts?: { groups?: number }) => {
  const o = options(opts, 'packWeights: opts', ['groups']);
  checkTensor(w, 'packWeights: w', { dtypes: FLOAT_DTYPES, rank: [2, 4] });
  const groups = integer(o.groups, 'packWeights: opts.groups', 1, 1, 2 ** 30);
  const shape = w.shape.length === 2 ? [w.shape[0], w.shape[1], 1, 1] : w.shape.slice();
  if (shape.some((d) => d < 1))
    fail('ERR_XNORM_SHAPE', `packWeights: w: expected positive sizes, received shape [${w.shape.join(', ')}]`);
  if (shape[0] % groups !== 0)
    fail('ERR_XNORM_SHAPE', `packWeights: w: Cout = ${shape[0]} is not divisible by groups = ${groups}`);
  const args = { w: float32Of(w, 'packWeights: w'), wShape: shape, groups };
  return {
    call: (async: boolean) => native().packWeights(args, async),
    finish: (handle: unknown) => new BinaryWeights(handle as WeightsHandle, shape, groups),
  };
});

/**
 * float weights [Cout, Cin/groups, kh, kw] (or [Cout, K] for binaryLinear) -> signs, packed: a Promise
 * (packing a large layer takes tens of ms, done on the thread pool). Bit = w < 0 (0 and NaN give +1).
 * @param w float [Cout, Cin/groups, kh, kw], or [Cout, K] (taken as [Cout, K, 1, 1]), on any device
 * @param opts `groups` (default 1; must divide Cout)
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_DTYPE, ERR_XNORM_SHAPE (rank, sizes < 1, groups)
 * @example
 * const latent = tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]);
 * const w = await packWeights(latent);
 */
export const packWeights = packWeightsOp.async;
/**
 * packWeights run on the calling thread.
 * @param w float [Cout, Cin/groups, kh, kw], or [Cout, K]
 * @param opts `groups` (default 1; must divide Cout)
 * @example
 * const fc = packWeightsSync(tensor(new Float32Array(10 * 256).map(() => Math.random() - 0.5), [10, 256]));
 */
export const packWeightsSync = packWeightsOp.sync;

/** How mstPlan picks reuse edges: measured on this CPU ('auto'), wherever possible ('always'), or none. */
export type Reuse = 'auto' | 'always' | 'never';

function checkWeights(w: unknown, name: string): BinaryWeights {
  if (!(w instanceof BinaryWeights) || !weightsHandles.has(w))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected BinaryWeights (from packWeights), received ${describe(w)}`);
  return w;
}

/**
 * A channel-reuse order over a layer's output channels (see mstPlan): a native object. Runs wherever
 * its BinaryWeights do, with bit-identical results; serialize() and MstPlan.deserialize() store it.
 * @example
 * const w = await packWeights(tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]));
 * const plan = await mstPlan(w, { reuse: 'always' });
 * console.log(plan.depth, plan.opsReduction);
 * const again = MstPlan.deserialize(plan.serialize(), w);
 */
export class MstPlan {
  readonly weights: BinaryWeights;
  /** -1 = computed from scratch (a root); otherwise the channel this one is computed from. A copy. */
  readonly parent: Int32Array;
  /** Channels grouped by depth; level 0 are the roots; each level depends only on earlier ones. */
  readonly levels: Int32Array[];
  readonly depth: number;
  /** Sum of Hamming distances over the reuse edges. */
  readonly totalDistance: number;
  /** 1 - (bits the CPU processes with reuse, majority channels included) / (Cout * K). */
  readonly opsReduction: number;
  /**
   * Extra channels the CPU computes densely, each the bitwise majority of a root and its children,
   * when the star is closer to it than to its root: the star's channels then start from it (the
   * GPU runs the tree as `parent` gives it). 0 when no star gains.
   */
  readonly majorityChannels: number;
  /**
   * Which binaryConv2d outputs the CPU runs the edges for: 'bits' for an 'auto' plan whose edges paid in
   * its trial only with 'bits' output (its int32 and float calls, and 'bits' calls with padValue 'zero'
   * or a non-finite scale or bias, then run the dense weights; a GPU decides by its own trial), else
   * 'all' (plans without edges too).
   */
  readonly edgesFor: 'all' | 'bits';
  readonly reuse: Reuse;
  readonly maxDepth: number;

  /** @internal Use mstPlan() or MstPlan.deserialize(). */
  constructor(weights: BinaryWeights, info: PlanInfo) {
    if (!info || typeof info !== 'object' || !(info.parent instanceof Int32Array) || !(info.depthOf instanceof Int32Array))
      fail('ERR_XNORM_ARGUMENT', 'MstPlan: use mstPlan() or MstPlan.deserialize() to make a plan');
    checkWeights(weights, 'MstPlan: weights');
    planHandles.set(this, info.plan);
    this.weights = weights;
    this.parent = info.parent;
    this.reuse = info.reuse;
    this.maxDepth = info.maxDepth;
    this.depth = info.depth;
    this.totalDistance = info.totalDistance;
    this.majorityChannels = info.majorityChannels;
    this.edgesFor = info.edgesFor;
    const [cout, cinG, kh, kw] = weights.shape;
    this.opsReduction = 1 - info.bitsProcessed / (cout * cinG * kh * kw);
    const byLevel: number[][] = Array.from({ length: this.depth + 1 }, () => []);
    info.depthOf.forEach((d, c) => byLevel[d].push(c));
    this.levels = byLevel.map((l) => Int32Array.from(l));
  }

  /**
   * Frees the plan's device copies of its edge records now (ops in flight keep theirs until they end); a
   * later op on a GPU uploads them again. The weights' own device copies belong to the BinaryWeights
   * (free them with its dispose()). Idempotent.
   */
  dispose(): void {
    native().releaseDeviceCopies({ plan: planHandle(this) });
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Versioned, checksummed bytes: the tree and a hash of the weights it was made for (version 1), or with
   * `{ weights: true }` the weights too, compressed along the tree (version 2: deserialize needs no `w`).
   */
  serialize(opts?: { weights?: boolean }): Uint8Array {
    const o = options(opts, 'MstPlan.serialize: opts', ['weights']);
    const withWeights = flag(o.weights, 'MstPlan.serialize: opts.weights', false);
    return native().mstSerialize({ plan: planHandle(this), withWeights });
  }

  /**
   * Bytes of serialize({ weights: true }). Bits per weight: 8 * bytes / (Cout * K); against the dense
   * packed words (Cout * rowWords * 4 bytes) the compression ratio is that size / bytes.
   */
  compressedSize(): number {
    return this.serialize({ weights: true }).length;
  }

  /**
   * Rebuilds a plan from serialize()'s bytes: for `w`, or without it from version-2 bytes, over the
   * weights they carry (a new BinaryWeights). Truncated, altered or mismatched bytes throw
   * ERR_XNORM_CORRUPT_PLAN; version-1 bytes without `w` throw ERR_XNORM_ARGUMENT.
   */
  static deserialize(bytes: Uint8Array, w?: BinaryWeights): MstPlan {
    if (w !== undefined) checkWeights(w, 'MstPlan.deserialize: w');
    if (!(bytes instanceof Uint8Array))
      fail('ERR_XNORM_CORRUPT_PLAN', `MstPlan.deserialize: bytes: expected a Uint8Array, received ${describe(bytes)}`);
    const info = native().mstDeserialize(w ? { weights: weightsHandle(w), bytes } : { bytes });
    const r = info.rebuilt;
    return new MstPlan(w ?? new BinaryWeights(r!.weights, r!.shape, r!.groups), info);
  }
}

const mstPlanOp = defineOp((w: BinaryWeights, opts?: { maxDepth?: number; reuse?: Reuse }) => {
  const o = options(opts, 'mstPlan: opts', ['maxDepth', 'reuse']);
  checkWeights(w, 'mstPlan: w');
  const maxDepth = integer(o.maxDepth, 'mstPlan: opts.maxDepth', 1, 8, 65535);
  const reuse = choice(o.reuse, 'mstPlan: opts.reuse', ['auto', 'always', 'never'] as const, 'auto');
  const args = { weights: weightsHandle(w), reuse, maxDepth };
  return {
    call: (async: boolean) => native().mstPlan(args, async),
    finish: (info: unknown) => new MstPlan(w, info as PlanInfo),
  };
});

/**
 * Orders a layer's output channels so close ones are computed from each other (Prim's algorithm per group
 * with a virtual root). reuse 'auto' (default) keeps only edges a cost model calibrated on this CPU says
 * are cheaper than dense, confirmed by a timed trial; 'always' reuses wherever the Hamming distance is
 * below K; 'never' is dense. A Promise: an 'auto' plan times the executor (tens of ms), on the thread pool.
 * @param w BinaryWeights from packWeights()
 * @param opts `maxDepth` (default 8, an integer in [1, 65535]), `reuse` ('auto' default, 'always', 'never')
 * @throws XnormError ERR_XNORM_ARGUMENT (w not BinaryWeights; options)
 * @example
 * const w = await packWeights(tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]));
 * const plan = await mstPlan(w); // reuse: 'auto'
 * const y = await binaryConv2d(await packBits(zeros([1, 64, 16, 16])), plan, { padding: 1 });
 */
export const mstPlan = mstPlanOp.async;
/**
 * mstPlan run on the calling thread.
 * @param w BinaryWeights from packWeightsSync()
 * @param opts `maxDepth` (default 8), `reuse` ('auto' default, 'always', 'never')
 * @example
 * const w = packWeightsSync(tensor(new Float32Array(16 * 32).map(() => Math.random() - 0.5), [16, 32]));
 * const plan = mstPlanSync(w, { reuse: 'always', maxDepth: 4 });
 */
export const mstPlanSync = mstPlanOp.sync;

// ---------------------------------------------------------------------------------------------------
// binaryConv2d / binaryLinear

/** binaryConv2d's output: float32 with scale/bias/clamp, packed signs of that float, or raw K - 2 popcount. */
export type BinaryOutput = 'float' | 'bits' | 'int32';

/** Options of binaryConv2d / binaryLinear (docs/API.md "binaryConv2d" lists defaults and ranges). */
export interface BinaryConvOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  /** Must match the weights' groups when given. */
  groups?: number;
  /** 'one' (default) pads with +1; 'zero' is true zero padding. */
  padValue?: 'one' | 'zero';
  /** Per-Cout output transform y * scale + bias (e.g. a folded BN). */
  scale?: Tensor;
  bias?: Tensor;
  clamp?: [number, number];
  /** 'float' (default) float32 NHWC; 'int32' the raw dot product; 'bits' the packed sign of the transformed value. */
  output?: BinaryOutput;
  /** Where to write the result: a tensor of its shape and dtype on x's device; default a new one. */
  out?: Tensor;
}

const BINARY_CONV_KEYS = ['stride', 'padding', 'dilation', 'groups', 'padValue', 'scale', 'bias', 'clamp', 'output', 'out'] as const;
const BINARY_LINEAR_KEYS = ['scale', 'bias', 'clamp', 'output', 'out'] as const;

function binaryConvArgs(op: string, x: Tensor, wp: BinaryWeights | MstPlan, opts: BinaryConvOptions | undefined, linear: boolean) {
  const o = options(opts, `${op}: opts`, linear ? BINARY_LINEAR_KEYS : BINARY_CONV_KEYS);
  const plan = wp instanceof MstPlan ? wp : undefined;
  if (plan && !planHandles.has(plan)) fail('ERR_XNORM_ARGUMENT', `${op}: w: expected an MstPlan from mstPlan(), received ${describe(wp)}`);
  const w = plan ? plan.weights : checkWeights(wp, `${op}: w`);
  checkTensor(x, `${op}: x`, { dtypes: ['bit'], rank: linear ? 2 : 4 });
  const [cout, cinG, kh, kw] = w.shape;
  const xShape = linear ? [x.shape[0], 1, 1, x.shape[1]] : x.shape.slice();
  if (linear && (kh !== 1 || kw !== 1 || w.groups !== 1))
    fail('ERR_XNORM_SHAPE', `${op}: w: expected [Cout, K] weights without groups, received [${w.shape.join(', ')}], groups ${w.groups}`);
  if (o.groups !== undefined && o.groups !== w.groups)
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.groups: the weights were packed with groups = ${w.groups}, received ${describe(o.groups)}`);
  if (xShape[3] !== cinG * w.groups)
    fail('ERR_XNORM_SHAPE', `${op}: x: expected ${cinG * w.groups} channels (last axis), received shape [${x.shape.join(', ')}]`);
  if (xShape.some((d) => d < 1)) fail('ERR_XNORM_SHAPE', `${op}: x: expected positive sizes, received [${x.shape.join(', ')}]`);
  const [strideH, strideW] = pair(o.stride, `${op}: opts.stride`, 1, 1);
  const [padH, padW] = pair(o.padding, `${op}: opts.padding`, 0, 0);
  const [dilationH, dilationW] = pair(o.dilation, `${op}: opts.dilation`, 1, 1);
  const padValue = choice(o.padValue, `${op}: opts.padValue`, ['one', 'zero'] as const, 'one');
  const output = choice(o.output, `${op}: opts.output`, ['float', 'bits', 'int32'] as const, 'float');
  // The op runs where x lives; the transform's coefficients must live there too.
  checkSameDevice({ [`${op}: x`]: x, [`${op}: opts.scale`]: (o.scale ?? undefined) as Tensor | undefined, [`${op}: opts.bias`]: (o.bias ?? undefined) as Tensor | undefined });
  const scale = perChannel(o.scale, `${op}: opts.scale`, cout, { finite: true });
  const bias = perChannel(o.bias, `${op}: opts.bias`, cout, { finite: true });
  let clampLo: number | undefined;
  let clampHi: number | undefined;
  if (o.clamp !== undefined) {
    const c = o.clamp as unknown[];
    if (!Array.isArray(c) || c.length !== 2 || !c.every((v) => typeof v === 'number' && !Number.isNaN(v)) || !((c[0] as number) <= (c[1] as number)))
      fail('ERR_XNORM_ARGUMENT', `${op}: opts.clamp: expected [lo, hi] numbers with lo <= hi, received ${describe(o.clamp)}`);
    [clampLo, clampHi] = [Math.fround(c[0] as number), Math.fround(c[1] as number)];
  }
  if (output === 'int32' && (scale || bias || clampLo !== undefined))
    fail('ERR_XNORM_ARGUMENT', `${op}: opts: scale, bias and clamp apply to 'float' and 'bits' outputs, not 'int32'`);
  const oh = Math.floor((xShape[1] + 2 * padH - dilationH * (kh - 1) - 1) / strideH) + 1;
  const ow = Math.floor((xShape[2] + 2 * padW - dilationW * (kw - 1) - 1) / strideW) + 1;
  if (oh < 1 || ow < 1)
    fail('ERR_XNORM_SHAPE', `${op}: x: the padded input [${xShape[1] + 2 * padH}, ${xShape[2] + 2 * padW}] is smaller than the dilated kernel`);
  const outShape = linear ? [xShape[0], cout] : [xShape[0], oh, ow, cout];
  if (!Number.isSafeInteger(xShape[0] * oh * ow * cout))
    fail('ERR_XNORM_SHAPE', `${op}: the output [${outShape.join(', ')}] overflows 2^53 - 1 elements`);
  const outDType = output === 'bits' ? 'bit' : output === 'int32' ? 'int32' : 'float32';
  // Every output element is written by the kernels (and the reference), so it needs no zero fill.
  const { y, fresh } = outputFor(o.out, x.device, outShape, outDType, `${op}: opts.out`, [x, o.scale as Tensor | undefined, o.bias as Tensor | undefined]);
  const args = {
    device: nativeDevice(x), x: nativeRef(x, `${op}: x`), xShape,
    ...(plan ? { plan: planHandle(plan) } : { weights: weightsHandle(w) }),
    strideH, strideW, padH, padW, dilationH, dilationW, padValue, output, scale, bias, clampLo, clampHi, out: nativeRef(y),
  };
  return { y, fresh, args };
}

const binaryConv2dOp = defineOp((x: Tensor, w: BinaryWeights | MstPlan, opts?: BinaryConvOptions) => {
  const { y, fresh, args } = binaryConvArgs('binaryConv2d', x, w, opts, false);
  return { call: freeOnFailure(fresh, (async) => native().binaryConv2d(args, async)), finish: () => y };
});

/**
 * XNOR/popcount convolution of a 'bit' NHWC input with packed weights or an MstPlan (bit-identical
 * results), on the device of x (on a GPU an MstPlan runs level by level where that pays: see README,
 * "CUDA"). Output NHWC: float32 /
 * int32 [N, OH, OW, Cout], or 'bit' [N, OH, OW, Cout]. dot = K - 2·popcount(x XOR w).
 * @param x 'bit' [N, H, W, C] (from packBits)
 * @param w BinaryWeights or an MstPlan of them
 * @param opts `stride` (1), `padding` (0), `dilation` (1), `groups` (the weights'), `padValue` ('one'
 * default: padded taps are +1; 'zero'), `scale` and `bias` (float [Cout]), `clamp` ([lo, hi]), `output`
 * ('float' default, 'int32' or 'bits'), `out`
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_DTYPE (x not 'bit'), ERR_XNORM_SHAPE,
 * ERR_XNORM_CORRUPT_PLAN, ERR_XNORM_CUDA_UNAVAILABLE
 * @example
 * const x = tensor(new Float32Array(1 * 64 * 8 * 8).map(() => Math.random() - 0.5), [1, 64, 8, 8]);
 * const w = await packWeights(tensor(new Float32Array(32 * 64 * 3 * 3).map(() => Math.random() - 0.5), [32, 64, 3, 3]));
 * const y = await binaryConv2d(await packBits(x), w, { padding: 1 }); // float32 [1, 8, 8, 32]
 * const next = await binaryConv2d(await packBits(x), w, { padding: 1, output: 'bits' }); // 'bit'
 */
export const binaryConv2d = binaryConv2dOp.async;
/**
 * binaryConv2d run on the calling thread.
 * @param x 'bit' [N, H, W, C]
 * @param w BinaryWeights or an MstPlan of them
 * @param opts as binaryConv2d: `stride`, `padding`, `dilation`, `groups`, `padValue`, `scale`, `bias`,
 * `clamp`, `output`, `out`
 * @example
 * const x = packBitsSync(tensor(new Float32Array(1 * 32 * 6 * 6).map(() => Math.random() - 0.5), [1, 32, 6, 6]));
 * const w = packWeightsSync(tensor(new Float32Array(8 * 32 * 3 * 3).map(() => Math.random() - 0.5), [8, 32, 3, 3]));
 * const dots = binaryConv2dSync(x, w, { output: 'int32' }); // int32 [1, 4, 4, 8]
 */
export const binaryConv2dSync = binaryConv2dOp.sync;

const binaryLinearOp = defineOp(
  (x: Tensor, w: BinaryWeights | MstPlan, opts?: Pick<BinaryConvOptions, 'scale' | 'bias' | 'clamp' | 'output' | 'out'>) => {
    const { y, fresh, args } = binaryConvArgs('binaryLinear', x, w, opts, true);
    return { call: freeOnFailure(fresh, (async) => native().binaryConv2d(args, async)), finish: () => y };
  },
);

/**
 * Fully connected layer on 'bit' [N, K] inputs with [Cout, K] packed weights: output [N, Cout].
 * @param x 'bit' [N, K]
 * @param w weights packed from [Cout, K] (kh = kw = 1, groups = 1), or their MstPlan
 * @param opts `scale`, `bias`, `clamp`, `output` ('float' default), `out`, as binaryConv2d
 * @throws XnormError ERR_XNORM_SHAPE, ERR_XNORM_ARGUMENT, ERR_XNORM_DTYPE
 * @example
 * const x = await packBits(tensor(new Float32Array(4 * 256).map(() => Math.random() - 0.5), [4, 256]));
 * const w = await packWeights(tensor(new Float32Array(10 * 256).map(() => Math.random() - 0.5), [10, 256]));
 * const logits = await binaryLinear(x, w, { scale: tensor(new Float32Array(10).fill(0.01), [10]) }); // [4, 10]
 */
export const binaryLinear = binaryLinearOp.async;
/**
 * binaryLinear run on the calling thread.
 * @param x 'bit' [N, K]
 * @param w weights packed from [Cout, K], or their MstPlan
 * @param opts `scale`, `bias`, `clamp`, `output`, `out`, as binaryConv2d
 * @example
 * const x = packBitsSync(tensor(new Float32Array(2 * 64).map(() => Math.random() - 0.5), [2, 64]));
 * const w = packWeightsSync(tensor(new Float32Array(8 * 64).map(() => Math.random() - 0.5), [8, 64]));
 * const dots = binaryLinearSync(x, w, { output: 'int32' }); // int32 [2, 8]
 */
export const binaryLinearSync = binaryLinearOp.sync;

/**
 * The direct-loop reference of binaryConv2d (slow; the oracle the fast kernels are tested against); a
 * rank-2 x runs as binaryLinear. CPU only.
 * @param x 'bit' [N, H, W, C] (or [N, K]) on the CPU
 * @param w BinaryWeights or an MstPlan of them
 * @param opts as binaryConv2d
 * @throws XnormError ERR_XNORM_DEVICE (x not on the CPU), and as binaryConv2d
 * @example
 * const x = packBitsSync(tensor(new Float32Array(1 * 32 * 6 * 6).map(() => Math.random() - 0.5), [1, 32, 6, 6]));
 * const w = packWeightsSync(tensor(new Float32Array(8 * 32 * 3 * 3).map(() => Math.random() - 0.5), [8, 32, 3, 3]));
 * const expected = binaryConv2dReferenceSync(x, w, { padding: 1 }).float32Sync();
 * const actual = binaryConv2dSync(x, w, { padding: 1 }).float32Sync(); // the same values
 */
export function binaryConv2dReferenceSync(x: Tensor, w: BinaryWeights | MstPlan, opts?: BinaryConvOptions): Tensor {
  checkTensor(x, 'binaryConv2dReference: x', { dtypes: ['bit'], rank: [2, 4] });
  if (x.device !== 'cpu')
    fail('ERR_XNORM_DEVICE', `binaryConv2dReference: x: expected a CPU tensor, received one on ${x.device}`);
  const { y, args } = binaryConvArgs('binaryConv2dReference', x, w, opts, x.shape.length === 2);
  native().binaryConv2dReference(args);
  return y;
}

/**
 * Bit operations per second of an L1-resident XOR+popcount loop on all xnorm threads (for benchmarks).
 * Blocks the calling thread for about `seconds`.
 * @param seconds how long to measure: a number in (0, 10], default 0.2
 * @throws XnormError ERR_XNORM_ARGUMENT (seconds out of range)
 * @example
 * console.log(`${(popcountPeak(0.1) / 1e9).toFixed(0)} G bit-ops/s`);
 */
export function popcountPeak(seconds = 0.2): number {
  return native().popcountPeak({ seconds });
}

/**
 * The per-pixel kernel costs (seconds) 'auto' plans are built with, measured once per process and output
 * kind (about 50 ms, on first use): a dense channel per word of its weights, a reuse edge per differing
 * bit and its fixed part, and the bit rows a plan with edges builds, per input word and output channel.
 * @param opts `output`: 'int32' (default), 'float' (the same costs) or 'bits' (the costs of the tree
 *   'auto' tries for 'bits' output when the first one does not pay).
 * @example
 * const { densePerWord, reusePerBit, reusePerEdge, transposePerWord } = mstCalibration();
 */
export function mstCalibration(opts?: { output?: 'int32' | 'float' | 'bits' }): {
  densePerWord: number;
  reusePerBit: number;
  reusePerEdge: number;
  transposePerWord: number;
} {
  const o = options(opts, 'mstCalibration: opts', ['output']);
  const output = choice(o.output, 'mstCalibration: opts.output', ['int32', 'float', 'bits'] as const, 'int32');
  return native().mstCalibration({ output });
}
