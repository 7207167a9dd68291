// The CUDA backend: plugin discovery and its failure reasons (in child processes, since the plugin is
// loaded once per process), the CPU fallback, and, on a machine with a GPU, device tensors and the
// BN-statistic kernels against the CPU kernels. Nothing is built here: CI (or `npm run build:cuda`)
// builds build/cuda/libxnorm_cuda.so where nvcc is present.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import {
  XnormError,
  batchNorm,
  batchNormSync,
  info,
  mergeMoments,
  moments,
  momentsSync,
  tensor,
  updateRunningStats,
  variance,
  zeros,
} from '../lib';
import { cudaAlloc } from '../lib/cuda';
import type { DType } from '../lib/tensor';
import { randomArray } from './helpers';

const root = path.join(__dirname, '..');
const builtPlugin = path.join(root, 'build', 'cuda', 'libxnorm_cuda.so');

interface Probe {
  info: { available: boolean; reason?: string; plugin?: string; devices: unknown[] };
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

function expectCode(fn: () => unknown, code: string) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(XnormError);
    expect((e as XnormError).code).toBe(code);
    return e as XnormError;
  }
  throw new Error(`expected ${code}, but nothing was thrown`);
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
    expect(p.info.reason).toMatch(/npm run build:cuda/);
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
    expect(p.info.reason).toMatch(/C ABI version 999 but this addon needs 1/);
    expectCpuStillWorks(p);
  });

  const hasPlugin = fs.existsSync(builtPlugin);
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
      expect(p.alloc).toBe('ERR_XNORM_CUDA_UNAVAILABLE');
    }
    expectCpuStillWorks(p);
  });
});

const cudaInfo = info().cuda;
const gpu = cudaInfo.available;

describe('device names', () => {
  it('rejects names that are no device with ERR_XNORM_DEVICE', () => {
    for (const d of ['gpu', 'cuda:', 'cuda:-1', 'cuda:x', 'CUDA', 3])
      expectCode(() => zeros([2], { device: d as never }), 'ERR_XNORM_DEVICE');
  });

  it('info().cuda is consistent: a reason when unavailable, devices when available', () => {
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

// ---- on a GPU ----

function expectRel(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const tol = rel * Math.max(1, Math.abs(expected[i]));
    if (!(Math.abs(actual[i] - expected[i]) <= tol))
      throw new Error(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tol})`);
  }
}

describe.skipIf(!gpu)('device tensors (GPU)', () => {
  it('round-trips every dtype to the GPU and back, sync and async', async () => {
    for (const dtype of ['float32', 'float16', 'bfloat16', 'int32', 'uint8', 'bit'] as DType[]) {
      const shape = dtype === 'bit' ? [3, 5, 40] : [3, 5, 7];
      const host = zeros(shape, { dtype });
      const s = host.storage();
      for (let i = 0; i < s.length; i++) s[i] = (i * 2654435761) % 251;
      const d = host.toSync('cuda');
      expect(d.device).toBe('cuda:0');
      expect(d.shape).toEqual(shape);
      expect(d.toSync('cuda:0')).toBe(d);
      expect(Array.from(d.dataSync())).toEqual(Array.from(s));
      expect(Array.from(await d.data())).toEqual(Array.from(s));
      const back = await d.to('cpu');
      expect(back.device).toBe('cpu');
      expect(Array.from(back.dataSync())).toEqual(Array.from(s));
      const d2 = await host.to('cuda');
      expect(Array.from(d2.dataSync())).toEqual(Array.from(s));
      d.dispose();
      d2.dispose();
    }
    const z = zeros([4], { device: 'cuda' });
    expect(Array.from(z.dataSync())).toEqual([0, 0, 0, 0]);
    const t = tensor([1, 2, 3], [3], { device: 'cuda' });
    expect(Array.from(t.float32Sync())).toEqual([1, 2, 3]);
  });

  it('dispose frees at once, is idempotent, and later use is ERR_XNORM_DISPOSED', async () => {
    const bytes = 64 << 20;
    const before = process.memoryUsage().external;
    const t = zeros([bytes / 4], { device: 'cuda' });
    expect(process.memoryUsage().external - before).toBeGreaterThanOrEqual(bytes);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(process.memoryUsage().external - before).toBeLessThan(bytes);
    expectCode(() => t.dataSync(), 'ERR_XNORM_DISPOSED');
    expectCode(() => t.toSync('cpu'), 'ERR_XNORM_DISPOSED');
    await expect(moments(t)).rejects.toMatchObject({ code: 'ERR_XNORM_DISPOSED' });
  });

  it('running out of device memory is ERR_XNORM_OUT_OF_MEMORY and the device stays usable', () => {
    expectCode(() => cudaAlloc(0, 2 ** 50), 'ERR_XNORM_OUT_OF_MEMORY');
    const t = tensor([1, 2], [2], { device: 'cuda' });
    expect(Array.from(t.dataSync())).toEqual([1, 2]);
  });

  it('mixing devices is ERR_XNORM_DEVICE; CPU-only paths name the device', () => {
    const xc = tensor(randomArray(24, 1), [2, 3, 4], { device: 'cuda' });
    const xh = tensor(randomArray(24, 1), [2, 3, 4]);
    const mc = momentsSync(xc);
    const mh = momentsSync(xh);
    expectCode(() => batchNormSync(xc, mh), 'ERR_XNORM_DEVICE');
    expectCode(() => batchNormSync(xh, mc), 'ERR_XNORM_DEVICE');
    expectCode(() => mergeMoments(mc, mh), 'ERR_XNORM_DEVICE');
    expectCode(() => batchNormSync(xc, mc, { gamma: tensor([1, 1, 1], [3]) }), 'ERR_XNORM_DEVICE');
    expectCode(() => xc.storage('op: x'), 'ERR_XNORM_DEVICE');
  });
});

type Case = { shape: number[]; layout: 'nchw' | 'nhwc' };
const CASES: Case[] = [
  { shape: [3, 5, 7, 11], layout: 'nchw' },
  { shape: [2, 6, 1, 1], layout: 'nchw' },
  { shape: [1, 3, 70001], layout: 'nchw' },
  { shape: [5, 4, 3], layout: 'nchw' },
  { shape: [4, 9, 13, 16], layout: 'nhwc' },
  { shape: [2, 17, 300], layout: 'nhwc' },
  { shape: [3, 1000, 3], layout: 'nhwc' },
  { shape: [64, 6], layout: 'nhwc' },
];

describe.skipIf(!gpu)('BN statistics on the GPU match the CPU kernels', () => {
  it('moments per channel, instance and group, every float dtype and both layouts', async () => {
    let seed = 10;
    for (const { shape, layout } of CASES)
      for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[])
        for (const over of ['channel', 'instance', 'group'] as const) {
          const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
          const groups = c % 3 === 0 ? 3 : 1;
          const size = shape.reduce((a, b) => a * b, 1);
          const xh = tensor(randomArray(size, seed++, 2, 5), shape, { dtype });
          const xc = xh.toSync('cuda');
          const opts = { layout, over, groups };
          const want = momentsSync(xh, opts);
          const got = momentsSync(xc, opts);
          const again = await moments(xc, opts);
          const what = `${dtype} ${layout} [${shape}] ${over}`;
          expect(got.count, what).toBe(want.count);
          expect(got.mean.device).toBe('cuda:0');
          expectRel(got.precise!.mean, want.precise!.mean, 2e-6, `${what} mean`);
          const scale = Math.max(...Array.from(want.precise!.m2, Math.abs), 1);
          expectRel(Array.from(got.precise!.m2, (v) => v / scale), Array.from(want.precise!.m2, (v) => v / scale), 2e-5, `${what} m2`);
          // Deterministic, and both forms agree bit for bit.
          expect(Array.from(again.precise!.mean)).toEqual(Array.from(got.precise!.mean));
          expect(Array.from(again.precise!.m2)).toEqual(Array.from(got.precise!.m2));
          expect(Array.from(got.mean.dataSync())).toEqual(Array.from(Float32Array.from(got.precise!.mean)));
        }
  });

  it('a large mean against a unit spread keeps its precision', () => {
    const x = tensor(randomArray(4 * 3 * 5000, 77, 1, 1e6), [4, 3, 5000]);
    const want = momentsSync(x);
    const got = momentsSync(x.toSync('cuda'));
    expectRel(got.precise!.mean, want.precise!.mean, 1e-9, 'mean');
    expectRel(Array.from(got.precise!.m2, (v) => v / 2e4), Array.from(want.precise!.m2, (v) => v / 2e4), 1e-4, 'm2');
  });

  it('batchNorm per channel and per instance, with ReLU, on the GPU', async () => {
    let seed = 100;
    for (const { shape, layout } of CASES)
      for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[])
        for (const perInstance of [false, true]) {
          const size = shape.reduce((a, b) => a * b, 1);
          const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
          const xh = tensor(randomArray(size, seed++, 3, 1), shape, { dtype });
          const xc = xh.toSync('cuda');
          const over = perInstance ? 'instance' : 'channel';
          const mh = momentsSync(xh, { layout, over });
          const mc = momentsSync(xc, { layout, over });
          const gamma = tensor(randomArray(c, seed++), [c]);
          const beta = tensor(randomArray(c, seed++), [c]);
          const relu = seed % 2 === 0 ? 'relu' : null;
          const want = batchNormSync(xh, mh, { gamma, beta, layout, activation: relu }).float32Sync();
          const yc = await batchNorm(xc, mc, { gamma: gamma.toSync('cuda'), beta: beta.toSync('cuda'), layout, activation: relu });
          expect(yc.device).toBe('cuda:0');
          const got = yc.float32Sync();
          const tol = dtype === 'float32' ? 1e-5 : dtype === 'float16' ? 2e-3 : 1.6e-2;
          expectRel(got, want, tol, `batchNorm ${dtype} ${layout} [${shape}] perInstance=${perInstance}`);
        }
  });

  it('training-mode pipeline stays on the device', async () => {
    const x = tensor(randomArray(2 * 4 * 9, 5), [2, 4, 9], { device: 'cuda' });
    const m = await moments(x);
    expect(variance(m).device).toBe('cuda:0');
    const running = { mean: zeros([4], { device: 'cuda' }), var: tensor([1, 1, 1, 1], [4], { device: 'cuda' }) };
    const next = updateRunningStats(running, m);
    expect(next.mean.device).toBe('cuda:0');
    const y = await batchNorm(x, next);
    expect(y.device).toBe('cuda:0');
    const merged = mergeMoments(m, m);
    expect(merged.count).toBe(2 * m.count);
  });
});
