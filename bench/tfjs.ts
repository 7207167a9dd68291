// npm run bench -- tfjs: whole tfjs-layers models (test/tfjs/models.ts, a ResNet-style and a MobileNet-style
// network at BENCH_SIZE) on three tfjs backends in one run: 'cpu' (tfjs's JavaScript kernels), 'wasm'
// (XNNPACK, SIMD) and 'xnorm' (lib/tfjs: the 'cpu' backend with xnorm's native conv, BN and matmul kernels).
// Rows: predict at batch 1 and 8 and one trainOnBatch step (SGD, categoricalCrossentropy) at batch 8, as ms
// median / p90 / best, with the speedups of 'xnorm' (ratios of medians) against their targets. Then a
// per-kernel profile (tf.profile) of 'xnorm' at batch 8, so the JavaScript kernels that still dominate show.
//
// 'cpu' takes seconds to tens of seconds per training step, so every row gets a time budget rather than a
// fixed count: a first call warms up (and counts as a sample when it took over 2 s, where warm-up effects
// are noise), then as many calls as fit the budget, within a minimum and maximum count.
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { getThreadsCount, setThreadsCount, setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import '../lib/tfjs';
import { nativeKernelNames } from '../lib/tfjs';
import { BENCH_SIZE, buildModel, makeInput, makeLabels } from '../test/tfjs/models';
import type { BuiltModel, ModelKind } from '../test/tfjs/models';
import { fmt, sample, table } from './common';

interface Stats { median: number; p90: number; best: number; reps: number }

const BACKENDS = ['cpu', 'wasm', 'xnorm'] as const;
type Backend = (typeof BACKENDS)[number];
const KINDS: ModelKind[] = ['resnet', 'mobilenet'];
const CASES = ['predict b1', 'predict b8', 'train b8'] as const;
type Case = (typeof CASES)[number];

/** Time budget (ms) and repetition bounds per backend: the 'cpu' backend gets few repetitions. */
const BUDGET: Record<Backend, { ms: number; min: number; max: number }> = {
  cpu: { ms: 3000, min: 1, max: 20 },
  wasm: { ms: 1500, min: 10, max: 200 },
  xnorm: { ms: 1500, min: 10, max: 200 },
};
/** Speedup targets of 'xnorm' (ratio of medians), by case. */
const TARGET: Record<Case, { cpu: number; wasm?: number }> = {
  'predict b1': { cpu: 50, wasm: 2 },
  'predict b8': { cpu: 50, wasm: 2 },
  'train b8': { cpu: 20 },
};

const now = () => performance.now();
const gc = () => (globalThis as { gc?: () => void }).gc?.();

async function measure(f: () => Promise<unknown>, backend: Backend): Promise<Stats> {
  const { ms, min, max } = BUDGET[backend];
  const t0 = now();
  await f();
  const first = now() - t0;
  const counted = first > 2000 ? [first] : [];
  const reps = Math.max(min, Math.min(max, Math.round(ms / Math.max(first, 1e-3)))) - counted.length;
  const t = [...counted, ...(reps > 0 ? await sample(f, reps, 0) : [])].sort((a, b) => a - b);
  return { median: t[Math.floor(t.length / 2)], p90: t[Math.min(t.length - 1, Math.floor(t.length * 0.9))], best: t[0], reps: t.length };
}

async function use(backend: Backend): Promise<void> {
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend ${backend} did not initialise`);
  await tf.ready();
  if (tf.getBackend() !== backend) throw new Error(`tfjs runs on ${tf.getBackend()}, not ${backend}`);
}

const predictFn = (m: BuiltModel, x: tf.Tensor) => async () => {
  const y = m.model.predict(x) as tf.Tensor;
  await y.data();
  y.dispose();
};

/** One backend, one model: the three cases, or the error that stopped a case (wasm has no conv backprop kernels). */
async function runModel(backend: Backend, kind: ModelKind): Promise<Map<Case, Stats | string>> {
  await use(backend);
  const { inputSize, width } = BENCH_SIZE;
  const m = buildModel(kind, inputSize, width, 1);
  const x1 = makeInput(1, inputSize, 2);
  const x8 = makeInput(8, inputSize, 3);
  const y8 = makeLabels(8, m.classes, 4);
  const out = new Map<Case, Stats | string>();
  try {
    out.set('predict b1', await measure(predictFn(m, x1), backend));
    out.set('predict b8', await measure(predictFn(m, x8), backend));
    m.model.compile({ optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy' });
    try {
      out.set('train b8', await measure(() => m.model.trainOnBatch(x8, y8), backend));
    } catch (e) {
      out.set('train b8', `n/a: ${(e as Error).message}`);
    }
    if (tf.getBackend() !== backend) throw new Error(`tfjs switched to ${tf.getBackend()} during the ${backend} run`);
  } finally {
    tf.dispose([x1, x8, y8]);
    m.dispose();
    gc();
  }
  return out;
}

/** Top kernels by time on 'xnorm' for one call, from tf.profile (op wrappers such as fusedConv2d__op left out). */
async function profile(kind: ModelKind, what: 'predict b8' | 'train b8'): Promise<void> {
  await use('xnorm');
  const { inputSize, width } = BENCH_SIZE;
  const m = buildModel(kind, inputSize, width, 1);
  const x = makeInput(8, inputSize, 3);
  const y = makeLabels(8, m.classes, 4);
  try {
    let f: () => Promise<unknown>;
    if (what === 'predict b8') f = predictFn(m, x);
    else {
      m.model.compile({ optimizer: tf.train.sgd(0.01), loss: 'categoricalCrossentropy' });
      f = () => m.model.trainOnBatch(x, y);
    }
    await f();
    await f(); // filters seen twice are packed: profile the steady state
    const t0 = now();
    const info = await tf.profile(async () => {
      await f();
      return [];
    });
    const wall = now() - t0;
    const byName = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      if (!tf.getKernel(k.name, 'xnorm')) continue; // an op's scope, not a kernel: its kernels are listed too
      const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += Number(k.kernelTimeMs);
      e.calls++;
      byName.set(k.name, e);
    }
    const total = [...byName.values()].reduce((a, e) => a + e.ms, 0);
    const nativeMs = [...byName].filter(([n]) => nativeKernelNames.includes(n)).reduce((a, [, e]) => a + e.ms, 0);
    const rows = [...byName]
      .sort((a, b) => b[1].ms - a[1].ms)
      .slice(0, 12)
      .map(([name, e]) => [name, nativeKernelNames.includes(name) ? 'native' : 'JS (cpu)', String(e.calls), e.ms, `${fmt((100 * e.ms) / total)}%`]);
    console.log(`\n'xnorm' kernels, ${kind} ${what}: ${fmt(total)} ms in kernels (${fmt((100 * nativeMs) / total)}% native, ${fmt((100 * (total - nativeMs)) / total)}% JS) of ${fmt(wall)} ms profiled wall time\n`);
    console.log(table(['kernel', 'runs as', 'calls', 'ms', 'share'], rows));
  } finally {
    tf.dispose([x, y]);
    m.dispose();
  }
}

export async function run(): Promise<void> {
  const t0 = now();
  setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), path.sep));
  setThreadsCount(2); // only the threaded build uses it; Node runs the single-threaded SIMD build
  await use('wasm');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const threaded = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  const { inputSize, width } = BENCH_SIZE;
  console.log(`@tensorflow/tfjs ${tf.version.tfjs}; models at ${inputSize}x${inputSize}x3, width ${width} (test/tfjs/models.ts)`);
  console.log(`wasm: SIMD ${simd ? 'on' : 'off'}, multithread support ${threaded ? 'yes' : 'no'}, ${getThreadsCount()} thread(s)\n`);

  const results = new Map<string, Stats | string>(); // `${kind} ${case} ${backend}`
  for (const kind of KINDS)
    for (const backend of BACKENDS) {
      const r = await runModel(backend, kind);
      for (const [c, s] of r) results.set(`${kind} ${c} ${backend}`, s);
    }

  const med = (s: Stats | string | undefined) => (typeof s === 'object' ? s.median : NaN);
  const cell = (s: Stats | string | undefined) => (typeof s === 'object' ? fmt(s.median) : 'n/a');
  const speed = (ours: Stats | string | undefined, peer: Stats | string | undefined) => {
    const r = med(peer) / med(ours);
    return Number.isFinite(r) ? `${fmt(r)}x` : 'n/a';
  };
  const summary: string[][] = [];
  const detail: string[][] = [];
  const notes = new Set<string>();
  for (const kind of KINDS)
    for (const c of CASES) {
      const [cpu, wasm, xn] = BACKENDS.map((b) => results.get(`${kind} ${c} ${b}`));
      const t = TARGET[c];
      const vsCpu = med(cpu) / med(xn);
      const vsWasm = med(wasm) / med(xn);
      const met = [vsCpu >= t.cpu ? '' : 'cpu', t.wasm === undefined || vsWasm >= t.wasm ? '' : 'wasm'].filter(Boolean);
      summary.push([kind, c, cell(cpu), cell(wasm), cell(xn), speed(xn, cpu), speed(xn, wasm),
        `>=${t.cpu}x cpu${t.wasm ? `, >=${t.wasm}x wasm` : ''}`, met.length ? `no (${met.join(', ')})` : 'yes']);
      for (const [b, s] of [['cpu', cpu], ['wasm', wasm], ['xnorm', xn]] as const) {
        if (typeof s === 'string') notes.add(`${b}: ${s}`);
        detail.push([kind, c, b, typeof s === 'object' ? `${fmt(s.median)} / ${fmt(s.p90)} / ${fmt(s.best)}` : 'n/a', typeof s === 'object' ? String(s.reps) : '-']);
      }
    }
  console.log('ms median per backend; speedups are ratios of medians (cpu / xnorm, wasm / xnorm)\n');
  console.log(table(['model', 'case', 'cpu ms', 'wasm ms', 'xnorm ms', 'xnorm vs cpu', 'xnorm vs wasm', 'target', 'met'], summary));
  for (const n of notes) console.log(`\n${n}`);
  console.log('\nms as median / p90 / best over reps\n');
  console.log(table(['model', 'case', 'backend', 'median / p90 / best', 'reps'], detail));

  for (const kind of KINDS) {
    await profile(kind, 'predict b8');
    await profile(kind, 'train b8');
  }
  await tf.setBackend('cpu');
  console.log(`\n(tfjs benchmark: ${fmt((now() - t0) / 1000)} s)`);
}
