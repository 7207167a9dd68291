// Binary (XNOR/popcount) convolution on bit-packed ±1 tensors, and MST channel reuse plans.
// Conventions: bit 1 = -1, bit 0 = +1 (sign(0) = +1); channels packed innermost (NHWC) in 32-bit words.
import { describe, fail } from './errors';
import { native } from './native';
import { defineOp } from './op';
import { DeviceBuffer, FLOAT_DTYPES, Tensor, allocateDevice, allocateUninitialized, checkSameDevice, checkTensor, freeOnFailure, packedWordsFor, shapeSize } from './tensor';
import type { Layout } from './bnstats';

function options(opts: unknown, name: string): Record<string, unknown> {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an options object, received ${describe(opts)}`);
  return opts as Record<string, unknown>;
}

function layoutOf(v: unknown, name: string): Layout {
  if (v !== 'nchw' && v !== 'nhwc') fail('ERR_XNORM_ARGUMENT', `${name}: expected 'nchw' or 'nhwc', received ${describe(v)}`);
  return v;
}

/** The values of a float tensor as float32 on the host (a device tensor is downloaded). */
function f32(t: Tensor, name: string): Float32Array {
  return t.dtype === 'float32' ? (t.hostData(name) as Float32Array) : t.float32Sync();
}

function positiveInt(v: unknown, name: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 2 ** 30)
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an integer >= ${min}, received ${describe(v)}`);
  return v;
}

function pair(v: unknown, name: string, dflt: number, min: number): [number, number] {
  if (v === undefined) return [dflt, dflt];
  if (typeof v === 'number') return [positiveInt(v, name, min), positiveInt(v, name, min)];
  if (Array.isArray(v) && v.length === 2) return [positiveInt(v[0], `${name}[0]`, min), positiveInt(v[1], `${name}[1]`, min)];
  return fail('ERR_XNORM_ARGUMENT', `${name}: expected a number or [h, w], received ${describe(v)}`);
}

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

export interface PackBitsOptions {
  /** Layout of the float input; default 'nchw'. The result is always channels-last. */
  layout?: Layout;
  /** bit = x < threshold (per channel [C], or one number); default 0, so sign(0) = +1. */
  threshold?: Tensor | number;
}

const packBitsOp = defineOp((x: Tensor, opts?: PackBitsOptions) => {
  const o = options(opts, 'packBits: opts');
  checkTensor(x, 'packBits: x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 2)
    fail('ERR_XNORM_SHAPE', `packBits: x: expected rank >= 2 ([N, C, ...]), received shape [${x.shape.join(', ')}]`);
  const layout = layoutOf(o.layout ?? 'nchw', 'packBits: opts.layout');
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
    thresholds = Float32Array.from(f32(t as Tensor, 'packBits: opts.threshold'));
  }
  const outShape = nhwcShape(x.shape, layout);
  if (x.device !== 'cpu') {
    const xb = x.deviceBuffer('packBits: x');
    const y = new Tensor(allocateDevice(xb.device, outShape, 'bit'), outShape, 'bit');
    const args = { device: xb.index, x: xb.handle, dtype: x.dtype, layout, n, c, s, thresholds, threshold, out: y.deviceBuffer().handle };
    return { call: freeOnFailure([y], (async) => native().cudaPackBits(args, async)), finish: () => y };
  }
  const out = allocateUninitialized(Uint32Array, n * s * packedWordsFor(c), 'packBits: output');
  const xs = f32(x, 'packBits: x');
  return {
    call: (async: boolean) => native().packBits({ x: xs, layout, n, c, s, thresholds, threshold, out }, async),
    finish: () => new Tensor(out, outShape, 'bit'),
  };
});

/** float (NCHW by default, or NHWC) -> 'bit' NHWC: bit 1 (-1) where x < threshold. */
export const packBits = packBitsOp.async;
export const packBitsSync = packBitsOp.sync;

const unpackBitsOp = defineOp((b: Tensor, opts?: { layout?: Layout }) => {
  const o = options(opts, 'unpackBits: opts');
  checkTensor(b, 'unpackBits: b', { dtypes: ['bit'] });
  if (b.shape.length < 2 || b.size === 0)
    fail('ERR_XNORM_SHAPE', `unpackBits: b: expected a non-empty [N, ..., C] tensor, received shape [${b.shape.join(', ')}]`);
  const layout = layoutOf(o.layout ?? 'nchw', 'unpackBits: opts.layout');
  const { n, c, s } = ncs(b.shape, 'nhwc');
  const r = b.shape.length;
  const outShape = layout === 'nhwc' || r === 2 ? b.shape.slice() : [b.shape[0], b.shape[r - 1], ...b.shape.slice(1, r - 1)];
  if (b.device !== 'cpu') {
    const bb = b.deviceBuffer('unpackBits: b');
    const y = new Tensor(allocateDevice(bb.device, outShape, 'float32'), outShape, 'float32');
    const args = { device: bb.index, b: bb.handle, layout, n, c, s, out: y.deviceBuffer().handle };
    return { call: freeOnFailure([y], (async) => native().cudaUnpackBits(args, async)), finish: () => y };
  }
  const out = allocateUninitialized(Float32Array, b.size, 'unpackBits: output');
  return {
    call: (async: boolean) => native().unpackBits({ b: b.storage('unpackBits: b'), layout, n, c, s, out }, async),
    finish: () => new Tensor(out, outShape, 'float32'),
  };
});

/** 'bit' NHWC -> float32 ±1, in NCHW (default) or NHWC. */
export const unpackBits = unpackBitsOp.async;
export const unpackBitsSync = unpackBitsOp.sync;

// ---------------------------------------------------------------------------------------------------
// Weights and plans

interface Execution {
  panels: Uint32Array;
  npanels: number;
  edges: Uint32Array;
  nedges: number;
  depth: number;
  totalDistance: number;
  bitsProcessed: number;
}

function execution(w: BinaryWeights, parent: Int32Array): Execution {
  return native().binaryExecution({ ...w.nativeArgs(), parent }) as Execution;
}

/** Sign-packed weights: canonical words [Cout][kh][kw][ceil(Cin_g/32)] plus the kernels' panel layout. */
export class BinaryWeights {
  /** [Cout, Cin/groups, kh, kw] */
  readonly shape: readonly number[];
  readonly groups: number;
  /** Canonical packed words, [Cout][kh][kw][ceil(Cin_g / 32)]; tail bits are 0. */
  readonly words: Uint32Array;
  /** @internal */
  readonly exec: Execution;
  /** The words on each GPU they were used on: uploaded once, freed by dispose() (or by the GC with this object). */
  #onDevice = new Map<string, Tensor>();

  /** @internal Use packWeights(). */
  constructor(words: Uint32Array, shape: readonly number[], groups: number) {
    this.shape = Object.freeze(shape.slice());
    this.groups = groups;
    this.words = words;
    this.exec = execution(this, new Int32Array(shape[0]).fill(-1));
  }

  /** Words per output channel (kh * kw * ceil(Cin_g / 32)). */
  get rowWords(): number {
    return this.shape[2] * this.shape[3] * packedWordsFor(this.shape[1]);
  }

  /** @internal The packed words on `device`, uploaded on first use and then reused. */
  deviceWords(device: `cuda:${number}`): DeviceBuffer {
    let t = this.#onDevice.get(device);
    if (!t) {
      const [cout, cinG, kh, kw] = this.shape;
      t = new Tensor(this.words, [cout, kh, kw, cinG], 'bit').toSync(device);
      this.#onDevice.set(device, t);
    }
    return t.deviceBuffer('weights');
  }

  /**
   * Frees the device copies of the weights now (ops in flight keep theirs until they end); a later op on
   * a GPU uploads them again. The CPU words stay usable. Idempotent.
   */
  dispose(): void {
    for (const t of this.#onDevice.values()) t.dispose();
    this.#onDevice.clear();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  nativeArgs(): { words: Uint32Array; wshape: readonly number[]; groups: number } {
    return { words: this.words, wshape: this.shape, groups: this.groups };
  }
}

/** float weights [Cout, Cin/groups, kh, kw] (or [Cout, K] for binaryLinear) -> signs, packed. */
export function packWeights(w: Tensor, opts?: { groups?: number }): BinaryWeights {
  const o = options(opts, 'packWeights: opts');
  checkTensor(w, 'packWeights: w', { dtypes: FLOAT_DTYPES, rank: [2, 4] });
  const groups = positiveInt(o.groups ?? 1, 'packWeights: opts.groups');
  const shape = w.shape.length === 2 ? [w.shape[0], w.shape[1], 1, 1] : w.shape.slice();
  if (shape.some((d) => d < 1))
    fail('ERR_XNORM_SHAPE', `packWeights: w: expected positive sizes, received shape [${w.shape.join(', ')}]`);
  if (shape[0] % groups !== 0)
    fail('ERR_XNORM_SHAPE', `packWeights: w: Cout = ${shape[0]} is not divisible by groups = ${groups}`);
  const words = new Uint32Array(shape[0] * shape[2] * shape[3] * packedWordsFor(shape[1]));
  native().packWeights({ w: f32(w, 'packWeights: w'), wshape: shape, groups, out: words });
  return new BinaryWeights(words, shape, groups);
}

export type Reuse = 'auto' | 'always' | 'never';

function checkWeights(w: unknown, name: string): BinaryWeights {
  if (!(w instanceof BinaryWeights))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected BinaryWeights (from packWeights), received ${describe(w)}`);
  return w;
}

/** A channel-reuse order over a layer's output channels (see mstPlan). */
export class MstPlan {
  readonly weights: BinaryWeights;
  /** -1 = computed from scratch (a root); otherwise the channel this one is computed from. */
  readonly parent: Int32Array;
  /** Channels grouped by depth; level 0 are the roots; each level depends only on earlier ones. */
  readonly levels: Int32Array[];
  readonly depth: number;
  /** Sum of Hamming distances over the reuse edges. */
  readonly totalDistance: number;
  /** 1 - (bits processed with reuse) / (Cout * K). */
  readonly opsReduction: number;
  readonly reuse: Reuse;
  readonly maxDepth: number;
  /** @internal */
  readonly exec: Execution;
  /** The edge records on each GPU they were used on: uploaded once, freed by dispose() (or by the GC with this object). */
  #edgesOnDevice = new Map<string, Tensor>();
  /** Per GPU, for 'auto' plans: whether the first call there found the edges faster than the dense weights. */
  #edgesPayOnDevice = new Map<string, boolean>();

  /** @internal Use mstPlan() or MstPlan.deserialize(). */
  constructor(weights: BinaryWeights, parent: Int32Array, reuse: Reuse, maxDepth: number) {
    this.weights = weights;
    this.parent = parent;
    this.reuse = reuse;
    this.maxDepth = maxDepth;
    this.exec = execution(weights, parent);
    this.depth = this.exec.depth;
    this.totalDistance = this.exec.totalDistance;
    const [cout, cinG, kh, kw] = weights.shape;
    this.opsReduction = 1 - this.exec.bitsProcessed / (cout * cinG * kh * kw);
    const depthOf = new Int32Array(cout);
    for (let c = 0; c < cout; c++) {
      let d = 0;
      for (let p = parent[c]; p >= 0; p = parent[p]) d++;
      depthOf[c] = d;
    }
    this.levels = Array.from({ length: this.depth + 1 }, (_, d) => Int32Array.from(Array.from(depthOf.keys()).filter((c) => depthOf[c] === d)));
  }

  /**
   * @internal How a call on `device` runs: 'dense' (no edges, or an 'auto' plan whose edges did not pay
   * there), 'plan' (the edges, level by level), or 'trial' (an 'auto' plan's first call on the device:
   * both, timed; see recordTrial).
   */
  gpuMode(device: string): 'dense' | 'plan' | 'trial' {
    if (this.exec.nedges === 0) return 'dense';
    if (this.reuse !== 'auto') return 'plan';
    const pays = this.#edgesPayOnDevice.get(device);
    return pays === undefined ? 'trial' : pays ? 'plan' : 'dense';
  }

  /**
   * @internal The outcome of a trial on `device`: like the CPU's trial in mstPlan, the edges are kept
   * only when the plan ran at least 5 % faster than the dense weights.
   */
  recordTrial(device: string, times: { planMs: number; denseMs: number }): void {
    this.#edgesPayOnDevice.set(device, times.planMs < 0.95 * times.denseMs);
  }

  /** @internal The edge records on `device`, uploaded on first use and then reused. */
  deviceEdges(device: `cuda:${number}`): DeviceBuffer {
    let t = this.#edgesOnDevice.get(device);
    if (!t) {
      const e = this.exec.edges;
      t = new Tensor(new Int32Array(e.buffer, e.byteOffset, e.length), [e.length], 'int32').toSync(device);
      this.#edgesOnDevice.set(device, t);
    }
    return t.deviceBuffer('plan edges');
  }

  /**
   * Frees the plan's device copies of its edge records now (ops in flight keep theirs until they end); a
   * later op on a GPU uploads them again. The weights' own device copies belong to the BinaryWeights
   * (free them with its dispose()). Idempotent.
   */
  dispose(): void {
    for (const t of this.#edgesOnDevice.values()) t.dispose();
    this.#edgesOnDevice.clear();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Versioned, checksummed bytes (the tree and a hash of the weights it was made for). */
  serialize(): Uint8Array {
    const out = new Uint8Array(native().mstSerializedSize({ ...this.weights.nativeArgs() }) as number);
    native().mstSerialize({ ...this.weights.nativeArgs(), parent: this.parent, reuse: this.reuse, maxDepth: this.maxDepth, out });
    return out;
  }

  /** Rebuilds a plan for `w`; truncated, altered or mismatched bytes throw ERR_XNORM_CORRUPT_PLAN. */
  static deserialize(bytes: Uint8Array, w: BinaryWeights): MstPlan {
    checkWeights(w, 'MstPlan.deserialize: w');
    if (!(bytes instanceof Uint8Array))
      fail('ERR_XNORM_CORRUPT_PLAN', `MstPlan.deserialize: bytes: expected a Uint8Array, received ${describe(bytes)}`);
    const parent = new Int32Array(w.shape[0]);
    const r = native().mstDeserialize({ ...w.nativeArgs(), bytes, parent }) as { reuse: Reuse; maxDepth: number };
    return new MstPlan(w, parent, r.reuse, r.maxDepth);
  }
}

/**
 * Orders a layer's output channels so close ones are computed from each other (Prim's algorithm per group
 * with a virtual root). reuse 'auto' (default) keeps only edges a cost model calibrated on this CPU says
 * are cheaper than dense; 'always' reuses wherever the Hamming distance is below K; 'never' is dense.
 */
export function mstPlan(w: BinaryWeights, opts?: { maxDepth?: number; reuse?: Reuse }): MstPlan {
  const o = options(opts, 'mstPlan: opts');
  checkWeights(w, 'mstPlan: w');
  const maxDepth = positiveInt(o.maxDepth ?? 8, 'mstPlan: opts.maxDepth');
  if (maxDepth > 65535) fail('ERR_XNORM_ARGUMENT', `mstPlan: opts.maxDepth: expected at most 65535, received ${maxDepth}`);
  const reuse = o.reuse ?? 'auto';
  if (reuse !== 'auto' && reuse !== 'always' && reuse !== 'never')
    fail('ERR_XNORM_ARGUMENT', `mstPlan: opts.reuse: expected 'auto', 'always' or 'never', received ${describe(reuse)}`);
  const parent = new Int32Array(w.shape[0]);
  native().mstPlan({ ...w.nativeArgs(), reuse, maxDepth, parent });
  return new MstPlan(w, parent, reuse, maxDepth);
}

// ---------------------------------------------------------------------------------------------------
// binaryConv2d / binaryLinear

export type BinaryOutput = 'float' | 'bits' | 'int32';

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
}

function perChannel(t: unknown, name: string, cout: number): Float32Array | undefined {
  if (t === undefined || t === null) return undefined;
  checkTensor(t, name, { dtypes: FLOAT_DTYPES });
  const v = Float32Array.from(f32(t as Tensor, name));
  if (v.length !== cout) fail('ERR_XNORM_SHAPE', `${name}: expected shape [${cout}], received [${(t as Tensor).shape.join(', ')}]`);
  v.forEach((x, i) => {
    if (!Number.isFinite(x)) fail('ERR_XNORM_ARGUMENT', `${name}[${i}]: expected a finite number, received ${x}`);
  });
  return v;
}

function prepareConv(op: string, x: Tensor, wp: BinaryWeights | MstPlan, opts: BinaryConvOptions | undefined, linear: boolean) {
  const o = options(opts, `${op}: opts`);
  const plan = wp instanceof MstPlan ? wp : undefined;
  const w = plan ? plan.weights : checkWeights(wp, `${op}: w`);
  checkTensor(x, `${op}: x`, { dtypes: ['bit'], rank: linear ? 2 : 4 });
  const [cout, cinG, kh, kw] = w.shape;
  const xshape = linear ? [x.shape[0], 1, 1, x.shape[1]] : x.shape.slice();
  if (linear && (kh !== 1 || kw !== 1 || w.groups !== 1))
    fail('ERR_XNORM_SHAPE', `${op}: w: expected [Cout, K] weights without groups, received [${w.shape.join(', ')}], groups ${w.groups}`);
  if (o.groups !== undefined && o.groups !== w.groups)
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.groups: the weights were packed with groups = ${w.groups}, received ${describe(o.groups)}`);
  if (xshape[3] !== cinG * w.groups)
    fail('ERR_XNORM_SHAPE', `${op}: x: expected ${cinG * w.groups} channels (last axis), received shape [${x.shape.join(', ')}]`);
  if (xshape.some((d) => d < 1)) fail('ERR_XNORM_SHAPE', `${op}: x: expected positive sizes, received [${x.shape.join(', ')}]`);
  const [strideH, strideW] = pair(o.stride, `${op}: opts.stride`, 1, 1);
  const [padH, padW] = pair(o.padding, `${op}: opts.padding`, 0, 0);
  const [dilationH, dilationW] = pair(o.dilation, `${op}: opts.dilation`, 1, 1);
  const padValue = o.padValue ?? 'one';
  if (padValue !== 'one' && padValue !== 'zero')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.padValue: expected 'one' or 'zero', received ${describe(padValue)}`);
  const output = o.output ?? 'float';
  if (output !== 'float' && output !== 'bits' && output !== 'int32')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.output: expected 'float', 'bits' or 'int32', received ${describe(output)}`);
  for (const k of ['scale', 'bias'] as const)
    if (o[k] !== undefined && o[k] !== null) checkTensor(o[k], `${op}: opts.${k}`, { dtypes: FLOAT_DTYPES });
  // The op runs where x lives; the transform's coefficients must live there too.
  checkSameDevice({ [`${op}: x`]: x, [`${op}: opts.scale`]: (o.scale ?? undefined) as Tensor | undefined, [`${op}: opts.bias`]: (o.bias ?? undefined) as Tensor | undefined });
  const scale = perChannel(o.scale, `${op}: opts.scale`, cout);
  const bias = perChannel(o.bias, `${op}: opts.bias`, cout);
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
  const oh = Math.floor((xshape[1] + 2 * padH - dilationH * (kh - 1) - 1) / strideH) + 1;
  const ow = Math.floor((xshape[2] + 2 * padW - dilationW * (kw - 1) - 1) / strideW) + 1;
  if (oh < 1 || ow < 1)
    fail('ERR_XNORM_SHAPE', `${op}: x: the padded input [${xshape[1] + 2 * padH}, ${xshape[2] + 2 * padW}] is smaller than the dilated kernel`);
  const outShape = linear ? [xshape[0], cout] : [xshape[0], oh, ow, cout];
  const outDType = output === 'bits' ? 'bit' : output === 'int32' ? 'int32' : 'float32';

  if (x.device !== 'cpu') {
    const xb = x.deviceBuffer(`${op}: x`);
    const weights = w.deviceWords(xb.device);
    // An MstPlan runs its edges level by level ('always'; 'auto' where a first-call trial on this device
    // found them faster), otherwise its dense weights: the results are bit-identical either way.
    const mode = plan ? plan.gpuMode(xb.device) : 'dense';
    const mst = plan && mode !== 'dense'
      ? {
          mst: true, trial: mode === 'trial', panels: plan.exec.panels, npanels: plan.exec.npanels, edges: plan.exec.edges,
          nedges: plan.exec.nedges, edgeWords: plan.exec.edges.length, edgesDevice: plan.deviceEdges(xb.device).handle,
        }
      : {};
    const y = new Tensor(allocateDevice(xb.device, outShape, outDType), outShape, outDType);
    const args = {
      device: xb.index, x: xb.handle, weights: weights.handle, out: y.deviceBuffer().handle,
      n: xshape[0], h: xshape[1], w: xshape[2], c: xshape[3], cout, cinG, kh, kw, groups: w.groups,
      sh: strideH, sw: strideW, ph: padH, pw: padW, dh: dilationH, dw: dilationW, padZero: padValue === 'zero', output,
      clamp: clampLo !== undefined, lo: clampLo, hi: clampHi, scale, bias, ...mst,
    };
    const call = freeOnFailure([y], (async) => native().cudaBinaryConv2d(args, async));
    const result = (times?: unknown) => {
      if (plan && mode === 'trial') plan.recordTrial(xb.device, times as { planMs: number; denseMs: number });
      return y;
    };
    return { call, result };
  }

  const pixels = xshape[0] * oh * ow;
  // Every output element is written by the kernels (and the reference), so it needs no zero fill.
  const what = `${op}: output`;
  const out =
    output === 'bits'
      ? allocateUninitialized(Uint32Array, pixels * packedWordsFor(cout), what)
      : output === 'int32'
        ? allocateUninitialized(Int32Array, pixels * cout, what)
        : allocateUninitialized(Float32Array, pixels * cout, what);
  const exec = (plan ?? w).exec;
  const args = {
    x: x.storage(`${op}: x`), xshape, ...w.nativeArgs(),
    panels: exec.panels, npanels: exec.npanels, edges: exec.edges, nedges: exec.nedges, edgeWords: exec.edges.length,
    strideH, strideW, padH, padW, dilationH, dilationW, padValue, output, scale, bias, clampLo, clampHi, out,
  };
  return {
    call: (async: boolean) => native().binaryConv2d(args, async),
    result: () => new Tensor(out, outShape, outDType),
    args,
  };
}

const binaryConv2dOp = defineOp((x: Tensor, w: BinaryWeights | MstPlan, opts?: BinaryConvOptions) => {
  const { call, result } = prepareConv('binaryConv2d', x, w, opts, false);
  return { call, finish: result };
});

/**
 * XNOR/popcount convolution of a 'bit' NHWC input with packed weights or an MstPlan (bit-identical
 * results), on the device of x (on a GPU an MstPlan runs level by level where that pays: see README,
 * "CUDA"). Output NHWC: float32 /
 * int32 [N, OH, OW, Cout], or 'bit' [N, OH, OW, Cout].
 */
export const binaryConv2d = binaryConv2dOp.async;
export const binaryConv2dSync = binaryConv2dOp.sync;

const binaryLinearOp = defineOp(
  (x: Tensor, w: BinaryWeights | MstPlan, opts?: Pick<BinaryConvOptions, 'scale' | 'bias' | 'clamp' | 'output'>) => {
    const { call, result } = prepareConv('binaryLinear', x, w, opts, true);
    return { call, finish: result };
  },
);

/** Fully connected layer on 'bit' [N, K] inputs with [Cout, K] packed weights: output [N, Cout]. */
export const binaryLinear = binaryLinearOp.async;
export const binaryLinearSync = binaryLinearOp.sync;

/** The direct-loop reference of binaryConv2d (slow; the oracle the fast kernels are tested against). */
export function binaryConv2dReferenceSync(x: Tensor, w: BinaryWeights | MstPlan, opts?: BinaryConvOptions): Tensor {
  if (x instanceof Tensor && x.device !== 'cpu')
    fail('ERR_XNORM_DEVICE', `binaryConv2dReference: x: expected a CPU tensor, received one on ${x.device}`);
  const { args, result } = prepareConv('binaryConv2dReference', x, w, opts, x.shape.length === 2);
  native().binaryConv2dReference(args as object);
  return result();
}

/** Bit operations per second of an L1-resident XOR+popcount loop on all xnorm threads. */
export function popcountPeak(seconds = 0.2): number {
  return native().popcountPeak({ seconds }) as number;
}

/** The per-pixel kernel costs (seconds) 'auto' plans are built with, measured once per process. */
export function mstCalibration(): { densePerWord: number; reusePerWord: number; reusePerEdge: number; transposePerWord: number } {
  return native().mstCalibration({}) as ReturnType<typeof mstCalibration>;
}
