// The CUDA backend as seen from JS: plugin status (loaded on first use), device names, and device
// memory handles. The plugin itself is the separate library xnorm_cuda (see DESIGN.md), loaded by the
// addon with dlopen; when it is missing or no GPU works, CPU ops keep working and CUDA ops throw
// ERR_XNORM_CUDA_UNAVAILABLE with the reason.
import * as path from 'path';
import { describe, fail } from './errors';
import { native, packageRoot } from './native';

export interface CudaDevice {
  name: string;
  computeCapability: string;
  memoryBytes: number;
  multiprocessors: number;
}
export interface CudaStatus {
  available: boolean;
  reason?: string;
  /** The plugin file that was loaded, when one was found. */
  plugin?: string;
  devices: CudaDevice[];
}

/** @internal Opaque handle to device memory owned by one Tensor. */
export type DeviceHandle = { readonly __xnormDeviceMemory: unique symbol };

/** Where the plugin is looked for after the folder of the .node file (XNORM_CUDA_PLUGIN overrides all). */
export function pluginSearchPaths(): string[] {
  const root = packageRoot();
  return [
    path.join(root, 'build', 'cuda', 'libxnorm_cuda.so'),
    path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'libxnorm_cuda.so'),
  ];
}

let status: CudaStatus | undefined;

/** Loads the plugin on the first call (once per process) and reports what it found. */
export function cudaStatus(): CudaStatus {
  if (!status) {
    const s = native().cudaInfo({ paths: pluginSearchPaths() }) as CudaStatus;
    status = { ...s, devices: s.devices.map((d) => ({ ...d })) };
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
  return native().cudaAlloc({ device, bytes, zero }) as DeviceHandle;
}

/** @internal Frees device memory now (work in flight that uses it finishes first). Idempotent. */
export function cudaFree(handle: DeviceHandle): void {
  (native().cudaFree as unknown as (h: DeviceHandle) => void)(handle);
}
