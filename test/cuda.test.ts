// The CUDA backend: plugin discovery and its failure reasons (in child processes, since the plugin is
// loaded once per process), the CPU fallback, and, on a machine with a GPU, device tensors and the
// BN-statistic kernels against the CPU kernels. Nothing is built here: CI (or `npm run build:cuda`)
// builds build/cuda/libxnorm_cuda.so where nvcc is present.
import { expectCode } from './helpers';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { cudaStatusSync, momentsSync, tensor, zeros } from '../lib';
import { cudaAlloc } from '../lib/cuda';
import { defineGpuSuites } from './cuda-suites';

const root = path.join(__dirname, '..');
const builtPlugin = path.join(root, 'build', 'cuda', 'libxnorm_cuda.so');

interface Probe {
  info: { available: boolean; reason?: string; plugin?: string; cudaVersion?: string; driverVersion?: string; driverNeeded?: string; devices: unknown[] };
  alloc: string;
  allocMessage?: string;
  cpuCount: number;
  cpuMean: number[];
}

function probe(env: Record<string, string>, paths: string[] = []): Probe {
  const r = spawnSync(process.execPath, [path.join(__dirname, 'children', 'cuda-probe.cjs')], {
    input: JSON.stringify({ paths }),
    env: { ...process.env, XNORM_CUDA_PLUGIN: '', XNORM_CUDA: '', ...env },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`cuda-probe.cjs exited ${r.status} (signal ${r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Probe;
}

function expectCpuStillWorks(p: Probe) {
  expect(p.cpuCount).toBe(2);
  expect(p.cpuMean).toEqual([2, 3]);
}


function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'xnorm-cuda-'));
}

describe('CUDA plugin loading (child processes)', () => {
  it('reports a missing plugin with the places it looked, and CPU ops keep working', () => {
    const missing = path.join(tmpDir(), 'libxnorm_cuda.so');
    const p = probe({}, [missing]);
    expect(p.info.available).toBe(false);
    expect(p.info.reason).toMatch(/not installed/);
    expect(p.info.reason).toContain(missing);
    expect(p.info.reason).toMatch(/bash node_modules\/xnorm\/scripts\/build-cuda.sh node_modules\/xnorm\/build\/cuda/);
    expect(p.info.devices).toEqual([]);
    expect(p.alloc).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    expect(p.allocMessage).toMatch(/not installed/);
    expectCpuStillWorks(p);
  });

  it('XNORM_CUDA=0 turns CUDA off with that reason', () => {
    const p = probe({ XNORM_CUDA: '0' }, [builtPlugin]);
    expect(p.info.available).toBe(false);
    expect(p.info.reason).toMatch(/XNORM_CUDA=0/);
    expect(p.alloc).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    expectCpuStillWorks(p);
  });

  it('a file that is not a shared library is a load failure, not a crash', () => {
    const bad = path.join(tmpDir(), 'libxnorm_cuda.so');
    fs.writeFileSync(bad, 'this is not an ELF file');
    const p = probe({ XNORM_CUDA_PLUGIN: bad });
    expect(p.info.available).toBe(false);
    expect(p.info.reason).toMatch(/could not be loaded/);
    expect(p.alloc).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    expectCpuStillWorks(p);
  });

  const libm = ['/lib/x86_64-linux-gnu/libm.so.6', '/lib/aarch64-linux-gnu/libm.so.6', '/lib64/libm.so.6', '/usr/lib/libm.so.6'].find(
    (f) => fs.existsSync(f),
  );
  it.skipIf(!libm)('a shared library without the plugin entry points is refused', () => {
    const p = probe({ XNORM_CUDA_PLUGIN: libm! });
    expect(p.info.available).toBe(false);
    expect(p.info.reason).toMatch(/is not an xnorm_cuda plugin/);
    expectCpuStillWorks(p);
  });

  const cc = ['/usr/bin/cc', '/usr/bin/gcc', '/usr/bin/clang'].find((f) => fs.existsSync(f));
  if (!cc) console.log('[cuda.test] ABI-mismatch test skipped: no C compiler at /usr/bin/cc, gcc or clang');
  it.skipIf(!cc)('a plugin with another C ABI version is refused with both versions named', () => {
    const dir = tmpDir();
    const src = path.join(dir, 'fake.c');
    const lib = path.join(dir, 'libxnorm_cuda.so');
    fs.writeFileSync(src, 'unsigned xnorm_cuda_abi_version(void) { return 999; }\nconst void* xnorm_cuda_get_api(void) { return 0; }\n');
    const r = spawnSync(cc!, ['-shared', '-fPIC', '-o', lib, src], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const p = probe({ XNORM_CUDA_PLUGIN: lib });
    expect(p.info.available).toBe(false);
    expect(p.info.reason).toMatch(/C ABI version 999 but this addon needs \d+;/);
    expectCpuStillWorks(p);
  });

  const hasPlugin = fs.existsSync(builtPlugin);
  const hasDriver = ['/usr/lib/x86_64-linux-gnu/libcuda.so.1', '/usr/lib64/libcuda.so.1', '/lib/x86_64-linux-gnu/libcuda.so.1'].some((f) => fs.existsSync(f));
  if (!hasPlugin)
    console.log(`[cuda.test] built-plugin test skipped: ${builtPlugin} does not exist (build it with scripts/build-cuda.sh)`);
  it.skipIf(!hasPlugin)('the built plugin loads; without a GPU its probe fails cleanly with the CUDA error', () => {
    const p = probe({}, [builtPlugin]);
    expect(p.info.plugin).toBe(builtPlugin);
    if (p.info.available) {
      expect(p.info.devices.length).toBeGreaterThan(0);
      expect(p.alloc).toBe('ok');
    } else {
      expect(p.info.reason).toMatch(/no usable NVIDIA driver or GPU: .*(driver|device)/i);
      // no libcuda at all (this machine and CI): said in those words, with the driver the plugin needs
      if (!hasDriver) expect(p.info.reason).toMatch(/no NVIDIA driver found .* built with CUDA \d+\.\d and needs the NVIDIA driver R\d+/);
      expect(p.alloc).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    }
    expect(p.info.cudaVersion).toMatch(/^\d+\.\d$/);
    expect(p.info.driverNeeded).toMatch(/or newer/);
    expectCpuStillWorks(p);
  });

  it.skipIf(!hasPlugin)('the built plugin has the addon\'s glibc floor (2.17)', () => {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'abi-requirements.js'), '--max-glibc', '2.17', builtPlugin], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/glibc >= 2\.(1[0-7]|[0-9])\b/);
  });

  // The driver diagnosis, through the plugin's CPU emulation (it fails its device count as the real
  // runtime does when XNORM_EMU_DRIVER says there is no driver, or an old one).
  const emulated = path.join(root, 'build', 'cuda-emu', 'libxnorm_cuda.so');
  it.skipIf(!fs.existsSync(emulated))('no driver, or one too old, is said in those words with the driver needed', () => {
    const none = probe({ XNORM_CUDA_PLUGIN: emulated, XNORM_EMU_DRIVER: 'none' });
    expect(none.info.available).toBe(false);
    expect(none.info.reason).toMatch(/no NVIDIA driver found \(libcuda\.so\.1 .*\); this plugin is built with CUDA 13\.0 and needs the NVIDIA driver R580 \(580\.65\.06\) or newer/);
    expect(none.info.driverVersion).toBeUndefined();
    expect(none.info.cudaVersion).toBe('13.0');
    expectCpuStillWorks(none);
    const old = probe({ XNORM_CUDA_PLUGIN: emulated, XNORM_EMU_DRIVER: '12040' });
    expect(old.info.reason).toMatch(/the NVIDIA driver is too old: it supports CUDA 12\.4, this plugin is built with CUDA 13\.0 and needs the driver R580/);
    expect(old.info.driverVersion).toBe('12.4');
    expect(old.info.driverNeeded).toBe('R580 (580.65.06) or newer');
    const fine = probe({ XNORM_CUDA_PLUGIN: emulated });
    expect(fine.info.available).toBe(true);
    expect(fine.info.driverVersion).toBe('13.0');
  });
});

const cudaInfo = cudaStatusSync();
const gpu = cudaInfo.available;

describe('device names', () => {
  it('rejects names that are no device with ERR_XNORM_DEVICE', () => {
    for (const d of ['gpu', 'cuda:', 'cuda:-1', 'cuda:x', 'CUDA', 3])
      expectCode(() => zeros([2], { device: d as never }), 'ERR_XNORM_DEVICE');
  });

  it('cudaStatusSync() is consistent: a reason when unavailable, devices when available', () => {
    if (gpu) {
      expect(cudaInfo.devices.length).toBeGreaterThan(0);
      for (const d of cudaInfo.devices) {
        expect(d.name.length).toBeGreaterThan(0);
        expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
        expect(d.memoryBytes).toBeGreaterThan(0);
      }
    } else {
      expect(cudaInfo.reason).toMatch(/CUDA|GPU|plugin/);
      expect(cudaInfo.devices).toEqual([]);
    }
  });
});

describe.skipIf(gpu)('without a usable GPU', () => {
  it('every way onto a GPU throws ERR_XNORM_CUDA_UNAVAILABLE with the reason; CPU ops keep working', async () => {
    const x = tensor([1, 2, 3, 4], [2, 2]);
    for (const fn of [
      () => zeros([2], { device: 'cuda' }),
      () => tensor([1], [1], { device: 'cuda:0' }),
      () => x.toSync('cuda'),
      () => cudaAlloc(0, 16),
    ]) {
      const e = expectCode(fn, 'ERR_XNORM_CUDA_UNAVAILABLE');
      expect(e.message).toContain(cudaInfo.reason!);
    }
    await expect(x.to('cuda:1')).rejects.toMatchObject({ code: 'ERR_XNORM_CUDA_UNAVAILABLE' });
    expect(Array.from(momentsSync(x).mean.dataSync())).toEqual([2, 3]);
    expect(x.device).toBe('cpu');
  });
});

if (!gpu) console.log(`[cuda.test] GPU tests skipped: ${cudaInfo.reason}`);
defineGpuSuites(!gpu);
