// tfjs conv kernels on xnorm's conv2d / conv2dBackward: Conv2D, FusedConv2D, DepthwiseConv2dNative,
// FusedDepthwiseConv2D and the four backprop kernels. NHWC and NCHW run natively; filters are turned from
// tfjs's HWIO into xnorm's OIHW once per call, or once for good when the same filter comes back.
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { conv2dBackwardSync, conv2dSync } from '../convbn';
import { Tensor } from '../tensor';
import type { XnormBackend } from './backend';
import { nativeKernel } from './backend';
import { applyActivation } from './elementwise';
import type { Activation } from './elementwise';
import { cropSpatial, hasExtra, hwioToOihw, oihwToHwio, padSpatial, shape4 } from './layout';
import type { Extra, Spatial } from './layout';

type Pad = 'same' | 'valid' | number | backend_util.ExplicitPadding;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;
type Pair = number | [number, number];

/** A tfjs conv in xnorm's terms: x's geometry, the zeros to add around it, and conv2d's options. */
interface Geometry {
  x: Spatial;
  extra: Extra;
  opts: { stride: [number, number]; padding: [number, number]; dilation: [number, number]; groups: number; layout: 'nhwc' | 'nchw' };
  filterShape: number[];  // xnorm's [cout, cinG, kh, kw]
  cinG: number;
}

/**
 * tfjs pads top/left by padInfo and bottom/right by whatever the output size needs (possibly unequal);
 * xnorm pads symmetrically, so the difference is added as zeros. Null for what stays with the 'cpu' kernel.
 */
function geometry(info: backend_util.Conv2DInfo, depthwise: boolean): Geometry | null {
  const { top, left } = info.padInfo;
  const bottom = Math.max(0, (info.outHeight - 1) * info.strideHeight + info.effectiveFilterHeight - info.inHeight - top);
  const right = Math.max(0, (info.outWidth - 1) * info.strideWidth + info.effectiveFilterWidth - info.inWidth - left);
  if (info.batchSize < 1 || info.outHeight < 1 || info.outWidth < 1 || top < 0 || left < 0) return null;
  const ph = Math.min(top, bottom), pw = Math.min(left, right);
  const extra = { top: top - ph, bottom: bottom - ph, left: left - pw, right: right - pw };
  const h = info.inHeight + extra.top + extra.bottom, w = info.inWidth + extra.left + extra.right;
  // xnorm's output size from these pads must be tfjs's (it is, except for rounding modes that drop input)
  if (Math.floor((h + 2 * ph - info.effectiveFilterHeight) / info.strideHeight) + 1 !== info.outHeight) return null;
  if (Math.floor((w + 2 * pw - info.effectiveFilterWidth) / info.strideWidth) + 1 !== info.outWidth) return null;
  const c = info.inChannels, groups = depthwise ? c : 1, cinG = c / groups;
  return {
    x: { channelsLast: info.dataFormat === 'channelsLast', n: info.batchSize, c, h: info.inHeight, w: info.inWidth },
    extra,
    opts: {
      stride: [info.strideHeight, info.strideWidth], padding: [ph, pw],
      dilation: [info.dilationHeight, info.dilationWidth], groups,
      layout: info.dataFormat === 'channelsLast' ? 'nhwc' : 'nchw',
    },
    filterShape: [info.outChannels, cinG, info.filterHeight, info.filterWidth],
    cinG,
  };
}

/**
 * Runs `f` on x with the extra zeros added, as an xnorm tensor: x's own values when there are none, else
 * a padded copy in a pool block that goes back as soon as `f` returns (a fresh array of that size would
 * cost more in page faults than the conv).
 */
function withPaddedX<T>(backend: XnormBackend, x: TensorInfo, g: Geometry, f: (x: Tensor) => T): T {
  const v = backend.float32(x);
  if (!hasExtra(g.extra)) return f(new Tensor(v, shape4(g.x), 'float32'));
  const padded = backend.output(paddedShape(g));
  try {
    padSpatial(v, g.x, g.extra, padded.storage() as Float32Array);
    return f(padded);
  } finally {
    padded.dispose();
  }
}

function paddedShape(g: Geometry): number[] {
  const e = g.extra;
  return shape4({ ...g.x, h: g.x.h + e.top + e.bottom, w: g.x.w + e.left + e.right });
}

function filterOf(backend: XnormBackend, filter: TensorInfo, g: Geometry, cache: boolean) {
  const [cout, cinG, kh, kw] = g.filterShape;
  const convert = (v: Float32Array) => hwioToOihw(v, kh, kw, cinG, cout);
  if (cache) return backend.filter(filter, `conv:${g.opts.groups}`, g.opts.groups, g.filterShape, convert);
  return new Tensor(convert(backend.float32(filter)), g.filterShape, 'float32');
}

/** tfjs's geometry of a conv (or depthwise conv) with x and filter of these shapes. */
function convInfo(xShape: number[], filterShape: number[], attrs: ConvAttrs, depthwise: boolean) {
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number], filterShape as [number, number, number, number], attrs.strides,
    attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode, depthwise,
    backend_util.convertConv2DDataFormat(attrs.dataFormat ?? 'NHWC'),
  );
}

/** The attributes every conv kernel (forward or backprop) has. */
interface ConvAttrs {
  strides: Pair;
  pad: Pad;
  dilations?: Pair;
  dimRoundingMode?: Rounding;
  dataFormat?: 'NHWC' | 'NCHW';
}

interface ForwardAttrs extends ConvAttrs {
  activation?: Activation;
  leakyreluAlpha?: number;
}

function forward(backend: XnormBackend, inputs: Record<string, TensorInfo | undefined>, attrs: ForwardAttrs, depthwise: boolean): TensorInfo | null {
  const { x, filter, bias } = inputs as { x: TensorInfo; filter: TensorInfo; bias?: TensorInfo };
  const activation = attrs.activation;
  if (activation === 'prelu' || x.dtype !== 'float32') return null;
  const info = convInfo(x.shape, filter.shape, attrs, depthwise);
  const g = geometry(info, depthwise);
  if (!g) return null;
  const b = backend.perChannelBias(bias, info.outChannels);
  if (b === null) return null;
  const relu = activation === 'relu';
  const w = filterOf(backend, filter, g, true);
  const y = withPaddedX(backend, x, g, (xt) =>
    conv2dSync(xt, w, b, { ...g.opts, activation: relu ? 'relu' : null, out: backend.output(info.outShape) }));
  if (!relu) applyActivation(y.storage() as Float32Array, activation, attrs.leakyreluAlpha);
  return backend.fromXnorm(y);
}

interface BackpropAttrs extends ConvAttrs {
  inputShape?: number[];
  filterShape?: number[];
}

/** dx = the conv's input gradient, from dy and the filter. */
function backpropInput(backend: XnormBackend, inputs: Record<string, TensorInfo | undefined>, attrs: BackpropAttrs, depthwise: boolean): TensorInfo | null {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const inputShape = attrs.inputShape!;
  const g = geometry(convInfo(inputShape, filter.shape, attrs, depthwise), depthwise);
  if (!g) return null;
  const xShape = paddedShape(g);
  const { dx } = conv2dBackwardSync({ shape: xShape }, filterOf(backend, filter, g, false) as Tensor,
    backend.xnormTensor(dy), { ...g.opts, needs: { x: true, weight: false }, out: { dx: backend.output(xShape) } });
  if (!hasExtra(g.extra)) return backend.fromXnorm(dx!);
  const out = backend.output(inputShape);
  cropSpatial(dx!.storage() as Float32Array, g.x, g.extra, out.storage() as Float32Array);
  dx!.dispose();
  return backend.fromXnorm(out);
}

/** dFilter = the conv's filter gradient, from x and dy, in tfjs's filter layout. */
function backpropFilter(backend: XnormBackend, inputs: Record<string, TensorInfo | undefined>, attrs: BackpropAttrs, depthwise: boolean): TensorInfo | null {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const filterShape = attrs.filterShape!;
  const g = geometry(convInfo(x.shape, filterShape, attrs, depthwise), depthwise);
  if (!g) return null;
  const dyt = backend.xnormTensor(dy);
  const { dWeight } = withPaddedX(backend, x, g, (xt) => conv2dBackwardSync(xt, { shape: g.filterShape }, dyt,
    { ...g.opts, needs: { x: false, weight: true }, out: { dWeight: backend.output(g.filterShape) } }));
  const [cout, cinG, kh, kw] = g.filterShape;
  const out = backend.output(filterShape);
  oihwToHwio(dWeight!.storage() as Float32Array, kh, kw, cinG, cout, out.storage() as Float32Array);
  dWeight!.dispose();
  return backend.fromXnorm(out);
}

type Attrs = ForwardAttrs & BackpropAttrs;
const kernel = (name: string, depthwise: boolean, f: typeof forward | typeof backpropInput) =>
  nativeKernel(name, ({ inputs, backend, attrs }) =>
    f(backend, inputs as Record<string, TensorInfo | undefined>, attrs as unknown as Attrs, depthwise));

export const convKernels: KernelConfig[] = [
  kernel('Conv2D', false, forward),
  kernel('FusedConv2D', false, forward),
  kernel('DepthwiseConv2dNative', true, forward),
  kernel('FusedDepthwiseConv2D', true, forward),
  kernel('Conv2DBackpropInput', false, backpropInput),
  kernel('Conv2DBackpropFilter', false, backpropFilter),
  kernel('DepthwiseConv2dNativeBackpropInput', true, backpropInput),
  kernel('DepthwiseConv2dNativeBackpropFilter', true, backpropFilter),
];
