// The CUDA probe never blocks the event loop: info() reports "not probed yet", cudaStatus() probes on
// the thread pool (after its child process), once per process, shared with worker threads.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';

const root = path.join(__dirname, '..');
const emulated = path.join(root, 'build', 'cuda-emu', 'libxnorm_cuda.so');
const missing = path.join(root, 'build', 'no-such-dir', 'libxnorm_cuda.so');

function run(plugin: string) {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'cuda-async.cjs')], {
    env: { ...process.env, XNORM_CUDA_PLUGIN: plugin, XNORM_CUDA: '', XNORM_CUDA_PROBE: '', XNORM_DEBUG: '' },
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('probing CUDA', () => {
  it.skipIf(!fs.existsSync(emulated))('cudaStatus() probes off the JS thread; info() only reports what was probed', () => {
    const o = run(emulated);
    expect(o.before).toMatchObject({ probed: false, available: false, devices: [] });
    expect(o.before.reason).toMatch(/not probed yet: `await cudaStatus\(\)`/);
    expect(o.isPromise).toBe(true);
    expect(o.same).toBe(true);
    expect(o.returnedMs).toBeLessThan(50);  // the child process alone takes longer than this
    expect(o.ticks).toBeGreaterThan(0);     // timers ran while the probe was under way
    expect(o.status).toMatchObject({ available: true, plugin: emulated, cudaVersion: '13.0' });
    expect(o.after).toMatchObject({ probed: true, available: true, plugin: emulated });
    expect(o.sync).toEqual(o.status);
    expect(o.worker).toMatchObject({ probed: true, available: true, plugin: emulated });
  });

  it('a missing plugin resolves (never rejects) with the reason', () => {
    const o = run(missing);
    expect(o.status.available).toBe(false);
    expect(o.status.reason).toMatch(/not installed; looked in: .*no-such-dir/);
    expect(o.worker).toMatchObject({ probed: true, available: false });
  });
});
