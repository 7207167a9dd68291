import { XnormError, describe, fail } from './errors';
import {
  bfloat16BitsToNumber,
  float16BitsToNumber,
  numberToBfloat16Bits,
  numberToFloat16Bits,
} from './half';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'uint8' | 'bit';
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
export type TypedArray = Float32Array | Uint16Array | Int32Array | Uint8Array | Uint32Array;
export type FloatDType = 'float32' | 'float16' | 'bfloat16';

export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int32', 'uint8', 'bit'];
export const FLOAT_DTYPES: readonly FloatDType[] = ['float32', 'float16', 'bfloat16'];

/** Largest element count accepted: below 2^53 so every index is an exact JS number. */
const MAX_ELEMENTS = 2 ** 53 - 1;

/** The storage array type of each dtype ('bit' is packed into 32-bit words). */
export function storageCtor(dtype: DType) {
  switch (dtype) {
    case 'float32':
      return Float32Array;
    case 'float16':
    case 'bfloat16':
      return Uint16Array;
    case 'int32':
      return Int32Array;
    case 'uint8':
      return Uint8Array;
    case 'bit':
      return Uint32Array;
  }
}

export function checkDType(dtype: unknown, name: string): DType {
  if (!DTYPES.includes(dtype as DType))
    fail('ERR_XNORM_DTYPE', `${name}: expected one of ${DTYPES.join(', ')}, received ${describe(dtype)}`);
  return dtype as DType;
}

function checkDevice(device: unknown, name: string): Device {
  if (device === 'cpu') return 'cpu';
  if (device === 'cuda' || (typeof device === 'string' && /^cuda:\d+$/.test(device)))
    fail(
      'ERR_XNORM_CUDA_UNAVAILABLE',
      `${name}: ${device} requested, but this build has no CUDA backend yet (info().cuda.reason says why)`,
    );
  return fail('ERR_XNORM_DEVICE', `${name}: expected 'cpu', 'cuda' or 'cuda:N', received ${describe(device)}`);
}

/** Validates a shape and returns its element count; sizes that overflow are rejected. */
export function checkShape(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape) && !ArrayBuffer.isView(shape))
    fail('ERR_XNORM_SHAPE', `${name}: expected an array of sizes, received ${describe(shape)}`);
  const dims = Array.from(shape as ArrayLike<unknown>);
  if (dims.length > 16) fail('ERR_XNORM_SHAPE', `${name}: expected rank <= 16, received rank ${dims.length}`);
  let size = 1;
  dims.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      fail('ERR_XNORM_SHAPE', `${name}[${i}]: expected a non-negative integer, received ${describe(d)}`);
    size *= d;
    if (size > MAX_ELEMENTS)
      fail('ERR_XNORM_SHAPE', `${name}: size overflows (${describe(dims)} has more than 2^53 - 1 elements)`);
  });
  return dims as number[];
}

export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Words per pixel of a 'bit' tensor whose last dimension is C. */
export function packedWordsFor(c: number): number {
  return Math.ceil(c / 32);
}

/** Storage elements a tensor of this shape and dtype holds. */
export function storageLength(shape: readonly number[], dtype: DType): number {
  if (dtype !== 'bit') return shapeSize(shape);
  if (shape.length === 0) fail('ERR_XNORM_SHAPE', `a 'bit' tensor needs rank >= 1, received rank 0`);
  const c = shape[shape.length - 1];
  return (shapeSize(shape) / (c || 1)) * packedWordsFor(c) * (c === 0 ? 0 : 1);
}

/** A new zeroed storage array; a size the engine cannot allocate is ERR_XNORM_OUT_OF_MEMORY. */
export function allocate(dtype: DType, length: number, what: string): TypedArray {
  const Ctor = storageCtor(dtype);
  try {
    return new Ctor(length);
  } catch (e) {
    return fail('ERR_XNORM_OUT_OF_MEMORY', `${what}: cannot allocate ${length} ${dtype} elements (${(e as Error).message})`);
  }
}

let nextId = 1;

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device = 'cpu';
  readonly size: number;
  /** @internal used in messages and by interop */
  readonly id = nextId++;
  #storage: TypedArray | null;

  /** @internal Use tensor(), zeros() or from(). The storage is taken as is, without a copy. */
  constructor(storage: TypedArray, shape: readonly number[], dtype: DType) {
    const Ctor = storageCtor(dtype);
    if (!(storage instanceof Ctor))
      fail('ERR_XNORM_DTYPE', `tensor: ${dtype} data must be a ${Ctor.name}, received ${describe(storage)}`);
    const dims = checkShape(shape, 'shape');
    const want = storageLength(dims, dtype);
    if (storage.length !== want)
      fail(
        'ERR_XNORM_SHAPE',
        `tensor: shape ${describe(dims)} (${dtype}) needs ${want} storage elements, received ${storage.length}`,
      );
    this.shape = Object.freeze(dims.slice());
    this.dtype = dtype;
    this.size = shapeSize(dims);
    this.#storage = storage;
  }

  get disposed(): boolean {
    return this.#storage === null;
  }

  /** 32-bit words per pixel of a 'bit' tensor (channels packed along the last axis). */
  get packedWords(): number {
    return this.dtype === 'bit' ? packedWordsFor(this.shape[this.shape.length - 1]) : 0;
  }

  /** @internal The live storage (no copy). Throws ERR_XNORM_DISPOSED after dispose(). */
  storage(name = 'tensor'): TypedArray {
    if (this.#storage === null) fail('ERR_XNORM_DISPOSED', `${name}: the tensor was disposed`);
    return this.#storage;
  }

  /** A copy of the stored values (float16/bfloat16 as uint16 bits, 'bit' as packed words). */
  dataSync(): TypedArray {
    return this.storage().slice();
  }

  async data(): Promise<TypedArray> {
    return this.dataSync();
  }

  /** The values as float32, decoding float16/bfloat16 and unpacking nothing ('bit' is refused). */
  float32Sync(): Float32Array {
    const s = this.storage();
    switch (this.dtype) {
      case 'float16':
        return Float32Array.from(s, float16BitsToNumber);
      case 'bfloat16':
        return Float32Array.from(s, bfloat16BitsToNumber);
      case 'bit':
        return fail('ERR_XNORM_DTYPE', `float32Sync: a 'bit' tensor holds packed words; use unpackBits()`);
      default:
        return Float32Array.from(s);
    }
  }

  toSync(device: Device): Tensor {
    checkDevice(device, 'to');
    this.storage('to');
    return this;
  }

  async to(device: Device): Promise<Tensor> {
    return this.toSync(device);
  }

  /** Frees the storage now (the GC reclaims it once nothing else holds it). Idempotent. */
  dispose(): void {
    this.#storage = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Hands the tensor to onnxruntime-node: `t.toOnnx(ort)` with `import * as ort from 'onnxruntime-node'`. */
  toOnnx<T>(ort: { Tensor: new (type: string, data: TypedArray, dims: readonly number[]) => T }): T {
    if (this.dtype === 'bit' || this.dtype === 'bfloat16')
      fail('ERR_XNORM_DTYPE', `toOnnx: onnxruntime has no ${this.dtype} tensor; convert to float32 first`);
    return new ort.Tensor(this.dtype, this.storage('toOnnx'), this.shape.slice());
  }

  /** Hands the tensor to tfjs: `t.toTfjs(tf)`. float16/bfloat16 are widened to float32 (tfjs has neither). */
  toTfjs<T>(tf: { tensor(values: TypedArray, shape: number[], dtype: 'float32' | 'int32'): T }): T {
    const s = this.storage('toTfjs');
    switch (this.dtype) {
      case 'float32':
      case 'int32':
        return tf.tensor(s, this.shape.slice(), this.dtype);
      case 'float16':
      case 'bfloat16':
        return tf.tensor(this.float32Sync(), this.shape.slice(), 'float32');
      case 'uint8':
        return tf.tensor(Int32Array.from(s), this.shape.slice(), 'int32');
      default:
        return fail('ERR_XNORM_DTYPE', `toTfjs: tfjs has no packed 'bit' tensor; use unpackBits() first`);
    }
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

function encode(values: ArrayLike<number>, dtype: DType): TypedArray {
  switch (dtype) {
    case 'float16':
      return Uint16Array.from(values, numberToFloat16Bits);
    case 'bfloat16':
      return Uint16Array.from(values, numberToBfloat16Bits);
    default: {
      // The constructor copies typed arrays in bulk; .from() would walk an iterator element by element.
      const Ctor = storageCtor(dtype);
      return ArrayBuffer.isView(values) ? new Ctor(values as unknown as ArrayLike<number>) : Ctor.from(values);
    }
  }
}

/**
 * A new tensor holding a copy of `data`. For float16/bfloat16, a Uint16Array is taken as raw bits and
 * any other input as numbers to convert; for 'bit', data are the packed uint32 words.
 */
export function tensor(
  data: ArrayLike<number> | ArrayBufferView,
  shape: readonly number[],
  opts: { dtype?: DType; device?: Device } = {},
): Tensor {
  const dtype = checkDType(opts.dtype ?? 'float32', 'opts.dtype');
  checkDevice(opts.device ?? 'cpu', 'opts.device');
  const dims = checkShape(shape, 'shape');
  if (data === null || typeof data !== 'object' || !('length' in data))
    fail('ERR_XNORM_ARGUMENT', `tensor: data: expected an array or typed array, received ${describe(data)}`);
  const values = data as ArrayLike<number>;
  const want = storageLength(dims, dtype);
  if (values.length !== want)
    fail('ERR_XNORM_SHAPE', `tensor: shape ${describe(dims)} (${dtype}) needs ${want} values, received ${values.length}`);
  const rawBits = (dtype === 'float16' || dtype === 'bfloat16') && data instanceof Uint16Array;
  const storage = rawBits || dtype === 'bit' ? new (storageCtor(dtype))(values) : encode(values, dtype);
  return new Tensor(storage, dims, dtype);
}

export function zeros(shape: readonly number[], opts: { dtype?: DType; device?: Device } = {}): Tensor {
  const dtype = checkDType(opts.dtype ?? 'float32', 'opts.dtype');
  checkDevice(opts.device ?? 'cpu', 'opts.device');
  const dims = checkShape(shape, 'shape');
  return new Tensor(allocate(dtype, storageLength(dims, dtype), 'zeros'), dims, dtype);
}

/** Checks an op's tensor argument: a live CPU Tensor with one of the given dtypes and, if set, a rank. */
export function checkTensor(
  x: unknown,
  name: string,
  opts: { dtypes?: readonly DType[]; rank?: number | readonly number[] } = {},
): Tensor {
  if (!(x instanceof Tensor)) fail('ERR_XNORM_ARGUMENT', `${name}: expected a Tensor, received ${describe(x)}`);
  if (x.disposed) fail('ERR_XNORM_DISPOSED', `${name}: the tensor was disposed`);
  if (opts.dtypes && !opts.dtypes.includes(x.dtype))
    fail('ERR_XNORM_DTYPE', `${name}: expected dtype ${opts.dtypes.join(' or ')}, received ${x.dtype}`);
  if (opts.rank !== undefined) {
    const ranks = typeof opts.rank === 'number' ? [opts.rank] : opts.rank;
    if (!ranks.includes(x.shape.length))
      fail('ERR_XNORM_SHAPE', `${name}: expected rank ${ranks.join(' or ')}, received shape [${x.shape.join(', ')}]`);
  }
  return x;
}

/** Checks that tensors share one device (all CPU for now). */
export function checkSameDevice(tensors: Record<string, Tensor | undefined>): void {
  let first: [string, Device] | undefined;
  for (const [name, t] of Object.entries(tensors)) {
    if (!t) continue;
    if (!first) first = [name, t.device];
    else if (t.device !== first[1])
      throw new XnormError(
        'ERR_XNORM_DEVICE',
        `${name}: expected device ${first[1]} (like ${first[0]}), received ${t.device}`,
      );
  }
}
