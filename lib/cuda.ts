// The CUDA backend as seen from JS: plugin status (loaded on first use), device names, and device
// memory handles. The plugin itself is the separate library xnorm_cuda (see docs/DESIGN.md, "CUDA plugin"), loaded by the
// addon with dlopen; when it is missing or no GPU works, CPU ops keep working and CUDA ops throw
// ERR_XNORM_CUDA_UNAVAILABLE with the reason.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { debugLog } from './debug';
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
  /** Why CUDA is unavailable: no plugin, ABI mismatch, no NVIDIA driver, a driver too old, no device. */
  reason?: string;
  /** The plugin file that was loaded, when one was found. */
  plugin?: string;
  /** The CUDA runtime version the plugin is built with, e.g. '13.0' (when the plugin loaded). */
  cudaVersion?: string;
  /** The CUDA version the installed NVIDIA driver supports, e.g. '13.1'; absent when there is no driver. */
  driverVersion?: string;
  /** The NVIDIA driver the plugin needs, in words, e.g. 'R580 (580.65.06) or newer'. */
  driverNeeded?: string;
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
let probing: Promise<CudaStatus> | undefined;

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
 * The plugin is probed in a child process first, so that a driver that crashes while initialising takes
 * down the child, not this process. XNORM_CUDA_PROBE=inprocess skips it (the child itself runs with that
 * setting), and so does having no plugin file at all (nothing could crash).
 */
function childProbe(paths: string[]): { args: string[]; env: NodeJS.ProcessEnv } | undefined {
  if (process.env.XNORM_CUDA_PROBE === 'inprocess' || process.env.XNORM_CUDA === '0') return undefined;
  if (!pluginCandidates(paths).some((f) => fs.existsSync(f))) return undefined;
  const script =
    `const a = require(${JSON.stringify(require.resolve('node-gyp-build'))})(${JSON.stringify(packageRoot())});` +
    `process.stdout.write(JSON.stringify(a.cudaInfo({ paths: ${JSON.stringify(paths)} })));`;
  debugLog('CUDA probe: in a child process first (XNORM_CUDA_PROBE=inprocess skips this)');
  return { args: ['-e', script], env: { ...process.env, XNORM_CUDA_PROBE: 'inprocess' } };
}

const kChildTimeoutMs = 120_000;

interface ChildResult {
  spawned: boolean;
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * What the child found: its report when CUDA is unusable there, or undefined when this process may load
 * the plugin itself (the child found a working GPU, or could not run at all: sandbox, limits).
 */
function childVerdict(r: ChildResult): CudaStatus | undefined {
  if (!r.spawned) return undefined;
  if (r.status !== 0) {
    const why = r.signal ? `it was killed by ${r.signal}` : `it exited with status ${r.status}`;
    const lines = (r.stderr || '').trim().split('\n').filter((l) => !l.startsWith('[xnorm]'));
    const detail = lines.slice(-3).join(' ').slice(0, 500);
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

function runChild(args: string[], env: NodeJS.ProcessEnv): Promise<ChildResult> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, args, { env, timeout: kChildTimeoutMs, windowsHide: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.once('error', () => resolve({ spawned: false, status: null, signal: null, stdout, stderr }));
    c.once('close', (status, signal) => resolve({ spawned: true, status, signal, stdout, stderr }));
  });
}

function fromNative(s: NativeStatus): CudaStatus {
  const { tried: _tried, devices, ...rest } = s;
  return { ...rest, devices: devices.map((d) => ({ ...d })) };
}

/** The status if this process has probed CUDA already (in any thread), else undefined. Never blocks. */
export function cudaStatusIfProbed(): CudaStatus | undefined {
  if (!status) {
    const s = native().cudaInfo({ peek: true }) as NativeStatus;
    if (s.tried) status = fromNative(s);
  }
  return status;
}

/**
 * Probes CUDA (once per process, shared by worker threads) without blocking the event loop: the child
 * process and the plugin's load run off the JS thread. Resolves with whether the plugin loaded, its
 * devices and versions, and the reason when CUDA is unavailable; a missing GPU is not an error.
 * @example const { available, reason } = await cudaStatus();
 */
export function cudaStatus(): Promise<CudaStatus> {
  const known = cudaStatusIfProbed();
  if (known) return Promise.resolve(known);
  probing ??= (async () => {
    const paths = pluginSearchPaths();
    const spec = childProbe(paths);
    const child = spec ? childVerdict(await runChild(spec.args, spec.env)) : undefined;
    const n = native();
    const s = child ? n.cudaInfo({ refuse: child }) : await n.cudaInfo({ paths }, true);
    status = fromNative(s as NativeStatus);
    return status;
  })();
  return probing;
}

/**
 * The blocking form of cudaStatus(): the first call in a process probes on this thread (a child process,
 * then the plugin's load: ~100 ms, seconds with some drivers). Making a CUDA tensor calls it.
 * @example
 * const device = cudaStatusSync().available ? 'cuda' : 'cpu';
 * const x = zeros([1, 3, 32, 32], { device });
 */
export function cudaStatusSync(): CudaStatus {
  const known = cudaStatusIfProbed();
  if (known) return known;
  const paths = pluginSearchPaths();
  const spec = childProbe(paths);
  let child: CudaStatus | undefined;
  if (spec) {
    const r = spawnSync(process.execPath, spec.args, { encoding: 'utf8', env: spec.env, timeout: kChildTimeoutMs, windowsHide: true });
    child = childVerdict({ spawned: !r.error || r.status !== null || r.signal !== null, status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' });
  }
  const n = native();
  status = fromNative((child ? n.cudaInfo({ refuse: child }) : n.cudaInfo({ paths })) as NativeStatus);
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
  const s = cudaStatusSync();
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
  const s = cudaStatusSync();
  if (!s.available) fail('ERR_XNORM_CUDA_UNAVAILABLE', `CUDA is not available: ${s.reason}`);
  return native().cudaAlloc({ device, bytes, zero });
}

/** @internal Frees device memory now (work in flight that uses it finishes first). Idempotent. */
export function cudaFree(handle: DeviceHandle): void {
  native().cudaFree(handle);
}
