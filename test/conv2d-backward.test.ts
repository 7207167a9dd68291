// conv2dBackward: the plain conv's dx and dWeight against float64 references (the transposed loops of
// conv64) on the awkward shapes, both layouts, float16, shape-only arguments, `out`, and bad input; one
// finite-difference check ties the gradient to conv2d itself.
import { describe, expect, it } from 'vitest';
import { conv2dBackward, conv2dBackwardSync, conv2dSync, info, setNumThreads, tensor, zeros } from '../lib';
import { AWKWARD, ConvCase, forEachTap, outSize, sizes, toNchw, toNhwc } from './convbn-reference';
import { expectCode, randomArray } from './helpers';

/** dx and dW of y = conv(x, w) for a given dy, float64, NCHW: every tap of the conv run backwards. */
function convGrads64(t: ConvCase, x: ArrayLike<number>, w: ArrayLike<number>, dy: ArrayLike<number>) {
  const dx = new Float64Array(t.n * t.c * t.h * t.w), dw = new Float64Array(t.cout * (t.c / t.g) * t.k[0] * t.k[1]);
  forEachTap(t, (xi, wi, yi) => {
    dx[xi] += dy[yi] * w[wi];
    dw[wi] += dy[yi] * x[xi];
  });
  return { dx, dw };
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string) {
  let scale = 1e-6, err = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) err = Math.max(err, Math.abs(actual[i] - expected[i]));
  expect(actual.length, what).toBe(expected.length);
  expect(err / scale, what).toBeLessThan(tol);
}

const opts = (t: ConvCase, layout: 'nchw' | 'nhwc') => ({ stride: t.s, padding: t.p, dilation: t.d, groups: t.g, layout });

// channels-last 1x1 runs its GEMMs on x and dy as they are (no transposes), here in groups
const POINTWISE_GROUPED: ConvCase = { n: 2, c: 12, h: 5, w: 7, cout: 9, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 3 };
// channels-last 1x1 stride 2: dx from gathered columns
const POINTWISE_STRIDE_2: ConvCase = { n: 2, c: 66, h: 8, w: 8, cout: 20, k: [1, 1], s: [2, 2], p: [0, 0], d: [1, 1], g: 1 };

const CASES: ConvCase[] = [
  ...AWKWARD,
  { n: 2, c: 24, h: 9, w: 8, cout: 48, k: [3, 3], s: [2, 1], p: [1, 1], d: [1, 1], g: 24 },  // depthwise, multiplier 2
  { n: 3, c: 40, h: 6, w: 5, cout: 33, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },   // pointwise
  { n: 1, c: 64, h: 14, w: 14, cout: 64, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 }, // a real layer
  // dx as the forward Winograd conv of dy (padded by 2 - p): F(2x2), and F(2x2) with the tiles as rows
  { n: 2, c: 48, h: 12, w: 10, cout: 40, k: [3, 3], s: [1, 1], p: [0, 2], d: [1, 1], g: 1 },
  { n: 1, c: 130, h: 7, w: 9, cout: 140, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  POINTWISE_GROUPED,
  // channels-last dx where it is not a forward conv of dy: stride 1 padded beyond d * (k - 1), and one
  // output channel per group (columns gathered per input pixel); a grouped 3x3 that is one (its GEMM)
  { n: 2, c: 10, h: 6, w: 5, cout: 7, k: [1, 3], s: [1, 1], p: [1, 2], d: [1, 1], g: 1 },
  { n: 2, c: 6, h: 7, w: 6, cout: 2, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 2 },
  { n: 1, c: 40, h: 9, w: 11, cout: 36, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 4 },
  // channels-last dW: more than one 32-channel block of the channels-last K order, and 1x1 stride 2
  { n: 2, c: 70, h: 6, w: 5, cout: 24, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 1 },
  POINTWISE_STRIDE_2,
];

describe('conv2dBackward', () => {
  for (const t of CASES)
    for (const layout of ['nchw', 'nhwc'] as const)
      it(`${JSON.stringify(t)} ${layout}`, () => {
        const [oh, ow] = outSize(t), sz = sizes(t);
        const x = randomArray(sz.x, 1), w = randomArray(sz.w, 2), dy = randomArray(sz.y, 3);
        const ref = convGrads64(t, x, w, dy);
        const nhwc = layout === 'nhwc';
        const xt = nhwc ? tensor(toNhwc(x, t.n, t.c, t.h, t.w), [t.n, t.h, t.w, t.c]) : tensor(x, [t.n, t.c, t.h, t.w]);
        const dyt = nhwc ? tensor(toNhwc(dy, t.n, t.cout, oh, ow), [t.n, oh, ow, t.cout]) : tensor(dy, [t.n, t.cout, oh, ow]);
        const wt = tensor(w, [t.cout, t.c / t.g, ...t.k]);
        const g = conv2dBackwardSync(xt, wt, dyt, opts(t, layout));
        expect(g.dx!.shape).toEqual(xt.shape);
        expect(g.dWeight!.shape).toEqual(wt.shape);
        const dx = g.dx!.float32Sync();
        expectClose(nhwc ? toNchw(dx, t.n, t.c, t.h, t.w) : dx, ref.dx, 1e-5, 'dx');
        expectClose(g.dWeight!.float32Sync(), ref.dw, 1e-5, 'dWeight');
        // Only one gradient: the other input may be given by its shape alone, and the key is omitted.
        const only = conv2dBackwardSync({ shape: xt.shape }, wt, dyt, { ...opts(t, layout), needs: { weight: false } });
        expect(Object.keys(only)).toEqual(['dx']);
        expect(only.dx!.float32Sync()).toEqual(dx);
        const onlyW = conv2dBackwardSync(xt, { shape: wt.shape }, dyt, { ...opts(t, layout), needs: { x: false } });
        expect(Object.keys(onlyW)).toEqual(['dWeight']);
        expect(onlyW.dWeight!.float32Sync()).toEqual(g.dWeight!.float32Sync());
      });

  it('channels-last gradients do not depend on the thread count', () => {
    // The GEMM over NHWC patches (dW), dx as a forward Winograd conv, gathered columns (stride 2) and
    // the depthwise kernels (dW split over runs of images and blocks of channels).
    const cases: ConvCase[] = [
      { n: 3, c: 40, h: 10, w: 9, cout: 36, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
      { n: 2, c: 70, h: 6, w: 5, cout: 24, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 1 },
      { n: 5, c: 150, h: 9, w: 8, cout: 150, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 150 },
    ];
    for (const t of cases) {
      const [oh, ow] = outSize(t), sz = sizes(t);
      const x = tensor(randomArray(sz.x, 51), [t.n, t.h, t.w, t.c]), dy = tensor(randomArray(sz.y, 52), [t.n, oh, ow, t.cout]);
      const w = tensor(randomArray(sz.w, 53), [t.cout, t.c / t.g, t.k[0], t.k[1]]);
      const runs = [1, 2].map((threads) => {
        setNumThreads(threads);
        const g = conv2dBackwardSync(x, w, dy, opts(t, 'nhwc'));
        return [g.dx!.dataSync(), g.dWeight!.dataSync()];
      });
      setNumThreads(info().cpu.threads);
      expect(runs[1][0], `dx ${JSON.stringify(t)}`).toEqual(runs[0][0]);
      expect(runs[1][1], `dWeight ${JSON.stringify(t)}`).toEqual(runs[0][1]);
    }
  });

  it('the Promise form gives the Sync result; float16 activations give float16 dx', async () => {
    const t = AWKWARD[0], sz = sizes(t), [oh, ow] = outSize(t);
    const x = randomArray(sz.x, 4), w = randomArray(sz.w, 5), dy = randomArray(sz.y, 6);
    const args = [tensor(x, [t.n, t.c, t.h, t.w]), tensor(w, [t.cout, t.c / t.g, ...t.k]), tensor(dy, [t.n, t.cout, oh, ow])] as const;
    const a = await conv2dBackward(...args, opts(t, 'nchw'));
    const s = conv2dBackwardSync(...args, opts(t, 'nchw'));
    expect(a.dx!.float32Sync()).toEqual(s.dx!.float32Sync());
    expect(a.dWeight!.float32Sync()).toEqual(s.dWeight!.float32Sync());
    const h = conv2dBackwardSync(tensor(x, args[0].shape, { dtype: 'float16' }), args[1],
      tensor(dy, args[2].shape, { dtype: 'float16' }), opts(t, 'nchw'));
    expect(h.dx!.dtype).toBe('float16');
    expect(h.dWeight!.dtype).toBe('float32');
    expectClose(h.dx!.float32Sync(), s.dx!.float32Sync(), 3e-3, 'float16 dx');
    // channels-last, the 3x3 GEMMs, 1x1 without transposes and 1x1 stride 2 (gathered columns): float16
    // gives float32's result
    for (const c of [t, POINTWISE_GROUPED, POINTWISE_STRIDE_2]) {
      const [ch, cw] = outSize(c), cz = sizes(c);
      const cx = toNhwc(randomArray(cz.x, 16), c.n, c.c, c.h, c.w), cdy = toNhwc(randomArray(cz.y, 17), c.n, c.cout, ch, cw);
      const xs = [c.n, c.h, c.w, c.c], dys = [c.n, ch, cw, c.cout], cwt = tensor(randomArray(cz.w, 18), [c.cout, c.c / c.g, ...c.k]);
      const s32 = conv2dBackwardSync(tensor(cx, xs), cwt, tensor(cdy, dys), opts(c, 'nhwc'));
      const h16 = conv2dBackwardSync(tensor(cx, xs, { dtype: 'float16' }), cwt, tensor(cdy, dys, { dtype: 'float16' }), opts(c, 'nhwc'));
      expect(h16.dx!.dtype).toBe('float16');
      expectClose(h16.dx!.float32Sync(), s32.dx!.float32Sync(), 3e-3, 'float16 NHWC dx');
      expectClose(h16.dWeight!.float32Sync(), s32.dWeight!.float32Sync(), 3e-3, 'float16 NHWC dWeight');
    }
  });

  it('matches a finite difference of conv2d (dWeight, one entry per output channel)', () => {
    const t: ConvCase = { n: 2, c: 3, h: 6, w: 5, cout: 4, k: [3, 2], s: [2, 1], p: [1, 0], d: [1, 1], g: 1 };
    const sz = sizes(t), [oh, ow] = outSize(t);
    const x = tensor(randomArray(sz.x, 7), [t.n, t.c, t.h, t.w]), w = randomArray(sz.w, 8);
    const dy = randomArray(sz.y, 9);
    // L(w) = sum(dy * conv(x, w)); dL/dw = dWeight
    const loss = (ww: Float32Array) => {
      const y = conv2dSync(x, tensor(ww, [t.cout, t.c, ...t.k]), undefined, opts(t, 'nchw')).float32Sync();
      let s = 0;
      for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
      return s;
    };
    const g = conv2dBackwardSync(x, tensor(w, [t.cout, t.c, ...t.k]), tensor(dy, [t.n, t.cout, oh, ow]), opts(t, 'nchw'));
    const dW = g.dWeight!.float32Sync();
    const per = sz.w / t.cout;
    for (let co = 0; co < t.cout; co++) {
      const i = co * per + ((co * 5) % per), h = 1e-2;
      const up = w.slice(), down = w.slice();
      up[i] += h, down[i] -= h;
      expect(Math.abs((loss(up) - loss(down)) / (2 * h) - dW[i])).toBeLessThan(2e-3 * Math.max(1, Math.abs(dW[i])));
    }
  });

  it('writes into opts.out; an empty batch gives an empty dx and a zero dWeight', () => {
    const x = tensor(randomArray(2 * 3 * 5 * 5, 10), [2, 3, 5, 5]), w = tensor(randomArray(4 * 3 * 9, 11), [4, 3, 3, 3]);
    const dy = tensor(randomArray(2 * 4 * 25, 12), [2, 4, 5, 5]);
    const dx = zeros([2, 3, 5, 5]), dW = zeros([4, 3, 3, 3]);
    const g = conv2dBackwardSync(x, w, dy, { padding: 1, out: { dx, dWeight: dW } });
    expect(g.dx).toBe(dx);
    expect(g.dWeight).toBe(dW);
    expect(dx.float32Sync()).toEqual(conv2dBackwardSync(x, w, dy, { padding: 1 }).dx!.float32Sync());
    const e = conv2dBackwardSync(zeros([0, 3, 5, 5]), w, zeros([0, 4, 5, 5]), { padding: 1 });
    expect(e.dx!.shape).toEqual([0, 3, 5, 5]);
    expect(Array.from(e.dWeight!.float32Sync()).every((v) => v === 0)).toBe(true);
    const en = conv2dBackwardSync(zeros([0, 5, 5, 3]), tensor(randomArray(12, 19), [4, 3, 1, 1]), zeros([0, 5, 5, 4]), { layout: 'nhwc' });
    expect(en.dx!.shape).toEqual([0, 5, 5, 3]);
    expect(Array.from(en.dWeight!.float32Sync()).every((v) => v === 0)).toBe(true);
  });

  it('refuses bad input with a code', () => {
    const x = tensor(randomArray(75, 13), [1, 3, 5, 5]), w = tensor(randomArray(4 * 27, 14), [4, 3, 3, 3]);
    const dy = tensor(randomArray(4 * 9, 15), [1, 4, 3, 3]);
    expectCode(() => conv2dBackwardSync(x, w, tensor(new Float32Array(4 * 25), [1, 4, 5, 5])), 'ERR_XNORM_SHAPE');
    expectCode(() => conv2dBackwardSync(x, w, dy, { needs: { x: false, weight: false } }), 'ERR_XNORM_ARGUMENT');
    // the weight is read for dx, so { shape } is not enough there
    expectCode(() => conv2dBackwardSync(x, { shape: [4, 3, 3, 3] }, dy), 'ERR_XNORM_ARGUMENT');
    expectCode(() => conv2dBackwardSync({ shape: [1, 3, 5] }, w, dy, { needs: { weight: false } }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => conv2dBackwardSync({ shape: [1, 3, 5, -1] }, w, dy, { needs: { weight: false } }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => conv2dBackwardSync(x, w, tensor(new Uint16Array(36), [1, 4, 3, 3], { dtype: 'float16' })), 'ERR_XNORM_DTYPE');
    expectCode(() => conv2dBackwardSync(x, w, dy, { needs: { x: false }, out: { dx: zeros([1, 3, 5, 5]) } }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => conv2dBackwardSync(x, w, dy, { out: { dx: dy } }), 'ERR_XNORM_SHAPE');
    expectCode(() => conv2dBackwardSync(x, w, dy, { strides: 1 } as never), 'ERR_XNORM_ARGUMENT');
    expectCode(() => conv2dBackwardSync(x, w, dy, { groups: 2 }), 'ERR_XNORM_SHAPE');
  });
});
