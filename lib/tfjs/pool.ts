// tfjs MaxPool, AvgPool and their gradients on xnorm's native pooling (native/core/tensor_ops/pool.cc),
// NHWC float32 with tfjs's window rules (see the kernel's comments); dilated pooling stays with 'cpu'.
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { native } from '../native';
import type { XnormBackend } from './backend';
import { nativeKernel } from './backend';

interface PoolAttrs {
  filterSize: number | [number, number];
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function pool(backend: XnormBackend, op: 'max' | 'avg' | 'maxGrad' | 'avgGrad', x: TensorInfo, dy: TensorInfo | undefined, attrs: PoolAttrs): TensorInfo | null {
  if (x.dtype !== 'float32' || (dy && dy.dtype !== 'float32') || x.shape.length !== 4) return null;
  const info = backend_util.computePool2DInfo(x.shape as [number, number, number, number], attrs.filterSize, attrs.strides, 1,
    attrs.pad, attrs.dimRoundingMode);
  if (info.outHeight < 1 || info.outWidth < 1 || info.batchSize < 1 || info.inChannels < 1) return null;
  // The 'cpu' forward returns x itself for a 1x1 window whose output has x's shape (whatever the stride
  // and padding say); that identity stays with it.
  const identity = info.filterHeight === 1 && info.filterWidth === 1 && info.outShape.every((d, i) => d === info.inShape[i]);
  if (identity && (op === 'max' || op === 'avg')) return null;
  const grad = op === 'maxGrad' || op === 'avgGrad';
  const shape = grad ? x.shape.slice() : info.outShape.slice();
  const y = backend.output(shape);
  native().pool2d({
    op, n: info.batchSize, h: info.inHeight, w: info.inWidth, c: info.inChannels, kh: info.filterHeight, kw: info.filterWidth,
    sh: info.strideHeight, sw: info.strideWidth, padTop: info.padInfo.top, padLeft: info.padInfo.left,
    oh: info.outHeight, ow: info.outWidth,
    x: op === 'avgGrad' ? undefined : backend.float32(x), dy: dy && backend.float32(dy), y: y.storage() as Float32Array,
  });
  return backend.fromXnorm(y);
}

type In = Record<string, TensorInfo>;
export const poolKernels: KernelConfig[] = [
  nativeKernel('MaxPool', ({ inputs, backend, attrs }) => pool(backend, 'max', (inputs as In).x, undefined, attrs as unknown as PoolAttrs)),
  nativeKernel('AvgPool', ({ inputs, backend, attrs }) => pool(backend, 'avg', (inputs as In).x, undefined, attrs as unknown as PoolAttrs)),
  nativeKernel('MaxPoolGrad', ({ inputs, backend, attrs }) =>
    pool(backend, 'maxGrad', (inputs as In).input, (inputs as In).dy, attrs as unknown as PoolAttrs)),
  nativeKernel('AvgPoolGrad', ({ inputs, backend, attrs }) =>
    pool(backend, 'avgGrad', (inputs as In).input, (inputs as In).dy, attrs as unknown as PoolAttrs)),
];
