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
