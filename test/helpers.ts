// Shared test utilities: a seeded RNG and a runner for child processes with a forced ISA level.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { expect } from 'vitest';
import { XnormError } from '../lib';

import { rng } from './rng';

export { rng };

/** Standard normal samples (Box-Muller). */
export function gaussian(rand: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/** Cout channels, each a copy of one of `protos` prototype channels with every sign flipped with probability p. */
export function prototypeWeights(cout: number, perChannel: number, protos: number, p: number, r: () => number): Float32Array {
  const proto = Float32Array.from({ length: protos * perChannel }, () => (r() < 0.5 ? -1 : 1));
  return Float32Array.from({ length: cout * perChannel }, (_, i) => {
    const v = proto[(Math.floor(i / perChannel) % protos) * perChannel + (i % perChannel)];
    return r() < p ? -v : v;
  });
}

/** Writes the CRC-32 of everything before a plan's last 4 bytes into them (so only field checks can object). */
export function fixCrc(b: Uint8Array): Uint8Array {
  let crc = 0xffffffff;
  for (let i = 0; i < b.length - 4; i++) {
    crc ^= b[i];
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(b.length - 4, (crc ^ 0xffffffff) >>> 0, true);
  return b;
}

export function randomArray(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const g = gaussian(rng(seed));
  return Float32Array.from({ length: n }, () => offset + scale * g());
}

export const ISA_LEVELS = ['portable', 'avx2', 'avx512'] as const;

/** The ISA levels this CPU supports (a forced level above it is lowered, so it would test nothing new). */
export function supportedIsaLevels(best: string): string[] {
  if (best === 'neon') return ['portable', 'neon'];  // aarch64: the x86 levels never apply
  return ISA_LEVELS.slice(0, ISA_LEVELS.indexOf(best as (typeof ISA_LEVELS)[number]) + 1);
}

/** Runs fn with XNORM_CONV_ALGO set (the addon reads it on every call; child processes inherit it; '' forces nothing). */
export async function withAlgo<T>(algo: 'gemm' | 'winograd' | 'winograd4' | 'winograd_rows' | '', fn: () => T | Promise<T>): Promise<T> {
  const before = process.env.XNORM_CONV_ALGO;
  process.env.XNORM_CONV_ALGO = algo;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.XNORM_CONV_ALGO;
    else process.env.XNORM_CONV_ALGO = before;
  }
}

/** Whether p settles within a few microtask turns, i.e. its op ran inline; a trip through the thread
 * pool needs a libuv callback, a later macrotask. */
export async function settlesAtOnce(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => { done = true; });
  for (let i = 0; i < 4; i++) await Promise.resolve();
  const atOnce = done;
  await p;
  return atOnce;
}

/** Runs test/children/<script> in a new Node process with XNORM_ISA set; returns its parsed JSON output. */
export function runChild<T>(script: string, isa: string, input: unknown): T {
  const file = path.join(__dirname, 'children', script);
  const r = spawnSync(process.execPath, [file], {
    input: JSON.stringify(input),
    env: { ...process.env, XNORM_ISA: isa },
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`${script} (XNORM_ISA=${isa}) exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Expects two arrays to hold the same values (Object.is per element), fast on millions of elements:
 * a failure names the first differing index and both values.
 */
export function expectSameValues(actual: ArrayLike<number>, expected: ArrayLike<number>, what = 'values'): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  for (let i = 0; i < expected.length; i++)
    if (!Object.is(actual[i], expected[i])) expect(actual[i], `${what}[${i}]`).toBe(expected[i]);
}

/** The XnormError fn throws (anything else thrown fails the test), or undefined. */
export function xnormErrorOf(fn: () => unknown): XnormError | undefined {
  try {
    fn();
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(XnormError);
    return e as XnormError;
  }
  return undefined;
}

/** The code of the XnormError fn throws, or 'no error'. */
export function codeOf(fn: () => unknown): string {
  return xnormErrorOf(fn)?.code ?? 'no error';
}

/** Runs fn, expects an XnormError with this code, and returns it. */
export function expectCode(fn: () => unknown, code: string): XnormError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(XnormError);
    expect((e as XnormError).code).toBe(code);
    return e as XnormError;
  }
  throw new Error(`expected ${code}, but nothing was thrown`);
}
