// npm run bench -- bnstats: moments on a 128 MB float32 tensor in both layouts, against the machine's
// memory read bandwidth, a plain JS float64 reference and (where installed) PyTorch on the CPU.
import { monitorEventLoopDelay } from 'perf_hooks';
import { info, moments, momentsSync, tensor } from '../lib';
import { native } from '../lib/native';
import { fmt, pytorch, table, timeMs } from './common';

const N = 32, C = 64, H = 128, W = 128; // 2^25 floats = 128 MiB

function jsMoments(x: Float32Array, layout: 'nchw' | 'nhwc') {
  const s1 = new Float64Array(C), s2 = new Float64Array(C);
  const hw = H * W;
  if (layout === 'nchw') {
    for (let n = 0; n < N; n++)
      for (let c = 0; c < C; c++) {
        let a = 0, b = 0;
        const base = (n * C + c) * hw;
        for (let i = 0; i < hw; i++) {
          const v = x[base + i];
          a += v;
          b += v * v;
        }
        s1[c] += a;
        s2[c] += b;
      }
  } else {
    for (let p = 0; p < N * hw; p++)
      for (let c = 0; c < C; c++) {
        const v = x[p * C + c];
        s1[c] += v;
        s2[c] += v * v;
      }
  }
  return { s1, s2 };
}

export async function run(): Promise<void> {
  const size = N * C * H * W;
  const bytes = size * 4;
  const x = new Float32Array(size);
  for (let i = 0; i < size; i++) x[i] = ((i * 2654435761) % 1000) / 100 + 3;
  const threads = info().cpu.threads;

  const words = new Uint32Array(x.buffer);
  const readMs = await timeMs(() => native().readSum(words as never));
  const readGBs = bytes / readMs / 1e6;

  const rows: (string | number)[][] = [];
  const results: Record<string, number> = {};
  for (const layout of ['nchw', 'nhwc'] as const) {
    const t = tensor(x, layout === 'nchw' ? [N, C, H, W] : [N, H, W, C]);
    const ms = await timeMs(() => momentsSync(t, { layout }));
    const jsMs = await timeMs(() => jsMoments(x, layout), 1, 0);
    const gbs = bytes / ms / 1e6;
    results[layout] = gbs;
    rows.push([layout, fmt(ms) + ' ms', gbs, `${fmt((100 * gbs) / readGBs)}%`, `${fmt(jsMs / ms)}x`]);
  }

  const torch = pytorch(`
import torch, time
torch.set_num_threads(${threads})
x = torch.rand(${N}, ${C}, ${H}, ${W})
for name, t in [("nchw", x), ("nhwc", x.contiguous(memory_format=torch.channels_last))]:
    ts = []
    for i in range(7):
        t0 = time.perf_counter(); torch.var_mean(t, dim=(0, 2, 3), unbiased=False); ts.append(time.perf_counter() - t0)
    ts.sort(); print(name, ts[3] * 1000)
`);
  const torchMs: Record<string, number> = {};
  for (const line of (torch ?? '').trim().split('\n').filter(Boolean)) {
    const [name, ms] = line.split(' ');
    torchMs[name] = Number(ms);
  }
  rows.forEach((r) => {
    const ms = torchMs[r[0] as string];
    r.push(ms ? `${fmt(bytes / ms / 1e6)} GB/s (${fmt(ms / (bytes / results[r[0] as string] / 1e6))}x slower)` : 'not installed');
  });

  // Event-loop delay while async moments run back to back.
  const t = tensor(x, [N, C, H, W]);
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = Date.now();
  let ops = 0;
  while (Date.now() - t0 < 1500) {
    await moments(t);
    ops++;
  }
  h.disable();

  console.log(`moments over a ${bytes / 2 ** 20} MiB float32 tensor, ${threads} threads, ISA ${info().cpu.level}`);
  console.log(`memory read ceiling (streaming sum, ${threads} threads): ${fmt(readGBs)} GB/s\n`);
  console.log(table(['layout', 'xnorm time', 'xnorm GB/s', 'of read BW', 'vs JS float64', 'PyTorch var_mean'], rows));
  console.log(
    `\nevent loop while async moments ran (${ops} ops in 1.5 s): delay p50 ${fmt(h.percentile(50) / 1e6)} ms, ` +
      `p99 ${fmt(h.percentile(99) / 1e6)} ms, max ${fmt(h.max / 1e6)} ms`,
  );
}
