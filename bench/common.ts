// Timing and reporting helpers shared by the benchmarks.
import { spawnSync } from 'child_process';

/** Wall times (ms) of `reps` runs after `warmup` runs, sorted. */
export async function sample(fn: () => unknown, reps: number, warmup: number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return times.sort((a, b) => a - b);
}

/** Median wall time (ms) of `reps` runs after `warmup` runs. */
export async function timeMs(fn: () => unknown, reps = 7, warmup = 2): Promise<number> {
  const times = await sample(fn, reps, warmup);
  return times[Math.floor(times.length / 2)];
}

export interface Stats { median: number; p90: number; best: number }

function summary(sorted: number[]): Stats {
  return { median: sorted[Math.floor(sorted.length / 2)], p90: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))], best: sorted[0] };
}

/** Times of calls after warm-up (ms), as median, p90 and best: the median is what a server feels. The
 *  number of calls fills about budgetMs, within [min, max]. */
export async function stats(f: () => unknown, budgetMs = 150, min = 15, max = 300): Promise<Stats> {
  const t0 = performance.now();
  await f();
  await f();
  const est = (performance.now() - t0) / 2;
  const reps = Math.max(min, Math.min(max, Math.round(budgetMs / Math.max(est, 1e-3))));
  return summary(await sample(f, reps, 0));
}

/** Stats of a and b over `reps` calls each, called alternately after one warm-up each, so that both see
 *  the same machine load. */
export async function alternating(a: () => unknown, b: () => unknown, reps: number): Promise<[Stats, Stats]> {
  const ta: number[] = [], tb: number[] = [];
  const once = async (f: () => unknown, out: number[]) => {
    const t0 = process.hrtime.bigint();
    await f();
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  };
  await a();
  await b();
  for (let i = 0; i < reps; i++) {
    await once(a, ta);
    await once(b, tb);
  }
  const sorted = (v: number[]) => v.sort((x, y) => x - y);
  return [summary(sorted(ta)), summary(sorted(tb))];
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  const line = (r: (string | number)[]) => '| ' + r.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
  return [line(cells[0]), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...cells.slice(1).map(line)].join('\n');
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

/** Runs a Python snippet with the Debian PyTorch if it is installed; returns its stdout or null. */
export function pytorch(code: string): string | null {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.status !== 0) return null;
  const r = spawnSync('/usr/bin/python3', ['-c', code], { encoding: 'utf8', maxBuffer: 1 << 24 });
  return r.status === 0 ? r.stdout : null;
}

/** NCHW x ([n, c, hw, hw]) as NHWC. */
export function nhwcOf(x: Float32Array, n: number, c: number, hw: number): Float32Array {
  const out = new Float32Array(x.length);
  const s = hw * hw;
  for (let i = 0; i < n; i++) for (let ch = 0; ch < c; ch++) for (let p = 0; p < s; p++) out[(i * s + p) * c + ch] = x[(i * c + ch) * s + p];
  return out;
}
