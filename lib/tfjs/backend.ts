// The 'xnorm' tfjs backend: the 'cpu' backend's tensor storage and kernels, with xnorm's native kernels
// registered over the heavy ones (conv.ts, matmul.ts, batchnorm.ts). Filters seen again are kept as
// ConvWeights (packed once) until tfjs disposes the tensor that holds them.
import type { DataId, KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { getKernel, util } from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { ConvWeights, prepareConvSync } from '../convbn';
import { XnormError } from '../errors';
import { Tensor, newOutput } from '../tensor';

/**
 * The name `import 'xnorm/tfjs'` registers the backend under (priority 3: tfjs's default from then on).
 * @example
 * await tf.setBackend(BACKEND_NAME);
 * console.log(tf.getBackend()); // 'xnorm'
 */
export const BACKEND_NAME = 'xnorm';

/** Outputs from this size on come from xnorm's output pool (see XnormBackend.output). */
const POOL_MIN_BYTES = 4 << 10;

/** A filter in xnorm's layout: the tensor for one call, or ConvWeights kept for the calls to come. */
export type Filter = Tensor | ConvWeights;

interface CachedFilter {
  /** What the filter was turned into: the same tfjs tensor used another way is not cached. */
  key: string;
  /** Calls seen; packed on the second (a filter used once, as in training, is never packed). */
  seen: number;
  weights?: ConvWeights;
}

/**
 * An output this backend made on xnorm's output pool. Its block goes back to the pool as soon as tfjs
 * frees the one tensor holding it, unless the memory escaped: read out through readSync (dataSync, data,
 * moving to another backend: the caller may keep the array) or held by a second tensor (a 'cpu' kernel
 * such as Slice returns views of its input). Escaped blocks are left to the GC, which returns them later.
 */
interface PooledOutput {
  tensor: Tensor;
  holders: number;
  escaped: boolean;
}

/**
 * The 'xnorm' tfjs backend: tfjs's 'cpu' backend with xnorm's native kernels in place of the heavy ones
 * (see nativeKernelNames). Registered by `import 'xnorm/tfjs'`; `preparedFilters` counts the conv
 * filters it holds packed now.
 * @example
 * await tf.setBackend(BACKEND_NAME);
 * const backend = tf.backend() as XnormBackend;
 * console.log(backend.preparedFilters);
 */
export class XnormBackend extends MathBackendCPU {
  private filters = new Map<DataId, CachedFilter>();
  private pooled = new WeakMap<ArrayBufferLike, PooledOutput>();

  constructor() {
    super();
    // The 'cpu' backend's first write prints "install tfjs-node to speed things up": not this backend's case.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /** The float32 values of a tensor held by this backend (no copy when they are float32 already). */
  float32(t: TensorInfo): Float32Array {
    const v = this.data.get(t.dataId)?.values;
    if (v instanceof Float32Array) return v;
    return Float32Array.from((v ?? this.readSync(t.dataId)) as ArrayLike<number>);
  }

  /**
   * New storage for a kernel's output (float32, or bytes for 'bool'). From 4 KiB on it is a block of
   * xnorm's output pool, which comes back when tfjs frees the tensor: the malloc heap, trimmed and grown
   * again between ops, made a 100 KB output cost ~250 µs of page faults.
   */
  output(shape: readonly number[], dtype: 'float32' | 'uint8' = 'float32'): Tensor {
    return newOutput('cpu', shape, dtype, 'xnorm/tfjs output', POOL_MIN_BYTES);
  }

  override write(values: Parameters<MathBackendCPU['write']>[0], shape: number[], dtype: Parameters<MathBackendCPU['write']>[2]): DataId {
    const entry = ArrayBuffer.isView(values) ? this.pooled.get(values.buffer) : undefined;
    if (entry && ++entry.holders > 1) entry.escaped = true;
    return super.write(values, shape, dtype);
  }

  override readSync(dataId: DataId): ReturnType<MathBackendCPU['readSync']> {
    const v = this.data.get(dataId)?.values;
    const entry = ArrayBuffer.isView(v) ? this.pooled.get(v.buffer) : undefined;
    if (entry) entry.escaped = true;
    return super.readSync(dataId);
  }

  /** An xnorm tensor sharing a tfjs tensor's values (no copy for float32). */
  xnormTensor(t: TensorInfo): Tensor {
    return new Tensor(this.float32(t), t.shape, 'float32');
  }

  /**
   * A fused op's bias as n per-channel values (a scalar or [1] bias broadcast to n); undefined without
   * a bias, null for other shapes (then the 'cpu' kernel's broadcasting applies).
   */
  perChannelBias(bias: TensorInfo | undefined, n: number): Tensor | undefined | null {
    if (!bias) return undefined;
    const size = util.sizeFromShape(bias.shape);
    if (size === n && bias.shape.length === 1) return this.xnormTensor(bias);
    if (size === 1) return new Tensor(new Float32Array(n).fill(this.float32(bias)[0]), [n], 'float32');
    return null;
  }

  /** A tfjs tensor holding an xnorm output's storage (no copy); its pool block comes back when tfjs frees it. */
  fromXnorm(y: Tensor, dtype: 'float32' | 'bool' = 'float32'): TensorInfo {
    const values = y.storage() as Float32Array | Uint8Array;
    if (!this.pooled.has(values.buffer)) this.pooled.set(values.buffer, { tensor: y, holders: 0, escaped: false });
    return this.makeTensorInfo(y.shape.slice(), dtype, values);
  }

  /**
   * The filter `t` in xnorm's [Cout, Cin/groups, kh, kw] layout: made by `convert` from its values on
   * the first call, and prepared (packed once) from the second call on, as long as tfjs keeps it.
   */
  filter(t: TensorInfo, key: string, groups: number, shape: number[], convert: (v: Float32Array) => Float32Array): Filter {
    let entry = this.filters.get(t.dataId);
    if (!entry) this.filters.set(t.dataId, (entry = { key, seen: 0 }));
    const cacheable = entry.key === key;
    if (cacheable && entry.weights && !entry.weights.disposed) return entry.weights;
    const w = new Tensor(convert(this.float32(t)), shape, 'float32');
    if (cacheable && ++entry.seen >= 2) entry.weights = prepareConvSync(w, { groups });
    return cacheable && entry.weights ? entry.weights : w;
  }

  /** Prepared filters held now (for tests and stats). */
  get preparedFilters(): number {
    let n = 0;
    for (const e of this.filters.values()) if (e.weights && !e.weights.disposed) n++;
    return n;
  }

  override disposeData(dataId: DataId, force?: boolean): boolean {
    const v = this.data.get(dataId)?.values;
    const freed = super.disposeData(dataId, force);
    if (freed) {
      this.forget(dataId);
      const entry = ArrayBuffer.isView(v) ? this.pooled.get(v.buffer) : undefined;
      if (entry && --entry.holders === 0 && !entry.escaped) {
        this.pooled.delete((v as Float32Array).buffer);
        entry.tensor.dispose();
      }
    }
    return freed;
  }

  override move(...args: Parameters<MathBackendCPU['move']>): void {
    this.forget(args[0]);
    super.move(...args);
  }

  override dispose(): void {
    for (const id of [...this.filters.keys()]) this.forget(id);
    super.dispose();
  }

  private forget(dataId: DataId): void {
    this.filters.get(dataId)?.weights?.dispose();
    this.filters.delete(dataId);
  }
}

/** How often each kernel ran natively, and how often it handed a call to the 'cpu' kernel. */
export interface KernelStats {
  native: Record<string, number>;
  fallback: Record<string, number>;
}

const stats: KernelStats = { native: {}, fallback: {} };

/**
 * Calls per kernel name since the last reset: `native` ran xnorm's kernel, `fallback` handed the call to
 * the 'cpu' kernel (a case the native kernel does not take).
 * @param reset set the counts to zero after reading them (default false)
 * @returns a copy of the counts
 * @example
 * await tf.setBackend(BACKEND_NAME);
 * tf.conv2d(tf.zeros([1, 8, 8, 3]) as tf.Tensor4D, tf.zeros([3, 3, 3, 16]) as tf.Tensor4D, 1, 'same');
 * const { native, fallback } = kernelStats(true); // e.g. native: { Conv2D: 1 }
 */
export function kernelStats(reset = false): KernelStats {
  const copy = { native: { ...stats.native }, fallback: { ...stats.fallback } };
  if (reset) stats.native = {}, stats.fallback = {};
  return copy;
}

type Args = Parameters<KernelFunc>[0];

/**
 * A kernel config for the 'xnorm' backend: `run` returns the native result, or null where the call is
 * outside what the native kernel does (then the 'cpu' kernel runs, so tfjs semantics never change).
 * An XnormError (a shape xnorm refuses that tfjs allows) also hands the call to the 'cpu' kernel.
 */
export function nativeKernel(kernelName: string, run: (args: Args & { backend: XnormBackend }) => TensorInfo | null): KernelConfig {
  const kernelFunc = (args: Args) => {
    let out: TensorInfo | null = null;
    try {
      out = run(args as Args & { backend: XnormBackend });
    } catch (e) {
      if (!(e instanceof XnormError)) throw e;
    }
    if (out) {
      stats.native[kernelName] = (stats.native[kernelName] ?? 0) + 1;
      return out;
    }
    stats.fallback[kernelName] = (stats.fallback[kernelName] ?? 0) + 1;
    return cpuKernel(kernelName)(args);
  };
  return { kernelName, backendName: BACKEND_NAME, kernelFunc: kernelFunc as KernelFunc };
}

export function cpuKernel(name: string): KernelFunc {
  const k = getKernel(name, 'cpu');
  if (!k) throw new Error(`xnorm/tfjs: the 'cpu' backend has no kernel ${name}`);
  return k.kernelFunc;
}
