// npm run bench -- server: while 64 concurrent requests run heavy ops, does /health keep answering?
// The example server runs in a child process, once with async ops and once with the Sync ops (the
// blocking baseline); this process is the client.
import { ChildProcess, fork } from 'child_process';
import * as path from 'path';
import { fmt, table } from './common';

const CONCURRENT = 64;
const SHAPE = [16, 64, 32, 32]; // 4 MiB of float32 per request
const REPEAT = 40; // moments passes per request, to make each request heavy

async function startChild(sync: boolean): Promise<{ url: string; child: ChildProcess }> {
  const script = path.join(__dirname, '..', 'examples', 'server', 'index.js');
  const child = fork(script, ['--port', '0', ...(sync ? ['--sync'] : [])], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      const m = /listening on (\S+)/.exec(d.toString());
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { url, child };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function load(sync: boolean, repeat: number) {
  const { url, child } = await startChild(sync);
  try {
    const body = Buffer.from(new Float32Array(SHAPE.reduce((a, b) => a * b, 1)).map((_, i) => i % 11).buffer);
    await fetch(`${url}/moments?shape=${SHAPE.join(',')}&repeat=2`, { method: 'POST', body }); // warm up
    await fetch(`${url}/loop-delay?reset=1`);
    let running = true;
    const health: number[] = [];
    const pinger = (async () => {
      while (running) {
        const t0 = performance.now();
        await fetch(`${url}/health`);
        health.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENT }, () =>
        fetch(`${url}/moments?shape=${SHAPE.join(',')}&repeat=${repeat}`, { method: 'POST', body }).then((r) => r.arrayBuffer()),
      ),
    );
    const wall = performance.now() - t0;
    running = false;
    await pinger;
    const loop = (await (await fetch(`${url}/loop-delay`)).json()) as { p50: number; p99: number; max: number };
    health.sort((a, b) => a - b);
    return { wall, health, loop };
  } finally {
    child.kill();
  }
}

export async function run(): Promise<void> {
  const rows: (string | number)[][] = [];
  // The first row is the floor: the same uploads with one cheap pass, so what remains of the loop delay
  // there is HTTP and buffer handling, not the ops.
  for (const [name, sync, repeat] of [
    ['async ops, 1 pass (upload floor)', false, 1],
    ['async ops', false, REPEAT],
    ['Sync ops (blocking)', true, REPEAT],
  ] as const) {
    const r = await load(sync, repeat);
    rows.push([
      name,
      `${fmt(r.wall)} ms`,
      r.health.length,
      `${fmt(percentile(r.health, 50))} ms`,
      `${fmt(percentile(r.health, 99))} ms`,
      `${fmt(r.loop.p50)} / ${fmt(r.loop.p99)} / ${fmt(r.loop.max)} ms`,
    ]);
  }
  console.log(`${CONCURRENT} concurrent POST /moments (${SHAPE.join('x')} float32, ${REPEAT} passes each) while GET /health is polled\n`);
  console.log(table(['server', 'all requests done', '/health answers', '/health p50', '/health p99', 'server loop delay p50/p99/max'], rows));
}
