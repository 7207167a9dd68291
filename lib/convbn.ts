// Symbol.dispose: consumers compiling with an older `lib` get it from this reference in the .d.ts.
/// <reference lib="esnext.disposable" preserve="true" />
// Convolution and fused Conv + BatchNorm: Tune (fold per call, one conv), Eval (conv then BN) and
// Deploy (fold once) modes, and the Tune-mode backward. All heavy work is native; this file validates,
// allocates the outputs and makes one native call per op, which runs where x lives: on a GPU,
// activations, weights, saved state and gradients stay in device memory; on the CPU the weight is
// converted to float32 (activations keep their dtype). The small per-channel parameters (bias, BN
// statistics, gamma, beta) are read to the host as float32 for the checks and the fold.
import { describe, fail } from './errors';
import { native } from './native';
import type { ConvArgs, NativeBn, PreparedHandle, SavedHandle } from './native';
import { defineOp } from './op';
import { FLOAT_DTYPES, Tensor, checkSameDevice, checkTensor, freeOnFailure, nativeDevice, nativeRef, newOutput, optionalRef, outputFor, storageBytes } from './tensor';
import type { Device, FloatDType } from './tensor';
import { choice, flag, float32Of, integer, layoutOf, options, pair, perChannel, reluOf } from './validate';
import type { Layout } from './validate';

/** A conv layer and the BN after it: weight, optional bias, gamma, beta, frozen mean and var, eps. */
export interface ConvBnParams {
  /** [Cout, Cin/groups, kh, kw] */
  weight: Tensor;
  /** [Cout] */
  bias?: Tensor;
  bn: { mean: Tensor; var: Tensor; gamma?: Tensor; beta?: Tensor; eps?: number };
}

/** convBn's forward: Tune folds BN into the conv per call (gradients without the conv output), Eval runs conv then BN, Deploy folds once. */
export type ConvBnMode = 'tune' | 'eval' | 'deploy';

/** Conv geometry and execution options shared by convBn, conv2d and their backward passes. */
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
  /** Where to write y (conv2d, convBn): a tensor of y's shape, dtype and device; default a new one. */
  out?: Tensor;
}

/** Which gradients convBnBackward computes: each defaults to true; false skips that work and omits the key. */
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

const CONV_KEYS = ['stride', 'padding', 'dilation', 'groups', 'mode', 'activation', 'layout', 'out'] as const;
const MODES = ['tune', 'eval', 'deploy'] as const;

/** A tensor known by its shape alone (conv2dBackward's x or weight when only the other gradient is wanted). */
interface ShapeOnly {
  shape: readonly number[];
  dtype: FloatDType;
  device: Device;
}

interface Conv {
  /**
   * The native geometry, device and dtypes (shared by every conv entry point), made per call: each op
   * adds its tensors with Object.assign. A literal with more keys after a spread ({ ...args, x }) took
   * V8's slow path (a map migration per key), half the JS time of a tiny conv2dSync.
   */
  args: ConvArgs;
  cout: number;
  yShape: number[];
  ySize: number;
  /** The ConvWeights' state when the weight was one (conv2d) */
  prepared?: PreparedState;
}

/**
 * Validates x, the weight (a tensor, or ConvWeights where `prepared` is allowed) and the options;
 * returns the native arguments and the output shape. ConvWeights bring their own groups.
 */
function convGeometry(x: unknown, weight: unknown, o: Record<string, unknown>, op: string, prepared = false,
  shapes?: { x?: ShapeOnly; weight?: ShapeOnly }): Conv {
  const xt = shapes?.x ?? checkTensor(x, `${op}: x`, { dtypes: FLOAT_DTYPES, rank: 4 });
  const cw = prepared && weight instanceof ConvWeights ? preparedState(weight, `${op}: weight`) : undefined;
  const wt = cw ? { shape: cw.shape, device: cw.device, dtype: cw.tensor?.dtype ?? 'float32' }
    : shapes?.weight ?? checkTensor(weight, `${op}: weight`, { dtypes: FLOAT_DTYPES, rank: 4 });
  if (wt.device !== xt.device)
    fail('ERR_XNORM_DEVICE', `${op}: weight: expected device ${xt.device} (like x), received ${wt.device}` +
      (cw ? '; prepare the weights on the device x is on' : ''));
  const layout = layoutOf(o.layout, `${op}: opts.layout`);
  const [sh, sw] = pair(o.stride, `${op}: opts.stride`, 1, 1);
  const [ph, pw] = pair(o.padding, `${op}: opts.padding`, 0, 0);
  const [dh, dw] = pair(o.dilation, `${op}: opts.dilation`, 1, 1);
  const groups = integer(o.groups, `${op}: opts.groups`, 1, cw?.groups ?? 1);
  if (cw && groups !== cw.groups)
    fail('ERR_XNORM_SHAPE', `${op}: opts.groups: the ConvWeights were prepared with groups = ${cw.groups}, received ${groups}`);
  const relu = reluOf(o.activation, `${op}: opts.activation`);
  const xs = xt.shape;
  const [n, c, h, w] = layout === 'nchw' ? [xs[0], xs[1], xs[2], xs[3]] : [xs[0], xs[3], xs[1], xs[2]];
  const [cout, cinG, kh, kw] = wt.shape;
  const shape = (s: readonly number[]) => `[${s.join(', ')}]`;
  if (c < 1 || h < 1 || w < 1) fail('ERR_XNORM_SHAPE', `${op}: x: expected C, H, W >= 1, received ${shape(xs)}`);
  if (cout < 1 || cinG < 1 || kh < 1 || kw < 1)
    fail('ERR_XNORM_SHAPE', `${op}: weight: expected all dimensions >= 1, received ${shape(wt.shape)}`);
  // A mismatch that the other layout would explain gets a hint naming it.
  const otherC = layout === 'nchw' ? xs[3] : xs[1];
  const layoutHint = otherC !== c && otherC % groups === 0 && cinG === otherC / groups
    ? `; x looks ${layout === 'nchw' ? 'channels-last: pass { layout: \'nhwc\' }' : 'channels-first: pass { layout: \'nchw\' }'}`
    : '';
  // HWIO: dimension 2 is Cin/groups and the first two look like a kernel's height and width
  const hwioHint = !layoutHint && wt.shape[2] === c / groups && wt.shape[0] <= 11 && wt.shape[1] <= 11
    ? `; the weight looks HWIO ([kh, kw, Cin, Cout], TensorFlow's layout): xnorm takes OIHW [Cout, Cin/groups, kh, kw]`
    : '';
  if (c % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${op}: x: channel count ${c} is not divisible by groups = ${groups}${layoutHint}`);
  if (cout % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${op}: weight: Cout = ${cout} is not divisible by groups = ${groups}${hwioHint}`);
  if (cinG !== c / groups)
    fail('ERR_XNORM_SHAPE',
      `${op}: weight: expected dimension 1 = Cin/groups = ${c / groups}, received ${shape(wt.shape)}${layoutHint}${hwioHint}`);
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
    args: {
      device: xt.device === 'cpu' ? -1 : nativeDevice(xt as Tensor),
      dtype: xt.dtype as FloatDType,
      // The CPU kernels take float32 weights (converted here); the GPU ones read the weight's own dtype.
      wDtype: xt.device === 'cpu' ? 'float32' : (wt.dtype as FloatDType),
      xShape: xs.slice(),
      wShape: wt.shape.slice(),
      strideH: sh, strideW: sw, padH: ph, padW: pw, dilationH: dh, dilationW: dw,
      groups, layout, relu,
    },
    cout,
    yShape,
    ySize,
    prepared: cw,
  };
}

/** The weight as the native conv reads it: float32 on the CPU (no copy when it already is), as is on a GPU. */
function nativeWeight(w: Tensor, name: string): Tensor {
  if (w.device !== 'cpu' || w.dtype === 'float32') return w;
  return new Tensor(float32Of(w, name), w.shape, 'float32');
}

function readParams(p: unknown, op: string): { weight: Tensor; bias?: Tensor; bn: ConvBnParams['bn'] } {
  const o = p as ConvBnParams;
  if (!o || typeof o !== 'object')
    fail('ERR_XNORM_ARGUMENT', `${op}: p: expected {weight, bias?, bn: {mean, var, gamma?, beta?, eps?}}, received ${describe(p)}`);
  if (!o.bn || typeof o.bn !== 'object')
    fail('ERR_XNORM_ARGUMENT', `${op}: p.bn: expected {mean, var, gamma?, beta?, eps?}, received ${describe(o.bn)}`);
  checkSameDevice({
    'p.weight': o.weight, 'p.bias': o.bias, 'p.bn.mean': o.bn.mean, 'p.bn.var': o.bn.var,
    'p.bn.gamma': o.bn.gamma, 'p.bn.beta': o.bn.beta,
  });
  return o;
}

function bnArrays(bn: ConvBnParams['bn'], cout: number, op: string): NativeBn {
  const mean = perChannel(bn.mean, `${op}: p.bn.mean`, cout);
  const v = perChannel(bn.var, `${op}: p.bn.var`, cout);
  if (!mean) return fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.mean: expected a Tensor, received ${describe(bn.mean)}`);
  if (!v) return fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.var: expected a Tensor, received ${describe(bn.var)}`);
  const eps = bn.eps ?? 1e-5;
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0)
    fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.eps: expected a finite number >= 0, received ${describe(bn.eps)}`);
  // One rule with batchNorm: a NaN statistic makes its channel NaN (as in PyTorch); var + eps <= 0 is refused.
  for (let i = 0; i < cout; i++)
    if (v[i] + eps <= 0)
      fail('ERR_XNORM_ARGUMENT', `${op}: p.bn.var[${i}]: expected var + eps > 0, received var ${v[i]}, eps ${eps}`);
  return {
    mean,
    var: v,
    gamma: perChannel(bn.gamma, `${op}: p.bn.gamma`, cout),
    beta: perChannel(bn.beta, `${op}: p.bn.beta`, cout),
    eps,
  };
}

/**
 * What the JS side knows of a saved state: its native handle (which holds the state itself, see
 * convBnSaved in native/addon/convbn.cc), the geometry to shape the gradients and what it holds, in bytes.
 */
interface SavedState {
  handle: SavedHandle;
  mode: 'tune' | 'eval';
  conv: Conv;
  device: Device;
  bytes: number;
  /** The tensors whose memory the state reads in backward (x, the weight, Eval's y): no gradient may share it. */
  reads: Tensor[];
}

const liveSaved = new WeakMap<ConvBnSaved, SavedState | null>();

/**
 * The state Tune-mode (or Eval-mode) forward keeps for convBnBackward: a native object. Disposable.
 * It holds the forward's x and weight itself; on the CPU it shares x's storage, so leave x unchanged.
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { y, saved } = await convBn(x, p, { padding: 1, saveForBackward: true });
 * console.log(saved.mode, saved.bytes); // 'tune', bytes of x, s and the ReLU mask held
 * saved.dispose(); // once convBnBackward is done with it
 */
export class ConvBnSaved {
  /** @internal */
  constructor(state: SavedState) {
    liveSaved.set(this, state);
  }

  /** Bytes of activation state held: x and s (+ the 1-bit ReLU mask) in Tune mode; x, z (+ y) in Eval mode. */
  get bytes(): number {
    return liveSaved.get(this)?.bytes ?? 0;
  }

  get mode(): 'tune' | 'eval' {
    return state(this, 'ConvBnSaved.mode').mode;
  }

  get disposed(): boolean {
    return !liveSaved.get(this);
  }

  /** Drops the saved state now (device memory it owns is freed once no op in flight uses it). Idempotent. */
  dispose(): void {
    const st = liveSaved.get(this);
    if (st) native().releaseSaved({ saved: st.handle });
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

const convBnOp = defineOp((x: Tensor, p: ConvBnParams, opts?: ConvOpts & { saveForBackward?: boolean }) => {
  const op = 'convBn';
  const o = options(opts, `${op}: opts`, [...CONV_KEYS, 'saveForBackward']);
  const mode = choice(o.mode, `${op}: opts.mode`, MODES, 'tune');
  const save = flag(o.saveForBackward, `${op}: opts.saveForBackward`, false);
  const params = readParams(p, op);
  const conv = convGeometry(x, params.weight, o, op);
  if (save && mode === 'deploy')
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.saveForBackward: deploy mode is inference only; use mode 'tune' to train`);
  const bias = perChannel(params.bias, `${op}: p.bias`, conv.cout);
  const bn = bnArrays(params.bn, conv.cout, op);
  const weight = nativeWeight(params.weight, `${op}: p.weight`);
  const { dtype, relu } = conv.args;
  const { y, fresh } = outputFor(o.out, x.device, conv.yShape, dtype, `${op}: opts.out`,
    [x, params.weight, params.bias, params.bn.mean, params.bn.var, params.bn.gamma, params.bn.beta]);
  if (mode === 'deploy' && x.device === 'cpu') {
    // Fold once, then a plain conv with bias (on a GPU Deploy runs as Tune: the same fold, formed on the device).
    const folded = foldArrays(weight, bias, bn);
    const args = Object.assign(conv.args, { x: nativeRef(x, `${op}: x`), weight: nativeRef(folded.weight), bias: folded.bias.storage() as Float32Array, y: nativeRef(y) });
    return { call: freeOnFailure(fresh, (async) => native().conv2d(args, async)), finish: (): { y: Tensor; saved?: ConvBnSaved } => ({ y }) };
  }
  const tune = mode !== 'eval';
  const args = Object.assign(conv.args, {
    mode: tune ? 'tune' as const : 'eval' as const, x: nativeRef(x, `${op}: x`), weight: nativeRef(weight, `${op}: p.weight`),
    bias, mean: bn.mean, var: bn.var, gamma: bn.gamma, beta: bn.beta, eps: bn.eps, y: nativeRef(y), saved: undefined as SavedHandle | undefined,
  });
  let st: SavedState | undefined;
  if (save) {
    // x and s (+ a 1-bit ReLU mask) in Tune mode; x, z (+ y with ReLU) in Eval mode.
    const ySize = storageBytes(conv.yShape, dtype);
    const held = tune ? conv.cout * 4 + (relu ? Math.ceil(conv.ySize / 32) * 4 : 0) : ySize * (relu ? 2 : 1);
    st = {
      handle: native().convBnSaved(args), mode: args.mode, conv, device: x.device,
      bytes: storageBytes(x.shape, dtype) + held, reads: [x, params.weight, ...(!tune && relu ? [y] : [])],
    };
  }
  return {
    call: freeOnFailure(fresh, (async) => native().convBnForward(Object.assign(args, { saved: st?.handle }), async)),
    finish: (): { y: Tensor; saved?: ConvBnSaved } => (st ? { y, saved: new ConvBnSaved(st) } : { y }),
  };
});

/**
 * Conv followed by frozen-statistics BatchNorm (+ optional ReLU). mode 'tune' (default) folds
 * s = gamma / sqrt(var + eps) into the weights on every call and runs one convolution; 'eval' runs the
 * conv and then a separate BN pass; 'deploy' folds once (foldConvBn) and runs conv with bias.
 * @param x float [N, C, H, W] (nchw) or [N, H, W, C] (nhwc)
 * @param p `weight` [Cout, C/groups, kh, kw], `bias` ([Cout], default zeros), `bn`: `mean`, `var`,
 * `gamma` (default ones), `beta` (default zeros), `eps` (default 1e-5)
 * @param opts `stride` (1), `padding` (0), `dilation` (1), `groups` (1), `mode` ('tune' default, 'eval',
 * 'deploy'), `activation` ('relu' or null), `layout` ('nchw'), `out`, `saveForBackward` (default false;
 * returns `saved` in tune and eval mode)
 * @returns `{ y }`, and `saved` with saveForBackward; y is x's dtype and device
 * @throws XnormError ERR_XNORM_ARGUMENT (options, var + eps <= 0), ERR_XNORM_SHAPE, ERR_XNORM_CUDA_UNAVAILABLE
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { y } = await convBn(x, p, { padding: 1, activation: 'relu' }); // [2, 32, 8, 8]
 */
export const convBn = convBnOp.async as {
  (x: Tensor, p: ConvBnParams, opts: ConvOpts & { saveForBackward: true }): Promise<{ y: Tensor; saved: ConvBnSaved }>;
  (x: Tensor, p: ConvBnParams, opts?: ConvOpts & { saveForBackward?: boolean }): Promise<{ y: Tensor; saved?: ConvBnSaved }>;
};
/**
 * convBn run on the calling thread.
 * @param x float [N, C, H, W] (nchw) or [N, H, W, C] (nhwc)
 * @param p `weight`, `bias`, `bn` (`mean`, `var`, `gamma`, `beta`, `eps`), as convBn
 * @param opts as convBn: `stride`, `padding`, `dilation`, `groups`, `mode`, `activation`, `layout`, `out`,
 * `saveForBackward`
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { y } = convBnSync(x, p, { padding: 1, mode: 'eval' });
 */
export const convBnSync = convBnOp.sync as {
  (x: Tensor, p: ConvBnParams, opts: ConvOpts & { saveForBackward: true }): { y: Tensor; saved: ConvBnSaved };
  (x: Tensor, p: ConvBnParams, opts?: ConvOpts & { saveForBackward?: boolean }): { y: Tensor; saved?: ConvBnSaved };
};

const convBnBackwardOp = defineOp((saved: ConvBnSaved, dy: Tensor, opts?: { needs?: ConvBnNeeds; out?: ConvBnGrads }) => {
  const op = 'convBnBackward';
  const st = state(saved, `${op}: saved`);
  const o = options(opts, `${op}: opts`, ['needs', 'out']);
  const outs = options(o.out, `${op}: opts.out`, ['dx', 'dWeight', 'dBias', 'dGamma', 'dBeta']) as ConvBnGrads;
  const needs = options(o.needs, `${op}: opts.needs`, ['x', 'weight', 'bias', 'gamma', 'beta']);
  const want = (k: keyof ConvBnNeeds) => flag(needs[k], `${op}: opts.needs.${k}`, true);
  const { conv, device } = st;
  const { dtype, xShape, wShape } = conv.args;
  const dyt = checkTensor(dy, `${op}: dy`, { dtypes: [dtype] });
  if (dyt.shape.length !== 4 || dyt.shape.some((d, i) => d !== conv.yShape[i]))
    fail('ERR_XNORM_SHAPE', `${op}: dy: expected shape [${conv.yShape.join(', ')}], received [${dyt.shape.join(', ')}]`);
  if (dyt.device !== device)
    fail('ERR_XNORM_DEVICE', `${op}: dy: expected device ${device} (like the saved state), received ${dyt.device}`);
  // Each wanted gradient: opts.out's tensor (checked, sharing memory with no input and no other
  // gradient) or a new one; a caller's tensor for a gradient not wanted is refused.
  const fresh: Tensor[] = [];
  const taken: Tensor[] = [...st.reads, dyt];
  const make = (k: keyof ConvBnNeeds, name: keyof ConvBnGrads, shape: readonly number[], dt: FloatDType) => {
    if (!want(k)) {
      if (outs[name] !== undefined) fail('ERR_XNORM_ARGUMENT', `${op}: opts.out.${name}: given, but opts.needs.${k} is false`);
      return undefined;
    }
    const r = outputFor(outs[name], device, shape, dt, `${op}: opts.out.${name}`, taken);
    fresh.push(...r.fresh);
    taken.push(r.y);
    return r.y;
  };
  const out: ConvBnGrads = {
    dx: make('x', 'dx', xShape, dtype),
    dWeight: make('weight', 'dWeight', wShape, 'float32'),
    dBias: make('bias', 'dBias', [conv.cout], 'float32'),
    dGamma: make('gamma', 'dGamma', [conv.cout], 'float32'),
    dBeta: make('beta', 'dBeta', [conv.cout], 'float32'),
  };
  const args = {
    device: nativeDevice(dyt), saved: st.handle, dy: nativeRef(dyt, `${op}: dy`),
    dx: optionalRef(out.dx), dWeight: optionalRef(out.dWeight), dBias: optionalRef(out.dBias),
    dGamma: optionalRef(out.dGamma), dBeta: optionalRef(out.dBeta),
  };
  return {
    call: freeOnFailure(fresh, (async) => native().convBnBackward(args, async)),
    finish: (): ConvBnGrads => {
      const g: ConvBnGrads = {};
      for (const [k, t] of Object.entries(out)) if (t) g[k as keyof ConvBnGrads] = t;
      return g;
    },
  };
});

/**
 * Backward of convBn from its saved state: dx, dWeight, dBias, dGamma, dBeta (all by default; `needs`
 * skips the work for the ones set false). Parameter gradients are float32. `out` gives tensors to write
 * gradients into (each checked like every op's `opts.out`).
 * @param saved a live ConvBnSaved from convBn(..., { saveForBackward: true }) in tune or eval mode
 * @param dy the gradient of y: y's shape, x's dtype, the saved state's device
 * @param opts `needs` (`{ x, weight, bias, gamma, beta }`, each default true), `out` (`{ dx?, dWeight?,
 * dBias?, dGamma?, dBeta? }`)
 * @returns ConvBnGrads: dx (x's shape, layout and dtype), dWeight, dBias, dGamma, dBeta (float32)
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_DISPOSED (saved disposed), ERR_XNORM_DTYPE,
 * ERR_XNORM_SHAPE, ERR_XNORM_DEVICE
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { y, saved } = await convBn(x, p, { padding: 1, saveForBackward: true });
 * const { dx, dWeight, dGamma } = await convBnBackward(saved, zeros(y.shape), { needs: { bias: false } });
 */
export const convBnBackward = convBnBackwardOp.async;
/**
 * convBnBackward run on the calling thread.
 * @param saved a live ConvBnSaved (tune or eval)
 * @param dy the gradient of y: y's shape, x's dtype, the saved state's device
 * @param opts `needs`, `out`, as convBnBackward
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { y, saved } = convBnSync(x, p, { padding: 1, saveForBackward: true });
 * const { dWeight } = convBnBackwardSync(saved, zeros(y.shape), { needs: { x: false } });
 */
export const convBnBackwardSync = convBnBackwardOp.sync;

/** The folded float32 weight and bias as new tensors on the weight's device. */
function foldArrays(weight: Tensor, bias: Float32Array | undefined, bn: NativeBn): { weight: Tensor; bias: Tensor } {
  const cout = weight.shape[0];
  const wOut = newOutput(weight.device, weight.shape, 'float32', 'foldConvBn: weight');
  const bOut = newOutput(weight.device, [cout], 'float32', 'foldConvBn: bias');
  const args = {
    device: nativeDevice(weight), wShape: weight.shape.slice(), wDtype: weight.dtype as FloatDType, weight: nativeRef(weight),
    bias, ...bn, wOut: nativeRef(wOut), bOut: nativeRef(bOut),
  };
  freeOnFailure([wOut, bOut], () => native().convBnFold(args))(false);
  return { weight: wOut, bias: bOut };
}

/**
 * Deploy-mode weights: weight * s and (bias - mean) * s + beta, s = gamma / sqrt(var + eps), in float32.
 * With `prepare: true` the weight comes back as ConvWeights (prepared with `groups`, default 1), ready
 * for conv2d without per-call packing. Synchronous on every device.
 * @param p `weight`, `bias`, `bn` (`mean`, `var`, `gamma`, `beta`, `eps`), as convBn
 * @param opts `prepare` (default false), `groups` (default 1; only with prepare)
 * @returns float32 weight (or ConvWeights) and bias on the weight's device
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_DTYPE, ERR_XNORM_SHAPE, ERR_XNORM_DEVICE
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const p = { weight: tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]),
 *   bn: { mean: zeros([32]), var: tensor(new Float32Array(32).fill(1), [32]) } };
 * const { weight, bias } = foldConvBn(p, { prepare: true });
 * const y = await conv2d(x, weight, bias, { padding: 1 }); // as convBn(x, p, { padding: 1 })
 */
export function foldConvBn(p: ConvBnParams, opts?: { prepare?: false; groups?: number }): { weight: Tensor; bias: Tensor };
export function foldConvBn(p: ConvBnParams, opts: { prepare: true; groups?: number }): { weight: ConvWeights; bias: Tensor };
export function foldConvBn(p: ConvBnParams, opts?: { prepare?: boolean; groups?: number }): { weight: Tensor | ConvWeights; bias: Tensor };
export function foldConvBn(p: ConvBnParams, opts?: { prepare?: boolean; groups?: number }): { weight: Tensor | ConvWeights; bias: Tensor } {
  const op = 'foldConvBn';
  const o = options(opts, `${op}: opts`, ['prepare', 'groups']);
  const prepare = flag(o.prepare, `${op}: opts.prepare`, false);
  const params = readParams(p, op);
  const wt = checkTensor(params.weight, `${op}: p.weight`, { dtypes: FLOAT_DTYPES, rank: 4 });
  const cout = wt.shape[0];
  if (cout < 1) fail('ERR_XNORM_SHAPE', `${op}: p.weight: expected Cout >= 1, received [${wt.shape.join(', ')}]`);
  const groups = integer(o.groups, `${op}: opts.groups`, 1, 1);
  if (o.groups !== undefined && !prepare)
    fail('ERR_XNORM_ARGUMENT', `${op}: opts.groups: only used with prepare: true`);
  const bias = perChannel(params.bias, `${op}: p.bias`, cout);
  const bn = bnArrays(params.bn, cout, op);
  const folded = foldArrays(nativeWeight(wt, `${op}: p.weight`), bias, bn);
  if (!prepare) return folded;
  try {
    const weight = prepareConvSync(folded.weight, { groups });
    // On the CPU the ConvWeights hold their own copy; on a GPU they reference the folded tensor.
    if (folded.weight.device === 'cpu') folded.weight.dispose();
    return { weight, bias: folded.bias };
  } catch (e) {
    folded.weight.dispose();
    folded.bias.dispose();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// Prepared conv weights

/** What the JS side knows of a ConvWeights: on the CPU its native handle, on a GPU the weight tensor. */
interface PreparedState {
  shape: readonly number[];
  groups: number;
  device: Device;
  handle?: PreparedHandle;
  tensor?: Tensor;
}

const livePrepared = new WeakMap<ConvWeights, PreparedState | null>();

/**
 * Conv weights prepared once for many conv2d calls (inference): on the CPU a native object holding a
 * float32 copy packed for the GEMM kernels (and, made on the first call that needs it, the Winograd
 * form), used by both layouts; on a CUDA device the weight tensor itself (referenced, not copied: the
 * GPU kernels read it as it is). Immutable; calls may share one at once. Disposable.
 * @example
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * using prepared = await prepareConv(w);
 * for (let i = 0; i < 3; i++) await conv2d(zeros([1, 16, 8, 8]), prepared, undefined, { padding: 1 });
 * console.log(prepared.shape, prepared.bytes);
 */
export class ConvWeights {
  /** [Cout, Cin/groups, kh, kw] */
  readonly shape: readonly number[];
  readonly groups: number;
  readonly device: Device;

  /** @internal Use prepareConv(). */
  constructor(st: PreparedState) {
    livePrepared.set(this, st);
    this.shape = Object.freeze(st.shape.slice());
    this.groups = st.groups;
    this.device = st.device;
  }

  /** Host bytes held (the copy, the packed panels and any Winograd form); 0 on a GPU or once disposed. */
  get bytes(): number {
    const st = livePrepared.get(this);
    return st?.handle ? native().convWeightsBytes({ prepared: st.handle }) : 0;
  }

  get disposed(): boolean {
    return !livePrepared.get(this);
  }

  /** Frees the packed weights now (an op in flight keeps what it reads). Idempotent. */
  dispose(): void {
    const st = livePrepared.get(this);
    if (st?.handle) native().releaseConvWeights({ prepared: st.handle });
    if (st) livePrepared.set(this, null);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `ConvWeights([${this.shape.join(', ')}], groups ${this.groups}, ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

function preparedState(w: ConvWeights, name: string): PreparedState {
  if (!livePrepared.has(w)) fail('ERR_XNORM_ARGUMENT', `${name}: expected ConvWeights from prepareConv, received ${describe(w)}`);
  const st = livePrepared.get(w);
  if (!st) return fail('ERR_XNORM_DISPOSED', `${name}: the ConvWeights was disposed`);
  return st;
}

const prepareConvOp = defineOp((weight: Tensor, opts?: { groups?: number }) => {
  const op = 'prepareConv';
  const o = options(opts, `${op}: opts`, ['groups']);
  const wt = checkTensor(weight, `${op}: weight`, { dtypes: FLOAT_DTYPES, rank: 4 });
  const groups = integer(o.groups, `${op}: opts.groups`, 1, 1);
  const shape = wt.shape.slice();
  if (shape.some((d) => d < 1))
    fail('ERR_XNORM_SHAPE', `${op}: weight: expected all dimensions >= 1, received [${shape.join(', ')}]`);
  if (shape[0] % groups !== 0)
    fail('ERR_XNORM_SHAPE', `${op}: weight: Cout = ${shape[0]} is not divisible by groups = ${groups}`);
  const made = (st: Omit<PreparedState, 'shape' | 'groups' | 'device'>) => new ConvWeights({ shape, groups, device: wt.device, ...st });
  if (wt.device !== 'cpu') {
    nativeRef(wt, `${op}: weight`);  // checks it is live
    return { call: () => undefined, finish: () => made({ tensor: wt }) };
  }
  const args = { weight: float32Of(wt, `${op}: weight`), wShape: shape, groups };
  return {
    call: (async: boolean) => native().prepareConv(args, async),
    finish: (handle: unknown) => made({ handle: handle as PreparedHandle }),
  };
});

/**
 * Conv weights [Cout, Cin/groups, kh, kw] prepared for many conv2d calls (see ConvWeights): packing
 * happens once here instead of on every call. `groups` must be the groups of the convs that use them.
 * @param weight float [Cout, C/groups, kh, kw]
 * @param opts `groups` (default 1)
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_DTYPE, ERR_XNORM_SHAPE (rank != 4, a size < 1, groups),
 * ERR_XNORM_DISPOSED
 * @example
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * const prepared = await prepareConv(w);
 * const y = await conv2d(zeros([1, 16, 8, 8]), prepared, undefined, { padding: 1 }); // as with w
 */
export const prepareConv = prepareConvOp.async;
/**
 * prepareConv run on the calling thread.
 * @param weight float [Cout, C/groups, kh, kw]
 * @param opts `groups` (default 1)
 * @example
 * const dw = tensor(new Float32Array(16 * 1 * 3 * 3).fill(1 / 9), [16, 1, 3, 3]); // depthwise
 * const prepared = prepareConvSync(dw, { groups: 16 });
 * const y = conv2dSync(zeros([1, 16, 8, 8]), prepared, undefined, { padding: 1 });
 */
export const prepareConvSync = prepareConvOp.sync;

const conv2dOp = defineOp((x: Tensor, weight: Tensor | ConvWeights, bias?: Tensor, opts?: ConvOpts) => {
  const op = 'conv2d';
  const o = options(opts, `${op}: opts`, CONV_KEYS);
  // mode is accepted for ConvOpts compatibility; a plain conv has no BN
  choice(o.mode, `${op}: opts.mode`, MODES, 'tune');
  const conv = convGeometry(x, weight, o, op, true);
  checkSameDevice({ x, bias });
  const b = perChannel(bias, `${op}: bias`, conv.cout);
  const cw = conv.prepared;
  const prepared = cw?.handle;
  const w = prepared ? undefined : nativeRef(cw ? cw.tensor! : nativeWeight(weight as Tensor, `${op}: weight`), `${op}: weight`);
  const { y, fresh } = outputFor(o.out, x.device, conv.yShape, conv.args.dtype, `${op}: opts.out`,
    [x, cw ? cw.tensor : (weight as Tensor), bias]);
  const args = Object.assign(conv.args, { x: nativeRef(x, `${op}: x`), weight: w, prepared, bias: b, y: nativeRef(y) });
  return { call: freeOnFailure(fresh, (async) => native().conv2d(args, async)), finish: () => y };
});

/**
 * 2-D convolution (+ bias, + optional ReLU in the GEMM epilogue). `weight` is a tensor
 * [Cout, Cin/groups, kh, kw] or ConvWeights from prepareConv (then no weight is packed per call).
 * @param x float [N, C, H, W] (nchw) or [N, H, W, C] (nhwc)
 * @param weight float [Cout, C/groups, kh, kw], or ConvWeights
 * @param bias float [Cout]; default none
 * @param opts `stride` (1), `padding` (0), `dilation` (1), `groups` (1, or the ConvWeights'),
 * `activation` ('relu' or null), `layout` ('nchw'), `out`
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_SHAPE, ERR_XNORM_DISPOSED, ERR_XNORM_DEVICE,
 * ERR_XNORM_CUDA_UNAVAILABLE
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * const y = await conv2d(x, w, zeros([32]), { padding: 1, activation: 'relu' }); // [2, 32, 8, 8]
 */
export const conv2d = conv2dOp.async;
/**
 * conv2d run on the calling thread.
 * @param x float [N, C, H, W] (nchw) or [N, H, W, C] (nhwc)
 * @param weight float [Cout, C/groups, kh, kw], or ConvWeights
 * @param bias float [Cout]; default none
 * @param opts as conv2d: `stride`, `padding`, `dilation`, `groups`, `activation`, `layout`, `out`
 * @example
 * const x = tensor(new Float32Array(1 * 8 * 8 * 16).map(Math.random), [1, 8, 8, 16]); // NHWC
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * const y = conv2dSync(x, w, undefined, { stride: 2, padding: 1, layout: 'nhwc' }); // [1, 4, 4, 32]
 */
export const conv2dSync = conv2dOp.sync;

/** Options of conv2dBackward: the forward's geometry, and which gradients to compute. */
export interface Conv2dBackwardOpts extends Pick<ConvOpts, 'stride' | 'padding' | 'dilation' | 'groups' | 'layout'> {
  /** Each default true; false skips that gradient's work and omits its key. */
  needs?: { x?: boolean; weight?: boolean };
  /** Tensors to write the gradients into (checked like every op's `opts.out`). */
  out?: { dx?: Tensor; dWeight?: Tensor };
}

const conv2dBackwardOp = defineOp((x: Tensor | { shape: readonly number[] }, weight: Tensor | { shape: readonly number[] },
  dy: Tensor, opts?: Conv2dBackwardOpts) => {
  const op = 'conv2dBackward';
  const o = options(opts, `${op}: opts`, ['stride', 'padding', 'dilation', 'groups', 'layout', 'needs', 'out']);
  const needs = options(o.needs, `${op}: opts.needs`, ['x', 'weight']);
  const outs = options(o.out, `${op}: opts.out`, ['dx', 'dWeight']) as { dx?: Tensor; dWeight?: Tensor };
  const wantDx = flag(needs.x, `${op}: opts.needs.x`, true), wantDw = flag(needs.weight, `${op}: opts.needs.weight`, true);
  if (!wantDx && !wantDw) fail('ERR_XNORM_ARGUMENT', `${op}: opts.needs: at least one of x and weight must be wanted`);
  const dyt = checkTensor(dy, `${op}: dy`, { dtypes: FLOAT_DTYPES });
  if (dyt.device !== 'cpu')
    fail('ERR_XNORM_DEVICE', `${op}: runs on the CPU only (no CUDA kernel yet), received dy on ${dyt.device}`);
  // Only the gradient's inputs are read: x for dWeight, the weight for dx. The other may be { shape }.
  const shapeOnly = (t: unknown, name: string, used: boolean): ShapeOnly | undefined => {
    if (used || Tensor.isTensor(t)) return undefined;
    const shape = (t as { shape?: unknown } | null)?.shape;
    if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail('ERR_XNORM_ARGUMENT', `${op}: ${name}: expected a Tensor or { shape: [4 integers >= 0] }, received ${describe(t)}`);
    return { shape: shape.slice(), dtype: dyt.dtype as FloatDType, device: 'cpu' };
  };
  const conv = convGeometry(x, weight, o, op, false, { x: shapeOnly(x, 'x', wantDw), weight: shapeOnly(weight, 'weight', wantDx) });
  const { dtype, xShape, wShape } = conv.args;
  if (dyt.dtype !== dtype) fail('ERR_XNORM_DTYPE', `${op}: dy: expected dtype ${dtype} (like x), received ${dyt.dtype}`);
  if (dyt.shape.length !== 4 || dyt.shape.some((d, i) => d !== conv.yShape[i]))
    fail('ERR_XNORM_SHAPE', `${op}: dy: expected shape [${conv.yShape.join(', ')}] (the forward's y), received [${dyt.shape.join(', ')}]`);
  const xt = wantDw ? (x as Tensor) : undefined, wt = wantDx ? (weight as Tensor) : undefined;
  checkSameDevice({ x: xt, weight: wt, dy });
  const fresh: Tensor[] = [];
  const taken: Tensor[] = [dyt, ...(xt ? [xt] : []), ...(wt ? [wt] : [])];
  const make = (want: boolean, name: 'dx' | 'dWeight', shape: readonly number[], dt: FloatDType) => {
    if (!want) {
      if (outs[name] !== undefined) fail('ERR_XNORM_ARGUMENT', `${op}: opts.out.${name}: given, but its opts.needs entry is false`);
      return undefined;
    }
    const r = outputFor(outs[name], 'cpu', shape, dt, `${op}: opts.out.${name}`, taken);
    fresh.push(...r.fresh);
    taken.push(r.y);
    return r.y;
  };
  const dx = make(wantDx, 'dx', xShape, dtype);
  const dWeight = make(wantDw, 'dWeight', wShape, 'float32');
  // An empty batch has no input to correlate: dWeight is all zeros (the kernels do not run).
  if (dWeight && xShape[0] === 0) dWeight.storage().fill(0);
  const args = Object.assign(conv.args, {
    x: xt ? nativeRef(xt, `${op}: x`) : undefined,
    weight: wt ? nativeRef(nativeWeight(wt, `${op}: weight`)) : undefined,
    dy: nativeRef(dyt, `${op}: dy`), dx: optionalRef(dx), dWeight: optionalRef(dWeight),
  });
  return {
    call: freeOnFailure(fresh, (async) => native().conv2dBackward(args, async)),
    finish: () => ({ ...(dx ? { dx } : {}), ...(dWeight ? { dWeight } : {}) }) as { dx?: Tensor; dWeight?: Tensor },
  };
});

/**
 * Gradients of a plain conv2d (no bias, no activation: apply their backward to dy first): dx from dy
 * and the weight, dWeight (float32) from x and dy. Where only one is wanted (`needs`), the other's
 * input may be given as `{ shape }`. CPU only for now.
 * @param x the forward's input, or `{ shape }` when needs.weight is false
 * @param weight the forward's weight [Cout, C/groups, kh, kw], or `{ shape }` when needs.x is false
 * @param dy the gradient of y (the forward's output shape, x's dtype)
 * @param opts the forward's `stride`, `padding`, `dilation`, `groups`, `layout`; `needs` (`{ x, weight }`,
 * each default true), `out` (`{ dx?, dWeight? }`)
 * @returns `{ dx, dWeight }`, less the ones needs turns off
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_SHAPE, ERR_XNORM_DTYPE, ERR_XNORM_DEVICE (a CUDA tensor)
 * @example
 * const x = tensor(new Float32Array(2 * 16 * 8 * 8).map(Math.random), [2, 16, 8, 8]);
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * const dy = zeros([2, 32, 8, 8]);
 * const { dx, dWeight } = await conv2dBackward(x, w, dy, { padding: 1 });
 */
export const conv2dBackward = conv2dBackwardOp.async;
/**
 * conv2dBackward run on the calling thread.
 * @param x the forward's input, or `{ shape }` when needs.weight is false
 * @param weight the forward's weight, or `{ shape }` when needs.x is false
 * @param dy the gradient of y
 * @param opts `stride`, `padding`, `dilation`, `groups`, `layout`, `needs`, `out`, as conv2dBackward
 * @example
 * const w = tensor(new Float32Array(32 * 16 * 3 * 3).map(() => Math.random() - 0.5), [32, 16, 3, 3]);
 * const dy = zeros([2, 32, 8, 8]);
 * const { dx } = conv2dBackwardSync({ shape: [2, 16, 8, 8] }, w, dy, { padding: 1, needs: { weight: false } });
 */
export const conv2dBackwardSync = conv2dBackwardOp.sync;

/**
 * This machine's float32 FMA throughput with all xnorm threads busy, in GFLOP/s (for benchmarks).
 * @param seconds how long to measure: a number in (0, 10], default 0.5
 * @throws XnormError ERR_XNORM_ARGUMENT (rejects: seconds out of range)
 * @example
 * console.log(`${(await fmaPeak(0.2)).toFixed(0)} GFLOP/s with ${info().cpu.threads} threads`);
 */
export async function fmaPeak(seconds = 0.5): Promise<number> {
  if (typeof seconds !== 'number' || !(seconds > 0 && seconds <= 10))
    fail('ERR_XNORM_ARGUMENT', `fmaPeak: seconds: expected a number in (0, 10], received ${describe(seconds)}`);
  return (await native().fmaPeak({ seconds }, true)) as number;
}

/**
 * The conv GEMM micro-tile and instruction set in use, e.g. '8x48 avx512'.
 * @example
 * console.log(`conv kernels: ${convKernelInfo()}`);
 */
export function convKernelInfo(): string {
  return native().convInfo({}) as string;
}
