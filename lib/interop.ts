// from(): accept other libraries' tensors without the caller converting anything.
import { describe, fail } from './errors';
import { DType, Tensor, TypedArray, allocate, checkDType, checkShape, shapeSize, storageCtor } from './tensor';
import { options } from './validate';

/** An onnxruntime-node Tensor's shape of data (`type`, `data`, `dims`). */
export interface OnnxTensorLike {
  type: string;
  data: unknown;
  dims: readonly number[];
}
/** A tfjs tensor as from() reads it (shape, dtype, dataSync). */
export interface TfjsTensorLike {
  shape: number[];
  dtype: string;
  dataSync(): ArrayLike<number>;
}
/** An ndarray-style view: data with shape, stride and offset. */
export interface NdArrayLike {
  data: ArrayLike<number>;
  shape: number[];
  stride: number[];
  offset: number;
}
/** Plain data and a shape (a typed array view or an array of numbers). */
export interface PlainTensorLike {
  data: ArrayBufferView | ArrayLike<number>;
  shape: readonly number[];
}
/** Anything from() turns into a Tensor. */
export type TensorLike = Tensor | OnnxTensorLike | TfjsTensorLike | NdArrayLike | PlainTensorLike;

/** Options of from(). */
export interface FromOptions {
  /** Always copy, even where the storage could be shared. */
  copy?: boolean;
  /** The dtype of the data when the source cannot say (a Uint16Array may be float16 or bfloat16). */
  dtype?: DType;
}

const ONNX_TYPES: Record<string, DType> = { float32: 'float32', float16: 'float16', int32: 'int32', uint8: 'uint8', bool: 'uint8' };

function dtypeOfArray(a: unknown, hint: DType | undefined, name: string): DType {
  if (hint !== undefined) return checkDType(hint, 'opts.dtype');
  if (a instanceof Float32Array || a instanceof Float64Array || Array.isArray(a)) return 'float32';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Uint8Array) return 'uint8';
  if (a instanceof Uint16Array)
    return fail('ERR_XNORM_DTYPE', `${name}: a Uint16Array may be float16 or bfloat16; pass opts.dtype`);
  return fail('ERR_XNORM_DTYPE', `${name}: unsupported data ${describe(a)}`);
}

/** The storage for `data` as `dtype`: shared when the array already has the storage type, else converted. */
function storageOf(data: ArrayLike<number>, dtype: DType, copy: boolean): TypedArray {
  const Ctor = storageCtor(dtype);
  if (data instanceof Ctor) {
    if (copy) return data.slice() as TypedArray;
    // Shared memory may change under a kernel and cannot be pinned for an async op: share only ArrayBuffers.
    if (typeof SharedArrayBuffer !== 'undefined' && data.buffer instanceof SharedArrayBuffer)
      fail('ERR_XNORM_ARGUMENT', 'from: data in a SharedArrayBuffer cannot be shared; pass { copy: true }');
    return data as TypedArray;
  }
  if (dtype === 'float16' || dtype === 'bfloat16')
    fail('ERR_XNORM_DTYPE', `from: ${dtype} data must be a Uint16Array of bits, received ${describe(data)}`);
  return Ctor.from(data) as TypedArray;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) return false;
    expect *= shape[i];
  }
  return true;
}

function fromNdArray(x: NdArrayLike, opts: FromOptions): Tensor {
  const shape = checkShape(x.shape, 'ndarray.shape');
  const size = shapeSize(shape);
  const dtype = dtypeOfArray(x.data, opts.dtype, 'from(ndarray)');
  const stride = Array.from(x.stride ?? []);
  const offset = x.offset ?? 0;
  if (stride.length !== shape.length || stride.some((s) => !Number.isInteger(s)) || !Number.isInteger(offset))
    fail('ERR_XNORM_SHAPE', `from(ndarray): stride ${describe(stride)} does not match shape ${describe(shape)}`);
  // Every element address must lie inside data: check the extreme corners.
  let lo = offset;
  let hi = offset;
  shape.forEach((d, i) => {
    if (d > 0) (stride[i] < 0 ? (lo += stride[i] * (d - 1)) : (hi += stride[i] * (d - 1)));
  });
  if (size > 0 && (lo < 0 || hi >= x.data.length))
    fail('ERR_XNORM_SHAPE', `from(ndarray): strides reach outside data (elements ${lo}..${hi} of ${x.data.length})`);
  if (isContiguous(shape, stride) && ArrayBuffer.isView(x.data)) {
    const view = (x.data as unknown as TypedArray).subarray(offset, offset + size);
    return new Tensor(storageOf(view, dtype, opts.copy ?? false), shape, dtype);
  }
  // Non-contiguous: gather into a new array in row-major order.
  const out = allocate(dtype, size, 'from(ndarray)');
  const idx = new Array<number>(shape.length).fill(0);
  let src = offset;
  for (let k = 0; k < size; k++) {
    out[k] = x.data[src];
    for (let d = shape.length - 1; d >= 0; d--) {
      idx[d]++;
      src += stride[d];
      if (idx[d] < shape[d]) break;
      src -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
  return new Tensor(out, shape, dtype);
}

/**
 * Wraps another library's tensor (onnxruntime, tfjs, ndarray, `{ data, shape }` or a Tensor) as a CPU
 * Tensor; shares its storage where layout and dtype allow, unless copy is set.
 * @param x the tensor-like source; its dtype comes from the source (a Uint16Array needs `dtype`)
 * @param options_ `copy` (default false: share where possible), `dtype` (when the source cannot tell)
 * @returns a CPU Tensor
 * @throws XnormError ERR_XNORM_ARGUMENT (not tensor-like), ERR_XNORM_DTYPE, ERR_XNORM_SHAPE
 * @example
 * const x = from({ data: new Float32Array(2 * 3 * 8 * 8), shape: [2, 3, 8, 8] }); // shares the array
 * const h = from({ data: new Uint16Array(4), shape: [4] }, { dtype: 'float16' });
 */
export function from(x: TensorLike, options_?: FromOptions): Tensor {
  const opts: FromOptions = options(options_, 'from: opts', ['copy', 'dtype']);
  if (opts.dtype !== undefined) checkDType(opts.dtype, 'from: opts.dtype');
  if (x instanceof Tensor && !Tensor.isTensor(x))
    fail('ERR_XNORM_ARGUMENT', 'from: x: an object made from Tensor.prototype (a Proxy or a copy) is not a Tensor');
  if (Tensor.isTensor(x)) {
    const s = x.storage('from');
    return opts.copy ? new Tensor(s.slice(), x.shape, x.dtype) : x;
  }
  if (x === null || typeof x !== 'object') fail('ERR_XNORM_ARGUMENT', `from: expected a tensor-like object, received ${describe(x)}`);
  const o = x as unknown as Record<string, unknown>;
  if (typeof o.type === 'string' && Array.isArray(o.dims) && 'data' in o) {
    const t = x as OnnxTensorLike;
    const dtype = opts.dtype ?? ONNX_TYPES[t.type];
    if (!dtype) fail('ERR_XNORM_DTYPE', `from(onnx): tensor type '${t.type}' is not supported`);
    const shape = checkShape(t.dims, 'onnx.dims');
    return new Tensor(storageOf(t.data as ArrayLike<number>, dtype, opts.copy ?? false), shape, dtype);
  }
  if (typeof o.dataSync === 'function' && Array.isArray(o.shape) && typeof o.dtype === 'string') {
    const t = x as TfjsTensorLike;
    const dtype: DType = opts.dtype ?? (t.dtype === 'int32' ? 'int32' : t.dtype === 'bool' ? 'uint8' : 'float32');
    if (!['float32', 'int32', 'bool'].includes(t.dtype))
      fail('ERR_XNORM_DTYPE', `from(tfjs): dtype '${t.dtype}' is not supported`);
    // dataSync() returns the backend's own array on the CPU backend: share it unless asked to copy.
    return new Tensor(storageOf(t.dataSync(), dtype, opts.copy ?? false), checkShape(t.shape, 'tfjs.shape'), dtype);
  }
  if ('stride' in o && 'data' in o && Array.isArray(o.shape)) return fromNdArray(x as NdArrayLike, opts);
  if ('data' in o && 'shape' in o) {
    const t = x as PlainTensorLike;
    const data = t.data as ArrayLike<number>;
    if (!data || typeof data.length !== 'number')
      fail('ERR_XNORM_ARGUMENT', `from: data: expected an array or typed array, received ${describe(t.data)}`);
    const dtype = dtypeOfArray(data, opts.dtype, 'from');
    return new Tensor(storageOf(data, dtype, opts.copy ?? false), checkShape(t.shape, 'shape'), dtype);
  }
  return fail('ERR_XNORM_ARGUMENT', `from: expected an onnxruntime, tfjs, ndarray or {data, shape} tensor, received ${describe(x)}`);
}
