// Async ops run on xnorm's op threads and settle on the JS thread: many in flight at once each get their
// own result, the event loop stays alive exactly while ops are pending, libuv's threads stay free, and
// the JS thread turns while an op runs.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { Tensor, conv2d, conv2dSync, moments, momentsSync, tensor } from '../lib';
import { randomArray } from './helpers';

describe('async ops', () => {
  it('40 ops in flight at once, more than there are op threads, each settle with their own result', async () => {
    const convs = Array.from({ length: 24 }, (_, i) => ({
      x: tensor(randomArray(32 * 16, 10 + i), [1, 32, 4, 4]),
      w: tensor(randomArray(32 * 32 * 9, 100 + i), [32, 32, 3, 3]),
    }));
    // 512 KiB each: above the size that memory-bound ops run inline
    const stats = Array.from({ length: 16 }, (_, i) => tensor(randomArray(8 * 16 * 1024, 200 + i), [8, 16, 1024]));
    const pending: Promise<Tensor | { mean: Tensor }>[] = [];
    for (let i = 0; i < 24; i++) {
      pending.push(conv2d(convs[i].x, convs[i].w, undefined, { padding: 1 }));
      if (i < 16) pending.push(moments(stats[i]));
    }
    const results = await Promise.all(pending);
    let k = 0;
    for (let i = 0; i < 24; i++) {
      const y = results[k++] as Tensor;
      expect(y.dataSync()).toEqual(conv2dSync(convs[i].x, convs[i].w, undefined, { padding: 1 }).dataSync());
      if (i < 16) {
        const m = results[k++] as { mean: Tensor };
        expect(m.mean.dataSync()).toEqual(momentsSync(stats[i]).mean.dataSync());
      }
    }
  });

  it('a pending op keeps the process alive until it settles; with none pending the process exits', () => {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'async-exit.cjs')], { encoding: 'utf8', timeout: 30_000 });
    expect(r.signal, `killed after ${Date.now() - t0} ms: the loop did not go idle\n${r.stderr}`).toBe(null);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['first true', 'second true']);
  });

  it("long ops leave libuv's threads free: with one of them, a file read issued after four convs does not wait for all", () => {
    const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'async-libuv.cjs')], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
    });
    expect(r.status, r.stderr).toBe(0);
    const order = r.stdout.trim().split(' ');
    expect(order.filter((e) => e === 'conv').length).toBe(4);
    expect(order[4]).toBe('conv');
  });

  it('the JS thread turns while a long op runs', async () => {
    const x = tensor(randomArray(4 * 64 * 64 * 64, 3), [4, 64, 64, 64]);
    const w = tensor(randomArray(64 * 64 * 9, 4), [64, 64, 3, 3]);
    let turns = 0;
    let running = true;
    const spin = () => {
      turns++;
      if (running) setImmediate(spin);
    };
    setImmediate(spin);
    const y = await conv2d(x, w, undefined, { padding: 1 });
    running = false;
    expect(y.shape).toEqual([4, 64, 64, 64]);
    expect(turns).toBeGreaterThan(1);
  });
});
