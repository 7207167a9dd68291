// tfjs BatchMatMul and _FusedMatMul on xnorm's conv2d: [M, K] × [K, N] is a 1×1 conv over M pixels with
// K input and N output channels, whose weight [N, K, 1, 1] is Bᵀ (kept packed when the same B comes back,
// as a dense layer's kernel does).
import { backend_util, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { conv2dSync } from '../convbn';
import { Tensor } from '../tensor';
import type { XnormBackend } from './backend';
import { nativeKernel } from './backend';
import { applyActivation } from './elementwise';
import type { Activation } from './elementwise';
import { transpose2d } from './layout';


interface Attrs {
  transposeA: boolean;
  transposeB: boolean;
  activation?: Activation;
  leakyreluAlpha?: number;
}

function matmul(backend: XnormBackend, inputs: Record<string, TensorInfo | undefined>, attrs: Attrs): TensorInfo | null {
  const { a, b, bias } = inputs as { a: TensorInfo; b: TensorInfo; bias?: TensorInfo };
  const { transposeA, transposeB, activation } = attrs;
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  if (activation === 'prelu') return null;
  const ra = a.shape.length, rb = b.shape.length;
  const [m, k] = transposeA ? [a.shape[ra - 1], a.shape[ra - 2]] : [a.shape[ra - 2], a.shape[ra - 1]];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  if (kb !== k) return null;  // the 'cpu' kernel raises tfjs's own error
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = util.sizeFromShape(outerA), batchB = util.sizeFromShape(outerB);
  // Batch dims: equal, or one side a single matrix (other broadcasts stay with the 'cpu' kernel)
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (!sameOuter && batchA !== 1 && batchB !== 1) return null;
  if (m < 1 || n < 1 || k < 1) return null;
  const outer = backend_util.assertAndGetBroadcastShape(outerA, outerB);
  const batch = Math.max(batchA, batchB);
  const biasT = backend.perChannelBias(bias, n);
  if (biasT === null) return null;
  const opts = { layout: 'nhwc' as const, activation: activation === 'relu' ? 'relu' as const : null };
  const av = backend.float32(a), bv = backend.float32(b);
  const outShape = [...outer, m, n];
  const out = backend.output(outShape), y = out.storage() as Float32Array;
  if (batchB === 1 && !transposeA) {
    // One conv over every row of every A: B is one weight, packed once if it comes back.
    const w = backend.filter(b, `matmul:${transposeB}`, 1, [n, k, 1, 1], (v) => (transposeB ? v : transpose2d(v, k, n)));
    conv2dSync(new Tensor(av, [1, 1, batch * m, k], 'float32'), w, biasT, { ...opts, out: new Tensor(y, [1, 1, batch * m, n], 'float32') });
  } else {
    for (let i = 0; i < batch; i++) {
      const ao = (batchA === 1 ? 0 : i) * m * k, bo = (batchB === 1 ? 0 : i) * n * k;
      const x = transposeA ? transpose2d(av, k, m, ao) : av.subarray(ao, ao + m * k);
      const w = transposeB ? bv.subarray(bo, bo + n * k) : transpose2d(bv, k, n, bo);
      conv2dSync(new Tensor(x, [1, 1, m, k], 'float32'), new Tensor(w, [n, k, 1, 1], 'float32'), biasT,
        { ...opts, out: new Tensor(y.subarray(i * m * n, (i + 1) * m * n), [1, 1, m, n], 'float32') });
    }
  }
  if (activation !== 'relu') applyActivation(y, activation, attrs.leakyreluAlpha);
  return backend.fromXnorm(out);
}

const kernel = (name: string) =>
  nativeKernel(name, ({ inputs, backend, attrs }) =>
    matmul(backend, inputs as Record<string, TensorInfo | undefined>, attrs as unknown as Attrs));

export const matmulKernels: KernelConfig[] = [kernel('BatchMatMul'), kernel('_FusedMatMul')];
