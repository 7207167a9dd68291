import * as fs from 'fs';
import * as path from 'path';
import { describe, fail } from './errors';
import { native, packageRoot } from './native';

export interface Info {
  version: string;
  cpu: { threads: number; isa: string[]; level: string; warning?: string };
  cuda: {
    available: boolean;
    reason?: string;
    devices: { name: string; computeCapability: string; memoryBytes: number }[];
  };
  build: { napi: number; cuda: boolean; compiler: string };
}

export function info(): Info {
  const n = native().info();
  const version: string = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version;
  return {
    version,
    cpu: { threads: n.threads, isa: n.isa, level: n.isaLevel, ...(n.isaWarning ? { warning: n.isaWarning } : {}) },
    cuda: { available: false, reason: 'this build of xnorm has no CUDA backend (the xnorm_cuda plugin is not implemented yet)', devices: [] },
    build: { napi: n.napi, cuda: false, compiler: n.compiler },
  };
}

/** Threads the kernels use from now on (default: the machine's hardware threads). */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 256)
    fail('ERR_XNORM_ARGUMENT', `setNumThreads: expected an integer in [1, 256], received ${describe(n)}`);
  native().setNumThreads({ threads: n });
}
