import { describe, expect, it } from 'vitest';
import { Tensor, XnormError, batchNormSync, from, info, momentsSync, tensor, zeros } from '../lib';
import { bfloat16BitsToNumber, float16BitsToNumber, numberToBfloat16Bits, numberToFloat16Bits } from '../lib/half';
import { native } from '../lib/native';
import { allocateUninitialized } from '../lib/tensor';
import { expectCode } from './helpers';

describe('Tensor', () => {
  it('copies its input, validates size, and reports shape, dtype, device, size', () => {
    const src = [1, 2, 3, 4, 5, 6];
    const t = tensor(src, [2, 3]);
    src[0] = 99;
    expect(Array.from(t.dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.device).toBe('cpu');
    expect(t.size).toBe(6);
    expect(Object.isFrozen(t.shape)).toBe(true);
  });

  it('dataSync returns a copy; data() resolves the same values', async () => {
    const t = tensor([1, 2], [2]);
    const d = t.dataSync();
    d[0] = 5;
    expect(Array.from(await t.data())).toEqual([1, 2]);
  });

  it('supports Symbol.dispose', () => {
    let t: Tensor;
    {
      using u = tensor([1], [1]);
      t = u;
    }
    expect(t.disposed).toBe(true);
  });

  it('stores float16 / bfloat16 as bits and decodes them', () => {
    const t = tensor([1, -2.5, 65504, 1e-7], [4], { dtype: 'float16' });
    expect(t.dataSync()).toBeInstanceOf(Uint16Array);
    expect(Array.from(t.float32Sync())).toEqual([1, -2.5, 65504, float16BitsToNumber(numberToFloat16Bits(1e-7))]);
    const b = tensor([1, 3.140625, -1e30], [3], { dtype: 'bfloat16' });
    expect(Array.from(b.float32Sync())).toEqual([1, 3.140625, bfloat16BitsToNumber(numberToBfloat16Bits(-1e30))]);
    // A Uint16Array is taken as raw bits.
    expect(tensor(Uint16Array.of(0x3c00), [1], { dtype: 'float16' }).float32Sync()[0]).toBe(1);
  });

  it('float16 encode/decode round-trips every bit pattern and rounds to nearest even', () => {
    for (let h = 0; h < 65536; h++) {
      const v = float16BitsToNumber(h);
      if (Number.isNaN(v)) expect(Number.isNaN(float16BitsToNumber(numberToFloat16Bits(v)))).toBe(true);
      else expect(numberToFloat16Bits(v)).toBe(h);
    }
    expect(numberToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(numberToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(numberToFloat16Bits(65520)).toBe(0x7c00); // overflow -> Inf
    expect(numberToFloat16Bits(2 ** -25)).toBe(0); // tie at the smallest subnormal -> 0
    expect(numberToFloat16Bits(3 * 2 ** -25)).toBe(2);
  });

  it('bfloat16 round-trips every bit pattern', () => {
    for (let h = 0; h < 65536; h++) {
      const v = bfloat16BitsToNumber(h);
      if (Number.isNaN(v)) expect(Number.isNaN(bfloat16BitsToNumber(numberToBfloat16Bits(v)))).toBe(true);
      else expect(numberToBfloat16Bits(v)).toBe(h);
    }
  });

  it('the native kernels decode and re-encode every float16 / bfloat16 value exactly', () => {
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
      const t = tensor(bits, [1, 65536], { dtype });
      const id = batchNormSync(t, { mean: zeros([65536]), var: tensor(new Float32Array(65536).fill(1), [65536]) }, { eps: 0, layout: 'nhwc' });
      const a = t.float32Sync();
      const b = id.float32Sync();
      for (let i = 0; i < a.length; i++) {
        if (Number.isNaN(a[i])) expect(Number.isNaN(b[i])).toBe(true);
        else expect(b[i]).toBe(a[i] === 0 ? 0 : a[i]); // -0 becomes +0 through "+ beta"
      }
    }
  });

  it("'bit' tensors count packed words per pixel", () => {
    const b = zeros([2, 3, 3, 33], { dtype: 'bit' });
    expect(b.packedWords).toBe(2);
    expect(b.dataSync().length).toBe(2 * 3 * 3 * 2);
    expect(b.size).toBe(2 * 3 * 3 * 33);
  });

  it('info() reports the ISA in use, threads and the build', () => {
    const i = info();
    expect(i.cpu.threads).toBeGreaterThan(0);
    expect(i.cpu.isa.length).toBeGreaterThan(0);
    expect(['portable', 'avx2', 'avx512', 'neon']).toContain(i.cpu.level);
    // without a usable GPU, a reason must say why; with one, devices must be listed
    if (i.cuda.available) expect(i.cuda.devices.length).toBeGreaterThan(0);
    else expect(i.cuda.reason).toMatch(/CUDA|plugin|driver|device/i);
    expect(i.build.napi).toBeGreaterThanOrEqual(8);
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('from() and interop', () => {
  it('accepts tfjs-like tensors and hands results back with toTfjs', () => {
    const fake = { shape: [2, 2], dtype: 'float32', dataSync: () => Float32Array.of(1, 2, 3, 4) };
    const t = from(fake);
    expect(Array.from(t.dataSync())).toEqual([1, 2, 3, 4]);
    const made: unknown[] = [];
    const tf = { tensor: (v: unknown, s: number[], d: string) => (made.push([v, s, d]), 'tfjs-tensor') };
    expect(t.toTfjs(tf)).toBe('tfjs-tensor');
    expect(made[0]).toEqual([t.storage(), [2, 2], 'float32']);
  });

  it('accepts ndarrays with any strides, copying only when they are not contiguous', () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i);
    const contiguous = from({ data, shape: [2, 3, 4], stride: [12, 4, 1], offset: 0 });
    expect(contiguous.storage().buffer).toBe(data.buffer);
    // the transpose of a [4, 6] matrix: shape [6, 4], strides [1, 6]
    const tr = from({ data, shape: [6, 4], stride: [1, 6], offset: 0 });
    const expected: number[] = [];
    for (let i = 0; i < 6; i++) for (let j = 0; j < 4; j++) expected.push(data[j * 6 + i]);
    expect(Array.from(tr.dataSync())).toEqual(expected);
    // a reversed, offset view: data[23], data[21], ...
    const rev = from({ data, shape: [3], stride: [-2], offset: 23 });
    expect(Array.from(rev.dataSync())).toEqual([23, 21, 19]);
    // a view that reaches outside the data is refused
    expect(() => from({ data, shape: [5], stride: [6], offset: 0 })).toThrow(XnormError);
    expect(() => from({ data, shape: [3], stride: [-2], offset: 3 })).toThrow(XnormError);
  });

  it('accepts {data, shape} and asks for the dtype of a Uint16Array', () => {
    expect(from({ data: Float32Array.of(1, 2), shape: [2] }).dtype).toBe('float32');
    expect(from({ data: [1, 2, 3], shape: [3] }).dtype).toBe('float32');
    expect(() => from({ data: Uint16Array.of(1), shape: [1] })).toThrow(/float16 or bfloat16/);
    expect(from({ data: Uint16Array.of(0x3f80), shape: [1] }, { dtype: 'bfloat16' }).float32Sync()[0]).toBe(1);
    expect(() => from({ data: Float32Array.of(1, 2), shape: [3] })).toThrow(XnormError);
    expect(() => from(42 as never)).toThrow(XnormError);
  });
});

describe('round trips with real tfjs tensors', () => {
  it('from(tf.Tensor) and toTfjs(tf) keep values, shape and dtype', async () => {
    const tf = await import('@tensorflow/tfjs');
    const a = tf.tensor([1.5, -2, 3, 4, 5, 6], [2, 3], 'float32');
    const x = from(a);
    expect(x.shape).toEqual([2, 3]);
    expect(x.dtype).toBe('float32');
    const b = x.toTfjs(tf);
    expect(b.shape).toEqual([2, 3]);
    expect(b.dtype).toBe('float32');
    expect(Array.from(b.dataSync())).toEqual([1.5, -2, 3, 4, 5, 6]);
    const i = from(tf.tensor([1, 2, 3], [3], 'int32'));
    expect(i.dtype).toBe('int32');
    expect(i.toTfjs(tf).dtype).toBe('int32');
    const h = tensor([0.5, 2], [2], { dtype: 'float16' }).toTfjs(tf);
    expect(h.dtype).toBe('float32');
    expect(Array.from(h.dataSync())).toEqual([0.5, 2]);
    tf.dispose([a, b, h]);
  });
});

describe('uninitialised outputs', () => {
  it('start on a cache line (a huge page from 4 MiB) inside their buffer, with the requested length', () => {
    for (const n of [1, 17, 1000, (4 << 20) / 4, (5 << 20) / 4 + 3]) {
      const a = allocateUninitialized(Float32Array, n, 'test');
      expect(a.length).toBe(n);
      expect(a.byteOffset + a.byteLength).toBeLessThanOrEqual(a.buffer.byteLength);
      a[n - 1] = 1.5; // writable to the end
      expect(a[n - 1]).toBe(1.5);
    }
  });

  it('the native side checks the buffer it is given', () => {
    const n = native();
    expectCode(() => n.prepareOutput({ buffer: new Float32Array(4) as never, bytes: 4 }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => n.prepareOutput({ buffer: new Uint8Array(8), bytes: 16 }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => n.prepareOutput({ buffer: new Uint8Array(16), bytes: 16 }), 'ERR_XNORM_ARGUMENT'); // no room to align
    const off = n.prepareOutput({ buffer: new Uint8Array(16 + 63), bytes: 16 });
    expect(off).toBeGreaterThanOrEqual(0);
    expect(off).toBeLessThan(64);
    const big = new Uint8Array((4 << 20) + (2 << 20));
    expect(n.prepareOutput({ buffer: big, bytes: 4 << 20 })).toBeLessThan(2 << 20);
  });
});

describe('tensor ergonomics: reshape views, cast, inspect, flat data only', () => {
  it('reshape shares the storage, infers one -1, and refuses sizes that do not match', () => {
    const t = tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);
    const v = t.reshape([6, -1]);
    expect(v.shape).toEqual([6, 4]);
    expect(v.storage()).toBe(t.storage());  // a view, not a copy
    expect(Array.from(v.dataSync())).toEqual(Array.from(t.dataSync()));
    expect(t.reshape([24]).shape).toEqual([24]);
    expectCode(() => t.reshape([5, 5]), 'ERR_XNORM_SHAPE');
    expectCode(() => t.reshape([-1, -1]), 'ERR_XNORM_SHAPE');
    expectCode(() => t.reshape([7, -1]), 'ERR_XNORM_SHAPE');
    expectCode(() => t.reshape([2, 'a' as never]), 'ERR_XNORM_SHAPE');
  });

  it("reshape of a 'bit' tensor keeps the per-pixel word padding right", () => {
    // C = 40: each pixel is 2 words; only the leading dims may change
    const b = tensor(new Uint32Array(2 * 3 * 2), [2, 3, 40], { dtype: 'bit' });
    expect(b.reshape([6, 40]).shape).toEqual([6, 40]);
    expectCode(() => b.reshape([2, 120]), 'ERR_XNORM_SHAPE');
    // C = 64: the bits are contiguous, so [N, H·W·C] works (binaryConv2d output into binaryLinear)
    const c = tensor(new Uint32Array(2 * 3 * 2), [2, 3, 64], { dtype: 'bit' });
    expect(c.reshape([2, 192]).shape).toEqual([2, 192]);
    expect(c.reshape([2, 192]).storage()).toBe(c.storage());
  });

  it('a view of a pooled output reads as disposed once the source is disposed (never stale memory)', () => {
    const x = tensor(new Float32Array(64 * 1024).fill(1), [64, 1024]);
    const y = batchNormSync(x, { mean: zeros([1024]), var: tensor(new Float32Array(1024).fill(1), [1024]) }, { layout: 'nhwc' });
    const v = y.reshape([64 * 1024]);
    y.dispose();
    expect(v.disposed).toBe(true);
    expectCode(() => v.dataSync(), 'ERR_XNORM_DISPOSED');
  });

  it('cast converts between float dtypes (round to nearest even) and refuses others', () => {
    const t = tensor([1, 1 + 2 ** -11, 65504, -0.1], [4]);
    const h = t.cast('float16');
    expect(h.dtype).toBe('float16');
    expect(Array.from(h.dataSync())).toEqual([1, 1 + 2 ** -11, 65504, -0.1].map(numberToFloat16Bits));
    expect(Array.from(h.cast('float32').dataSync())).toEqual([1, 1, 65504, float16BitsToNumber(numberToFloat16Bits(-0.1))].map(Math.fround));
    expect(Array.from(t.cast('bfloat16').dataSync())).toEqual([1, 1 + 2 ** -11, 65504, -0.1].map(numberToBfloat16Bits));
    expect(t.cast('float32')).toBe(t);
    expectCode(() => tensor([1], [1], { dtype: 'int32' }).cast('float32'), 'ERR_XNORM_DTYPE');
    expectCode(() => t.cast('int32' as never), 'ERR_XNORM_DTYPE');
  });

  it('util.inspect shows dtype, shape, device and the first values', async () => {
    const { inspect } = await import('util');
    expect(inspect(tensor([1.5, 2, 3], [3]))).toBe('Tensor(float32, [3], cpu) [1.5, 2, 3]');
    expect(inspect(tensor(Float32Array.from({ length: 10 }, (_, i) => i), [2, 5]))).toBe('Tensor(float32, [2, 5], cpu) [0, 1, 2, 3, 4, 5, … 4 more]');
    expect(inspect(tensor([0.1], [1], { dtype: 'float16' }))).toBe('Tensor(float16, [1], cpu) [0.099976]');
    const d = tensor([1], [1]);
    d.dispose();
    expect(inspect(d)).toBe('Tensor(float32, [1], cpu, disposed)');
  });

  it('refuses nested or non-numeric arrays with a clear message', () => {
    const e = expectCode(() => tensor([[1, 2], [3, 4]] as never, [2, 2]), 'ERR_XNORM_ARGUMENT');
    expect(e.message).toMatch(/flat array.*data\.flat/);
    expectCode(() => tensor([[1]] as never, [1]), 'ERR_XNORM_ARGUMENT');  // a length that fits is no excuse
    expectCode(() => tensor(['1', 2] as never, [2]), 'ERR_XNORM_ARGUMENT');
  });
});
