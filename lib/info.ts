import * as fs from 'fs';
import * as path from 'path';
import { cudaStatus } from './cuda';
import { describe, fail } from './errors';
import { native, packageRoot } from './native';

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
