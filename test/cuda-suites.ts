// The GPU test suites: device tensors and the BN-statistic kernels against the CPU kernels. Run by
// cuda.test.ts on a real GPU and by cuda-emu.test.ts on the CPU emulation of the plugin.
import * as path from 'path';
import { Worker } from 'worker_threads';
import { describe, expect, it } from 'vitest';
import {
  batchNorm,
  binaryConv2d,
  binaryConv2dSync,
  binaryLinear,
  binaryLinearSync,
  MstPlan,
  mstPlanSync,
  packBits,
  packBitsSync,
  packWeightsSync,
  unpackBits,
  unpackBitsSync,
  batchNormSync,
  conv2d,
  conv2dSync,
  convBn,
  convBnBackward,
  convBnBackwardSync,
  convBnSync,
  foldConvBn,
  mergeMoments,
  moments,
  momentsSync,
  tensor,
  updateRunningStats,
  variance,
  zeros,
} from '../lib';
import { cudaAlloc } from '../lib/cuda';
import { planHandle, weightsHandle } from '../lib/handles';
import { native } from '../lib/native';
import type { DType, Tensor } from '../lib/tensor';
import { randomArray, expectCode, rng } from './helpers';


function expectRel(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const tol = rel * Math.max(1, Math.abs(expected[i]));
    if (!(Math.abs(actual[i] - expected[i]) <= tol))
      throw new Error(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tol})`);
  }
}

type Case = { shape: number[]; layout: 'nchw' | 'nhwc' };
const CASES: Case[] = [
  { shape: [3, 5, 7, 11], layout: 'nchw' },
  { shape: [2, 6, 1, 1], layout: 'nchw' },
  { shape: [1, 3, 70001], layout: 'nchw' },
  { shape: [5, 4, 3], layout: 'nchw' },
  { shape: [4, 9, 13, 16], layout: 'nhwc' },
  { shape: [2, 17, 300], layout: 'nhwc' },
  { shape: [3, 1000, 3], layout: 'nhwc' },
  { shape: [64, 6], layout: 'nhwc' },
];

/** uint8 0/1 bits [rows, c] -> words [rows, ceil(c/32)], channel i at bit i%32 of word i/32. */
function packWords(bits: Uint8Array, rows: number, c: number): Uint32Array {
  const wc = Math.ceil(c / 32);
  const out = new Uint32Array(rows * wc);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < c; i++) if (bits[r * c + i]) out[r * wc + (i >> 5)] |= 1 << (i & 31);
  return out;
}

interface BConvCase {
  n: number; h: number; w: number; c: number; cout: number; groups: number; k: number;
  stride: number; pad: number; dil: number; padZero: boolean; output: 'float' | 'int32' | 'bits';
  clamp?: [number, number]; scale: boolean; bias: boolean;
}

/** docs/DESIGN.md's binary convolution, evaluated directly over ±1 values. */
function bconvOracle(q: BConvCase, xb: Uint8Array, wb: Uint8Array, scale?: Float32Array, bias?: Float32Array) {
  const cinG = q.c / q.groups, coutG = q.cout / q.groups;
  const oh = Math.floor((q.h + 2 * q.pad - q.dil * (q.k - 1) - 1) / q.stride) + 1;
  const ow = Math.floor((q.w + 2 * q.pad - q.dil * (q.k - 1) - 1) / q.stride) + 1;
  const pixels = q.n * oh * ow;
  const dots = new Int32Array(pixels * q.cout);
  for (let n = 0; n < q.n; n++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++)
        for (let co = 0; co < q.cout; co++) {
          const g = Math.floor(co / coutG);
          let dot = 0;
          for (let ki = 0; ki < q.k; ki++)
            for (let kj = 0; kj < q.k; kj++) {
              const iy = oy * q.stride - q.pad + ki * q.dil, ix = ox * q.stride - q.pad + kj * q.dil;
              const inside = iy >= 0 && iy < q.h && ix >= 0 && ix < q.w;
              if (!inside && q.padZero) continue;
              for (let ci = 0; ci < cinG; ci++) {
                const xv = inside && xb[((n * q.h + iy) * q.w + ix) * q.c + g * cinG + ci] ? -1 : 1;
                const wv = wb[((co * q.k + ki) * q.k + kj) * cinG + ci] ? -1 : 1;
                dot += xv * wv;
              }
            }
          dots[((n * oh + oy) * ow + ox) * q.cout + co] = dot;
        }
  if (q.output === 'int32') return { out: dots, pixels };
  const y = Float32Array.from(dots, (d, i) => {
    const co = i % q.cout;
    let v = Math.fround(Math.fround(d * (scale ? scale[co] : 1)) + (bias ? bias[co] : 0));
    if (q.clamp) v = Math.min(Math.max(v, q.clamp[0]), q.clamp[1]);
    return v;
  });
  if (q.output === 'float') return { out: y, pixels };
  return { out: packWords(Uint8Array.from(y, (v) => (v < 0 ? 1 : 0)), pixels, q.cout), pixels };
}

/**
 * Conv + BN tolerances, CUDA against the CPU kernels: |got - want| <= tol * (|want| + rms(want)), the rms term
 * standing for the sum of |products| that rounding errors scale with. The GPU multiplies on tensor cores:
 * float32 operands rounded to TF32 (10-bit mantissa, relative error 2^-11 each, so about 1e-3 per product),
 * 16-bit operands as they are plus the float32 weights rounded to float16 / bfloat16, all accumulated in
 * float32; 16-bit outputs then round once more (2^-11 / 2^-8 relative). Worst seen on these cases (emulated,
 * the same roundings as the hardware): 2.7e-3 float32, 1.6e-3 float16, 1.2e-2 bfloat16. The parameter
 * gradients of 16-bit Tune mode are float32 sums of exact products (about 1e-7); the fold is bit-exact.
 */
const CONV_TOL: Record<'float32' | 'float16' | 'bfloat16', number> = { float32: 5e-3, float16: 5e-3, bfloat16: 3e-2 };

function expectConvClose(got: Tensor, want: Tensor, tol: number, what: string) {
  expect(got.shape, what).toEqual(want.shape);
  expect(got.dtype, what).toBe(want.dtype);
  const a = got.float32Sync(), b = want.float32Sync();
  let sq = 0;
  for (let i = 0; i < b.length; i++) sq += b[i] * b[i];
  const rms = Math.sqrt(sq / Math.max(1, b.length));
  for (let i = 0; i < b.length; i++)
    if (!(Math.abs(a[i] - b[i]) <= tol * (Math.abs(b[i]) + rms)))
      throw new Error(`${what}[${i}]: ${a[i]} vs ${b[i]} (tolerance ${tol} x (|want| + rms ${rms.toPrecision(3)}))`);
}

interface ConvCase {
  n: number; c: number; h: number; w: number; cout: number; kh: number; kw: number; groups: number;
  stride: [number, number]; padding: [number, number]; dilation: [number, number]; layout: 'nchw' | 'nhwc';
}

// Odd sizes, Cin / Cout that are not multiples of 16, several 64-wide tiles, stride 2, padding, dilation,
// rectangular kernels, groups, depthwise, 1x1, batch 1, and a long backward-filter reduction that is split.
const CONV_CASES: ConvCase[] = [
  { n: 2, c: 5, h: 7, w: 6, cout: 9, kh: 3, kw: 3, groups: 1, stride: [1, 1], padding: [1, 1], dilation: [1, 1], layout: 'nchw' },
  { n: 1, c: 20, h: 9, w: 8, cout: 17, kh: 3, kw: 2, groups: 1, stride: [2, 1], padding: [2, 1], dilation: [2, 1], layout: 'nhwc' },
  { n: 2, c: 6, h: 5, w: 5, cout: 9, kh: 3, kw: 3, groups: 3, stride: [1, 1], padding: [1, 1], dilation: [1, 1], layout: 'nchw' },
  { n: 1, c: 8, h: 9, w: 9, cout: 16, kh: 3, kw: 3, groups: 8, stride: [2, 2], padding: [1, 1], dilation: [1, 1], layout: 'nhwc' },
  { n: 2, c: 70, h: 6, w: 5, cout: 66, kh: 1, kw: 1, groups: 1, stride: [1, 1], padding: [0, 0], dilation: [1, 1], layout: 'nchw' },
  { n: 2, c: 4, h: 12, w: 12, cout: 7, kh: 3, kw: 3, groups: 1, stride: [1, 1], padding: [1, 1], dilation: [1, 1], layout: 'nhwc' },
];

/** Defines the GPU suites; `skip` marks them skipped (with the reason printed by the caller). */
export function defineGpuSuites(skip: boolean): void {
  describe.skipIf(skip)('device tensors (GPU)', () => {
    it('round-trips every dtype to the GPU and back, sync and async', async () => {
      for (const dtype of ['float32', 'float16', 'bfloat16', 'int32', 'uint8', 'bit'] as DType[]) {
        const shape = dtype === 'bit' ? [3, 5, 40] : [3, 5, 7];
        const host = zeros(shape, { dtype });
        const s = host.storage();
        for (let i = 0; i < s.length; i++) s[i] = (i * 2654435761) % 251;
        const d = host.toSync('cuda');
        expect(d.device).toBe('cuda:0');
        expect(d.shape).toEqual(shape);
        expect(d.toSync('cuda:0')).toBe(d);
        expect(Array.from(d.dataSync())).toEqual(Array.from(s));
        expect(Array.from(await d.data())).toEqual(Array.from(s));
        const back = await d.to('cpu');
        expect(back.device).toBe('cpu');
        expect(Array.from(back.dataSync())).toEqual(Array.from(s));
        const d2 = await host.to('cuda');
        expect(Array.from(d2.dataSync())).toEqual(Array.from(s));
        d.dispose();
        d2.dispose();
      }
      const z = zeros([4], { device: 'cuda' });
      expect(Array.from(z.dataSync())).toEqual([0, 0, 0, 0]);
      const t = tensor([1, 2, 3], [3], { device: 'cuda' });
      expect(Array.from(t.float32Sync())).toEqual([1, 2, 3]);
    });

    it('dispose frees at once, is idempotent, and later use is ERR_XNORM_DISPOSED', async () => {
      const bytes = 64 << 20;
      // V8's external-memory total, which napi_adjust_external_memory feeds (process.memoryUsage() does not show it).
      const external = () => (native().externalMemory as unknown as () => number)();
      const before = external();
      const t = zeros([bytes / 4], { device: 'cuda' });
      expect(external() - before).toBe(bytes);
      t.dispose();
      t.dispose();
      expect(t.disposed).toBe(true);
      expect(external() - before).toBe(0);
      expectCode(() => t.dataSync(), 'ERR_XNORM_DISPOSED');
      expectCode(() => t.toSync('cpu'), 'ERR_XNORM_DISPOSED');
      await expect(moments(t)).rejects.toMatchObject({ code: 'ERR_XNORM_DISPOSED' });
    });

    it('async ops and copies in flight together all resolve with the sync results', async () => {
      const xs = Array.from({ length: 12 }, (_, i) => tensor(randomArray(3 * 5 * 97, 300 + i, 1, i), [3, 5, 97]));
      const onGpu = await Promise.all(xs.map((x) => x.to('cuda')));
      const [ms, back] = await Promise.all([Promise.all(onGpu.map((x) => moments(x))), Promise.all(onGpu.map((x) => x.to('cpu')))]);
      ms.forEach((m, i) => {
        expect(Array.from(m.precise!.mean)).toEqual(Array.from(momentsSync(onGpu[i]).precise!.mean));
        expect(Array.from(back[i].dataSync())).toEqual(Array.from(xs[i].dataSync()));
      });
      // Disposing inputs while their op is in flight is safe: the op holds the memory until it ends.
      const x = onGpu[0];
      const p = moments(x);
      x.dispose();
      expect((await p).count).toBe(3 * 97);
    });

    it('a worker thread that exits with device memory still allocated leaves the process usable', async () => {
      const root = path.join(__dirname, '..');
      const code = `
        const { parentPort } = require('worker_threads');
        const addon = require('node-gyp-build')(${JSON.stringify(root)});
        const info = addon.cudaInfo({ paths: [] });
        const kept = [];
        for (let i = 0; i < 4; i++) {
          const h = addon.cudaAlloc({ device: 0, bytes: 1 << 20 });
          addon.cudaUpload({ handle: h, dtype: 'float32', host: new Float32Array(1 << 18).fill(i) });
          kept.push(h);
        }
        addon.cudaFree(kept[0]);
        parentPort.postMessage(info.available);
      `;
      const w = new Worker(code, { eval: true });
      const available = await new Promise((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      expect(available).toBe(true);
      expect(await w.terminate()).toBeTypeOf('number');
      const t = tensor([5, 6, 7], [3], { device: 'cuda' });
      expect(Array.from(await t.data())).toEqual([5, 6, 7]);
    });

    it('running out of device memory is ERR_XNORM_OUT_OF_MEMORY and the device stays usable', () => {
      expectCode(() => cudaAlloc(0, 2 ** 50), 'ERR_XNORM_OUT_OF_MEMORY');
      const t = tensor([1, 2], [2], { device: 'cuda' });
      expect(Array.from(t.dataSync())).toEqual([1, 2]);
    });

    it('mixing devices is ERR_XNORM_DEVICE; CPU-only paths name the device', () => {
      const xc = tensor(randomArray(24, 1), [2, 3, 4], { device: 'cuda' });
      const xh = tensor(randomArray(24, 1), [2, 3, 4]);
      const mc = momentsSync(xc);
      const mh = momentsSync(xh);
      expectCode(() => batchNormSync(xc, mh), 'ERR_XNORM_DEVICE');
      expectCode(() => batchNormSync(xh, mc), 'ERR_XNORM_DEVICE');
      expectCode(() => mergeMoments(mc, mh), 'ERR_XNORM_DEVICE');
      expectCode(() => batchNormSync(xc, mc, { gamma: tensor([1, 1, 1], [3]) }), 'ERR_XNORM_DEVICE');
      expectCode(() => xc.storage('op: x'), 'ERR_XNORM_DEVICE');
    });
  });

  describe.skipIf(skip)('binary convolution on the GPU', () => {
    it('matches a direct evaluation for every output kind, both paddings, groups and odd sizes', async () => {
      const n = native() as unknown as Record<string, (args: object, async?: boolean) => unknown>;
      const cases: BConvCase[] = [
        { n: 2, h: 5, w: 6, c: 37, cout: 33, groups: 1, k: 3, stride: 1, pad: 1, dil: 1, padZero: false, output: 'int32', scale: false, bias: false },
        { n: 1, h: 7, w: 4, c: 66, cout: 40, groups: 2, k: 3, stride: 2, pad: 2, dil: 2, padZero: true, output: 'float', scale: true, bias: true, clamp: [-1.5, 2] },
        { n: 1, h: 6, w: 6, c: 15, cout: 9, groups: 3, k: 5, stride: 1, pad: 2, dil: 1, padZero: false, output: 'bits', scale: true, bias: true },
        { n: 3, h: 3, w: 3, c: 32, cout: 64, groups: 1, k: 1, stride: 1, pad: 0, dil: 1, padZero: true, output: 'bits', scale: false, bias: true },
        // Several 128-bit MMA steps per tap with a tail, and group tiles that straddle output words.
        { n: 1, h: 5, w: 3, c: 400, cout: 50, groups: 2, k: 3, stride: 1, pad: 1, dil: 1, padZero: true, output: 'bits', scale: true, bias: true },
        { n: 1, h: 5, w: 3, c: 400, cout: 50, groups: 2, k: 3, stride: 1, pad: 1, dil: 1, padZero: true, output: 'int32', scale: false, bias: false },
        { n: 2, h: 4, w: 5, c: 300, cout: 70, groups: 1, k: 2, stride: 1, pad: 1, dil: 2, padZero: false, output: 'float', scale: true, bias: false },
      ];
      let seed = 900;
      for (const q of cases) {
        const cinG = q.c / q.groups;
        const rand = randomArray(q.n * q.h * q.w * q.c + q.cout * q.k * q.k * cinG, seed++);
        const xb = Uint8Array.from(rand.subarray(0, q.n * q.h * q.w * q.c), (v) => (v < 0 ? 1 : 0));
        const wb = Uint8Array.from(rand.subarray(q.n * q.h * q.w * q.c), (v) => (v < 0 ? 1 : 0));
        const scale = q.scale ? randomArray(q.cout, seed++, 0.2) : undefined;
        const bias = q.bias ? randomArray(q.cout, seed++) : undefined;
        const want = bconvOracle(q, xb, wb, scale, bias);
        const xw = packWords(xb, q.n * q.h * q.w, q.c);
        const ww = packWords(wb, q.cout * q.k * q.k, cinG);
        const x = cudaAlloc(0, xw.byteLength), out = cudaAlloc(0, want.out.byteLength);
        n.cudaUpload({ handle: x, dtype: 'bit', host: xw });
        // Weights from their signs: bit 1 = -1, laid out [Cout, kh, kw, Cin_g] in wb, [Cout, Cin_g, kh, kw] for packWeights.
        const wf = new Float32Array(q.cout * cinG * q.k * q.k);
        for (let o = 0; o < q.cout; o++) for (let t = 0; t < q.k * q.k; t++) for (let i = 0; i < cinG; i++)
          wf[(o * cinG + i) * q.k * q.k + t] = wb[(o * q.k * q.k + t) * cinG + i] ? -1 : 1;
        const weights = n.packWeights({ w: wf, wShape: [q.cout, cinG, q.k, q.k], groups: q.groups });
        expect(Array.from(n.weightsWords({ weights }) as Uint32Array), 'packed weight words').toEqual(Array.from(ww));
        // Both kernels (the 1-bit MMA one runs on the emulation through an emulated MMA with the PTX fragment layout).
        for (const algorithm of ['simt', 'mma', 'auto']) {
          n.cudaUpload({ handle: out, dtype: 'bit', host: new Uint32Array(want.out.length).fill(0xdeadbeef) });
          await n.binaryConv2d(
            { device: 0, x, weights, out, xShape: [q.n, q.h, q.w, q.c], strideH: q.stride, strideW: q.stride, padH: q.pad,
              padW: q.pad, dilationH: q.dil, dilationW: q.dil, padValue: q.padZero ? 'zero' : 'one', output: q.output,
              clampLo: q.clamp?.[0], clampHi: q.clamp?.[1], scale, bias, algorithm },
            true,
          );
          const got = new (want.out.constructor as new (k: number) => Int32Array | Float32Array | Uint32Array)(want.out.length);
          n.cudaDownload({ handle: out, dtype: q.output === 'float' ? 'float32' : q.output === 'int32' ? 'int32' : 'bit', host: got });
          expect(Array.from(got), `${algorithm} ${JSON.stringify(q)}`).toEqual(Array.from(want.out));
        }
      }
      // The handles' sizes are checked against the geometry.
      const q = cases[0];
      const small = cudaAlloc(0, 4);
      const weights = n.packWeights({ w: new Float32Array(q.cout * q.c * 9), wShape: [q.cout, q.c, 3, 3], groups: 1 });
      const geo = { device: 0, weights, xShape: [q.n, q.h, q.w, q.c], strideH: 1, strideW: 1, padH: 1, padW: 1, dilationH: 1, dilationW: 1,
        padValue: 'one', output: 'int32' };
      expectCode(() => n.binaryConv2d({ ...geo, x: small, out: small }), 'ERR_XNORM_SHAPE');
      const one = n.packWeights({ w: new Float32Array(1), wShape: [1, 1, 1, 1], groups: 1 });
      expectCode(() => n.binaryConv2d({ ...geo, weights: one, xShape: [1, 1, 1, 1], padH: 0, padW: 0, x: small, out: small, algorithm: 'fast' }),
        'ERR_XNORM_ARGUMENT');
    });
  });

  describe.skipIf(skip)('binaryConv2d / binaryLinear on CUDA tensors match the CPU kernels bit for bit', () => {
    type Conv = { n: number; h: number; w: number; c: number; cout: number; groups: number; k: number; stride: number; pad: number; dil: number };
    const CONVS: Conv[] = [
      { n: 2, h: 7, w: 6, c: 37, cout: 33, groups: 1, k: 3, stride: 1, pad: 1, dil: 1 },
      { n: 1, h: 9, w: 8, c: 66, cout: 40, groups: 2, k: 3, stride: 2, pad: 2, dil: 2 },
      { n: 2, h: 6, w: 7, c: 15, cout: 9, groups: 3, k: 3, stride: 2, pad: 1, dil: 1 },
      { n: 1, h: 5, w: 5, c: 100, cout: 70, groups: 1, k: 1, stride: 1, pad: 0, dil: 1 },
      { n: 1, h: 8, w: 5, c: 64, cout: 64, groups: 4, k: 3, stride: 1, pad: 3, dil: 2 },
    ];

    it('every output kind, both paddings, groups, stride, dilation; weights and MstPlan; sync and async', async () => {
      let seed = 2000;
      for (const q of CONVS) {
        const x = packBitsSync(tensor(randomArray(q.n * q.h * q.w * q.c, seed++), [q.n, q.h, q.w, q.c]), { layout: 'nhwc' });
        const wts = packWeightsSync(tensor(randomArray(q.cout * (q.c / q.groups) * q.k * q.k, seed++), [q.cout, q.c / q.groups, q.k, q.k]), { groups: q.groups });
        const plan = mstPlanSync(wts, { reuse: 'always' });
        const scaleH = tensor(randomArray(q.cout, seed++, 0.3), [q.cout]);
        const biasH = tensor(randomArray(q.cout, seed++, 2), [q.cout]);
        const xc = x.toSync('cuda');
        const scaleC = scaleH.toSync('cuda'), biasC = biasH.toSync('cuda');
        for (const padValue of ['one', 'zero'] as const)
          for (const output of ['float', 'int32', 'bits'] as const) {
            const geo = { stride: q.stride, padding: q.pad, dilation: q.dil, groups: q.groups, padValue, output };
            const tf = output === 'int32' ? {} : { clamp: [-3, 2.5] as [number, number] };
            const want = binaryConv2dSync(x, wts, { ...geo, ...tf, ...(output === 'int32' ? {} : { scale: scaleH, bias: biasH }) });
            const what = `${JSON.stringify(q)} ${padValue} ${output}`;
            const got = binaryConv2dSync(xc, wts, { ...geo, ...tf, ...(output === 'int32' ? {} : { scale: scaleC, bias: biasC }) });
            expect(got.device, what).toBe('cuda:0');
            expect(got.shape, what).toEqual(want.shape);
            expect(got.dtype, what).toBe(want.dtype);
            expect(Array.from(got.dataSync()), what).toEqual(Array.from(want.dataSync()));
            // No transform at all, from the plan, async.
            const plain = binaryConv2dSync(x, wts, geo);
            const viaPlan = await binaryConv2d(xc, plan, geo);
            expect(Array.from(viaPlan.dataSync()), `${what} plan`).toEqual(Array.from(plain.dataSync()));
            got.dispose();
            viaPlan.dispose();
          }
        wts.dispose();
      }
    }, 300_000);  // the CPU emulation runs every CUDA thread as a host thread: ~70 s alone, more on a busy machine

    it('binaryLinear, weights reused across calls and uploaded again after dispose', async () => {
      const k = 200, cout = 45;
      const x = packBitsSync(tensor(randomArray(3 * k, 77), [3, k]));
      const wts = packWeightsSync(tensor(randomArray(cout * k, 78), [cout, k]));
      const bias = tensor(randomArray(cout, 79), [cout]);
      const xc = x.toSync('cuda');
      for (const output of ['float', 'int32', 'bits'] as const) {
        const o = output === 'int32' ? { output } : { output, bias };
        const oc = output === 'int32' ? { output } : { output, bias: bias.toSync('cuda') };
        const want = binaryLinearSync(x, wts, o);
        const got = await binaryLinear(xc, wts, oc);
        expect(got.shape).toEqual([3, cout]);
        expect(Array.from(got.dataSync()), output).toEqual(Array.from(want.dataSync()));
      }
      wts.dispose();
      wts.dispose();
      const again = binaryLinearSync(xc, wts, { output: 'int32' });
      expect(Array.from(again.dataSync())).toEqual(Array.from(binaryLinearSync(x, wts, { output: 'int32' }).dataSync()));
    });

    it('mixing devices is ERR_XNORM_DEVICE; bad arguments are XnormErrors', async () => {
      const x = packBitsSync(tensor(randomArray(2 * 4 * 4 * 8, 5), [2, 4, 4, 8]), { layout: 'nhwc' });
      const xc = x.toSync('cuda');
      const wts = packWeightsSync(tensor(randomArray(6 * 8 * 9, 6), [6, 8, 3, 3]));
      const s = tensor(randomArray(6, 7), [6]);
      expectCode(() => binaryConv2dSync(xc, wts, { scale: s }), 'ERR_XNORM_DEVICE');
      expectCode(() => binaryConv2dSync(x, wts, { bias: s.toSync('cuda') }), 'ERR_XNORM_DEVICE');
      await expect(binaryConv2d(xc, wts, { bias: s })).rejects.toMatchObject({ code: 'ERR_XNORM_DEVICE' });
      expectCode(() => binaryConv2dSync(xc, wts, { padding: 0, stride: 1, dilation: 5 }), 'ERR_XNORM_SHAPE');
      expectCode(() => binaryConv2dSync(xc, wts, { output: 'int32', bias: s.toSync('cuda') }), 'ERR_XNORM_ARGUMENT');
      const gone = x.toSync('cuda');
      gone.dispose();
      expectCode(() => binaryConv2dSync(gone, wts), 'ERR_XNORM_DISPOSED');
    });
  });

  describe.skipIf(skip)('MST plans run level by level on CUDA tensors, bit-identical to the CPU', () => {
    type MstConv = { n: number; h: number; w: number; c: number; cout: number; groups: number; k: number; stride: number; pad: number; dil: number; maxDepth: number };
    // C not a multiple of 32, groups (one starting inside a word), stride 2, dilation, 1x1, depth bounds 2..8.
    const MST_CONVS: MstConv[] = [
      { n: 1, h: 6, w: 5, c: 37, cout: 40, groups: 1, k: 3, stride: 1, pad: 1, dil: 1, maxDepth: 2 },
      { n: 1, h: 7, w: 6, c: 66, cout: 36, groups: 2, k: 3, stride: 2, pad: 1, dil: 1, maxDepth: 8 },
      { n: 2, h: 5, w: 5, c: 15, cout: 12, groups: 3, k: 3, stride: 2, pad: 2, dil: 2, maxDepth: 4 },
      { n: 1, h: 3, w: 4, c: 70, cout: 33, groups: 1, k: 1, stride: 1, pad: 0, dil: 1, maxDepth: 8 },
    ];

    /** Weights of a few prototype channels per group, each channel a prototype with ~6 % of its signs flipped. */
    function prototypeWeights(q: MstConv, seed: number): Float32Array {
      const cinG = q.c / q.groups, patch = cinG * q.k * q.k, perGroup = q.cout / q.groups;
      const next = rng(seed);
      const protos = Array.from({ length: 3 * q.groups }, () => Float32Array.from({ length: patch }, () => (next() < 0.5 ? -1 : 1)));
      const w = new Float32Array(q.cout * patch);
      for (let co = 0; co < q.cout; co++) {
        const proto = protos[Math.floor(co / perGroup) * 3 + (co % 3)];
        for (let i = 0; i < patch; i++) w[co * patch + i] = next() < 0.06 ? -proto[i] : proto[i];
      }
      return w;
    }

    it('every output kind and padding, against the CPU dense weights and the CPU plan; sync and async', async () => {
      let seed = 3000;
      for (const q of MST_CONVS) {
        const cinG = q.c / q.groups;
        const x = packBitsSync(tensor(randomArray(q.n * q.h * q.w * q.c, seed++), [q.n, q.h, q.w, q.c]), { layout: 'nhwc' });
        const wts = packWeightsSync(tensor(prototypeWeights(q, seed++), [q.cout, cinG, q.k, q.k]), { groups: q.groups });
        const plan = mstPlanSync(wts, { reuse: 'always', maxDepth: q.maxDepth });
        expect(plan.depth, JSON.stringify(q)).toBeGreaterThanOrEqual(Math.min(2, q.maxDepth));
        expect(plan.depth).toBeLessThanOrEqual(q.maxDepth);
        const scaleH = tensor(randomArray(q.cout, seed++, 0.3), [q.cout]);
        const biasH = tensor(randomArray(q.cout, seed++, 2), [q.cout]);
        const xc = x.toSync('cuda');
        const scaleC = scaleH.toSync('cuda'), biasC = biasH.toSync('cuda');
        let i = 0;
        for (const padValue of ['one', 'zero'] as const)
          for (const output of ['float', 'int32', 'bits'] as const) {
            const geo = { stride: q.stride, padding: q.pad, dilation: q.dil, padValue, output };
            const tf = output === 'int32' ? {} : { clamp: [-3, 2.5] as [number, number] };
            const what = `${JSON.stringify(q)} ${padValue} ${output}`;
            const dense = binaryConv2dSync(x, wts, { ...geo, ...tf, ...(output === 'int32' ? {} : { scale: scaleH, bias: biasH }) });
            const cpuPlan = binaryConv2dSync(x, plan, { ...geo, ...tf, ...(output === 'int32' ? {} : { scale: scaleH, bias: biasH }) });
            const o = { ...geo, ...tf, ...(output === 'int32' ? {} : { scale: scaleC, bias: biasC }) };
            const got = i++ % 2 ? await binaryConv2d(xc, plan, o) : binaryConv2dSync(xc, plan, o);
            expect(got.device, what).toBe('cuda:0');
            expect(got.dtype, what).toBe(dense.dtype);
            expect(got.shape, what).toEqual(dense.shape);
            const values = Array.from(got.dataSync());
            expect(values, `${what} vs CPU dense`).toEqual(Array.from(dense.dataSync()));
            expect(values, `${what} vs CPU plan`).toEqual(Array.from(cpuPlan.dataSync()));
            got.dispose();
          }
        plan.dispose();
        wts.dispose();
      }
    });

    it("'auto' times the plan against the dense weights on its first call per device, then keeps the faster", async () => {
      const q = MST_CONVS[1];
      const x = packBitsSync(tensor(randomArray(q.n * q.h * q.w * q.c, 41), [q.n, q.h, q.w, q.c]), { layout: 'nhwc' });
      const wts = packWeightsSync(tensor(prototypeWeights(q, 42), [q.cout, q.c / q.groups, q.k, q.k]), { groups: q.groups });
      // The tree of an 'always' plan under 'auto': the CPU's own trial could drop every edge on this machine.
      const n = native();
      const info = n.mstPlan({ weights: weightsHandle(wts), reuse: 'auto', maxDepth: 8, parent: mstPlanSync(wts, { reuse: 'always' }).parent });
      const plan = new MstPlan(wts, info);
      const mode = () => n.planGpuMode({ plan: planHandle(plan), device: 0 });
      expect(mode()).toBe('trial');
      const geo = { stride: q.stride, padding: q.pad, padValue: 'zero' as const, output: 'int32' as const };
      const want = Array.from(binaryConv2dSync(x, wts, geo).dataSync());
      const xc = x.toSync('cuda');
      expect(Array.from((await binaryConv2d(xc, plan, geo)).dataSync()), 'trial').toEqual(want);
      const decided = mode();
      expect(['plan', 'dense']).toContain(decided);
      expect(Array.from(binaryConv2dSync(xc, plan, geo).dataSync()), decided).toEqual(want);
      expect(mode()).toBe(decided);
      // 'never' plans and plans without edges run the dense weights.
      expect(n.planGpuMode({ plan: planHandle(mstPlanSync(wts, { reuse: 'never' })), device: 0 })).toBe('dense');
    });

    it('plans cannot be edited into wrong results; dispose frees the device copy and a later call uploads it again', () => {
      const q = MST_CONVS[0];
      const x = packBitsSync(tensor(randomArray(q.n * q.h * q.w * q.c, 51), [q.n, q.h, q.w, q.c]), { layout: 'nhwc' });
      const wts = packWeightsSync(tensor(prototypeWeights(q, 52), [q.cout, q.c, q.k, q.k]));
      const plan = mstPlanSync(wts, { reuse: 'always', maxDepth: 3 });
      const xc = x.toSync('cuda');
      const want = Array.from(binaryConv2dSync(x, wts, { padding: 1, output: 'int32' }).dataSync());
      expect(Array.from(binaryConv2dSync(xc, plan, { padding: 1, output: 'int32' }).dataSync())).toEqual(want);
      plan.dispose();
      plan.dispose();
      expect(Array.from(binaryConv2dSync(xc, plan, { padding: 1, output: 'int32' }).dataSync())).toEqual(want);
      // What JS sees of a plan and its weights are copies: editing them changes nothing the kernels read.
      plan.parent.fill(-1);
      wts.words.fill(0);
      expect(Array.from(binaryConv2dSync(xc, plan, { padding: 1, output: 'int32' }).dataSync())).toEqual(want);
      // A forged plan is refused at the boundary.
      const raw = native() as unknown as Record<string, (args: object) => unknown>;
      const out = zeros([q.n, q.h, q.w, q.cout], { dtype: 'int32' }).toSync('cuda');
      expectCode(() => raw.binaryConv2d({ device: 0, x: xc.deviceBuffer().handle, xShape: x.shape, plan: { edges: new Uint32Array(4) },
        strideH: 1, strideW: 1, padH: 1, padW: 1, dilationH: 1, dilationW: 1, padValue: 'one', output: 'int32',
        out: out.deviceBuffer().handle }), 'ERR_XNORM_ARGUMENT');
      plan.dispose();
    });
  });

  describe.skipIf(skip)('packBits / unpackBits on CUDA tensors match the CPU kernels bit for bit', () => {
    const SHAPES: { shape: number[]; layout: 'nchw' | 'nhwc' }[] = [
      { shape: [2, 37, 5, 3], layout: 'nchw' },
      { shape: [3, 70, 11], layout: 'nchw' },
      { shape: [2, 4, 5, 64], layout: 'nhwc' },
      { shape: [3, 7, 33], layout: 'nhwc' },
      { shape: [5, 100], layout: 'nchw' },
      { shape: [4, 1, 9], layout: 'nchw' },
    ];

    it('every float dtype, both layouts, scalar and per-channel thresholds; a whole binary layer stays on the GPU', async () => {
      let seed = 3000;
      for (const { shape, layout } of SHAPES)
        for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
          const size = shape.reduce((a, b) => a * b, 1);
          const c = layout === 'nchw' || shape.length === 2 ? shape[1] : shape[shape.length - 1];
          const v = randomArray(size, seed++);
          for (let i = 0; i < size; i += 7) v[i] = 0;  // sign(0) = +1, and ties with the threshold
          const xh = tensor(v, shape, { dtype });
          const xc = xh.toSync('cuda');
          const thr = tensor(randomArray(c, seed++, 0.5), [c]);
          const thrNum = 0.25;
          for (const threshold of [undefined, thrNum, thr]) {
            const what = `${dtype} ${layout} [${shape}] ${threshold === undefined ? 'default' : typeof threshold}`;
            const want = packBitsSync(xh, { layout, threshold });
            const got = await packBits(xc, { layout, threshold: threshold instanceof Object ? threshold.toSync('cuda') : threshold });
            expect(got.device, what).toBe('cuda:0');
            expect(got.shape, what).toEqual(want.shape);
            expect(Array.from(got.dataSync()), what).toEqual(Array.from(want.dataSync()));
            for (const out of ['nchw', 'nhwc'] as const) {
              const back = unpackBitsSync(got, { layout: out });
              expect(back.device, what).toBe('cuda:0');
              const ref = unpackBitsSync(want, { layout: out });
              expect(back.shape, what).toEqual(ref.shape);
              expect(Array.from(back.dataSync()), `${what} unpack ${out}`).toEqual(Array.from(ref.dataSync()));
            }
          }
        }
      // pack -> conv ('bits') -> conv on the device, against the same chain on the CPU.
      const x = tensor(randomArray(2 * 40 * 6 * 6, 3100), [2, 40, 6, 6]);
      const w1 = packWeightsSync(tensor(randomArray(36 * 40 * 9, 3101), [36, 40, 3, 3]));
      const w2 = packWeightsSync(tensor(randomArray(10 * 36 * 9, 3102), [10, 36, 3, 3]));
      const chain = async (t: typeof x) => {
        const h = await binaryConv2d(await packBits(t), w1, { padding: 1, output: 'bits' });
        const y = await binaryConv2d(h, w2, { padding: 1, stride: 2, padValue: 'zero' });
        return { h: await unpackBits(h), y };
      };
      const dev = await chain(x.toSync('cuda'));
      const cpu = await chain(x);
      expect([dev.h.device, dev.y.device]).toEqual(['cuda:0', 'cuda:0']);
      expect(Array.from(dev.h.dataSync())).toEqual(Array.from(cpu.h.dataSync()));
      expect(Array.from(dev.y.dataSync())).toEqual(Array.from(cpu.y.dataSync()));
    });

    it('mixing devices is ERR_XNORM_DEVICE', async () => {
      const xc = tensor(randomArray(2 * 3 * 4, 9), [2, 3, 4], { device: 'cuda' });
      expectCode(() => packBitsSync(xc, { threshold: tensor([0, 0, 0], [3]) }), 'ERR_XNORM_DEVICE');
      await expect(packBits(tensor(randomArray(24, 9), [2, 3, 4]), { threshold: tensor([0, 0, 0], [3], { device: 'cuda' }) }))
        .rejects.toMatchObject({ code: 'ERR_XNORM_DEVICE' });
      expectCode(() => packBitsSync(xc, { threshold: tensor([0, 0], [2], { device: 'cuda' }) }), 'ERR_XNORM_SHAPE');
    });
  });

  describe.skipIf(skip)('BN statistics on the GPU match the CPU kernels', () => {
    it('moments per channel, instance and group, every float dtype and both layouts', async () => {
      let seed = 10;
      for (const { shape, layout } of CASES)
        for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[])
          for (const over of ['channel', 'instance', 'group'] as const) {
            const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
            const groups = c % 3 === 0 ? 3 : 1;
            const size = shape.reduce((a, b) => a * b, 1);
            const xh = tensor(randomArray(size, seed++, 2, 5), shape, { dtype });
            const xc = xh.toSync('cuda');
            const opts = { layout, over, groups };
            const want = momentsSync(xh, opts);
            const got = momentsSync(xc, opts);
            const again = await moments(xc, opts);
            const what = `${dtype} ${layout} [${shape}] ${over}`;
            expect(got.count, what).toBe(want.count);
            expect(got.mean.device).toBe('cuda:0');
            expectRel(got.precise!.mean, want.precise!.mean, 2e-6, `${what} mean`);
            const scale = Math.max(...Array.from(want.precise!.m2, Math.abs), 1);
            expectRel(Array.from(got.precise!.m2, (v) => v / scale), Array.from(want.precise!.m2, (v) => v / scale), 2e-5, `${what} m2`);
            // Deterministic, and both forms agree bit for bit.
            expect(Array.from(again.precise!.mean)).toEqual(Array.from(got.precise!.mean));
            expect(Array.from(again.precise!.m2)).toEqual(Array.from(got.precise!.m2));
            expect(Array.from(got.mean.dataSync())).toEqual(Array.from(Float32Array.from(got.precise!.mean)));
          }
    });

    it('a large mean against a unit spread keeps its precision', () => {
      const x = tensor(randomArray(4 * 3 * 5000, 77, 1, 1e6), [4, 3, 5000]);
      const want = momentsSync(x);
      const got = momentsSync(x.toSync('cuda'));
      expectRel(got.precise!.mean, want.precise!.mean, 1e-9, 'mean');
      expectRel(Array.from(got.precise!.m2, (v) => v / 2e4), Array.from(want.precise!.m2, (v) => v / 2e4), 1e-4, 'm2');
    });

    it('batchNorm per channel and per instance, with ReLU, on the GPU', async () => {
      let seed = 100;
      for (const { shape, layout } of CASES)
        for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[])
          for (const perInstance of [false, true]) {
            const size = shape.reduce((a, b) => a * b, 1);
            const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
            const xh = tensor(randomArray(size, seed++, 3, 1), shape, { dtype });
            const xc = xh.toSync('cuda');
            const over = perInstance ? 'instance' : 'channel';
            const mh = momentsSync(xh, { layout, over });
            const mc = momentsSync(xc, { layout, over });
            const gamma = tensor(randomArray(c, seed++), [c]);
            const beta = tensor(randomArray(c, seed++), [c]);
            const relu = seed % 2 === 0 ? 'relu' : null;
            const want = batchNormSync(xh, mh, { gamma, beta, layout, activation: relu }).float32Sync();
            const yc = await batchNorm(xc, mc, { gamma: gamma.toSync('cuda'), beta: beta.toSync('cuda'), layout, activation: relu });
            expect(yc.device).toBe('cuda:0');
            const got = yc.float32Sync();
            const tol = dtype === 'float32' ? 1e-5 : dtype === 'float16' ? 2e-3 : 1.6e-2;
            expectRel(got, want, tol, `batchNorm ${dtype} ${layout} [${shape}] perInstance=${perInstance}`);
          }
    });

    it('training-mode pipeline stays on the device', async () => {
      const x = tensor(randomArray(2 * 4 * 9, 5), [2, 4, 9], { device: 'cuda' });
      const m = await moments(x);
      expect(variance(m).device).toBe('cuda:0');
      const running = { mean: zeros([4], { device: 'cuda' }), var: tensor([1, 1, 1, 1], [4], { device: 'cuda' }) };
      const next = updateRunningStats(running, m);
      expect(next.mean.device).toBe('cuda:0');
      const y = await batchNorm(x, next);
      expect(y.device).toBe('cuda:0');
      const merged = mergeMoments(m, m);
      expect(merged.count).toBe(2 * m.count);
    });
  });

  describe.skipIf(skip)('Conv + BN on CUDA tensors match the CPU kernels', () => {
    function setup(q: ConvCase, dtype: DType, seed: number) {
      const cinG = q.c / q.groups;
      const xShape = q.layout === 'nchw' ? [q.n, q.c, q.h, q.w] : [q.n, q.h, q.w, q.c];
      const x = tensor(randomArray(q.n * q.c * q.h * q.w, seed, 1, 0.2), xShape, { dtype });
      const weight = tensor(randomArray(q.cout * cinG * q.kh * q.kw, seed + 1, 0.5), [q.cout, cinG, q.kh, q.kw]);
      const ch = (k: number, scale: number, offset = 0) => tensor(randomArray(q.cout, seed + k, scale, offset), [q.cout]);
      const bias = ch(2, 0.5), mean = ch(3, 0.3), gamma = ch(5, 0.5, 1), beta = ch(6, 0.5);
      const v = tensor(Float32Array.from(randomArray(q.cout, seed + 4), (r) => r * r + 0.2), [q.cout]);
      const p = { weight, bias, bn: { mean, var: v, gamma, beta, eps: 1e-3 } };
      const dev = (t: Tensor) => t.toSync('cuda');
      const pc = { weight: dev(weight), bias: dev(bias), bn: { mean: dev(mean), var: dev(v), gamma: dev(gamma), beta: dev(beta), eps: 1e-3 } };
      const opts = { stride: q.stride, padding: q.padding, dilation: q.dilation, groups: q.groups, layout: q.layout };
      return { x, xc: dev(x), p, pc, opts };
    }

    it('tune forward + all five gradients, eval forward + backward, conv2d and deploy; every float dtype', () => {
      let seed = 5000;
      for (const q of CONV_CASES)
        for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
          const { x, xc, p, pc, opts } = setup(q, dtype, (seed += 10));
          const tol = CONV_TOL[dtype];
          const what = `${dtype} ${JSON.stringify(q)}`;
          for (const mode of ['tune', 'eval'] as const) {
            const activation = mode === 'tune' || q.groups > 1 ? ('relu' as const) : null;
            const o = { ...opts, mode, activation, saveForBackward: true };
            const want = convBnSync(x, p, o);
            const got = convBnSync(xc, pc, o);
            expect(got.y.device).toBe('cuda:0');
            expectConvClose(got.y, want.y, tol, `${mode} y ${what}`);
            // Where the two outputs differ in sign (rounding near zero), the ReLUs would pass different
            // gradients: dy is zero there, so both backward passes see the same masked gradient.
            const dyv = randomArray(want.y.size, seed + 7);
            const yw = want.y.float32Sync(), yg = got.y.float32Sync();
            for (let i = 0; i < dyv.length; i++) if (yw[i] > 0 !== yg[i] > 0) dyv[i] = 0;
            const dy = tensor(dyv, want.y.shape as number[], { dtype });
            const gw = convBnBackwardSync(want.saved!, dy);
            const gg = convBnBackwardSync(got.saved!, dy.toSync('cuda'));
            for (const k of ['dx', 'dWeight', 'dBias', 'dGamma', 'dBeta'] as const) {
              expect(gg[k]!.device, k).toBe('cuda:0');
              expectConvClose(gg[k]!, gw[k]!, tol, `${mode} ${k} ${what}`);
            }
          }
          const plain = { ...opts, activation: 'relu' as const };
          expectConvClose(conv2dSync(xc, pc.weight, pc.bias, plain), conv2dSync(x, p.weight, p.bias, plain), tol, `conv2d ${what}`);
          const deploy = convBnSync(xc, pc, { ...opts, mode: 'deploy' }).y;
          expectConvClose(deploy, convBnSync(x, p, { ...opts, mode: 'deploy' }).y, tol, `deploy ${what}`);
          // Deploy = the device fold + conv2d, bit for bit (the same fold and the same GEMM).
          const f = foldConvBn(pc);
          expect(Array.from(conv2dSync(xc, f.weight, f.bias, opts).dataSync()), `fold+conv2d ${what}`)
            .toEqual(Array.from(deploy.dataSync()));
        }
    });

    it('the device fold is the CPU fold bit for bit, for float32 and 16-bit weights', () => {
      const cout = 37, k = 3 * 5 * 2;
      for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
        const weight = tensor(randomArray(cout * k, 61, 2), [cout, 3, 5, 2], { dtype });
        const ch = (s: number, scale: number, offset = 0) => tensor(randomArray(cout, s, scale, offset), [cout]);
        const v = tensor(Float32Array.from(randomArray(cout, 64), (r) => r * r + 0.01), [cout]);
        const p = { weight, bias: ch(62, 1), bn: { mean: ch(63, 1), var: v, gamma: ch(65, 1), beta: ch(66, 1), eps: 1e-4 } };
        const pc = { weight: weight.toSync('cuda'), bias: p.bias.toSync('cuda'),
          bn: { ...p.bn, mean: p.bn.mean.toSync('cuda'), var: p.bn.var.toSync('cuda'), gamma: p.bn.gamma.toSync('cuda'),
            beta: p.bn.beta.toSync('cuda') } };
        const want = foldConvBn(p), got = foldConvBn(pc);
        expect(got.weight.device).toBe('cuda:0');
        expect(Array.from(got.weight.dataSync()), dtype).toEqual(Array.from(want.weight.dataSync()));
        expect(Array.from(got.bias.dataSync()), dtype).toEqual(Array.from(want.bias.dataSync()));
        // Without bias, gamma and beta (zeros, ones, zeros).
        const bare = { weight: pc.weight, bn: { mean: pc.bn.mean, var: pc.bn.var } };
        expect(Array.from(foldConvBn(bare).bias.dataSync())).toEqual(
          Array.from(foldConvBn({ weight, bn: { mean: p.bn.mean, var: p.bn.var } }).bias.dataSync()));
      }
    });

    it('async forms give the sync results bit for bit; needs skips gradients; saved state is x + s + mask', async () => {
      const q = CONV_CASES[0];
      const { xc, pc, opts } = setup(q, 'float32', 7000);
      const o = { ...opts, activation: 'relu' as const, saveForBackward: true };
      const a = convBnSync(xc, pc, o);
      const b = await convBn(xc, pc, o);
      expect(Array.from(b.y.dataSync())).toEqual(Array.from(a.y.dataSync()));
      const ySize = a.y.size;
      expect(b.saved!.bytes).toBe(xc.size * 4 + q.cout * 4 + Math.ceil(ySize / 32) * 4);
      const dy = tensor(randomArray(ySize, 7001), a.y.shape as number[], { device: 'cuda' });
      const ga = convBnBackwardSync(a.saved!, dy);
      const gb = await convBnBackward(b.saved!, dy, { needs: { x: false, beta: false } });
      expect(Object.keys(gb).sort()).toEqual(['dBias', 'dGamma', 'dWeight']);
      for (const k of ['dWeight', 'dBias', 'dGamma'] as const) expect(Array.from(gb[k]!.dataSync()), k).toEqual(Array.from(ga[k]!.dataSync()));
      const y2 = await conv2d(xc, pc.weight, pc.bias, opts);
      expect(Array.from(y2.dataSync())).toEqual(Array.from(conv2dSync(xc, pc.weight, pc.bias, opts).dataSync()));
      b.saved!.dispose();
      expect(b.saved!.bytes).toBe(0);
      await expect(convBnBackward(b.saved!, dy)).rejects.toMatchObject({ code: 'ERR_XNORM_DISPOSED' });
    });

    it('mixed devices are ERR_XNORM_DEVICE; bad input is an XnormError with a code', async () => {
      const q = CONV_CASES[0];
      const { x, xc, p, pc, opts } = setup(q, 'float32', 7100);
      expectCode(() => convBnSync(xc, p, opts), 'ERR_XNORM_DEVICE');
      expectCode(() => convBnSync(xc, { ...pc, bn: { ...pc.bn, gamma: p.bn.gamma } }, opts), 'ERR_XNORM_DEVICE');
      expectCode(() => convBnSync(x, pc, opts), 'ERR_XNORM_DEVICE');
      expectCode(() => conv2dSync(xc, pc.weight, p.bias, opts), 'ERR_XNORM_DEVICE');
      expectCode(() => foldConvBn({ weight: pc.weight, bn: p.bn }), 'ERR_XNORM_DEVICE');
      await expect(convBn(xc, { ...pc, bias: p.bias }, opts)).rejects.toMatchObject({ code: 'ERR_XNORM_DEVICE' });
      const { y, saved } = convBnSync(xc, pc, { ...opts, saveForBackward: true });
      expectCode(() => convBnBackwardSync(saved!, tensor(randomArray(y.size, 1), y.shape as number[])), 'ERR_XNORM_DEVICE');
      expectCode(() => convBnBackwardSync(saved!, tensor(randomArray(y.size, 1), [y.size], { device: 'cuda' })), 'ERR_XNORM_SHAPE');
      expectCode(() => convBnSync(xc, pc, { ...opts, groups: 2 }), 'ERR_XNORM_SHAPE');
      expectCode(() => convBnSync(xc, { ...pc, bn: { ...pc.bn, var: tensor(new Float32Array(q.cout).fill(-1), [q.cout], { device: 'cuda' }) } }, opts), 'ERR_XNORM_ARGUMENT');
      // The saved state holds the forward's x and weight, as on the CPU (test/validate.test.ts): disposing
      // the caller's tensors leaves backward working and its results unchanged.
      const x2 = x.toSync('cuda');
      const w2 = tensor(p.weight.dataSync(), p.weight.shape as number[], { device: 'cuda' });
      const s2 = convBnSync(x2, { ...pc, weight: w2 }, { ...opts, saveForBackward: true });
      const dy2 = tensor(randomArray(y.size, 2), y.shape as number[], { device: 'cuda' });
      const before = convBnBackwardSync(s2.saved!, dy2);
      x2.dispose();
      w2.dispose();
      const after = convBnBackwardSync(s2.saved!, dy2);
      for (const k of ['dx', 'dWeight', 'dGamma'] as const) expect(Array.from(after[k]!.dataSync()), k).toEqual(Array.from(before[k]!.dataSync()));
      s2.saved!.dispose();
      expectCode(() => convBnBackwardSync(s2.saved!, dy2), 'ERR_XNORM_DISPOSED');
      // The addon re-checks what lib/ passes: handles of the wrong size, unknown modes.
      const n = native() as unknown as Record<string, (args: object, async?: boolean) => unknown>;
      const small = cudaAlloc(0, 4);
      const geo = { device: 0, dtype: 'float32', wDtype: 'float32', xShape: [2, 5, 7, 6], wShape: [9, 5, 3, 3], strideH: 1, strideW: 1,
        padH: 1, padW: 1, dilationH: 1, dilationW: 1, groups: 1, layout: 'nchw' };
      const bn = { mean: new Float32Array(9), var: new Float32Array(9).fill(1), eps: 1e-5 };
      expectCode(() => n.conv2d({ ...geo, x: small, weight: small, y: small }), 'ERR_XNORM_SHAPE');
      expectCode(() => n.convBnForward({ ...geo, ...bn, mode: 'fold', x: small, weight: small, y: small }), 'ERR_XNORM_ARGUMENT');
      expectCode(() => n.conv2d({ ...geo, dtype: 'int32', x: small, weight: small, y: small }), 'ERR_XNORM_DTYPE');
      expectCode(() => n.conv2d({ ...geo, groups: 2, x: small, weight: small, y: small }), 'ERR_XNORM_SHAPE');
    });
  });
}
