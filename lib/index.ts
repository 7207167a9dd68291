export { XnormError } from './errors';
export type { XnormErrorCode } from './errors';
export { Tensor, tensor, zeros } from './tensor';
export type { DType, Device, TypedArray } from './tensor';
export { from } from './interop';
export type { TensorLike, FromOptions, OnnxTensorLike, TfjsTensorLike, NdArrayLike, PlainTensorLike } from './interop';
export { info, setNumThreads } from './info';
export type { Info } from './info';
export * from './bnstats';
