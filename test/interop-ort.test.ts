// from() and toOnnx with onnxruntime-node's tensors. A file of its own: onnxruntime-node's arm64 binary
// crashes on loading under qemu-user, so scripts/test-arm64.sh leaves this file out.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { XnormError, from, momentsSync } from '../lib';

describe('onnxruntime-node interop', () => {
  it('wraps onnxruntime-node tensors without a copy, and toOnnx hands results back', () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i);
    const o = new ort.Tensor('float32', data, [2, 3, 4]);
    const t = from(o);
    expect(t.shape).toEqual([2, 3, 4]);
    expect(t.storage()).toBe(data);
    expect(from(o, { copy: true }).storage()).not.toBe(data);
    const m = momentsSync(t);
    const back = m.mean.toOnnx(ort);
    expect(back).toBeInstanceOf(ort.Tensor);
    expect(back.dims).toEqual([3]);
    expect(back.type).toBe('float32');
    expect(Array.from(back.data as Float32Array)).toEqual(Array.from(m.mean.dataSync()));
    const i32 = from(new ort.Tensor('int32', Int32Array.of(1, 2), [2]));
    expect(i32.dtype).toBe('int32');
    const h = from(new ort.Tensor('float16', Uint16Array.of(0x3c00, 0x4000), [2]));
    expect(Array.from(h.float32Sync())).toEqual([1, 2]);
    expect(() => from(new ort.Tensor('string', ['a'], [1]))).toThrow(XnormError);
  });
});
