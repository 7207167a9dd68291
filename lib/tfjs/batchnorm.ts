// tfjs FusedBatchNorm (inference-form BN: y = offset + (x − mean)·scale/sqrt(var + eps)) on xnorm's
// batchNorm, for per-channel parameters over the last axis (NHWC); other broadcasts stay with 'cpu'.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { batchNormSync } from '../bnstats';
import type { XnormBackend } from './backend';
import { nativeKernel } from './backend';

function batchNorm(backend: XnormBackend, inputs: Record<string, TensorInfo | undefined>, eps: number): TensorInfo | null {
  const { x, mean, variance, offset, scale } = inputs as Record<string, TensorInfo>;
  if (x.dtype !== 'float32' || x.shape.length < 2) return null;
  const c = x.shape[x.shape.length - 1];
  const perChannel = (t: TensorInfo | undefined) => !t || (t.shape.length === 1 && t.shape[0] === c);
  if (c < 1 || !perChannel(mean) || !perChannel(variance) || !perChannel(offset) || !perChannel(scale)) return null;
  const y = batchNormSync(backend.xnormTensor(x), { mean: backend.xnormTensor(mean), var: backend.xnormTensor(variance) }, {
    gamma: scale ? backend.xnormTensor(scale) : undefined,
    beta: offset ? backend.xnormTensor(offset) : undefined,
    eps,
    layout: 'nhwc',
    out: backend.output(x.shape),
  });
  return backend.fromXnorm(y);
}

export const batchNormKernels: KernelConfig[] = [
  nativeKernel('FusedBatchNorm', ({ inputs, backend, attrs }) =>
    batchNorm(backend, inputs as Record<string, TensorInfo | undefined>, (attrs as { varianceEpsilon: number }).varianceEpsilon)),
];
