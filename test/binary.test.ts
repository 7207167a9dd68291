import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import {
  XnormError,
  binaryConv2d,
  binaryConv2dReferenceSync,
  binaryConv2dSync,
  binaryLinearSync,
  info,
  packBits,
  packBitsSync,
  packWeightsSync,
  popcountPeak,
  tensor,
  unpackBitsSync,
} from '../lib';
import { expectSameValues, rng } from './helpers';
import { native } from '../lib/native';


/** ±1 values (and some exact zeros, which count as +1). */
function signs(n: number, r: () => number): Float32Array {
  return Float32Array.from({ length: n }, () => {
    const u = r();
    return u < 0.05 ? 0 : u < 0.5 ? -1 : 1;
  });
}
const sgn = (v: number) => (v < 0 ? -1 : 1);

interface Case {
  n: number; h: number; w: number; c: number; cout: number; kh: number; kw: number;
  stride: [number, number]; padding: [number, number]; dilation: [number, number]; groups: number;
}

/** Plain float convolution of the ±1 values, NHWC in and out: exact integers. */
function floatConv(x: Float32Array, w: Float32Array, k: Case, padValue: 'one' | 'zero') {
  const cinG = k.c / k.groups, coutG = k.cout / k.groups;
  const oh = Math.floor((k.h + 2 * k.padding[0] - k.dilation[0] * (k.kh - 1) - 1) / k.stride[0]) + 1;
  const ow = Math.floor((k.w + 2 * k.padding[1] - k.dilation[1] * (k.kw - 1) - 1) / k.stride[1]) + 1;
  const out = new Float64Array(k.n * oh * ow * k.cout);
  for (let n = 0; n < k.n; n++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++)
        for (let co = 0; co < k.cout; co++) {
          const g = Math.floor(co / coutG);
          let acc = 0;
          for (let i = 0; i < k.kh; i++)
            for (let j = 0; j < k.kw; j++) {
              const iy = oy * k.stride[0] - k.padding[0] + i * k.dilation[0];
              const ix = ox * k.stride[1] - k.padding[1] + j * k.dilation[1];
              const inside = iy >= 0 && iy < k.h && ix >= 0 && ix < k.w;
              for (let ci = 0; ci < cinG; ci++) {
                const xv = inside ? sgn(x[((n * k.h + iy) * k.w + ix) * k.c + g * cinG + ci]) : padValue === 'one' ? 1 : 0;
                acc += xv * sgn(w[((co * cinG + ci) * k.kh + i) * k.kw + j]);
              }
            }
          out[((n * oh + oy) * ow + ox) * k.cout + co] = acc;
        }
  return { out, oh, ow };
}

const base: Case = { n: 2, h: 7, w: 6, c: 70, cout: 40, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 };
const cases: Case[] = [
  base,
  { ...base, c: 32, cout: 33 },
  { ...base, c: 5, cout: 3, kh: 1, kw: 1, padding: [0, 0] },
  { ...base, stride: [2, 2] },
  { ...base, dilation: [2, 2], padding: [2, 2] },
  { ...base, kh: 3, kw: 2, stride: [2, 1], padding: [1, 0], dilation: [1, 2] },
  { ...base, groups: 2 },                             // Cin/g = 35: groups start mid-word
  { ...base, c: 64, cout: 64, groups: 2 },            // Cin/g = 32: word-aligned groups
  { ...base, c: 12, cout: 12, groups: 12 },           // depthwise
  { ...base, n: 1, h: 20, w: 20, c: 130, cout: 70 }, // several tiles, several panels
  { ...base, c: 64, cout: 40, kh: 3, kw: 2, stride: [2, 1], padding: [1, 0], dilation: [1, 2] }, // direct reads, strided
  { ...base, c: 96, cout: 48, groups: 3, stride: [2, 2] },                                        // direct reads, group offsets
  { ...base, n: 1, h: 32, w: 33, c: 32, cout: 1000, kh: 1, kw: 1, padding: [0, 0] }, // > 2^20 outputs: streamed stores, rows off 64-byte lines
];
const name = (k: Case) =>
  `N${k.n} ${k.h}x${k.w} C${k.c}->${k.cout} k${k.kh}x${k.kw} s${k.stride} p${k.padding} d${k.dilation} g${k.groups}`;

function setup(k: Case, seed: number) {
  const r = rng(seed);
  const xf = signs(k.n * k.h * k.w * k.c, r);
  const wf = signs(k.cout * (k.c / k.groups) * k.kh * k.kw, r);
  const x = packBitsSync(tensor(xf, [k.n, k.h, k.w, k.c]), { layout: 'nhwc' });
  const w = packWeightsSync(tensor(wf, [k.cout, k.c / k.groups, k.kh, k.kw]), { groups: k.groups });
  const opts = { stride: k.stride, padding: k.padding, dilation: k.dilation };
  return { xf, wf, x, w, opts, r };
}

describe('packBits / unpackBits', () => {
  // 65 x 67 > 4096 pixels per image: the NCHW kernel's runs split, with a tail not a multiple of 16.
  // C < 32 in NHWC: blocks of 16 pixels (AVX2: 8) compared as whole vectors, then pixel by pixel for the rest.
  // The last two write more than 1 MiB of words: streamed stores.
  for (const [c, h, w] of [[1, 5, 3], [3, 9, 13], [5, 33, 35], [9, 6, 11], [12, 5, 9], [16, 7, 9], [31, 5, 3], [32, 9, 11], [33, 10, 10], [70, 5, 3], [33, 65, 67],
    [3, 256, 513], [13, 256, 513]]) {
    it(`C = ${c}, ${h}x${w}: NHWC and NCHW pack like sign(), tail bits zero, unpack inverts`, () => {
      const r = rng(c);
      const n = 2;
      const xf = Float32Array.from({ length: n * c * h * w }, () => r() * 2 - 1);
      const thr = Float32Array.from({ length: c }, () => r() - 0.5);
      const wc = Math.ceil(c / 32);
      for (const layout of ['nhwc', 'nchw'] as const) {
        const shape = layout === 'nhwc' ? [n, h, w, c] : [n, c, h, w];
        const at = (ni: number, y: number, xx: number, ch: number) =>
          layout === 'nhwc' ? xf[((ni * h + y) * w + xx) * c + ch] : xf[((ni * c + ch) * h + y) * w + xx];
        for (const threshold of [undefined, 0.25, tensor(thr, [c])]) {
          const b = packBitsSync(tensor(xf, shape), { layout, threshold });
          expect(b.shape).toEqual([n, h, w, c]);
          expect(b.dtype).toBe('bit');
          const words = b.dataSync() as Uint32Array;
          const want = new Uint32Array(n * h * w * wc);
          for (let ni = 0; ni < n; ni++)
            for (let y = 0; y < h; y++)
              for (let xx = 0; xx < w; xx++)
                for (let ch = 0; ch < c; ch++) {
                  const t = threshold === undefined ? 0 : typeof threshold === 'number' ? threshold : thr[ch];
                  if (at(ni, y, xx, ch) < Math.fround(t)) want[((ni * h + y) * w + xx) * wc + (ch >> 5)] |= 1 << (ch & 31);
                }
          expectSameValues(words, want, 'packBits');
          const u = unpackBitsSync(b, { layout });
          expect(u.shape).toEqual(shape);
          const wantU = new Float32Array(xf.length);
          for (let ni = 0; ni < n; ni++)
            for (let y = 0; y < h; y++)
              for (let xx = 0; xx < w; xx++)
                for (let ch = 0; ch < c; ch++) {
                  const bit = (want[((ni * h + y) * w + xx) * wc + (ch >> 5)] >>> (ch & 31)) & 1;
                  const idx = layout === 'nhwc' ? ((ni * h + y) * w + xx) * c + ch : ((ni * c + ch) * h + y) * w + xx;
                  wantU[idx] = bit ? -1 : 1;
                }
          expectSameValues(u.dataSync() as Float32Array, wantU, 'unpackBits');
        }
      }
    });
  }

  // Into an output whose words are all ones: every word, and a last word's channels past C, written.
  // C = 33 / 40 / 70: the NHWC kernel's last 16-channel half holds the tail, then an unused upper half.
  for (const c of [3, 16, 31, 33, 40, 48, 70, 96]) {
    it(`C = ${c}: into a dirty output, the same words`, () => {
      const r = rng(c + 500);
      const n = 2, h = 9, w = 7;
      const xf = Float32Array.from({ length: n * c * h * w }, () => r() * 2 - 1);
      for (const layout of ['nhwc', 'nchw'] as const) {
        const x = tensor(xf, layout === 'nhwc' ? [n, h, w, c] : [n, c, h, w]);
        const want = packBitsSync(x, { layout });
        const out = tensor(new Uint32Array(want.dataSync().length).fill(0xffffffff), want.shape, { dtype: 'bit' });
        expectSameValues(packBitsSync(x, { layout, out }).dataSync() as Uint32Array, want.dataSync() as Uint32Array, `${layout}`);
      }
    });
  }

  it('packs the same words wherever the data starts in memory (read from whole lines)', () => {
    // NCHW planes of 16k pixels share their offset within a line: the kernel steps from the line before
    // pixel 0. NHWC with C a multiple of 32 is read as one flat run from the line before value 0. Every
    // start offset within a line; one and several words per pixel; a run split with a short tail.
    const n = native();
    for (const [layout, c, s] of [['nchw', 20, 48], ['nchw', 40, 4096 + 80], ['nchw', 64, 16], ['nhwc', 32, 7], ['nhwc', 64, 33], ['nhwc', 96, 5]] as const) {
      const r = rng(c + 900);
      const size = 2 * c * s, wc = Math.ceil(c / 32);
      const xf = Float32Array.from({ length: size }, () => r() * 2 - 1);
      const thresholds = Float32Array.from({ length: c }, () => r() - 0.5);
      const at = (i: number, ch: number, p: number) => (layout === 'nchw' ? (i * c + ch) * s + p : (i * s + p) * c + ch);
      const want = new Uint32Array(2 * s * wc);
      for (let i = 0; i < 2; i++)
        for (let ch = 0; ch < c; ch++)
          for (let p = 0; p < s; p++) if (xf[at(i, ch, p)] < thresholds[ch]) want[(i * s + p) * wc + (ch >> 5)] |= 1 << (ch & 31);
      for (let skip = 0; skip < 16; skip++) {
        const x = new Float32Array(size + 16).subarray(skip, skip + size);
        x.set(xf);
        const out = new Uint32Array(want.length).fill(0xffffffff);
        n.packBits({ x, dtype: 'float32', layout, n: 2, c, s, thresholds, threshold: 0, out });
        expectSameValues(out, want, `${layout} C = ${c}, S = ${s}, starting ${skip} floats in`);
      }
    }
  });

  it('sign(0) = +1 and the async form matches', async () => {
    const b = await packBits(tensor([0, -0, -1e-30, 1, NaN], [1, 5]));
    expect(Array.from(b.dataSync() as Uint32Array)).toEqual([0b00100]);
  });
});

describe('binaryConv2d against a float convolution of the same ±1 values', () => {
  for (const k of cases) {
    it(name(k), () => {
      const { xf, wf, x, w, opts, r } = setup(k, k.c * 131 + k.cout);
      for (const padValue of ['one', 'zero'] as const) {
        const { out, oh, ow } = floatConv(xf, wf, k, padValue);
        const y = binaryConv2dSync(x, w, { ...opts, padValue, output: 'int32' });
        expect(y.shape).toEqual([k.n, oh, ow, k.cout]);
        expectSameValues(y.dataSync() as Int32Array, out, 'int32');
        expectSameValues(binaryConv2dReferenceSync(x, w, { ...opts, padValue, output: 'int32' }).dataSync() as Int32Array, out, 'reference');

        // float: y * scale + bias, clamped; scales include negatives and zero.
        const scale = Float32Array.from({ length: k.cout }, (_, i) => (i % 7 === 3 ? 0 : r() * 2 - 1));
        const bias = Float32Array.from({ length: k.cout }, () => (r() - 0.5) * 8);
        const fo = { ...opts, padValue, scale: tensor(scale, [k.cout]), bias: tensor(bias, [k.cout]) };
        const yf = binaryConv2dSync(x, w, { ...fo, clamp: [-3, 2.5] }).dataSync() as Float32Array;
        const want = Float32Array.from(out, (d, i) =>
          Math.min(Math.max(Math.fround(Math.fround(d * scale[i % k.cout]) + bias[i % k.cout]), -3), 2.5),
        );
        expectSameValues(yf, want, 'float');
        // bits: exactly packBits of the float output, with and without clamp.
        for (const clamp of [undefined, [-3, 2.5] as [number, number], [0, 1] as [number, number]]) {
          const yb = binaryConv2dSync(x, w, { ...fo, clamp, output: 'bits' });
          const yfl = binaryConv2dSync(x, w, { ...fo, clamp });
          expect(yb.shape).toEqual([k.n, oh, ow, k.cout]);
          expect(yb.dataSync()).toEqual(packBitsSync(yfl, { layout: 'nhwc' }).dataSync());
          expect(binaryConv2dReferenceSync(x, w, { ...fo, clamp, output: 'bits' }).dataSync()).toEqual(yb.dataSync());
        }
      }
    });
  }

  it('async equals sync, and the thread count does not change results', async () => {
    const k = cases.find((c) => c.c === 130)!;
    const { x, w, opts } = setup(k, 7);
    const a = await binaryConv2d(x, w, { ...opts, output: 'int32' });
    const b = binaryConv2dSync(x, w, { ...opts, output: 'int32' });
    expect(a.dataSync()).toEqual(b.dataSync());
  });

  it('ignores stray tail bits in a hand-made bit tensor', () => {
    const k = { ...base, c: 70 };
    const { x, w, opts } = setup(k, 3);
    const dirty = (x.dataSync() as Uint32Array).map((v, i) => (i % 3 === 2 ? v | 0xffffffc0 : v)); // bits 70..95
    const xd = tensor(dirty, x.shape, { dtype: 'bit' });
    for (const padValue of ['one', 'zero'] as const)
      expect(binaryConv2dSync(xd, w, { ...opts, padValue, output: 'int32' }).dataSync()).toEqual(
        binaryConv2dSync(x, w, { ...opts, padValue, output: 'int32' }).dataSync(),
      );
  });

  it('binaryLinear is the 1x1 case', () => {
    const r = rng(5);
    const n = 3, kk = 100, cout = 37;
    const xf = signs(n * kk, r), wf = signs(cout * kk, r);
    const x = packBitsSync(tensor(xf, [n, kk]));
    const w = packWeightsSync(tensor(wf, [cout, kk]));
    const y = binaryLinearSync(x, w, { output: 'int32' });
    expect(y.shape).toEqual([n, cout]);
    const want: number[] = [];
    for (let i = 0; i < n; i++)
      for (let o = 0; o < cout; o++) {
        let s = 0;
        for (let j = 0; j < kk; j++) s += sgn(xf[i * kk + j]) * sgn(wf[o * kk + j]);
        want.push(s);
      }
    expect(Array.from(y.dataSync() as Int32Array)).toEqual(want);
  });
});

describe('bad input', () => {
  const k = base;
  const { x, w } = setup(k, 1);
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(XnormError);
      return (e as XnormError).code;
    }
    return 'no error';
  };
  it('rejects wrong dtypes, shapes and options with XnormError codes', async () => {
    expect(code(() => binaryConv2dSync(tensor([1, 2], [1, 1, 1, 2]), w))).toBe('ERR_XNORM_DTYPE');
    expect(code(() => binaryConv2dSync(packBitsSync(tensor(new Float32Array(2 * 5 * 5 * 3), [2, 5, 5, 3]), { layout: 'nhwc' }), w))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => binaryConv2dSync(x, w, { output: 'half' as never }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { stride: 0 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { padding: -1 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { groups: 2 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { scale: tensor([1], [1]) }))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => binaryConv2dSync(x, w, { scale: tensor(new Float32Array(k.cout).fill(NaN), [k.cout]) }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { output: 'int32', bias: tensor(new Float32Array(k.cout), [k.cout]) }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { clamp: [2, 1] }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => binaryConv2dSync(x, w, { dilation: 40 }))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => binaryConv2dSync(x, {} as never))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => packWeightsSync(tensor([1, 2, 3], [3, 1, 1, 1]), { groups: 2 }))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => packBitsSync(tensor([1, 2], [2]) as never))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => packBitsSync(tensor([1, 2], [1, 2]), { threshold: tensor([1], [1]) }))).toBe('ERR_XNORM_SHAPE');
    const gone = packBitsSync(tensor([1, 2], [1, 2]));
    gone.dispose();
    expect(code(() => unpackBitsSync(gone))).toBe('ERR_XNORM_DISPOSED');
    await expect(binaryConv2d(x, w, { output: 'nope' as never })).rejects.toMatchObject({ code: 'ERR_XNORM_ARGUMENT' });
  });

  it('the native boundary re-checks what lib/ would have caught', () => {
    // The addon without its types: these calls hand it arguments lib/ never would.
    const n = native() as unknown as Record<string, (args: object) => unknown>;
    const wShape = [k.cout, k.c / k.groups, k.kh, k.kw];
    const weights = n.packWeights({ w: new Float32Array(wShape.reduce((a, b) => a * b)).fill(1), wShape, groups: k.groups });
    const good = {
      device: -1, x: x.dataSync(), xShape: x.shape, weights, strideH: 1, strideW: 1, padH: 1, padW: 1, dilationH: 1,
      dilationW: 1, padValue: 'one', output: 'int32', out: new Int32Array(k.n * k.h * k.w * k.cout),
    };
    expect(() => n.binaryConv2d(good)).not.toThrow();
    expect(code(() => n.binaryConv2d({ ...good, out: new Int32Array(5) }))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => n.binaryConv2d({ ...good, x: new Float32Array(good.x.length) }))).toBe('ERR_XNORM_DTYPE');
    expect(code(() => n.binaryConv2d({ ...good, xShape: [2, 7, 6, 71] }))).toBe('ERR_XNORM_SHAPE');
    expect(code(() => n.packWeights({ w: new Float32Array(1), wShape: [2 ** 40, 2 ** 20, 3, 3], groups: 1 }))).toBe('ERR_XNORM_SHAPE');
    // Weights and plans are handles: anything else, a plan's words edited in JS, or a forged object is refused.
    expect(code(() => n.binaryConv2d({ ...good, weights: { words: new Uint32Array(9) } }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => n.binaryConv2d({ ...good, weights: undefined, plan: weights }))).toBe('ERR_XNORM_ARGUMENT');
    expect(code(() => n.mstPlan({ weights: new Uint32Array(4), reuse: 'auto', maxDepth: 2 }))).toBe('ERR_XNORM_ARGUMENT');
  });
});

describe('every ISA level', () => {
  // The level is fixed when the addon loads, so each one runs in its own process.
  const childScript = `
    const root = process.argv[1];
    // The addon under test: $XNORM_ADDON where set (scripts/sanitize.sh's ASan build), else this checkout's.
    const n = process.env.XNORM_ADDON ? require(require('path').resolve(process.env.XNORM_ADDON)) : require(require.resolve('node-gyp-build', { paths: [root] }))(root);
    let seed = 99;
    const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
    let mismatches = 0, checks = 0;
    const eq = (a, b) => { checks++; if (a.length !== b.length || a.some((v, i) => v !== b[i])) mismatches++; };
    for (const [c, px] of [[1, 37], [33, 37], [64, 300], [70, 530], [33, 4503]]) {
      const xf = Float32Array.from({ length: px * c }, () => rnd() * 2 - 1), wc = Math.ceil(c / 32);
      for (const layout of ['nhwc', 'nchw']) {
        const out = new Uint32Array(px * wc), want = new Uint32Array(px * wc);
        n.packBits({ x: xf, layout, n: 1, c, s: px, threshold: 0.1, out });
        for (let p = 0; p < px; p++) for (let ch = 0; ch < c; ch++) {
          const v = layout === 'nhwc' ? xf[p * c + ch] : xf[ch * px + p];
          if (v < Math.fround(0.1)) want[p * wc + (ch >> 5)] |= 1 << (ch & 31);
        }
        eq(out, want);
      }
    }
    const shapes = [[2, 9, 8, 70, 48, 3, 1, 1, 1], // a last panel of 16 channels: the kernels count only its first half
                    [1, 11, 11, 64, 96, 3, 2, 1, 1], [1, 6, 6, 40, 8, 1, 1, 0, 2], [3, 5, 5, 130, 33, 3, 1, 2, 1],
                    [1, 32, 33, 32, 1000, 1, 1, 0, 1], // > 2^20 outputs, written with streamed stores
                    [4, 16, 18, 32, 300, 3, 1, 1, 1]]; // MST tiles of 512 pixels: bit rows 8 and 9 words wide
    for (const [N, H, W, C, Cout, K, S, P, G] of shapes) {
      const cinG = C / G, xf = Float32Array.from({ length: N * H * W * C }, () => rnd() - 0.5);
      const x = new Uint32Array(N * H * W * Math.ceil(C / 32));
      n.packBits({ x: xf, layout: 'nhwc', n: 1, c: C, s: N * H * W, threshold: 0, out: x });
      // Weights: a few prototypes with flipped bits, so MST plans have edges.
      const proto = Float32Array.from({ length: 3 * cinG * K * K }, () => rnd() - 0.5);
      const wf = Float32Array.from({ length: Cout * cinG * K * K }, (_, i) => {
        const v = proto[((Math.floor(i / (cinG * K * K)) % 3) * cinG * K * K) + (i % (cinG * K * K))];
        return rnd() < 0.03 ? -v : v;
      });
      const weights = n.packWeights({ wShape: [Cout, cinG, K, K], groups: G, w: wf });
      const OH = Math.floor((H + 2 * P - K) / S) + 1, OW = Math.floor((W + 2 * P - K) / S) + 1;
      for (const reuse of ['never', 'always']) {
        const { plan } = n.mstPlan({ weights, reuse, maxDepth: 3 });
        for (const padValue of ['one', 'zero']) for (const output of ['int32', 'float', 'bits']) {
          const scale = output === 'int32' ? undefined : Float32Array.from({ length: Cout }, () => rnd() * 2 - 1);
          const len = output === 'bits' ? N * OH * OW * Math.ceil(Cout / 32) : N * OH * OW * Cout;
          const mk = () => (output === 'bits' ? new Uint32Array(len) : output === 'int32' ? new Int32Array(len) : new Float32Array(len));
          const a = { device: -1, x, xShape: [N, H, W, C], strideH: S, strideW: S, padH: P, padW: P, dilationH: 1, dilationW: 1,
                      padValue, output, scale };
          const fast = mk(), ref = mk();
          n.binaryConv2d({ ...a, plan, out: fast });
          n.binaryConv2dReference({ ...a, weights, out: ref });
          eq(fast, ref);
        }
      }
    }
    // Every bit differs (inputs all -1, weights all +1): each word adds its largest count, for each
    // words-per-tap form of the kernels (1, 2, 4 and 8 words, 9 words, more words than one byte count holds).
    for (const C of [32, 64, 128, 256, 288, 1024]) {
      const weights = n.packWeights({ wShape: [32, C, 3, 3], groups: 1, w: new Float32Array(32 * C * 9).fill(1) });
      const { plan } = n.mstPlan({ weights, reuse: 'never', maxDepth: 3 });
      const a = { device: -1, x: new Uint32Array(5 * 5 * C / 32).fill(0xffffffff), xShape: [1, 5, 5, C], strideH: 1, strideW: 1,
                  padH: 0, padW: 0, dilationH: 1, dilationW: 1, padValue: 'one', output: 'int32' };
      const fast = new Int32Array(3 * 3 * 32), ref = new Int32Array(3 * 3 * 32);
      n.binaryConv2d({ ...a, plan, out: fast });
      n.binaryConv2dReference({ ...a, weights, out: ref });
      eq(fast, ref);
      eq(fast, new Int32Array(fast.length).fill(-9 * C));
    }
    console.log(JSON.stringify({ isa: n.info().isaLevel, warning: n.info().isaWarning, checks, mismatches }));
  `;
  // XNORM_GFNI=0: AVX-512 without its GFNI bit transposes, as on CPUs that lack GFNI.
  for (const [isa, gfni] of [['portable'], ['avx2'], ['avx512'], ['avx512', '0'], ['neon']]) {
    it(`${isa}${gfni ? ' (XNORM_GFNI=0)' : ''}: packBits, dense and MST kernels match the reference`, () => {
      const root = path.join(__dirname, '..');
      const r = spawnSync(process.execPath, ['-e', childScript, root], {
        env: { ...process.env, XNORM_ISA: isa, ...(gfni ? { XNORM_GFNI: gfni } : {}) },
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(r.status, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
      if (res.isa !== isa) {
        console.log(`skipped ${isa}: ${res.warning}`);
        return;
      }
      expect(res.checks).toBeGreaterThan(50);
      expect(res.mismatches).toBe(0);
    });
  }
});

it('popcountPeak reports a positive rate', () => {
  expect(popcountPeak(0.02)).toBeGreaterThan(1e8);
  expect(info().cpu.isa.length).toBeGreaterThan(0);
});
