// The GPU suites on the CPU emulation of the plugin (scripts/build-cuda-emu.sh, host compiler only):
// the real kernel code, the addon's device-memory handles and the lib/ wiring, on machines with no GPU.
// Each test file runs in its own process (vitest pool 'forks'), so pointing this one at the emulated
// plugin does not change what the other files see.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { cudaStatus, info } from '../lib';
import { defineGpuSuites } from './cuda-suites';

const emulated = path.join(__dirname, '..', 'build', 'cuda-emu', 'libxnorm_cuda.so');
const present = fs.existsSync(emulated);
// Read when the plugin is first loaded, which is below: nothing in lib/ loads it at import time.
if (present) process.env.XNORM_CUDA_PLUGIN = emulated;
else console.log(`[cuda-emu.test] skipped: ${emulated} does not exist (build it with scripts/build-cuda-emu.sh)`);

describe.skipIf(!present)('the emulated CUDA device', () => {
  it('is the one this process loaded', async () => {
    expect(info().cuda.probed).toBe(false);  // info() never probes
    const c = await cudaStatus();
    expect(info().cuda).toMatchObject({ probed: true, available: true, plugin: emulated, cudaVersion: '13.0' });
    expect(c.available).toBe(true);
    expect(c.plugin).toBe(emulated);
    expect(c.devices.map((d) => d.name)).toEqual(['xnorm CPU emulation of a CUDA device']);
  });

  it('releases device memory whose tensors were dropped without dispose() when the GC runs', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'children', 'cuda-gc.cjs')], {
      env: { ...process.env, XNORM_CUDA_PLUGIN: emulated },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const { held, after } = JSON.parse(r.stdout) as { held: number; after: number };
    expect(held).toBeGreaterThanOrEqual(8 << 20);
    expect(Math.abs(after)).toBeLessThan(1 << 16);  // the 8 MiB are gone; V8's own external bytes move a little
  });
});

defineGpuSuites(!present);
