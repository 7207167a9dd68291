// The addon in several worker_threads at once, one of them terminated mid-op.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { describe, expect, it } from 'vitest';
import { momentsSync, tensor } from '../lib';

const script = path.join(__dirname, 'children', 'worker-ops.cjs');

describe('worker_threads', () => {
  it('runs ops in four workers; terminating one mid-op leaves the others and the process fine', async () => {
    const size = 8 * 64 * 4096;
    const results = new Map<number, { means: number[][]; errorCode?: string; done: boolean }>();
    const workers = [0, 1, 2, 3].map((id) => {
      results.set(id, { means: [], done: false });
      return new Worker(script, { workerData: { id, rounds: id === 3 ? 1000 : 4, size } });
    });
    const finished = workers.map(
      (w, id) =>
        new Promise<void>((resolve, reject) => {
          w.on('message', (m) => {
            const r = results.get(id)!;
            if (m.type === 'result') r.means.push(m.mean);
            if (m.type === 'error') r.errorCode = `${m.name}:${m.code}`;
            if (m.type === 'done') r.done = true;
            // worker 3 is terminated while its second op is in flight
            if (id === 3 && m.type === 'started' && m.round === 1) void w.terminate();
          });
          w.on('error', reject);
          w.on('exit', () => resolve());
        }),
    );
    await Promise.all(finished);
    for (const id of [0, 1, 2]) {
      const r = results.get(id)!;
      expect(r.done).toBe(true);
      expect(r.means.length).toBe(4);
      // value pattern (i % 13) + id over planes of 64: check against a direct mean
      const x = new Float32Array(size);
      for (let i = 0; i < size; i++) x[i] = (i % 13) + id;
      const expected = Array.from(momentsSync(tensor(x, [size / 8 / 64, 8, 64])).mean.dataSync());
      for (const m of r.means) m.forEach((v, c) => expect(v).toBeCloseTo(expected[c], 5));
      expect(r.errorCode).toBe('WorkerXnormError:ERR_XNORM_ARGUMENT');
    }
    const killed = results.get(3)!;
    expect(killed.done).toBe(false);
    expect(killed.means.length).toBeLessThan(1000);
    // the main thread still works
    expect(Array.from(momentsSync(tensor([1, 3], [2, 1])).mean.dataSync())).toEqual([2]);
  });

  it('survives Node unloading the addon after the last worker that loaded it exits', () => {
    for (let i = 0; i < 3; i++) {
      const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'workers-only.cjs')], { encoding: 'utf8' });
      expect(r.signal, r.stderr).toBe(null);
      expect(r.status).toBe(0);
      expect(r.stdout.trim()).toBe('finished 3');
    }
  });

  it('pooled outputs in several workers, one terminated mid-op: the others and the process are unaffected', async () => {
    const poolScript = path.join(__dirname, 'children', 'pool-worker.cjs');
    const values = new Map<number, number[]>();
    const done = new Set<number>();
    const workers = [0, 1, 2].map((id) => {
      values.set(id, []);
      return new Worker(poolScript, { workerData: { id, rounds: id === 2 ? 1000 : 6 } });
    });
    await Promise.all(workers.map((w, id) => new Promise<void>((resolve, reject) => {
      w.on('message', (m) => {
        if (m.type === 'result') values.get(id)!.push(m.value);
        if (m.type === 'done') done.add(id);
        if (id === 2 && m.type === 'started' && m.round === 2) void w.terminate();
      });
      w.on('error', reject);
      w.on('exit', () => resolve());
    })));
    for (const id of [0, 1]) {
      expect(done.has(id)).toBe(true);
      const want = Math.fround(32 * 9 * Math.fround(0.01)) * (id % 2 ? 1 : -1);
      expect(values.get(id)!.length).toBe(6);
      for (const v of values.get(id)!) expect(Math.abs(v - want)).toBeLessThan(1e-4);
    }
    // The process goes on using the pool.
    const y = momentsSync(tensor(new Float32Array(1 << 16).fill(2), [1, 16, 64, 64]));
    expect(y.mean.dataSync()[0]).toBe(2);
  });
});

