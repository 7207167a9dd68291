// The GPU suites on the CPU emulation of the plugin (scripts/build-cuda-emu.sh, host compiler only):
// the real kernel code, the addon's device-memory handles and the lib/ wiring, on machines with no GPU.
// Each test file runs in its own process (vitest pool 'forks'), so pointing this one at the emulated
// plugin does not change what the other files see.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { info } from '../lib';
import { defineGpuSuites } from './cuda-suites';

const emulated = path.join(__dirname, '..', 'build', 'cuda-emu', 'libxnorm_cuda.so');
const present = fs.existsSync(emulated);
// Read when the plugin is first loaded, which is below: nothing in lib/ loads it at import time.
if (present) process.env.XNORM_CUDA_PLUGIN = emulated;
else console.log(`[cuda-emu.test] skipped: ${emulated} does not exist (build it with scripts/build-cuda-emu.sh)`);

describe.skipIf(!present)('the emulated CUDA device', () => {
  it('is the one this process loaded', () => {
    const c = info().cuda;
    expect(c.available).toBe(true);
    expect(c.plugin).toBe(emulated);
    expect(c.devices.map((d) => d.name)).toEqual(['xnorm CPU emulation of a CUDA device']);
  });
});

defineGpuSuites(!present);
