// Symbol.dispose: consumers compiling with an older `lib` get it from this reference in the .d.ts.
/// <reference lib="esnext.disposable" preserve="true" />
import { DeviceHandle, cudaAlloc, cudaFree, deviceIndex, resolveDevice } from './cuda';
import { constants as bufferConstants } from 'buffer';
import { XnormError, describe, fail } from './errors';
import { options } from './options';
import { native } from './native';
import {
  bfloat16BitsToNumber,
  float16BitsToNumber,
  numberToBfloat16Bits,
  numberToFloat16Bits,
} from './half';

/** Element types; 'bit' is packed ±1 (bit 1 = -1), channels innermost in 32-bit words. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'uint8' | 'bit';
/** Where a tensor's storage lives; 'cuda' is device 0. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
/** Host storage: Float32Array, Uint16Array (float16/bfloat16 bits), Int32Array, Uint8Array, Uint32Array ('bit' words). */
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

function checkDevice(device: unknown, name: string): 'cpu' | `cuda:${number}` {
  return resolveDevice(device, name);
}

/** Validates a shape and returns its element count; sizes that overflow are rejected. */
export function checkShape(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape) && !ArrayBuffer.isView(shape))
    fail('ERR_XNORM_SHAPE', `${name}: expected an array of sizes, received ${describe(shape)}`);
  let dims: unknown[];
  try {
    dims = Array.from(shape as ArrayLike<unknown>);
  } catch {
    return fail('ERR_XNORM_SHAPE', `${name}: expected an array of sizes, received a typed array whose memory was detached`);
  }
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

/** A new zeroed array; a size the engine cannot allocate is ERR_XNORM_OUT_OF_MEMORY. */
export function allocateArray<T>(Ctor: new (n: number) => T, length: number, what: string): T {
  try {
    return new Ctor(length);
  } catch (e) {
    return fail('ERR_XNORM_OUT_OF_MEMORY', `${what}: cannot allocate ${length} elements (${(e as Error).message})`);
  }
}

const MAX_LENGTH = bufferConstants.MAX_LENGTH;

/** Outputs of this many bytes and more come from xnorm's output pool (native/addon/output_pool.h). */
const POOL_MIN_BYTES = 128 << 10;

/**
 * Smaller outputs from this size on come from the pool only when it has an idle block of their size
 * class, which the dispose() of such an output adds: a loop that disposes them (a binary conv's 50 KB
 * 'bits' output) reuses warm blocks, while outputs that are never disposed stay in JS memory but for
 * the idle blocks there are (as external buffers that each wait for the GC they were 5x slower per
 * call). The pool is process-wide, so whether a given small output is pooled (and detached by its
 * dispose()) depends on what any thread disposed before: memory must not be used after dispose().
 */
const SMALL_POOL_MIN_BYTES = 16 << 10;

/** The ArrayBuffers of this thread's pooled outputs: dispose() hands them back to the pool at once. */
const pooledBuffers = new WeakSet<ArrayBuffer>();

/** Small outputs in JS memory, by buffer: their size, for the pool block their dispose() adds. */
const smallBuffers = new WeakMap<ArrayBuffer, number>();

/**
 * A new array with unspecified contents, for outputs a kernel overwrites in full, starting on a 64-byte
 * cache line. Unlike `new Ctor(n)` it is not zero-filled, and from 128 KiB on (from 16 KiB on, once
 * outputs of its size have been disposed) it comes from xnorm's output pool: memory that earlier
 * outputs already faulted in, where a fresh 6 MiB array costs page faults worth ~2.5 ms here, more
 * than a binary conv producing it takes.
 */
export function allocateUninitialized<T>(
  Ctor: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number },
  length: number,
  what: string,
  poolMinBytes = POOL_MIN_BYTES,
): T {
  const bytes = length * Ctor.BYTES_PER_ELEMENT;
  // The same ceiling as JS memory (4 GiB on Node 20): beyond it a request is refused, not attempted.
  if (bytes > MAX_LENGTH) fail('ERR_XNORM_OUT_OF_MEMORY', `${what}: cannot allocate ${length} elements (over ${MAX_LENGTH} bytes)`);
  const small = bytes < poolMinBytes && bytes >= SMALL_POOL_MIN_BYTES;
  if (bytes >= poolMinBytes || small) {
    let ab: ArrayBuffer | null;
    try {
      ab = native().allocOutput({ bytes, idleOnly: small });
    } catch (e) {
      return fail('ERR_XNORM_OUT_OF_MEMORY', `${what}: cannot allocate ${length} elements (${(e as Error).message})`);
    }
    if (ab) {
      pooledBuffers.add(ab);
      return new Ctor(ab, 0, length);
    }
  }
  let mem: Buffer;
  try {
    mem = Buffer.allocUnsafeSlow(bytes + 63); // room to start on a cache line
  } catch (e) {
    return fail('ERR_XNORM_OUT_OF_MEMORY', `${what}: cannot allocate ${length} elements (${(e as Error).message})`);
  }
  if (small) smallBuffers.set(mem.buffer as ArrayBuffer, bytes);
  return new Ctor(mem.buffer, mem.byteOffset + native().prepareOutput({ buffer: mem, bytes }), length);
}

/** A new zeroed storage array for `dtype`. */
export function allocate(dtype: DType, length: number, what: string): TypedArray {
  return allocateArray<TypedArray>(storageCtor(dtype), length, what);
}

/** Bytes of storage a tensor of this shape and dtype holds. */
export function storageBytes(shape: readonly number[], dtype: DType): number {
  return storageLength(shape, dtype) * storageCtor(dtype).BYTES_PER_ELEMENT;
}

/**
 * @internal Device memory holding a tensor's storage (same layout as the CPU typed array). The native
 * handle frees the memory when dispose() is called or, as a backstop, when it is garbage-collected.
 */
export class DeviceBuffer {
  constructor(
    readonly handle: DeviceHandle,
    readonly device: `cuda:${number}`,
  ) {}
  get index(): number {
    return deviceIndex(this.device);
  }
}

/** @internal New device memory (zeroed on request) for a tensor on a normalised CUDA device. */
export function allocateDevice(device: `cuda:${number}`, shape: readonly number[], dtype: DType, zero = false): DeviceBuffer {
  return new DeviceBuffer(cudaAlloc(deviceIndex(device), storageBytes(shape, dtype), zero), device);
}

let nextId = 1;
const DETACHED = "the tensor's memory was detached (disposed from xnorm's output pool, or its ArrayBuffer transferred to another thread)";

/**
 * An n-d array on the CPU or a CUDA device, made by tensor(), zeros() or from() and returned by every op.
 * CPU data is a typed array (owned by V8); dispose() releases device memory and pooled outputs early.
 * @example
 * using x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
 * console.log(x.shape, x.dtype, x.device); // [2, 3] 'float32' 'cpu'
 * const values: Float32Array = x.float32Sync();
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly device: Device;
  readonly size: number;
  /** @internal used in messages and by interop */
  readonly id = nextId++;
  #storage: TypedArray | null = null;
  #buffer: DeviceBuffer | null = null;

  /**
   * @internal Use tensor(), zeros(), from() or to(). The storage (a typed array, or device memory) is
   * taken as is, without a copy.
   */
  constructor(storage: TypedArray | DeviceBuffer, shape: readonly number[], dtype: DType) {
    const dims = checkShape(shape, 'shape');
    if (storage instanceof DeviceBuffer) {
      checkDType(dtype, 'dtype');
      this.device = storage.device;
      this.#buffer = storage;
    } else {
      const Ctor = storageCtor(dtype);
      if (!(storage instanceof Ctor))
        fail('ERR_XNORM_DTYPE', `tensor: ${dtype} data must be a ${Ctor.name}, received ${describe(storage)}`);
      const want = storageLength(dims, dtype);
      if (storage.length !== want)
        fail(
          'ERR_XNORM_SHAPE',
          `tensor: shape ${describe(dims)} (${dtype}) needs ${want} storage elements, received ${storage.length}`,
        );
      this.device = 'cpu';
      this.#storage = storage;
    }
    this.shape = Object.freeze(dims.slice());
    this.dtype = dtype;
    this.size = shapeSize(dims);
  }

  /** True after dispose(), and when the memory of a shared CPU array was detached (transferred away). */
  get disposed(): boolean {
    return (this.#storage === null && this.#buffer === null) || this.detached;
  }

  /** @internal A CPU tensor whose array has no elements left: its ArrayBuffer was detached. */
  get detached(): boolean {
    return this.#storage !== null && this.#storage.length === 0 && this.size > 0;
  }

  /** @internal A real Tensor (not a Proxy of one or an object made from its prototype). */
  static isTensor(x: unknown): x is Tensor {
    return typeof x === 'object' && x !== null && #storage in x;
  }

  /** 32-bit words per pixel of a 'bit' tensor (channels packed along the last axis). */
  get packedWords(): number {
    return this.dtype === 'bit' ? packedWordsFor(this.shape[this.shape.length - 1]) : 0;
  }

  /**
   * @internal The live CPU storage (no copy). Throws ERR_XNORM_DISPOSED after dispose(), and
   * ERR_XNORM_DEVICE for a device tensor (an op without a kernel for that device).
   */
  storage(name = 'tensor'): TypedArray {
    if (this.detached) fail('ERR_XNORM_DISPOSED', `${name}: ${DETACHED}`);
    if (this.#storage === null) {
      if (this.#buffer)
        fail('ERR_XNORM_DEVICE', `${name}: expected a CPU tensor, received one on ${this.device} (move it with .to('cpu'))`);
      fail('ERR_XNORM_DISPOSED', `${name}: the tensor was disposed`);
    }
    return this.#storage;
  }

  /** @internal The device memory of a CUDA tensor. Throws ERR_XNORM_DISPOSED after dispose(). */
  deviceBuffer(name = 'tensor'): DeviceBuffer {
    if (this.#buffer === null) {
      if (this.#storage) fail('ERR_XNORM_DEVICE', `${name}: expected a CUDA tensor, received one on cpu`);
      fail('ERR_XNORM_DISPOSED', `${name}: the tensor was disposed`);
    }
    return this.#buffer;
  }

  /** @internal The values on the host: the storage itself for a CPU tensor, a download otherwise. */
  hostData(name = 'tensor'): TypedArray {
    return this.#buffer ? this.download(name, false) : this.storage(name);
  }

  private download(name: string, async: false): TypedArray;
  private download(name: string, async: true): Promise<TypedArray>;
  private download(name: string, async: boolean): TypedArray | Promise<TypedArray> {
    const b = this.deviceBuffer(name);
    const host = allocate(this.dtype, storageLength(this.shape, this.dtype), name);
    const r = native().cudaDownload({ handle: b.handle, dtype: this.dtype, host }, async);
    return async ? Promise.resolve(r).then(() => host) : host;
  }

  /** A copy of the stored values (float16/bfloat16 as uint16 bits, 'bit' as packed words), on the CPU. */
  dataSync(): TypedArray {
    return this.#buffer ? this.download('dataSync', false) : this.storage('dataSync').slice();
  }

  /** As dataSync(); a device tensor is downloaded without blocking the JS thread. */
  async data(): Promise<TypedArray> {
    return this.#buffer ? this.download('data', true) : this.dataSync();
  }

  /** The values as float32, decoding float16/bfloat16 and unpacking nothing ('bit' is refused). */
  float32Sync(): Float32Array {
    const s = this.hostData('float32Sync');
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

  /**
   * The same values under another shape, sharing this tensor's storage (no copy; CPU tensors). A 'bit'
   * tensor pads each pixel to whole 32-bit words, so its last dimension (C) must stay the same, or be a
   * multiple of 32 before and after (e.g. binaryConv2d's [N, H, W, C] as binaryLinear's [N, H·W·C]).
   * The view lives as long as the storage: after the source's dispose() a pooled view reads as disposed.
   * @example
   * const t = zeros([2, 3, 4]);
   * const flat = t.reshape([t.shape[0], -1]); // [2, 12]: one -1 is inferred
   */
  reshape(shape: readonly number[]): Tensor {
    if (this.#buffer) fail('ERR_XNORM_DEVICE', `reshape: CUDA tensors cannot be viewed yet; copy to the CPU first (toSync('cpu'))`);
    const storage = this.storage('reshape');
    const infer = Array.isArray(shape) ? shape.filter((d) => d === -1).length : 0;
    if (infer > 1) fail('ERR_XNORM_SHAPE', `reshape: shape: at most one -1, received ${describe(shape)}`);
    let dims = shape as number[];
    if (infer === 1) {
      const known = shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
      if (!(known > 0) || this.size % known !== 0)
        fail('ERR_XNORM_SHAPE', `reshape: shape ${describe(shape)} cannot hold ${this.size} values`);
      dims = shape.map((d) => (d === -1 ? this.size / known : d));
    }
    dims = checkShape(dims, 'reshape: shape');
    if (shapeSize(dims) !== this.size)
      fail('ERR_XNORM_SHAPE', `reshape: shape ${describe(dims)} holds ${shapeSize(dims)} values, the tensor ${this.size}`);
    if (this.dtype === 'bit') {
      const c0 = this.shape[this.shape.length - 1], c1 = dims[dims.length - 1];
      if (dims.length === 0 || (c0 !== c1 && !(c0 % 32 === 0 && c1 % 32 === 0)))
        fail('ERR_XNORM_SHAPE', `reshape: a 'bit' tensor pads every pixel of C = ${c0} channels to ${packedWordsFor(c0)} words: ` +
          `the last dimension must stay ${c0}, or both be multiples of 32; received ${describe(dims)}`);
    }
    return new Tensor(storage, dims, this.dtype);
  }

  /**
   * A copy converted to another float dtype (float32, float16, bfloat16: rounding to nearest even), on the
   * same device; e.g. float16 to float32 before toOnnx. The tensor itself when it already has that dtype.
   */
  cast(dtype: 'float32' | 'float16' | 'bfloat16'): Tensor {
    const to = checkDType(dtype, 'cast: dtype');
    const floats: readonly DType[] = FLOAT_DTYPES;
    if (!floats.includes(to) || !floats.includes(this.dtype))
      fail('ERR_XNORM_DTYPE', `cast: converts between float32, float16 and bfloat16; received ${this.dtype} to ${to}`);
    if (to === this.dtype) return this;
    return onDevice(new Tensor(encode(this.float32Sync(), to), this.shape, to), this.device);
  }

  /** util.inspect: dtype, shape, device and the first values (CPU tensors). */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    if (this.disposed || this.#buffer || this.dtype === 'bit') return this.toString();
    const values = this.dtype === 'float32' || this.dtype === 'int32' || this.dtype === 'uint8'
      ? this.storage() : this.float32Sync();
    const shown = Array.from(values.subarray(0, 6), (v) => String(Number(v.toPrecision(5))));
    return `${this.toString()} [${shown.join(', ')}${values.length > 6 ? `, … ${values.length - 6} more` : ''}]`;
  }

  /** This tensor on `device`: itself when it is already there, else a copy. */
  toSync(device: Device): Tensor {
    return this.move(device, false) as Tensor;
  }

  /** As toSync(); copies to and from a GPU run without blocking the JS thread. */
  async to(device: Device): Promise<Tensor> {
    return this.move(device, true);
  }

  private move(device: Device, async: boolean): Tensor | Promise<Tensor> {
    const target = checkDevice(device, 'to');
    if (this.disposed) fail('ERR_XNORM_DISPOSED', 'to: the tensor was disposed');
    if (target === this.device) return async ? Promise.resolve(this) : this;
    if (target === 'cpu') {
      const done = (host: TypedArray) => new Tensor(host, this.shape, this.dtype);
      return async ? this.download('to', true).then(done) : done(this.download('to', false));
    }
    // To a GPU: from the CPU storage, or through the host from another GPU.
    const upload = (host: TypedArray): Tensor | Promise<Tensor> => {
      const buf = allocateDevice(target as `cuda:${number}`, this.shape, this.dtype);
      const t = new Tensor(buf, this.shape, this.dtype);
      try {
        const r = native().cudaUpload({ handle: buf.handle, dtype: this.dtype, host }, async);
        if (!async) return t;
        return Promise.resolve(r).then(
          () => t,
          (e) => {
            t.dispose();
            throw e;
          },
        );
      } catch (e) {
        t.dispose();
        throw e;
      }
    };
    if (this.#buffer) return async ? this.download('to', true).then(upload) : upload(this.download('to', false));
    return upload(this.storage('to'));
  }

  /**
   * Frees the storage now: device memory at once (after work in flight on it); an output xnorm made on
   * the CPU from its output pool (128 KiB and up; 16 KiB and up once outputs of that size have been
   * disposed) goes back there at once (its ArrayBuffer is detached, so arrays that share it, such as one
   * handed to toOnnx(), read as empty); other host memory once the GC runs. Idempotent.
   */
  dispose(): void {
    const ab = this.#storage?.buffer;
    if (ab instanceof ArrayBuffer && pooledBuffers.has(ab)) native().releaseOutput(ab);
    else if (ab instanceof ArrayBuffer && smallBuffers.has(ab)) {
      native().warmOutput({ bytes: smallBuffers.get(ab)! });  // the next output of this size: a pool block
      smallBuffers.delete(ab);
    }
    this.#storage = null;
    if (this.#buffer) {
      cudaFree(this.#buffer.handle);
      this.#buffer = null;
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Hands the tensor to onnxruntime-node: `t.toOnnx(ort)` with `import * as ort from 'onnxruntime-node'`. */
  toOnnx<T>(ort: { Tensor: new (type: string, data: TypedArray, dims: readonly number[]) => T }): T {
    if (this.dtype === 'bit' || this.dtype === 'bfloat16')
      fail('ERR_XNORM_DTYPE', `toOnnx: onnxruntime has no ${this.dtype} tensor; convert to float32 first`);
    return new ort.Tensor(this.dtype, this.hostData('toOnnx'), this.shape.slice());
  }

  /** Hands the tensor to tfjs: `t.toTfjs(tf)`. float16/bfloat16 are widened to float32 (tfjs has neither). */
  toTfjs<T>(tf: { tensor(values: TypedArray, shape: number[], dtype: 'float32' | 'int32'): T }): T {
    const s = this.hostData('toTfjs');
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
 * @param data a flat array of numbers or a typed array, `shape`'s element count long
 * @param shape the dimensions (integers >= 0, rank <= 16)
 * @param options `dtype` (default 'float32') and `device` (default 'cpu')
 * @example const x = tensor(new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
 */
export function tensor(
  data: ArrayLike<number> | ArrayBufferView,
  shape: readonly number[],
  options?: { dtype?: DType; device?: Device } | null,
): Tensor {
  const opts = creationOptions(options, 'tensor: opts');
  const dtype = checkDType(opts.dtype ?? 'float32', 'opts.dtype');
  const device = checkDevice(opts.device ?? 'cpu', 'opts.device');
  const dims = checkShape(shape, 'shape');
  if (data === null || typeof data !== 'object' || !('length' in data))
    fail('ERR_XNORM_ARGUMENT', `tensor: data: expected an array or typed array, received ${describe(data)}`);
  const values = data as ArrayLike<number>;
  if (Array.isArray(values)) {
    const bad = values.findIndex((v) => typeof v !== 'number');
    if (bad >= 0)
      fail('ERR_XNORM_ARGUMENT', `tensor: data: expected a flat array of numbers, received ${describe(values[bad])} at index ${bad}` +
        (Array.isArray(values[bad]) ? ' (nested arrays are not taken: pass data.flat(Infinity) and the shape)' : ''));
  }
  const want = storageLength(dims, dtype);
  if (values.length !== want)
    fail('ERR_XNORM_SHAPE', `tensor: shape ${describe(dims)} (${dtype}) needs ${want} values, received ${values.length}`);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array)
    fail('ERR_XNORM_DTYPE', `tensor: data: 64-bit integer arrays are not supported, received ${describe(data)}`);
  const rawBits = (dtype === 'float16' || dtype === 'bfloat16') && data instanceof Uint16Array;
  let storage: TypedArray;
  try {
    storage = rawBits || dtype === 'bit' ? new (storageCtor(dtype))(values) : encode(values, dtype);
  } catch {
    return fail('ERR_XNORM_DISPOSED', `tensor: data: the array's memory was detached`);
  }
  return onDevice(new Tensor(storage, dims, dtype), device);
}

/** A CPU tensor moved to `device` (itself for 'cpu'); the CPU copy is released. */
function onDevice(t: Tensor, device: Device): Tensor {
  if (device === 'cpu') return t;
  const d = t.toSync(device);
  t.dispose();
  return d;
}

/**
 * A new zero-filled tensor.
 * @param shape the dimensions (integers >= 0, rank <= 16)
 * @param options `dtype` (default 'float32') and `device` (default 'cpu')
 * @example const bias = zeros([64]);
 */
export function zeros(shape: readonly number[], options?: { dtype?: DType; device?: Device } | null): Tensor {
  const opts = creationOptions(options, 'zeros: opts');
  const dtype = checkDType(opts.dtype ?? 'float32', 'opts.dtype');
  const device = checkDevice(opts.device ?? 'cpu', 'opts.device');
  const dims = checkShape(shape, 'shape');
  if (device !== 'cpu') return new Tensor(allocateDevice(device, dims, dtype, true), dims, dtype);
  return new Tensor(allocate(dtype, storageLength(dims, dtype), 'zeros'), dims, dtype);
}

/** The options of tensor() and zeros(). */
function creationOptions(opts: unknown, name: string): { dtype?: DType; device?: Device } {
  return options(opts, name, ['dtype', 'device']);
}

/** Checks an op's tensor argument: a live Tensor with one of the given dtypes and, if set, a rank. */
export function checkTensor(
  x: unknown,
  name: string,
  opts: { dtypes?: readonly DType[]; rank?: number | readonly number[] } = {},
): Tensor {
  if (!Tensor.isTensor(x)) fail('ERR_XNORM_ARGUMENT', `${name}: expected a Tensor, received ${describe(x)}`);
  if (x.disposed)
    fail('ERR_XNORM_DISPOSED', `${name}: ${x.detached ? DETACHED : 'the tensor was disposed'}`);
  if (opts.dtypes && !opts.dtypes.includes(x.dtype))
    fail('ERR_XNORM_DTYPE', `${name}: expected dtype ${opts.dtypes.join(' or ')}, received ${x.dtype}`);
  if (opts.rank !== undefined) {
    const ranks = typeof opts.rank === 'number' ? [opts.rank] : opts.rank;
    if (!ranks.includes(x.shape.length))
      fail('ERR_XNORM_SHAPE', `${name}: expected rank ${ranks.join(' or ')}, received shape [${x.shape.join(', ')}]`);
  }
  return x;
}

/** Checks that tensors share one device (device names are normalised: 'cuda' is 'cuda:0'). */
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

/** @internal The native device index of a tensor: -1 for the CPU, else its CUDA device. */
export function nativeDevice(t: Tensor): number {
  return t.device === 'cpu' ? -1 : deviceIndex(t.device);
}

/** @internal What the addon receives for a tensor: its typed array on the CPU, its device handle on a GPU. */
export function nativeRef(t: Tensor, name = 'tensor'): TypedArray | DeviceHandle {
  return t.device === 'cpu' ? t.storage(name) : t.deviceBuffer(name).handle;
}

/** As nativeRef, or undefined for an absent tensor. */
export function optionalRef(t: Tensor | undefined, name?: string): TypedArray | DeviceHandle | undefined {
  return t && nativeRef(t, name);
}

/**
 * @internal A new output tensor on `device`, not zero-filled: every op writes each element of its
 * outputs (test/output-pool.test.ts poisons the pool to check that). Device outputs are never zeroed.
 */
export function newOutput(device: Device, shape: readonly number[], dtype: DType, what: string, poolMinBytes?: number): Tensor {
  if (device !== 'cpu') return new Tensor(allocateDevice(device as `cuda:${number}`, shape, dtype), shape, dtype);
  const length = storageLength(shape, dtype);
  return new Tensor(allocateUninitialized<TypedArray>(storageCtor(dtype) as never, length, what, poolMinBytes), shape, dtype);
}

/**
 * @internal The output of an op: `out` when the caller gives one, checked to be a live tensor of exactly
 * this device, shape and dtype that shares no memory with the op's inputs (the kernels would read what
 * they already overwrote), else a new tensor. `fresh` lists what a failed op should free.
 */
export function outputFor(
  out: unknown, device: Device, shape: readonly number[], dtype: DType, what: string, inputs: (Tensor | undefined)[],
): { y: Tensor; fresh: Tensor[] } {
  if (out === undefined) {
    const y = newOutput(device, shape, dtype, what);
    return { y, fresh: [y] };
  }
  const y = checkTensor(out, what);
  if (y.device !== device) fail('ERR_XNORM_DEVICE', `${what}: expected device ${device}, received ${y.device}`);
  if (y.dtype !== dtype) fail('ERR_XNORM_DTYPE', `${what}: expected dtype ${dtype}, received ${y.dtype}`);
  if (y.shape.length !== shape.length || y.shape.some((d, i) => d !== shape[i]))
    fail('ERR_XNORM_SHAPE', `${what}: expected shape [${shape.join(', ')}], received [${y.shape.join(', ')}]`);
  for (const t of inputs)
    if (t && sharesMemory(y, t)) fail('ERR_XNORM_ARGUMENT', `${what}: shares memory with an input of the op`);
  return { y, fresh: [] };
}

function sharesMemory(a: Tensor, b: Tensor): boolean {
  if (a.device !== b.device || a.disposed || b.disposed) return false;
  if (a.device !== 'cpu') return a.deviceBuffer().handle === b.deviceBuffer().handle;
  const s = a.storage(), t = b.storage();
  return s.buffer === t.buffer && s.byteOffset < t.byteOffset + t.byteLength && t.byteOffset < s.byteOffset + s.byteLength;
}

/**
 * The `call` of an op that writes new tensors: a failed op frees them at once (device memory) rather than
 * leaving them to the GC.
 */
export function freeOnFailure(outputs: (Tensor | undefined)[], run: (async: boolean) => unknown): (async: boolean) => unknown {
  return (async: boolean) => {
    const drop = (e: unknown): never => {
      for (const t of outputs) t?.dispose();
      throw e;
    };
    try {
      const r = run(async);
      return async ? Promise.resolve(r).catch(drop) : r;
    } catch (e) {
      return drop(e);
    }
  };
}
