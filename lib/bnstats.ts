// BN statistics: moments, merging, running statistics, test-time mixing and BN apply.
// Big reductions run natively; the per-channel arithmetic on [C]-sized results runs here in float64.
import { describe, fail } from './errors';
import { native } from './native';
import type { DeviceHandle } from './native';
import { defineOp } from './op';
import { Device, FLOAT_DTYPES, Tensor, allocateArray, checkSameDevice, checkTensor, freeOnFailure, nativeDevice, nativeRef, newOutput, optionalRef, outputFor } from './tensor';
import type { FloatDType } from './tensor';
import { choice, flag, float32Of, layoutOf, numberIn, options, reluOf } from './validate';
import type { Layout } from './validate';

export type { Layout };
/** What one set of moments covers: a channel over N·H·W, one image's channel over H·W, or a group of channels of one image. */
export type Over = 'channel' | 'instance' | 'group';

/** count, mean and m2 (sum of squared deviations) per channel, instance or group. */
export interface Moments {
  count: number;
  mean: Tensor;
  m2: Tensor;
  /**
   * Double-precision mean and m2, kept by moments() and mergeMoments() and preferred by the ops that
   * read Moments, so that merging many parts is exact to double precision rather than to float32.
   */
  readonly precise?: { mean: Float64Array; m2: Float64Array };
}
/** Population (biased) variance. */
export interface Stats {
  mean: Tensor;
  var: Tensor;
}

/** Options of moments / momentsSync. */
export interface MomentsOptions {
  layout?: Layout;
  over?: Over;
  /** Required for over: 'group'; must divide C. */
  groups?: number;
}

/** [N, C] and the reduction geometry of x in the given layout. */
function channelsOf(x: Tensor, layout: Layout): { n: number; c: number } {
  return { n: x.shape[0], c: layout === 'nchw' ? x.shape[1] : x.shape[x.shape.length - 1] };
}

const momentsOp = defineOp((x: Tensor, opts?: MomentsOptions) => {
  const o = options(opts, 'moments: opts', ['layout', 'over', 'groups']);
  checkTensor(x, 'moments: x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 2)
    fail('ERR_XNORM_SHAPE', `moments: x: expected rank >= 2 ([N, C, ...]), received shape [${x.shape.join(', ')}]`);
  const layout = layoutOf(o.layout, 'moments: opts.layout');
  const over = choice(o.over, 'moments: opts.over', ['channel', 'instance', 'group'] as const, 'channel');
  const { n, c } = channelsOf(x, layout);
  if (c < 1) fail('ERR_XNORM_SHAPE', `moments: x: expected at least one channel, received shape [${x.shape.join(', ')}]`);
  let groups = 1;
  if (over === 'group') {
    const g = o.groups;
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 1 || c % g !== 0)
      fail('ERR_XNORM_ARGUMENT', `moments: opts.groups: expected a positive divisor of C = ${c}, received ${describe(g)}`);
    groups = g;
  }
  const spatial = x.size / (n * c || 1);
  const perSlot = over === 'channel' ? n * spatial : over === 'instance' ? spatial : (c / groups) * spatial;
  if (x.size === 0 || perSlot < 1)
    fail('ERR_XNORM_SHAPE', `moments: x: the reduction has no elements (shape [${x.shape.join(', ')}])`);
  const outShape = over === 'channel' ? [c] : over === 'instance' ? [n, c] : [n, groups];
  const slots = outShape.reduce((a, b) => a * b, 1);
  const mean = allocateArray(Float64Array, slots, 'moments: mean');
  const m2 = allocateArray(Float64Array, slots, 'moments: m2');
  // On a GPU the double results come back to the host (they are small) and float32 copies stay on the device.
  const gpu = x.device !== 'cpu';
  const meanDev = gpu ? newOutput(x.device, outShape, 'float32', 'moments: mean') : undefined;
  const m2Dev = gpu ? newOutput(x.device, outShape, 'float32', 'moments: m2') : undefined;
  const args = {
    device: nativeDevice(x), x: nativeRef(x, 'moments: x'), dtype: x.dtype as FloatDType, shape: x.shape, layout, over, groups,
    mean, m2, meanF32: optionalRef(meanDev) as DeviceHandle | undefined, m2F32: optionalRef(m2Dev) as DeviceHandle | undefined,
  };
  return {
    call: freeOnFailure([meanDev, m2Dev], (async) => native().moments(args, async)),
    finish: (count: unknown): Moments =>
      meanDev && m2Dev ? { count: count as number, mean: meanDev, m2: m2Dev, precise: { mean, m2 } } : withPrecise(count as number, mean, m2, outShape),
  };
});

/**
 * Per-channel (or per-instance / per-group) count, mean and m2 of x in one pass. mean and m2 are float32
 * on x's device, shaped [C] ('channel'), [N, C] ('instance') or [N, groups] ('group').
 * @param x float, rank >= 2: [N, C, ...] (nchw) or [N, ..., C] (nhwc)
 * @param opts `layout` ('nchw' default; channels-last data needs 'nhwc'), `over` ('channel' default,
 * 'instance' or 'group'), `groups` (required with 'group': a positive divisor of C)
 * @throws XnormError ERR_XNORM_SHAPE (rank < 2, no channels, empty reduction), ERR_XNORM_ARGUMENT
 * @example
 * const x = tensor(new Float32Array(8 * 16 * 4 * 4).map(Math.random), [8, 16, 4, 4]);
 * const m = await moments(x); // count 8·4·4, mean and m2 [16]
 * const perGroup = await moments(x, { over: 'group', groups: 4 }); // [8, 4]
 */
export const moments = momentsOp.async;
/**
 * moments run on the calling thread.
 * @param x float, rank >= 2: [N, C, ...] (nchw) or [N, ..., C] (nhwc)
 * @param opts `layout` ('nchw' default), `over` ('channel' default, 'instance' or 'group'), `groups`
 * (required with 'group')
 * @example
 * const x = tensor(new Float32Array(8 * 16 * 4 * 4).map(Math.random), [8, 16, 4, 4]);
 * const { count, mean, m2 } = momentsSync(x, { layout: 'nchw' });
 */
export const momentsSync = momentsOp.sync;


function withPrecise(count: number, mean: Float64Array, m2: Float64Array, shape: readonly number[], device: Device = 'cpu'): Moments {
  return { count, mean: f32(mean, shape, device), m2: f32(m2, shape, device), precise: { mean, m2 } };
}

/** mean and m2 of Moments in the best precision available; float32 tensors edited by a user win. */
function momentValues(m: Moments): { mean: ArrayLike<number>; m2: ArrayLike<number> } {
  const p = m.precise;
  if (p && p.mean.length === m.mean.size && sameRounded(p.mean, m.mean) && sameRounded(p.m2, m.m2)) return p;
  return { mean: float32Of(m.mean, 'moments.mean'), m2: float32Of(m.m2, 'moments.m2') };
}

function sameRounded(a: Float64Array, t: Tensor): boolean {
  const v = float32Of(t, 'moments');
  for (let i = 0; i < a.length; i++) if (Math.fround(a[i]) !== v[i] && !(Number.isNaN(a[i]) && Number.isNaN(v[i]))) return false;
  return true;
}

function checkMoments(m: unknown, name: string): Moments {
  const o = m as Moments;
  if (!o || typeof o !== 'object' || typeof o.count !== 'number')
    fail('ERR_XNORM_ARGUMENT', `${name}: expected Moments {count, mean, m2}, received ${describe(m)}`);
  if (!(o.count >= 1) || !Number.isInteger(o.count))
    fail('ERR_XNORM_ARGUMENT', `${name}.count: expected a positive integer, received ${describe(o.count)}`);
  checkTensor(o.mean, `${name}.mean`, { dtypes: FLOAT_DTYPES });
  checkTensor(o.m2, `${name}.m2`, { dtypes: FLOAT_DTYPES });
  sameShape(o.mean, o.m2, `${name}.m2`);
  return o;
}

function checkStats(s: unknown, name: string): Stats {
  const o = s as Stats;
  if (!o || typeof o !== 'object') fail('ERR_XNORM_ARGUMENT', `${name}: expected Stats {mean, var}, received ${describe(s)}`);
  checkTensor(o.mean, `${name}.mean`, { dtypes: FLOAT_DTYPES });
  checkTensor(o.var, `${name}.var`, { dtypes: FLOAT_DTYPES });
  sameShape(o.mean, o.var, `${name}.var`);
  return o;
}

function sameShape(a: Tensor, b: Tensor, name: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i]))
    fail('ERR_XNORM_SHAPE', `${name}: expected shape [${a.shape.join(', ')}], received [${b.shape.join(', ')}]`);
}

/** A float32 result on `device`: per-channel results live where their inputs live. */
function f32(values: Float64Array, shape: readonly number[], device: Device = 'cpu'): Tensor {
  const t = new Tensor(new Float32Array(values), shape, 'float32');  // the typed-array copy: Float32Array.from iterates, 2.5x slower
  if (device === 'cpu') return t;
  const d = t.toSync(device);
  t.dispose();
  return d;
}

/**
 * Variance from moments: population (m2 / n) by default, unbiased (m2 / (n - 1)) on request.
 * @param m Moments from moments() or mergeMoments()
 * @param opts `unbiased` (default false)
 * @returns float32, the shape and device of m.mean
 * @throws XnormError ERR_XNORM_SHAPE (unbiased with count < 2), ERR_XNORM_ARGUMENT
 * @example
 * const m = momentsSync(tensor([1, 2, 3, 4, 5, 6], [3, 2]));
 * const v = variance(m, { unbiased: true }); // [2]
 */
export function variance(m: Moments, opts?: { unbiased?: boolean }): Tensor {
  const o = options(opts, 'variance: opts', ['unbiased']);
  checkMoments(m, 'variance: m');
  const unbiased = flag(o.unbiased, 'variance: opts.unbiased', false);
  if (unbiased && m.count < 2)
    fail('ERR_XNORM_SHAPE', `variance: the unbiased variance needs count >= 2 per slot, received count ${m.count}`);
  const div = unbiased ? m.count - 1 : m.count;
  return f32(Float64Array.from(momentValues(m).m2, (v) => v / div), m.mean.shape, m.mean.device);
}

/**
 * Chan et al.'s merge: the moments of the union of two disjoint batches (exact for any split).
 * @param a the moments of one part
 * @param b the moments of the other part: same shape and device as a
 * @throws XnormError ERR_XNORM_ARGUMENT (count not a positive integer), ERR_XNORM_SHAPE, ERR_XNORM_DEVICE
 * @example
 * const a = momentsSync(tensor(new Float32Array(4 * 8).map(Math.random), [4, 8]));
 * const b = momentsSync(tensor(new Float32Array(2 * 8).map(Math.random), [2, 8]));
 * const all = mergeMoments(a, b); // count 6, as moments of the 6 rows together
 */
export function mergeMoments(a: Moments, b: Moments): Moments {
  checkMoments(a, 'mergeMoments: a');
  checkMoments(b, 'mergeMoments: b');
  sameShape(a.mean, b.mean, 'mergeMoments: b.mean');
  checkSameDevice({ 'a.mean': a.mean, 'a.m2': a.m2, 'b.mean': b.mean, 'b.m2': b.m2 });
  const { mean: ma, m2: qa } = momentValues(a);
  const { mean: mb, m2: qb } = momentValues(b);
  const n = a.count + b.count;
  const mean = new Float64Array(ma.length);
  const m2 = new Float64Array(ma.length);
  for (let i = 0; i < ma.length; i++) {
    const delta = mb[i] - ma[i];
    mean[i] = ma[i] + (delta * b.count) / n;
    m2[i] = qa[i] + qb[i] + ((delta * delta * a.count) / n) * b.count;
  }
  return withPrecise(n, mean, m2, a.mean.shape, a.mean.device);
}

/**
 * PyTorch's BatchNorm running-statistics rule: new = (1 - m) * old + m * batch, with the unbiased batch
 * variance; momentum null = cumulative average over numBatchesTracked + 1 batches.
 * @param running the running mean and var (float [C])
 * @param batch this batch's moments, count >= 2, of running's shape and device
 * @param opts `momentum` (default 0.1; a number in [0, 1], or null for the cumulative average),
 * `numBatchesTracked` (default 0; returned plus 1)
 * @returns new running mean and var on running.mean's device, and numBatchesTracked
 * @throws XnormError ERR_XNORM_SHAPE (shapes differ, batch.count < 2), ERR_XNORM_ARGUMENT, ERR_XNORM_DEVICE
 * @example
 * let running = { mean: zeros([16]), var: tensor(new Float32Array(16).fill(1), [16]), numBatchesTracked: 0 };
 * const x = tensor(new Float32Array(8 * 16 * 4 * 4).map(Math.random), [8, 16, 4, 4]);
 * running = updateRunningStats(running, await moments(x), { momentum: 0.1, numBatchesTracked: running.numBatchesTracked });
 */
export function updateRunningStats(
  running: Stats,
  batch: Moments,
  opts?: { momentum?: number | null; numBatchesTracked?: number },
): Stats & { numBatchesTracked: number } {
  const o = options(opts, 'updateRunningStats: opts', ['momentum', 'numBatchesTracked']);
  checkStats(running, 'updateRunningStats: running');
  checkMoments(batch, 'updateRunningStats: batch');
  sameShape(running.mean, batch.mean, 'updateRunningStats: batch.mean');
  checkSameDevice({ 'running.mean': running.mean, 'running.var': running.var, 'batch.mean': batch.mean, 'batch.m2': batch.m2 });
  const tracked = o.numBatchesTracked ?? 0;
  if (typeof tracked !== 'number' || !Number.isInteger(tracked) || tracked < 0)
    fail('ERR_XNORM_ARGUMENT', `updateRunningStats: opts.numBatchesTracked: expected a non-negative integer, received ${describe(tracked)}`);
  const momentum = o.momentum === undefined ? 0.1 : o.momentum;
  const m = momentum === null ? 1 / (tracked + 1) : numberIn(momentum, 'updateRunningStats: opts.momentum', 0, 1);
  if (batch.count < 2)
    fail('ERR_XNORM_SHAPE', `updateRunningStats: batch: expected more than 1 value per channel, received count ${batch.count}`);
  const rm = float32Of(running.mean, 'running.mean'), rv = float32Of(running.var, 'running.var');
  const { mean: bm, m2: bq } = momentValues(batch);
  const mean = Float64Array.from(rm, (v, i) => (1 - m) * v + m * bm[i]);
  const v = Float64Array.from(rv, (r, i) => (1 - m) * r + (m * bq[i]) / (batch.count - 1));
  const dev = running.mean.device;
  return { mean: f32(mean, running.mean.shape, dev), var: f32(v, running.mean.shape, dev), numBatchesTracked: tracked + 1 };
}

function asStats(
  s: Stats | Moments,
  name: string,
): { mean: ArrayLike<number>; var: Float64Array; shape: readonly number[]; device: Device } {
  if (s && typeof s === 'object' && 'm2' in s) {
    const mo = checkMoments(s, name);
    checkSameDevice({ [`${name}.mean`]: mo.mean, [`${name}.m2`]: mo.m2 });
    const m = momentValues(mo);
    return { mean: m.mean, var: Float64Array.from(m.m2, (q) => q / mo.count), shape: mo.mean.shape, device: mo.mean.device };
  }
  const st = checkStats(s, name);
  checkSameDevice({ [`${name}.mean`]: st.mean, [`${name}.var`]: st.var });
  return { mean: float32Of(st.mean, `${name}.mean`), var: Float64Array.from(float32Of(st.var, `${name}.var`)), shape: st.mean.shape, device: st.mean.device };
}

function mix(src: ReturnType<typeof asStats>, tgt: ReturnType<typeof asStats>, w: number, crossTerm: boolean): Stats {
  const mean = new Float64Array(src.mean.length);
  const v = new Float64Array(src.mean.length);
  for (let i = 0; i < mean.length; i++) {
    const d = src.mean[i] - tgt.mean[i];
    mean[i] = w * src.mean[i] + (1 - w) * tgt.mean[i];
    v[i] = w * src.var[i] + (1 - w) * tgt.var[i] + (crossTerm ? w * (1 - w) * d * d : 0);
  }
  return { mean: f32(mean, src.shape, src.device), var: f32(v, src.shape, src.device) };
}

/**
 * alpha-BN: mean = w*mean_s + (1-w)*mean_t, var = w*var_s + (1-w)*var_t with w = sourceWeight; crossTerm
 * (TTN) adds w(1-w)(mean_s - mean_t)^2, which makes the result the variance of the mixture.
 * @param source the source (training) statistics
 * @param target the target statistics: Stats, or Moments (population variance)
 * @param opts `sourceWeight` (required, in [0, 1]), `crossTerm` (default false)
 * @returns float32 Stats on source's device
 * @throws XnormError ERR_XNORM_ARGUMENT, ERR_XNORM_SHAPE, ERR_XNORM_DEVICE
 * @example
 * const source = { mean: zeros([16]), var: tensor(new Float32Array(16).fill(1), [16]) };
 * const x = tensor(new Float32Array(4 * 16 * 8 * 8).map(Math.random), [4, 16, 8, 8]);
 * const stats = mixStats(source, await moments(x), { sourceWeight: 0.9, crossTerm: true });
 * const y = await batchNorm(x, stats);
 */
export function mixStats(source: Stats, target: Stats | Moments, opts: { sourceWeight: number; crossTerm?: boolean }): Stats {
  const o = options(opts, 'mixStats: opts', ['sourceWeight', 'crossTerm']);
  const w = numberIn(o.sourceWeight, 'mixStats: opts.sourceWeight', 0, 1);
  const cross = flag(o.crossTerm, 'mixStats: opts.crossTerm', false);
  const s = asStats(source, 'mixStats: source');
  const t = asStats(target, 'mixStats: target');
  if (s.device !== t.device)
    fail('ERR_XNORM_DEVICE', `mixStats: target: expected device ${s.device} (like source), received ${t.device}`);
  if (s.mean.length !== t.mean.length || s.shape.some((d, i) => d !== t.shape[i]))
    fail('ERR_XNORM_SHAPE', `mixStats: target: expected shape [${s.shape.join(', ')}], received [${t.shape.join(', ')}]`);
  return mix(s, t, w, cross);
}

/**
 * Prior BN (Schneider et al.): the source statistics count as priorCount samples, w = N / (N + n) with
 * n = target.count (values, not images: for per-channel moments of [N, C, H, W] it is N·H·W).
 * @param source the source (training) statistics
 * @param target the target batch's moments
 * @param opts `priorCount` (required, finite, >= 0): N
 * @returns float32 Stats on source's device
 * @throws XnormError as mixStats
 * @example
 * const source = { mean: zeros([16]), var: tensor(new Float32Array(16).fill(1), [16]) };
 * const x = tensor(new Float32Array(4 * 16 * 8 * 8).map(Math.random), [4, 16, 8, 8]);
 * const stats = priorStats(source, await moments(x), { priorCount: 16 * 8 * 8 });
 */
export function priorStats(source: Stats, target: Moments, opts: { priorCount: number }): Stats {
  const o = options(opts, 'priorStats: opts', ['priorCount']);
  const prior = numberIn(o.priorCount, 'priorStats: opts.priorCount', 0, Number.MAX_SAFE_INTEGER);
  checkMoments(target, 'priorStats: target');
  return mixStats(source, target, { sourceWeight: prior / (prior + target.count) });
}

/** Options of batchNorm / batchNormSync. */
export interface BatchNormOptions {
  gamma?: Tensor;
  beta?: Tensor;
  eps?: number;
  layout?: Layout;
  activation?: 'relu' | null;
  /** Where to write y: a tensor of x's shape, dtype and device; default a new one. */
  out?: Tensor;
}

const batchNormOp = defineOp((x: Tensor, stats: Stats | Moments, opts?: BatchNormOptions) => {
  const o = options(opts, 'batchNorm: opts', ['gamma', 'beta', 'eps', 'layout', 'activation', 'out']);
  checkTensor(x, 'batchNorm: x', { dtypes: FLOAT_DTYPES });
  if (x.shape.length < 2)
    fail('ERR_XNORM_SHAPE', `batchNorm: x: expected rank >= 2 ([N, C, ...]), received shape [${x.shape.join(', ')}]`);
  const st = asStats(stats, 'batchNorm: stats');
  const layout = layoutOf(o.layout, 'batchNorm: opts.layout');
  const { n, c } = channelsOf(x, layout);
  const eps = numberIn(o.eps ?? 1e-5, 'batchNorm: opts.eps', 0, Number.MAX_VALUE);
  const relu = reluOf(o.activation, 'batchNorm: opts.activation');
  const ss = st.shape;
  const perInstance = ss.length === 2 && ss[0] === n && ss[1] === c;
  if (!perInstance && !(ss.length === 1 && ss[0] === c))
    fail('ERR_XNORM_SHAPE', `batchNorm: stats.mean: expected shape [${c}] or [${n}, ${c}], received [${ss.join(', ')}]`);
  const coeff = (t: Tensor | undefined, name: string, dflt: number): ArrayLike<number> => {
    if (t === undefined || t === null) return new Float64Array(c).fill(dflt);
    checkTensor(t, name, { dtypes: FLOAT_DTYPES });
    if (t.size !== c) fail('ERR_XNORM_SHAPE', `${name}: expected shape [${c}], received [${t.shape.join(', ')}]`);
    return float32Of(t, name);
  };
  const gamma = coeff(o.gamma as Tensor | undefined, 'batchNorm: opts.gamma', 1);
  const beta = coeff(o.beta as Tensor | undefined, 'batchNorm: opts.beta', 0);
  checkSameDevice({ x, 'stats.mean': stats.mean, gamma: o.gamma as Tensor, beta: o.beta as Tensor });
  if (st.device !== x.device)
    fail('ERR_XNORM_DEVICE', `batchNorm: stats: expected device ${x.device} (like x), received ${st.device}`);
  const mv = st.mean, vv = st.var;
  const slots = mv.length;
  const mean = Float32Array.from(mv);
  const meanLo = Float32Array.from(mv, (v, i) => v - mean[i]);
  const scale = new Float32Array(slots);
  const shift = new Float32Array(slots);
  for (let i = 0; i < slots; i++) {
    // One rule with convBn: a NaN statistic makes its channel NaN (as in PyTorch); var + eps <= 0 is refused.
    if (vv[i] + eps <= 0)
      fail('ERR_XNORM_ARGUMENT', `batchNorm: stats.var[${i}]: expected var + eps > 0, received var ${vv[i]}, eps ${eps}`);
    scale[i] = gamma[i % c] / Math.sqrt(vv[i] + eps);
    shift[i] = beta[i % c];
  }
  const { y, fresh } = outputFor(o.out, x.device, x.shape, x.dtype, 'batchNorm: opts.out', [x]);
  const args = {
    device: nativeDevice(x), x: nativeRef(x, 'batchNorm: x'), y: nativeRef(y), dtype: x.dtype as FloatDType, shape: x.shape,
    layout, perInstance, mean, meanLo, scale, beta: shift, relu,
  };
  return { call: freeOnFailure(fresh, (async) => native().batchNorm(args, async)), finish: () => y };
});

/**
 * y = act((x - mean) / sqrt(var + eps) * gamma + beta); stats per channel [C] or per instance [N, C].
 * Passing the Moments of x itself gives training-mode BN, with the mean in double precision.
 * @param x float, rank >= 2: [N, C, ...] (nchw) or [N, ..., C] (nhwc)
 * @param stats Stats or Moments (population variance), shaped [C] or [N, C] (per instance)
 * @param opts `gamma` (default ones), `beta` (default zeros), `eps` (default 1e-5), `layout` ('nchw'),
 * `activation` ('relu' or null, default null), `out` (a tensor to write y into)
 * @returns y: x's shape, dtype and device
 * @throws XnormError ERR_XNORM_SHAPE (rank < 2; stats, gamma or beta size), ERR_XNORM_ARGUMENT
 * (var + eps <= 0; eps, layout, activation), ERR_XNORM_DEVICE
 * @example
 * const x = tensor(new Float32Array(8 * 16 * 4 * 4).map(Math.random), [8, 16, 4, 4]);
 * const y = await batchNorm(x, await moments(x), { activation: 'relu' }); // training-mode BN + ReLU
 */
export const batchNorm = batchNormOp.async;
/**
 * batchNorm run on the calling thread.
 * @param x float, rank >= 2: [N, C, ...] (nchw) or [N, ..., C] (nhwc)
 * @param stats Stats or Moments, shaped [C] or [N, C]
 * @param opts `gamma`, `beta`, `eps` (default 1e-5), `layout`, `activation`, `out`, as batchNorm
 * @example
 * const x = tensor(new Float32Array(2 * 4 * 3 * 3).map(Math.random), [2, 4, 3, 3]);
 * const stats = { mean: zeros([4]), var: tensor([1, 1, 1, 1], [4]) };
 * const y = batchNormSync(x, stats, { gamma: tensor([1, 2, 3, 4], [4]), eps: 1e-3 });
 */
export const batchNormSync = batchNormOp.sync;
