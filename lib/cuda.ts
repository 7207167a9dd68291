// The CUDA backend as seen from JS: plugin status (loaded on first use), device names, and device
// memory handles. The plugin itself is the separate library xnorm_cuda (see docs/DESIGN.md, "CUDA plugin"), loaded by the
// addon with dlopen; when it is missing or no GPU works, CPU ops keep working and CUDA ops throw
// ERR_XNORM_CUDA_UNAVAILABLE with the reason.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { describe, fail } from './errors';
import { native, packageRoot } from './native';

/** One CUDA device as the plugin sees it. */
export interface CudaDevice {
  name: string;
  computeCapability: string;
  memoryBytes: number;
  multiprocessors: number;
}
/** Whether the CUDA plugin loaded, its devices, and the reason when it did not. */
export interface CudaStatus {
  available: boolean;
  reason?: string;
  /** The plugin file that was loaded, when one was found. */
  plugin?: string;
  devices: CudaDevice[];
}

// Opaque handle to device memory owned by one Tensor.
import type { DeviceHandle } from './native-api';
export type { DeviceHandle };

/** Where the plugin is looked for after the folder of the .node file (XNORM_CUDA_PLUGIN overrides all). */
export function pluginSearchPaths(): string[] {
  const root = packageRoot();
  return [
    path.join(root, 'build', 'cuda', 'libxnorm_cuda.so'),
    path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'libxnorm_cuda.so'),
  ];
}

let status: CudaStatus | undefined;

/** Every file the addon may load, in its order (XNORM_CUDA_PLUGIN alone when set). */
function pluginCandidates(paths: string[]): string[] {
  const forced = process.env.XNORM_CUDA_PLUGIN;
  if (forced) return [forced];
  const out = [...paths];
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addonFile: string = require('node-gyp-build').resolve(packageRoot());
    out.unshift(path.join(path.dirname(addonFile), 'libxnorm_cuda.so'));
  } catch {
    // the addon itself will fail to load and say why
  }
  return [...new Set(out)];  // the addon's own folder may be one of the search paths
}

type NativeStatus = CudaStatus & { tried: boolean };

/**
 * Probes the plugin in a child process first, so that a driver that crashes while initialising takes
 * down the child, not this process. Returns the child's report when CUDA is unusable, or undefined
 * when this process may load the plugin itself (the child found a working GPU, or could not run).
 * XNORM_CUDA_PROBE=inprocess skips it (the child itself runs with that setting).
 */
function probeInChild(paths: string[]): CudaStatus | undefined {
  if (process.env.XNORM_CUDA_PROBE === 'inprocess' || process.env.XNORM_CUDA === '0') return undefined;
  // Nothing to load, nothing that could crash: the in-process probe only reports the missing plugin.
  if (!pluginCandidates(paths).some((f) => fs.existsSync(f))) return undefined;
  const script =
    `const a = require(${JSON.stringify(require.resolve('node-gyp-build'))})(${JSON.stringify(packageRoot())});` +
    `process.stdout.write(JSON.stringify(a.cudaInfo({ paths: ${JSON.stringify(paths)} })));`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8',
    env: { ...process.env, XNORM_CUDA_PROBE: 'inprocess' },
    timeout: 120_000,
    windowsHide: true,
  });
  if (r.error) return undefined;  // cannot spawn here (sandbox, limits): probe in this process instead
  if (r.status !== 0) {
    const why = r.signal ? `it was killed by ${r.signal}` : `it exited with status ${r.status}`;
    const detail = (r.stderr || '').trim().split('\n').slice(-3).join(' ').slice(0, 500);
    return {
      available: false,
      reason: `probing the CUDA plugin crashed in a child process (${why}${detail ? `: ${detail}` : ''}); ` +
        'CUDA stays off in this process. XNORM_CUDA_PROBE=inprocess probes here instead',
      devices: [],
    };
  }
  try {
    const s = JSON.parse(r.stdout) as CudaStatus;
    return s.available ? undefined : s;
  } catch {
    return undefined;
  }
}

/** Loads the plugin on the first call (once per process) and reports what it found. */
export function cudaStatus(): CudaStatus {
  if (!status) {
    const n = native();
    let s = n.cudaInfo({ peek: true }) as NativeStatus;
    if (!s.tried) {
      const paths = pluginSearchPaths();
      const child = probeInChild(paths);
      s = (child
        ? n.cudaInfo({ refuse: child.reason, plugin: child.plugin })
        : n.cudaInfo({ paths })) as NativeStatus;
    }
    status = {
      available: s.available,
      ...(s.reason !== undefined ? { reason: s.reason } : {}),
      ...(s.plugin !== undefined ? { plugin: s.plugin } : {}),
      devices: s.devices.map((d) => ({ ...d })),
    };
  }
  return status;
}

/** True for 'cuda' and 'cuda:N'. */
export function isCudaDevice(device: string): boolean {
  return device === 'cuda' || /^cuda:\d+$/.test(device);
}

/**
 * Checks a device name and returns it normalised ('cuda' becomes 'cuda:0'), so that tensors compare
 * equal by device. CUDA names need a working GPU: ERR_XNORM_CUDA_UNAVAILABLE (with the reason)
 * otherwise, ERR_XNORM_DEVICE for an index that does not exist.
 */
export function resolveDevice(device: unknown, name: string): 'cpu' | `cuda:${number}` {
  if (device === 'cpu') return 'cpu';
  if (typeof device !== 'string' || !isCudaDevice(device))
    return fail('ERR_XNORM_DEVICE', `${name}: expected 'cpu', 'cuda' or 'cuda:N', received ${describe(device)}`);
  const index = device === 'cuda' ? 0 : Number(device.slice(5));
  const s = cudaStatus();
  if (!s.available) return fail('ERR_XNORM_CUDA_UNAVAILABLE', `${name}: ${device} requested, but CUDA is not available: ${s.reason}`);
  if (!Number.isSafeInteger(index) || index >= s.devices.length)
    return fail(
      'ERR_XNORM_DEVICE',
      `${name}: ${device} does not exist (this machine has ${s.devices.length} CUDA device(s))`,
    );
  return `cuda:${index}`;
}

/** The device index of a normalised CUDA device name. */
export function deviceIndex(device: string): number {
  return device === 'cuda' ? 0 : Number(device.slice(5));
}

/**
 * @internal Allocates `bytes` of device memory, zeroed on request (ERR_XNORM_OUT_OF_MEMORY when the GPU
 * has no room).
 */
export function cudaAlloc(device: number, bytes: number, zero = false): DeviceHandle {
  const s = cudaStatus();
  if (!s.available) fail('ERR_XNORM_CUDA_UNAVAILABLE', `CUDA is not available: ${s.reason}`);
  return native().cudaAlloc({ device, bytes, zero });
}

/** @internal Frees device memory now (work in flight that uses it finishes first). Idempotent. */
export function cudaFree(handle: DeviceHandle): void {
  native().cudaFree(handle);
}
