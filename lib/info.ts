import * as fs from 'fs';
import * as path from 'path';
import { cudaStatus } from './cuda';
import { describe, fail } from './errors';
import { native, packageRoot } from './native';
import type { OutputPoolStats } from './native';
import { integer, options } from './validate';

/** What info() reports: version, CPU threads and ISA level, CUDA availability and devices, build. */
export interface Info {
  version: string;
  cpu: { threads: number; isa: string[]; level: string; warning?: string };
  cuda: {
    available: boolean;
    /** Why CUDA is unavailable: no plugin, ABI mismatch, no driver or device (with the CUDA error). */
    reason?: string;
    /** The xnorm_cuda plugin file that was loaded. */
    plugin?: string;
    devices: { name: string; computeCapability: string; memoryBytes: number; multiprocessors: number }[];
  };
  build: { napi: number; cuda: boolean; compiler: string };
}

/**
 * The package version, the CPU instruction set in use and the thread count, the CUDA plugin's status and
 * devices, and how the addon was built. The first call probes CUDA (once per process).
 * @example if (!info().cuda.available) console.log(info().cuda.reason);
 */
export function info(): Info {
  const n = native().info();
  const cuda = cudaStatus();
  const version: string = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version;
  return {
    version,
    cpu: { threads: n.threads, isa: n.isa, level: n.isaLevel, ...(n.isaWarning ? { warning: n.isaWarning } : {}) },
    cuda: {
      available: cuda.available,
      ...(cuda.reason !== undefined ? { reason: cuda.reason } : {}),
      ...(cuda.plugin !== undefined ? { plugin: cuda.plugin } : {}),
      devices: cuda.devices.map((d) => ({ ...d })),
    },
    // build.cuda: the CUDA plugin was found and loaded (whether or not a GPU is present).
    build: { napi: n.napi, cuda: cuda.plugin !== undefined, compiler: n.compiler },
  };
}

/** Threads the kernels use from now on (default: the machine's hardware threads). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 256)
    fail('ERR_XNORM_ARGUMENT', `setNumThreads: expected an integer in [1, 256], received ${describe(n)}`);
  native().setNumThreads({ threads: n });
}

export type { OutputPoolStats } from './native';

/**
 * xnorm's output pool: CPU outputs of 128 KiB and more live in blocks it keeps for reuse, so a steady
 * loop of requests touches memory that is already faulted in. idleBytes: kept for reuse; liveBytes:
 * held by tensors (until dispose() or the GC) and ops in flight; maxIdleBytes: the most kept idle
 * (default 256 MiB; lowering it frees the excess now). Process-wide, shared by worker threads.
 */
export function outputPool(opts?: { maxIdleBytes?: number }): OutputPoolStats {
  const o = options(opts, 'outputPool: opts', ['maxIdleBytes']);
  if (o.maxIdleBytes === undefined) return native().outputPool({});
  return native().outputPool({ maxIdleBytes: integer(o.maxIdleBytes, 'outputPool: opts.maxIdleBytes', 0, undefined, 2 ** 52) });
}
