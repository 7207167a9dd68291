import * as fs from 'fs';
import * as path from 'path';
import { cudaStatusIfProbed } from './cuda';
import { describe, fail } from './errors';
import { loadedAddonFile, native, packageRoot } from './native';
import type { OutputPoolStats } from './native';
import { integer, options } from './validate';

/** What info() reports: version, the addon file, CPU threads and ISA level, CUDA status and devices, build. */
export interface Info {
  version: string;
  /** The native addon file this process loaded. */
  addon: string;
  cpu: { threads: number; isa: string[]; level: 'avx512' | 'avx2' | 'neon' | 'portable'; warning?: string };
  cuda: {
    /** Whether this process has probed CUDA yet: info() never probes (`await cudaStatus()` does). */
    probed: boolean;
    available: boolean;
    /** Why CUDA is unavailable: not probed yet, no plugin, ABI mismatch, no driver, driver too old, no device. */
    reason?: string;
    /** The xnorm_cuda plugin file that was loaded. */
    plugin?: string;
    /** The CUDA runtime version the plugin is built with, e.g. '13.0'. */
    cudaVersion?: string;
    /** The CUDA version the installed NVIDIA driver supports; absent when there is no driver. */
    driverVersion?: string;
    /** The NVIDIA driver the plugin needs, e.g. 'R580 (580.65.06) or newer'. */
    driverNeeded?: string;
    devices: { name: string; computeCapability: string; memoryBytes: number; multiprocessors: number }[];
  };
  build: { napi: number; cuda: boolean; compiler: string };
}

/**
 * The package version, the addon file, the CPU instruction set in use and the thread count, the CUDA
 * plugin's status and devices, and how the addon was built. Never blocks: CUDA is reported as probed
 * only once something probed it (`await cudaStatus()`, or making a CUDA tensor).
 * @example const { available, reason } = (await cudaStatus(), info().cuda);
 */
export function info(): Info {
  const n = native().info();
  const cuda = cudaStatusIfProbed();
  const version: string = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version;
  return {
    version,
    addon: loadedAddonFile(),
    cpu: { threads: n.threads, isa: n.isa, level: n.isaLevel as Info['cpu']['level'], ...(n.isaWarning ? { warning: n.isaWarning } : {}) },
    cuda: cuda
      ? { probed: true, ...cuda, devices: cuda.devices.map((d) => ({ ...d })) }
      : { probed: false, available: false, reason: 'not probed yet: `await cudaStatus()` probes it (once per process)', devices: [] },
    // build.cuda: a CUDA plugin was found (whether or not a GPU is present); false until probed.
    build: { napi: n.napi, cuda: cuda?.plugin !== undefined, compiler: n.compiler },
  };
}

/**
 * Threads the kernels use from now on (default: XNORM_NUM_THREADS, else the machine's hardware threads).
 * Process-wide: the pool is shared by all worker threads.
 * @param n an integer in [1, 256]
 * @throws XnormError ERR_XNORM_ARGUMENT for any other n
 * @example
 * setNumThreads(4);
 * console.log(info().cpu.threads); // 4
 */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 256)
    fail('ERR_XNORM_ARGUMENT', `setNumThreads: expected an integer in [1, 256], received ${describe(n)}`);
  native().setNumThreads({ threads: n });
}

export type { OutputPoolStats } from './native';

/**
 * xnorm's output pool: CPU outputs of 128 KiB and more (16 KiB and more once outputs of that size have
 * been disposed) live in blocks it keeps for reuse, so a steady loop of requests touches memory that is
 * already faulted in. idleBytes: kept for reuse; liveBytes:
 * held by tensors (until dispose() or the GC) and ops in flight; maxIdleBytes: the most kept idle
 * (default 256 MiB; lowering it frees the excess now). Process-wide, shared by worker threads.
 * @param opts `maxIdleBytes` (an integer >= 0): the most bytes kept idle from now on; omit to only read
 * @returns `{ idleBytes, liveBytes, maxIdleBytes }`
 * @throws XnormError ERR_XNORM_ARGUMENT (unknown key, bad value)
 * @example
 * const { idleBytes, liveBytes } = outputPool();
 * outputPool({ maxIdleBytes: 64 << 20 }); // keep at most 64 MiB idle
 */
export function outputPool(opts?: { maxIdleBytes?: number }): OutputPoolStats {
  const o = options(opts, 'outputPool: opts', ['maxIdleBytes']);
  if (o.maxIdleBytes === undefined) return native().outputPool({});
  return native().outputPool({ maxIdleBytes: integer(o.maxIdleBytes, 'outputPool: opts.maxIdleBytes', 0, undefined, 2 ** 52) });
}
