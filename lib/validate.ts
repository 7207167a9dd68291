// The user-facing argument checks every op family shares: options objects (unknown keys refused), layouts,
// pairs, integers, flags, choices and per-channel parameters. Each failure is an XnormError naming the
// argument, what was expected and what was received.
import { describe, fail } from './errors';
import { FLOAT_DTYPES, Tensor, checkTensor } from './tensor';

export type Layout = 'nchw' | 'nhwc';

export { options } from './options';

export function layoutOf(v: unknown, name: string, dflt: Layout = 'nchw'): Layout {
  const layout = v ?? dflt;
  if (layout !== 'nchw' && layout !== 'nhwc')
    fail('ERR_XNORM_ARGUMENT', `${name}: expected 'nchw' or 'nhwc', received ${describe(v)}`);
  return layout;
}

/** One of `allowed` (undefined: dflt). */
export function choice<T extends string>(v: unknown, name: string, allowed: readonly T[], dflt: T): T {
  const c = v ?? dflt;
  if (!allowed.includes(c as T))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected ${allowed.map((a) => `'${a}'`).join(', ')}, received ${describe(v)}`);
  return c as T;
}

/** An integer in [min, max] (undefined: dflt). */
export function integer(v: unknown, name: string, min: number, dflt?: number, max = 2 ** 31): number {
  const x = v ?? dflt;
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min || x > max)
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an integer >= ${min}${max < 2 ** 31 ? ` and <= ${max}` : ''}, received ${describe(v)}`);
  return x;
}

/** An integer >= min or a pair [h, w] of them (undefined: [dflt, dflt]). */
export function pair(v: unknown, name: string, min: number, dflt: number): [number, number] {
  const p = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v;
  const ok = (d: unknown) => typeof d === 'number' && Number.isSafeInteger(d) && d >= min && d <= 2 ** 31;
  if (!Array.isArray(p) || p.length !== 2 || !ok(p[0]) || !ok(p[1]))
    fail('ERR_XNORM_ARGUMENT', `${name}: expected an integer >= ${min} or a pair [h, w] of them, received ${describe(v)}`);
  return [p[0], p[1]];
}

export function flag(v: unknown, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail('ERR_XNORM_ARGUMENT', `${name}: expected a boolean, received ${describe(v)}`);
  return v;
}

/** A finite number in [lo, hi]. */
export function numberIn(v: unknown, name: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi)
    fail('ERR_XNORM_ARGUMENT', `${name}: expected a finite number in [${lo}, ${hi}], received ${describe(v)}`);
  return v;
}

/** The 'relu' | null activation option as a flag. */
export function reluOf(v: unknown, name: string): boolean {
  const activation = v ?? null;
  if (activation !== null && activation !== 'relu')
    fail('ERR_XNORM_ARGUMENT', `${name}: expected 'relu' or null, received ${describe(v)}`);
  return activation === 'relu';
}

/** The values of a float tensor as float32 on the host (a device tensor is downloaded; no copy otherwise). */
export function float32Of(t: Tensor, name: string): Float32Array {
  return t.dtype === 'float32' ? (t.hostData(name) as Float32Array) : t.float32Sync();
}

/**
 * An optional per-channel parameter: a float tensor of shape [cout], as float32 on the host. With
 * `finite`, NaN and infinities are refused.
 */
export function perChannel(t: unknown, name: string, cout: number, opts: { finite?: boolean } = {}): Float32Array | undefined {
  if (t === undefined || t === null) return undefined;
  const tt = checkTensor(t, name, { dtypes: FLOAT_DTYPES });
  if (tt.size !== cout || tt.shape.length !== 1)
    fail('ERR_XNORM_SHAPE', `${name}: expected shape [${cout}], received [${tt.shape.join(', ')}]`);
  const v = Float32Array.from(float32Of(tt, name)); // a copy: async ops read it after the call returns
  if (opts.finite)
    v.forEach((x, i) => {
      if (!Number.isFinite(x)) fail('ERR_XNORM_ARGUMENT', `${name}[${i}]: expected a finite number, received ${x}`);
    });
  return v;
}
