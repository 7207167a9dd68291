// Convolution and fused Conv + BatchNorm: Tune (fold per call, one conv), Eval (conv then BN) and
// Deploy (fold once) modes, and the Tune-mode backward. All heavy work is native; this file validates,
// converts parameters to float32 (activations keep their dtype) and allocates the outputs. Ops run where x
// lives: on a GPU, activations, weights, saved state and gradients stay in device memory, and the small
// per-channel parameters (bias, BN statistics, gamma, beta) are read to the host for the checks and the fold.
import { describe, fail } from './errors';
import { native } from './native';
import { defineOp } from './op';
import { FLOAT_DTYPES, Tensor, TypedArray, allocateDevice, checkSameDevice, checkTensor, freeOnFailure, storageBytes, storageCtor } from './tensor';
import type { FloatDType } from './tensor';
import type { Layout } from './bnstats';

export interface ConvBnParams {
  /** [Cout, Cin/groups, kh, kw] */
  weight: Tensor;
  /** [Cout] */
  bias?: Tensor;
  bn: { mean: Tensor; var: Tensor; gamma?: Tensor; beta?: Tensor; eps?: number };
}

export type ConvBnMode = 'tune' | 'eval' | 'deploy';

export interface ConvOpts {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
  /** Default 'tune'. */
  mode?: ConvBnMode;
  activation?: 'relu' | null;
  /** Default 'nchw'. */
  layout?: Layout;
}

export interface ConvBnNeeds {
  x?: boolean;
  weight?: boolean;
  bias?: boolean;
  gamma?: boolean;
  beta?: boolean;
}

/** Gradients; parameter gradients are float32, dx has x's dtype and layout. */
export interface ConvBnGrads {
  dx?: Tensor;
  dWeight?: Tensor;
  dBias?: Tensor;
  dGamma?: Tensor;
  dBeta?: Tensor;
}

/** The geometry fields every native conv entry point takes. */
interface Geometry {
  dtype: FloatDType;
  xShape: number[];
  wShape: number[];
  strideH: number;
  strideW: number;
  padH: number;
  padW: number;
  dilationH: number;
  dilationW: number;
  groups: number;
  layout: Layout;
}

interface Conv {
  geo: Geometry;
  cout: number;
  yShape: number[];
  ySize: number;
  relu: boolean;
}

interface BnArrays {
  mean: Float32Array;
  var: Float32Array;
  gamma?: Float32Array;
  beta?: Float32Array;
  eps: number;
}

function options(opts: unknown, name: string): Record<string, unknown> {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an options object, received ${describe(opts)}`);
  return opts as Record<string, unknown>;
}

function pair(v: unknown, name: string, min: number, dflt: number): [number, number] {
  const p = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v;
  const ok = (d: unknown) => typeof d === 'number' && Number.isSafeInteger(d) && d >= min && d <= 2 ** 31;
  if (!Array.isArray(p) || p.length !== 2 || !ok(p[0]) || !ok(p[1]))
    fail(
      'ERR_XNORM_ARGUMENT',
      `${name}: expected an integer >= ${min} or a pair [h, w] of them, received ${describe(v)}`,
    );
  return [p[0], p[1]];
}

/** The values of a tensor as float32 on the host (a device tensor is downloaded). */
function float32Of(t: Tensor, name: string): Float32Array {
  const s = t.hostData(name);
  return t.dtype === 'float32' ? (s as Float32Array) : t.float32Sync();
}

/** Validates x, the weight and the options; returns the native geometry and the output shape. */
function convGeometry(x: unknown, weight: unknown, o: Record<string, unknown>, op: string): Conv {
  const xt = checkTensor(x, `${op}: x`, { dtypes: FLOAT_DTYPES, rank: 4 });
  const wt = checkTensor(weight, `${op}: weight`, { dtypes: FLOAT_DTYPES, rank: 4 });
  checkSameDevice({ x: xt, weight: wt });
  const layout = (o.layout ?? 'nchw') as Layout;
  if (layout !== 'nchw' && layout !== 'nhwc')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.layout: expected 'nchw' or 'nhwc', received ${describe(o.layout)}`);
  const [sh, sw] = pair(o.stride, `${op}: opts.stride`, 1, 1);
  const [ph, pw] = pair(o.padding, `${op}: opts.padding`, 0, 0);
  const [dh, dw] = pair(o.dilation, `${op}: opts.dilation`, 1, 1);
  const groups = o.groups ?? 1;
  if (typeof groups !== 'number' || !Number.isSafeInteger(groups) || groups < 1)
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.groups: expected an integer >= 1, received ${describe(o.groups)}`);
  const activation = o.activation ?? null;
  if (activation !== null && activation !== 'relu')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.activation: expected 'relu' or null, received ${describe(activation)}`);
  const xs = xt.shape;
  const [n, c, h, w] = layout === 'nchw' ? [xs[0], xs[1], xs[2], xs[3]] : [xs[0], xs[3], xs[1], xs[2]];
  const [cout, cinG, kh, kw] = wt.shape;
  const shape = (s: readonly number[]) => `[${s.join(', ')}]`;
  if (c < 1 || h < 1 || w < 1) fail('ERR_XNORM_SHAPE', `${op}: x: expected C, H, W >= 1, received ${shape(xs)}`);
  if (cout < 1 || cinG < 1 || kh < 1 || kw < 1)
    fail('ERR_XNORM_SHAPE', `${op}: weight: expected all dimensions >= 1, received ${shape(wt.shape)}`);
  if (c % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${op}: x: channel count ${c} is not divisible by groups = ${groups}`);
  if (cout % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${op}: weight: Cout = ${cout} is not divisible by groups = ${groups}`);
  if (cinG !== c / groups)
    fail('ERR_XNORM_SHAPE', `${op}: weight: expected dimension 1 = Cin/groups = ${c / groups}, received ${shape(wt.shape)}`);
  const eh = (kh - 1) * dh + 1, ew = (kw - 1) * dw + 1;
  if (eh > h + 2 * ph || ew > w + 2 * pw)
    fail(
      'ERR_XNORM_SHAPE',
      `${op}: weight: the dilated kernel (${eh}x${ew}) is larger than the padded input (${h + 2 * ph}x${w + 2 * pw})`,
    );
  const oh = Math.floor((h + 2 * ph - eh) / sh) + 1, ow = Math.floor((w + 2 * pw - ew) / sw) + 1;
  const yShape = layout === 'nchw' ? [n, cout, oh, ow] : [n, oh, ow, cout];
  const ySize = yShape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(ySize) || !Number.isSafeInteger(c * kh * kw * oh * ow))
    fail('ERR_XNORM_SHAPE', `${op}: the output ${shape(yShape)} or its im2col columns overflow 2^53 - 1 elements`);
  return {
    geo: {
      dtype: xt.dtype as FloatDType,
      xShape: xs.slice(),
      wShape: wt.shape.slice(),
      strideH: sh, strideW: sw, padH: ph, padW: pw, dilationH: dh, dilationW: dw,
      groups, layout,
    },
    cout,
    yShape,
    ySize,
    relu: activation === 'relu',
  };
}

function perChannel(t: unknown, name: string, cout: number): Float32Array | undefined {
  if (t === undefined || t === null) return undefined;
  const tt = checkTensor(t, name, { dtypes: FLOAT_DTYPES });
  if (tt.size !== cout || tt.shape.length !== 1)
    fail('ERR_XNORM_SHAPE', `${name}: expected shape [${cout}], received [${tt.shape.join(', ')}]`);
  return float32Of(tt, name);
}

function readParams(p: unknown, op: string): { weight: Tensor; bias?: Tensor; bn: ConvBnParams['bn'] } {
  const o = p as ConvBnParams;
  if (!o || typeof o !== 'object')
    fail('ERR_XNORM_ARGUMENT', `${op}: p: expected {weight, bias?, bn: {mean, var, gamma?, beta?, eps?}}, received ${describe(p)}`);
  if (!o.bn || typeof o.bn !== 'object')
    fail('ERR_XNORM_ARGUMENT', `${op}: p.bn: expected {mean, var, gamma?, beta?, eps?}, received ${describe(o.bn)}`);
  return o;
}

function bnArrays(bn: ConvBnParams['bn'], cout: number, op: string): BnArrays {
  const mean = perChannel(bn.mean, `${op}: p.bn.mean`, cout);
  const v = perChannel(bn.var, `${op}: p.bn.var`, cout);
  if (!mean) return fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.mean: expected a Tensor, received ${describe(bn.mean)}`);
  if (!v) return fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.var: expected a Tensor, received ${describe(bn.var)}`);
  const eps = bn.eps ?? 1e-5;
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0)
    fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.eps: expected a finite number >= 0, received ${describe(bn.eps)}`);
  for (let i = 0; i < cout; i++)
    if (!(v[i] + eps > 0))
      fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.var[${i}]: expected var + eps > 0, received var ${v[i]}, eps ${eps}`);
  return {
    mean,
    var: v,
    gamma: perChannel(bn.gamma, `${op}: p.bn.gamma`, cout),
    beta: perChannel(bn.beta, `${op}: p.bn.beta`, cout),
    eps,
  };
}

function nativeBn(bn: BnArrays) {
  return { mean: bn.mean, var: bn.var, gamma: bn.gamma, beta: bn.beta, eps: bn.eps };
}

/** What Tune (or Eval) forward keeps for backward; never the conv output in Tune mode. */
interface SavedState {
  mode: 'tune' | 'eval';
  conv: Conv;
  /** CPU: x and the float32 weight (absent on a GPU, where `cuda` holds the state) */
  x?: TypedArray;
  weight?: Float32Array;
  bias?: Float32Array;
  bn: BnArrays;
  /** tune: s = gamma / sqrt(var + eps) per output channel */
  s?: Float32Array;
  /** tune with ReLU: bit i = (y_i > 0), in NCHW element order */
  mask?: Uint32Array;
  /** eval: the conv output before BN */
  z?: TypedArray;
  /** eval with ReLU: the layer output */
  y?: TypedArray;
  /** GPU: the same state in device memory; x, weight and y are the caller's tensors, s, mask and z are owned */
  cuda?: CudaSaved;
}

interface CudaSaved {
  x: Tensor;
  weight: Tensor;
  s?: Tensor;
  /** tune with ReLU: bit i%32 of word i/32 = (y_i > 0), i in y's storage order */
  mask?: Tensor;
  z?: Tensor;
  y?: Tensor;
}

/** Bytes of device memory a saved tensor holds (0 once disposed). */
function deviceBytes(t: Tensor | undefined): number {
  return t && !t.disposed ? storageBytes(t.shape, t.dtype) : 0;
}

const liveSaved = new WeakMap<ConvBnSaved, SavedState | null>();

/** The state Tune-mode (or Eval-mode) forward keeps for convBnBackward. Disposable. */
export class ConvBnSaved {
  /** @internal */
  constructor(state: SavedState) {
    liveSaved.set(this, state);
  }

  /** Bytes of activation state held: x and s (+ the 1-bit ReLU mask) in Tune mode; x, z (+ y) in Eval mode. */
  get bytes(): number {
    const st = liveSaved.get(this);
    if (!st) return 0;
    const c = st.cuda;
    if (c) return [c.x, c.s, c.mask, c.z, c.y].reduce((sum, t) => sum + deviceBytes(t), 0);
    return [st.x, st.s, st.mask, st.z, st.y].reduce((sum, a) => sum + (a ? a.byteLength : 0), 0);
  }

  get mode(): 'tune' | 'eval' {
    return state(this, 'ConvBnSaved.mode').mode;
  }

  get disposed(): boolean {
    return !liveSaved.get(this);
  }

  /** Drops the saved tensors now (device memory it owns is freed at once). Idempotent. */
  dispose(): void {
    const c = liveSaved.get(this)?.cuda;
    if (c) for (const t of [c.s, c.mask, c.z]) t?.dispose();
    if (liveSaved.has(this)) liveSaved.set(this, null);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function state(saved: unknown, name: string): SavedState {
  if (!(saved instanceof ConvBnSaved) || !liveSaved.has(saved))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected a ConvBnSaved from convBn(..., { saveForBackward: true }), received ${describe(saved)}`);
  const st = liveSaved.get(saved);
  if (!st) return fail('ERR_XNORM_DISPOSED', `${name}: the ConvBnSaved was disposed`);
  return st;
}

function modeOf(v: unknown, op: string): ConvBnMode {
  const mode = v ?? 'tune';
  if (mode !== 'tune' && mode !== 'eval' && mode !== 'deploy')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.mode: expected 'tune', 'eval' or 'deploy', received ${describe(v)}`);
  return mode;
}

function flag(v: unknown, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail('ERR_XNORM_ARGUMENT', `${name}: expected a boolean, received ${describe(v)}`);
  return v;
}

function foldArrays(weight: Float32Array, wShape: number[], bias: Float32Array | undefined, bn: BnArrays) {
  const wOut = new Float32Array(weight.length), bOut = new Float32Array(wShape[0]);
  native().convBnFold({ weight, wShape, bias, ...nativeBn(bn), wOut, bOut });
  return { wOut, bOut };
}

const convBnOp = defineOp((x: Tensor, p: ConvBnParams, opts?: ConvOpts & { saveForBackward?: boolean }) => {
  const op = 'convBn';
  const o = options(opts, `${op}: opts`);
  const mode = modeOf(o.mode, op);
  const save = flag(o.saveForBackward, `${op}: opts.saveForBackward`, false);
  const params = readParams(p, op);
  const conv = convGeometry(x, params.weight, o, op);
  if (save && mode === 'deploy')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.saveForBackward: deploy mode is inference only; use mode 'tune' to train`);
  checkSameDevice({
    x, weight: params.weight, bias: params.bias, 'p.bn.mean': params.bn.mean, 'p.bn.var': params.bn.var,
    'p.bn.gamma': params.bn.gamma, 'p.bn.beta': params.bn.beta,
  });
  const bias = perChannel(params.bias, `${op}: p.bias`, conv.cout);
  const bn = bnArrays(params.bn, conv.cout, op);
  if (x.device !== 'cpu') return cudaConvBnForward(x, params.weight, conv, mode, bias, bn, save);
  const weight = float32Of(params.weight, `${op}: p.weight`);
  const xs = x.storage(`${op}: x`);
  const Y = storageCtor(conv.geo.dtype);
  const y = new Y(conv.ySize);
  const relu = conv.relu;
  let call: (async: boolean) => unknown;
  let st: SavedState | undefined;
  if (mode === 'deploy') {
    const { wOut, bOut } = foldArrays(weight, conv.geo.wShape, bias, bn);
    call = (async) => native().conv2d({ ...conv.geo, x: xs, weight: wOut, bias: bOut, y, relu }, async);
  } else {
    st = save ? { mode, conv, x: xs, weight, bias, bn } : undefined;
    if (st && mode === 'tune') {
      st.s = new Float32Array(conv.cout);
      if (relu) st.mask = new Uint32Array(Math.ceil(conv.ySize / 32));
    }
    if (st && mode === 'eval') {
      st.z = new Y(conv.ySize);
      if (relu) st.y = y;
    }
    const args = { ...conv.geo, mode, x: xs, weight, bias, ...nativeBn(bn), y, relu, s: st?.s, mask: st?.mask, z: st?.z };
    call = (async) => native().convBnForward(args, async);
  }
  return {
    call,
    finish: (): { y: Tensor; saved?: ConvBnSaved } => {
      const out = new Tensor(y, conv.yShape, conv.geo.dtype);
      return st ? { y: out, saved: new ConvBnSaved(st) } : { y: out };
    },
  };
});

/** The geometry and device fields of the native CUDA conv entry points. */
function cudaConvArgs(x: Tensor, weight: Tensor, conv: Conv) {
  const xb = x.deviceBuffer('x');
  return {
    ...conv.geo, device: xb.index, wDtype: weight.dtype, relu: conv.relu,
    x: xb.handle, weight: weight.deviceBuffer('weight').handle,
  };
}

/** convBn on a GPU: Deploy runs as Tune without saved state (the same fold, formed on the device). */
function cudaConvBnForward(x: Tensor, weight: Tensor, conv: Conv, mode: ConvBnMode, bias: Float32Array | undefined,
                           bn: BnArrays, save: boolean) {
  const dev = x.deviceBuffer('convBn: x').device;
  const y = new Tensor(allocateDevice(dev, conv.yShape, conv.geo.dtype), conv.yShape, conv.geo.dtype);
  const tune = mode !== 'eval';
  let c: CudaSaved | undefined;
  if (save) {
    c = { x, weight };
    if (tune) {
      c.s = new Tensor(allocateDevice(dev, [conv.cout], 'float32'), [conv.cout], 'float32');
      const words = [Math.ceil(conv.ySize / 32)];
      if (conv.relu) c.mask = new Tensor(allocateDevice(dev, words, 'int32'), words, 'int32');
    } else {
      c.z = new Tensor(allocateDevice(dev, conv.yShape, conv.geo.dtype), conv.yShape, conv.geo.dtype);
      if (conv.relu) c.y = y;
    }
  }
  const handle = (t: Tensor | undefined) => t?.deviceBuffer().handle;
  const args = {
    ...cudaConvArgs(x, weight, conv), mode: tune ? 'tune' : 'eval', bias, ...nativeBn(bn),
    y: handle(y), s: handle(c?.s), mask: handle(c?.mask), z: handle(c?.z),
  };
  const st: SavedState | undefined = c && { mode: tune ? 'tune' : 'eval', conv, bias, bn, cuda: c };
  return {
    call: freeOnFailure([y, c?.s, c?.mask, c?.z], (async) => native().cudaConvForward(args, async)),
    finish: (): { y: Tensor; saved?: ConvBnSaved } => (st ? { y, saved: new ConvBnSaved(st) } : { y }),
  };
}

/**
 * Conv followed by frozen-statistics BatchNorm (+ optional ReLU). mode 'tune' (default) folds
 * s = gamma / sqrt(var + eps) into the weights on every call and runs one convolution; 'eval' runs the
 * conv and then a separate BN pass; 'deploy' folds once (foldConvBn) and runs conv with bias.
 */
export const convBn = convBnOp.async;
export const convBnSync = convBnOp.sync;

const convBnBackwardOp = defineOp((saved: ConvBnSaved, dy: Tensor, opts?: { needs?: ConvBnNeeds }) => {
  const op = 'convBnBackward';
  const st = state(saved, `${op}: saved`);
  const o = options(opts, `${op}: opts`);
  const needs = options(o.needs, `${op}: opts.needs`);
  const want = {
    x: flag(needs.x, `${op}: opts.needs.x`, true),
    weight: flag(needs.weight, `${op}: opts.needs.weight`, true),
    bias: flag(needs.bias, `${op}: opts.needs.bias`, true),
    gamma: flag(needs.gamma, `${op}: opts.needs.gamma`, true),
    beta: flag(needs.beta, `${op}: opts.needs.beta`, true),
  };
  const { conv } = st;
  const dyt = checkTensor(dy, `${op}: dy`, { dtypes: [conv.geo.dtype] });
  if (dyt.shape.length !== 4 || dyt.shape.some((d, i) => d !== conv.yShape[i]))
    fail('ERR_XNORM_SHAPE', `${op}: dy: expected shape [${conv.yShape.join(', ')}], received [${dyt.shape.join(', ')}]`);
  if (st.cuda) return cudaConvBnBackward(st, st.cuda, dyt, want);
  if (dyt.device !== 'cpu')
    fail('ERR_XNORM_DEVICE', `${op}: dy: expected device cpu (like the saved state), received ${dyt.device}`);
  const X = storageCtor(conv.geo.dtype);
  const xSize = conv.geo.xShape.reduce((a, b) => a * b, 1);
  const out = {
    dx: want.x ? new X(xSize) : undefined,
    dWeight: want.weight ? new Float32Array(st.weight!.length) : undefined,
    dBias: want.bias ? new Float32Array(conv.cout) : undefined,
    dGamma: want.gamma ? new Float32Array(conv.cout) : undefined,
    dBeta: want.beta ? new Float32Array(conv.cout) : undefined,
  };
  const args = {
    ...conv.geo,
    mode: st.mode,
    relu: conv.relu,
    x: st.x,
    weight: st.weight,
    bias: st.bias,
    ...nativeBn(st.bn),
    s: st.s,
    mask: st.mask,
    z: st.z,
    y: st.y,
    dy: dyt.storage(`${op}: dy`),
    ...out,
  };
  return {
    call: (async: boolean) => native().convBnBackward(args, async),
    finish: (): ConvBnGrads => {
      const g: ConvBnGrads = {};
      if (out.dx) g.dx = new Tensor(out.dx, conv.geo.xShape, conv.geo.dtype);
      if (out.dWeight) g.dWeight = new Tensor(out.dWeight, conv.geo.wShape, 'float32');
      if (out.dBias) g.dBias = new Tensor(out.dBias, [conv.cout], 'float32');
      if (out.dGamma) g.dGamma = new Tensor(out.dGamma, [conv.cout], 'float32');
      if (out.dBeta) g.dBeta = new Tensor(out.dBeta, [conv.cout], 'float32');
      return g;
    },
  };
});

/** convBnBackward on a GPU: the gradients are new device tensors. */
function cudaConvBnBackward(st: SavedState, c: CudaSaved, dy: Tensor, want: Required<ConvBnNeeds>) {
  const op = 'convBnBackward';
  const dev = c.x.device as `cuda:${number}`;
  if (dy.device !== dev) fail('ERR_XNORM_DEVICE', `${op}: dy: expected device ${dev} (like the saved state), received ${dy.device}`);
  const { conv } = st;
  // The caller's tensors the state refers to must still be alive.
  for (const [name, t] of [['x', c.x], ['p.weight', c.weight], ['y (the output, kept by eval mode with ReLU)', c.y]] as const)
    if (t?.disposed) fail('ERR_XNORM_DISPOSED', `${op}: saved: the forward pass's ${name} was disposed; keep it until the backward pass`);
  const make = (on: boolean, shape: readonly number[], dtype: FloatDType) =>
    on ? new Tensor(allocateDevice(dev, shape, dtype), shape, dtype) : undefined;
  const out = {
    dx: make(want.x, conv.geo.xShape, conv.geo.dtype),
    dWeight: make(want.weight, conv.geo.wShape, 'float32'),
    dBias: make(want.bias, [conv.cout], 'float32'),
    dGamma: make(want.gamma, [conv.cout], 'float32'),
    dBeta: make(want.beta, [conv.cout], 'float32'),
  };
  const handle = (t: Tensor | undefined) => t?.deviceBuffer().handle;
  const args = {
    ...cudaConvArgs(c.x, c.weight, conv), mode: st.mode, bias: st.bias, ...nativeBn(st.bn),
    s: handle(c.s), mask: handle(c.mask), z: handle(c.z), y: handle(c.y), dy: dy.deviceBuffer(`${op}: dy`).handle,
    dx: handle(out.dx), dWeight: handle(out.dWeight), dBias: handle(out.dBias), dGamma: handle(out.dGamma),
    dBeta: handle(out.dBeta),
  };
  return {
    call: freeOnFailure(Object.values(out), (async) => native().cudaConvBnBackward(args, async)),
    finish: (): ConvBnGrads => {
      const g: ConvBnGrads = {};
      for (const [k, t] of Object.entries(out)) if (t) g[k as keyof ConvBnGrads] = t;
      return g;
    },
  };
}

/**
 * Backward of convBn from its saved state: dx, dWeight, dBias, dGamma, dBeta (all by default; `needs`
 * skips the work for the ones set false). Parameter gradients are float32.
 */
export const convBnBackward = convBnBackwardOp.async;
export const convBnBackwardSync = convBnBackwardOp.sync;

/** Deploy-mode weights: weight * s and (bias - mean) * s + beta, s = gamma / sqrt(var + eps), in float32. */
export function foldConvBn(p: ConvBnParams): { weight: Tensor; bias: Tensor } {
  const op = 'foldConvBn';
  const params = readParams(p, op);
  const wt = checkTensor(params.weight, `${op}: p.weight`, { dtypes: FLOAT_DTYPES, rank: 4 });
  const cout = wt.shape[0];
  if (cout < 1) fail('ERR_XNORM_SHAPE', `${op}: p.weight: expected Cout >= 1, received [${wt.shape.join(', ')}]`);
  checkSameDevice({
    'p.weight': wt, 'p.bias': params.bias, 'p.bn.mean': params.bn.mean, 'p.bn.var': params.bn.var,
    'p.bn.gamma': params.bn.gamma, 'p.bn.beta': params.bn.beta,
  });
  const bias = perChannel(params.bias, `${op}: p.bias`, cout);
  const bn = bnArrays(params.bn, cout, op);
  if (wt.device !== 'cpu') {
    // On the GPU: the fold kernel writes the folded weight and bias as new device tensors.
    const wb = wt.deviceBuffer(`${op}: p.weight`);
    const weight = new Tensor(allocateDevice(wb.device, wt.shape, 'float32'), wt.shape, 'float32');
    const b = new Tensor(allocateDevice(wb.device, [cout], 'float32'), [cout], 'float32');
    const args = { device: wb.index, wShape: wt.shape.slice(), wDtype: wt.dtype, weight: wb.handle, bias, ...nativeBn(bn),
                   wOut: weight.deviceBuffer().handle, bOut: b.deviceBuffer().handle };
    freeOnFailure([weight, b], () => native().cudaConvBnFold(args))(false);
    return { weight, bias: b };
  }
  const { wOut, bOut } = foldArrays(float32Of(wt, `${op}: p.weight`), wt.shape.slice(), bias, bn);
  return { weight: new Tensor(wOut, wt.shape, 'float32'), bias: new Tensor(bOut, [cout], 'float32') };
}

const conv2dOp = defineOp((x: Tensor, weight: Tensor, bias?: Tensor, opts?: ConvOpts) => {
  const op = 'conv2d';
  const o = options(opts, `${op}: opts`);
  if (o.mode !== undefined) modeOf(o.mode, op);  // accepted for ConvOpts compatibility; a plain conv has no BN
  const conv = convGeometry(x, weight, o, op);
  checkSameDevice({ x, weight, bias });
  const b = perChannel(bias, `${op}: bias`, conv.cout);
  if (x.device !== 'cpu') {
    const yt = new Tensor(allocateDevice(x.deviceBuffer(`${op}: x`).device, conv.yShape, conv.geo.dtype), conv.yShape, conv.geo.dtype);
    const args = { ...cudaConvArgs(x, weight, conv), mode: 'plain', bias: b, y: yt.deviceBuffer().handle };
    return { call: freeOnFailure([yt], (async) => native().cudaConvForward(args, async)), finish: () => yt };
  }
  const y = new (storageCtor(conv.geo.dtype))(conv.ySize);
  const args = { ...conv.geo, x: x.storage(`${op}: x`), weight: float32Of(weight, `${op}: weight`), bias: b, y, relu: conv.relu };
  return {
    call: (async: boolean) => native().conv2d(args, async),
    finish: () => new Tensor(y, conv.yShape, conv.geo.dtype),
  };
});

/** 2-D convolution (+ bias, + optional ReLU in the GEMM epilogue). */
export const conv2d = conv2dOp.async;
export const conv2dSync = conv2dOp.sync;

/** This machine's float32 FMA throughput with all xnorm threads busy, in GFLOP/s (for benchmarks). */
export async function fmaPeak(seconds = 0.5): Promise<number> {
  if (typeof seconds !== 'number' || !(seconds > 0 && seconds <= 10))
    fail('ERR_XNORM_ARGUMENT', `fmaPeak: seconds: expected a number in (0, 10], received ${describe(seconds)}`);
  return (await native().fmaPeak({ seconds }, true)) as number;
}

/** The conv GEMM micro-tile and instruction set in use, e.g. '8x48 avx512'. */
export function convKernelInfo(): string {
  return native().convInfo({}) as string;
}
