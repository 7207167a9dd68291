// Conv + BN: fast conv paths against the references (every ISA level), the three modes against each
// other, layouts and dtypes, determinism, the saved state, and bad input.
import { describe, expect, it } from 'vitest';
import {
  ConvBnSaved,
  Tensor,
  XnormError,
  conv2d,
  conv2dSync,
  convBn,
  convBnBackward,
  convBnBackwardSync,
  convBnSync,
  convKernelInfo,
  foldConvBn,
  info,
  setNumThreads,
  tensor,
} from '../lib';
import { native } from '../lib/native';
import { AWKWARD, ConvCase, conv64, convBn64, forwardTolerance, sizes, takesWinograd4, toNchw, toNhwc } from './convbn-reference';
import { randomArray, runChild, settlesAtOnce, supportedIsaLevels, withAlgo } from './helpers';

/** The addon without its types: these tests hand it arguments lib/ never would. */
const raw = () => native() as unknown as Record<string, (args: object) => unknown>;

function geo(t: ConvCase, layout: 'nchw' | 'nhwc' = 'nchw', dtype: 'float32' | 'float16' | 'bfloat16' = 'float32') {
  return {
    dtype, layout, groups: t.g,
    xShape: layout === 'nchw' ? [t.n, t.c, t.h, t.w] : [t.n, t.h, t.w, t.c],
    wShape: [t.cout, t.c / t.g, t.k[0], t.k[1]],
    strideH: t.s[0], strideW: t.s[1], padH: t.p[0], padW: t.p[1], dilationH: t.d[0], dilationW: t.d[1],
  };
}

/** 3x3 stride-1 shapes for the Winograd path: odd sizes, paddings 0..3, channels off the vector width,
 * batch 1, maps smaller than a tile, several tile blocks, and small maps with many channels (one tile
 * block, output channels split across tasks). */
const WINOGRAD: ConvCase[] = [
  { n: 1, c: 3, h: 7, w: 9, cout: 5, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 2, c: 17, h: 13, w: 11, cout: 19, k: [3, 3], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 1, c: 16, h: 9, w: 10, cout: 33, k: [3, 3], s: [1, 1], p: [3, 3], d: [1, 1], g: 1 },
  { n: 3, c: 20, h: 4, w: 5, cout: 9, k: [3, 3], s: [1, 1], p: [0, 2], d: [1, 1], g: 1 },
  { n: 1, c: 7, h: 3, w: 3, cout: 3, k: [3, 3], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 2, c: 33, h: 1, w: 2, cout: 8, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 2, c: 40, h: 23, w: 29, cout: 150, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 4, c: 72, h: 7, w: 7, cout: 100, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 1, c: 300, h: 5, w: 6, cout: 20, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 3, c: 9, h: 35, w: 33, cout: 12, k: [3, 3], s: [1, 1], p: [2, 1], d: [1, 1], g: 1 },
  // More tiles than output channels in few tile blocks: the tiles stay in blocks and the output
  // channels split (wino_plan), V made once and shared.
  { n: 2, c: 48, h: 26, w: 26, cout: 56, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
];

function opts(t: ConvCase) {
  return { stride: t.s, padding: t.p, dilation: t.d, groups: t.g };
}

/** max |a - b| <= rel * max(1, max |b|) */
function expectNear(a: ArrayLike<number>, b: ArrayLike<number>, rel: number, what: string) {
  expect(a.length, what).toBe(b.length);
  let scale = 1, diff = 0, at = -1;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= diff)) { diff = d; at = i; }
  }
  if (!(diff <= rel * scale)) throw new Error(`${what}: max diff ${diff} at ${at} (${a[at]} vs ${b[at]}), tolerance ${rel * scale}`);
}

function params(t: ConvCase, seed: number) {
  const c = t.cout;
  return {
    weight: tensor(randomArray(sizes(t).w, seed, 0.3), [t.cout, t.c / t.g, t.k[0], t.k[1]]),
    bias: tensor(randomArray(c, seed + 1, 0.5), [c]),
    bn: {
      mean: tensor(randomArray(c, seed + 2, 0.5), [c]),
      var: tensor(randomArray(c, seed + 3, 0.3).map((v) => 0.5 + v * v), [c]),
      gamma: tensor(randomArray(c, seed + 4, 0.5, 1), [c]),
      beta: tensor(randomArray(c, seed + 5, 0.5), [c]),
      eps: 1e-3,
    },
  };
}

describe('conv kernels against the references', () => {
  it('the C++ reference matches a float64 JS convolution', () => {
    for (const t of AWKWARD.slice(0, 8)) {
      const s = sizes(t);
      const x = randomArray(s.x, 1), w = randomArray(s.w, 2), b = randomArray(t.cout, 3);
      const y = new Float32Array(s.y);
      native().convKernel({ ...geo(t), which: 'forward', reference: true, x, weight: w, bias: b, y });
      expectNear(y, conv64(t, x, w, b), 1e-6, `reference ${JSON.stringify(t)}`);
    }
  });

  it('forward, backward-data and backward-filter match the references in both layouts (active ISA)', () => {
    for (const [k, t] of AWKWARD.entries()) {
      const s = sizes(t);
      const x = randomArray(s.x, 10 + k), w = randomArray(s.w, 20 + k), b = randomArray(t.cout, 30 + k);
      const dy = randomArray(s.y, 40 + k);
      for (const layout of ['nchw', 'nhwc'] as const) {
        const run = (reference: boolean) => {
          const y = new Float32Array(s.y), dx = new Float32Array(s.x), dw = new Float32Array(s.w);
          native().convKernel({ ...geo(t, layout), which: 'forward', reference, x, weight: w, bias: b, y });
          native().convKernel({ ...geo(t, layout), which: 'backwardData', reference, dy, weight: w, dx });
          native().convKernel({ ...geo(t, layout), which: 'backwardFilter', reference, x, dy, weight: dw });
          return { y, dx, dw };
        };
        const f = run(false), r = run(true);
        const what = `${layout} ${JSON.stringify(t)}`;
        expectNear(f.y, r.y, forwardTolerance(t), `y ${what}`);
        expectNear(f.dx, r.dx, 2e-6, `dx ${what}`);
        expectNear(f.dw, r.dw, 2e-6, `dW ${what}`);
      }
    }
  });

  it('every supported ISA level (forced in a child process) matches the references', () => {
    const levels = supportedIsaLevels(info().cpu.level);
    for (const level of levels) {
      type R = { diff: number; scale: number };
      const out = runChild<{ level: string; tile: string; cases: Record<string, Record<string, R>>[] }>(
        'convbn-isa.cjs', level, { cases: AWKWARD });
      expect(out.level).toBe(level);
      expect(out.tile).toContain(level);
      out.cases.forEach((c, k) => {
        const f4 = takesWinograd4(AWKWARD[k]);
        const tol = (what: string) => (what.startsWith('tune') ? (f4 ? 4e-5 : 2e-5) : what === 'y' ? forwardTolerance(AWKWARD[k]) : 2e-6);
        for (const [layout, r] of Object.entries(c))
          for (const [what, d] of Object.entries(r))
            if (!(d.diff <= tol(what) * Math.max(1, d.scale)))
              throw new Error(`${level} ${layout} ${what} case ${k}: diff ${d.diff} (scale ${d.scale})`);
      });
    }
  });

  it('float16 and bfloat16 inputs are converted to float32 and the result rounded once', async () => {
    const t = AWKWARD[3];
    const s = sizes(t);
    const x = randomArray(s.x, 5), w = randomArray(s.w, 6);
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const xh = tensor(x, [t.n, t.c, t.h, t.w], { dtype });
      const y = await conv2d(xh, tensor(w, [t.cout, t.c / t.g, t.k[0], t.k[1]]), undefined, opts(t));
      expect(y.dtype).toBe(dtype);
      const ref = conv64(t, xh.float32Sync(), w);
      expectNear(y.float32Sync(), ref, dtype === 'float16' ? 1e-3 : 8e-3, dtype);
    }
  });

  it('half-precision NHWC gives the NCHW result bit for bit where both convert the same values (Winograd forward, Tune dx)', () => {
    // Winograd and backward take NHWC through layout conversions (blocked transposes, edges not a
    // multiple of the block): the same float32 values as NCHW, so the same rounded results.
    const t: ConvCase = { n: 2, c: 37, h: 11, w: 13, cout: 35, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 };
    const s = sizes(t);
    const x = randomArray(s.x, 15), w = randomArray(s.w, 16, 0.2), dy = randomArray(s.y, 17);
    const [oh, ow] = [t.h, t.w];
    const ch = (seed: number, off = 0) => tensor(randomArray(t.cout, seed, 0.3, off), [t.cout]);
    const p = { weight: tensor(w, [t.cout, t.c, 3, 3]), bn: { mean: ch(18), var: ch(19, 1), gamma: ch(20, 1), beta: ch(21) } };
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const xn = tensor(x, [t.n, t.c, t.h, t.w], { dtype }), xh = tensor(toNhwc(x, t.n, t.c, t.h, t.w), [t.n, t.h, t.w, t.c], { dtype });
      const a = convBnSync(xn, p, { padding: 1, saveForBackward: true });
      const b = convBnSync(xh, p, { padding: 1, layout: 'nhwc', saveForBackward: true });
      const bits = (u: Tensor) => u.dataSync() as Uint16Array;
      const nchwOf = (u: Tensor, c: number, h: number, ww: number) =>
        Uint16Array.from(toNchw(Float32Array.from(bits(u)), t.n, c, h, ww));
      expect(nchwOf(b.y, t.cout, oh, ow)).toEqual(bits(a.y));
      const dn = convBnBackwardSync(a.saved!, tensor(dy, [t.n, t.cout, oh, ow], { dtype }), { needs: { weight: false, bias: false, gamma: false, beta: false } });
      const dh = convBnBackwardSync(b.saved!, tensor(toNhwc(dy, t.n, t.cout, oh, ow), [t.n, oh, ow, t.cout], { dtype }),
        { needs: { weight: false, bias: false, gamma: false, beta: false } });
      expect(nchwOf(dh.dx!, t.c, t.h, t.w)).toEqual(bits(dn.dx!));
    }
  });
});

/** The Winograd forms, forced by XNORM_CONV_ALGO, and their error bounds (of max(1, max |y|)): y against
 * the float64 reference, against the GEMM, and Tune's y (folded BN) against the unfused float64 layer.
 * F(2x2): as the GEMM path, its transforms (coefficients 1 and 1/2) round a few more times per output;
 * measured at most 9e-7 on these shapes. F(4x4): its transforms scale by up to 8 (and 1/3, 1/15), so each
 * output carries about 10x the GEMM's rounding error, growing as sqrt(C): measured at most 2.6e-6 on these
 * shapes and 6.3e-6 on He-initialised 512-channel layers, the most it is chosen for (DESIGN.md, "Winograd
 * accuracy"); 1.5e-5 is about twice that. */
const WINOGRAD_FORMS = [
  { algo: 'winograd', name: 'F(2x2, 3x3)', y: 2e-6, gemm: 4e-6, tune: 1e-5, isaTune: 2e-5 },
  { algo: 'winograd4', name: 'F(4x4, 3x3)', y: 1.5e-5, gemm: 1.5e-5, tune: 3e-5, isaTune: 4e-5 },
] as const;

describe.each(WINOGRAD_FORMS)('Winograd $name forward', (form) => {
  it('matches the reference in both layouts, with bias (forced, active ISA)', async () => {
    for (const [k, t] of WINOGRAD.entries()) {
      const s = sizes(t);
      const x = randomArray(s.x, 50 + k), w = randomArray(s.w, 60 + k), b = randomArray(t.cout, 70 + k);
      for (const layout of ['nchw', 'nhwc'] as const) {
        const run = (reference: boolean) => {
          const y = new Float32Array(s.y);
          native().convKernel({ ...geo(t, layout), which: 'forward', reference, x, weight: w, bias: b, y });
          return y;
        };
        const fast = await withAlgo(form.algo, () => run(false));
        const gemm = await withAlgo('gemm', () => run(false));
        const what = `${layout} ${JSON.stringify(t)}`;
        expectNear(fast, run(true), form.y, `winograd y ${what}`);
        const y64 = conv64(t, layout === 'nchw' ? x : toNchw(x, t.n, t.c, t.h, t.w), w, b);
        expectNear(layout === 'nchw' ? fast : toNchw(fast, t.n, t.cout, s.oh, s.ow), y64, form.y, `winograd vs JS float64 ${what}`);
        // a different algorithm: close to the GEMM result but computed anew
        expectNear(fast, gemm, form.gemm, `winograd vs gemm ${what}`);
      }
    }
  });

  it('tune (ReLU on and off), eval and deploy match the unfused float64 layer; deploy = tune bit for bit', async () => {
    for (const [k, t] of WINOGRAD.entries()) {
      const p = params(t, 300 + k);
      const xv = randomArray(sizes(t).x, 400 + k);
      const x = tensor(xv, [t.n, t.c, t.h, t.w]);
      const bnv = {
        mean: p.bn.mean.dataSync() as Float32Array, var: p.bn.var.dataSync() as Float32Array,
        gamma: p.bn.gamma.dataSync() as Float32Array, beta: p.bn.beta.dataSync() as Float32Array, eps: p.bn.eps,
      };
      for (const activation of [null, 'relu'] as const) {
        const ref = convBn64(t, xv, p.weight.dataSync(), p.bias.dataSync(), bnv, activation === 'relu');
        const ys = await withAlgo(form.algo, async () => {
          const out: Float32Array[] = [];
          for (const mode of ['tune', 'eval', 'deploy'] as const) {
            const { y } = await convBn(x, p, { ...opts(t), mode, activation });
            expectNear(y.dataSync(), ref, form.tune, `${mode} ${activation} ${JSON.stringify(t)}`);
            out.push(y.dataSync() as Float32Array);
          }
          return out;
        });
        expect(ys[2]).toEqual(ys[0]);
      }
    }
  });

  it('float16 input: converted once, Winograd in float32, rounded once', async () => {
    for (const t of [WINOGRAD[1], WINOGRAD[7]]) {
      const s = sizes(t);
      const xh = tensor(randomArray(s.x, 8), [t.n, t.c, t.h, t.w], { dtype: 'float16' });
      const w = tensor(randomArray(s.w, 9), [t.cout, t.c, 3, 3]);
      const [y, y32] = await withAlgo(form.algo, async () => [
        await conv2d(xh, w, undefined, opts(t)), await conv2d(tensor(xh.float32Sync(), xh.shape), w, undefined, opts(t)),
      ]);
      expect(y.dtype).toBe('float16');
      expect(y.float32Sync()).toEqual(tensor(y32.dataSync() as Float32Array, y32.shape, { dtype: 'float16' }).float32Sync());
      expectNear(y.float32Sync(), conv64(t, xh.float32Sync(), w.dataSync()), 1e-3, `float16 ${JSON.stringify(t)}`);
    }
  });

  it('many tile blocks sharing one transformed U (large U, 16+ blocks on every ISA) match the reference', async () => {
    const t: ConvCase = { n: 2, c: 36, h: 78, w: 77, cout: 56, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 };
    const s = sizes(t);
    const x = randomArray(s.x, 80), w = randomArray(s.w, 81), b = randomArray(t.cout, 82);
    const y = new Float32Array(s.y);
    await withAlgo(form.algo, () => native().convKernel({ ...geo(t), which: 'forward', reference: false, x, weight: w, bias: b, y }));
    expectNear(y, conv64(t, x, w, b), form.y, 'many blocks');
  });

  it('every supported ISA level (forced in a child process) matches the references', () => {
    for (const level of supportedIsaLevels(info().cpu.level)) {
      type R = { diff: number; scale: number };
      const out = runChild<{ level: string; cases: Record<string, Record<string, R>>[] }>(
        'convbn-isa.cjs', level, { cases: WINOGRAD, algo: form.algo });
      expect(out.level).toBe(level);
      out.cases.forEach((c, k) => {
        for (const [layout, r] of Object.entries(c))
          for (const [what, d] of Object.entries(r))
            if (!(d.diff <= (what.startsWith('tune') ? form.isaTune : form.y) * Math.max(1, d.scale)))
              throw new Error(`${form.algo} ${level} ${layout} ${what} case ${k}: diff ${d.diff} (scale ${d.scale})`);
      });
    }
  });

  it('1 and 2 threads, sync and async: bit-identical (tile blocks and split output channels)', async () => {
    for (const t of [WINOGRAD[6], WINOGRAD[7]]) {
      const p = params(t, 5);
      const x = tensor(randomArray(sizes(t).x, 6), [t.n, t.c, t.h, t.w]);
      const o = { ...opts(t), activation: 'relu' as const };
      const ys = await withAlgo(form.algo, async () => {
        const out = [];
        for (const threads of [1, 2]) {
          setNumThreads(threads);
          out.push((await convBn(x, p, o)).y.dataSync(), convBnSync(x, p, o).y.dataSync());
        }
        setNumThreads(info().cpu.threads);
        return out;
      });
      for (const y of ys.slice(1)) expect(y).toEqual(ys[0]);
    }
  });
});

describe('Winograd path choice', () => {
  it('F(4x4) from 32 of its tiles (512 below 128 channels) and up to 512 channels, else F(2x2) from 32 of its tiles (a panel of the micro-kernel where that is narrower), else the GEMM', async () => {
    const big: ConvCase = { n: 1, c: 128, h: 28, w: 28, cout: 64, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 };
    // 72 -> 100 channels on 7x7 at batch 1: 16 F(2x2) tiles, a whole panel of a 16-wide micro-kernel (AVX2)
    const panel = Number(/x(\d+)/.exec(convKernelInfo())![1]);
    const cases: [ConvCase, 'gemm' | 'winograd' | 'winograd4'][] = [
      [big, 'winograd4'], [{ ...big, h: 24, w: 22 }, 'winograd4'], [{ ...big, h: 20, w: 22 }, 'winograd'], [{ ...big, c: 513 }, 'winograd'], [{ ...big, c: 31 }, 'gemm'],
      [{ ...big, c: 64 }, 'winograd'], [{ ...big, c: 64, n: 3, h: 60, w: 60 }, 'winograd4'], [{ ...big, c: 64, n: 2, h: 60, w: 60 }, 'winograd'],
      [WINOGRAD[6], 'winograd'], [WINOGRAD[7], 'winograd'], [{ ...WINOGRAD[7], n: 1 }, Math.min(32, panel) <= 16 ? 'winograd' : 'gemm'],
      [{ ...WINOGRAD[7], n: 1, h: 5, w: 5 }, 'gemm'], [WINOGRAD[1], 'gemm'], [AWKWARD[1], 'gemm'],
    ];
    for (const [t, chosen] of cases) {
      const s = sizes(t);
      const x = randomArray(s.x, 1), w = randomArray(s.w, 2);
      const run = () => {
        const y = new Float32Array(s.y);
        native().convKernel({ ...geo(t), which: 'forward', reference: false, x, weight: w, y });
        return y;
      };
      const auto = run();
      expect(auto, `${chosen} ${JSON.stringify(t)}`).toEqual(await withAlgo(chosen, run));
    }
  });
});

describe('Promise forms of tiny convs', () => {
  it('settle without a trip through the thread pool (up to 2^16 multiply-adds); larger ones go to it; same results', async () => {
    const tiny: ConvCase = { n: 1, c: 4, h: 5, w: 6, cout: 8, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 };  // 8640 MACs
    const large: ConvCase = { n: 2, c: 32, h: 16, w: 16, cout: 32, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 };
    for (const [t, atOnce] of [[tiny, true], [large, false]] as const) {
      const p = params(t, 7);
      const x = tensor(randomArray(sizes(t).x, 8), [t.n, t.c, t.h, t.w]);
      const o = { ...opts(t), activation: 'relu' as const };
      expect(await settlesAtOnce(conv2d(x, p.weight, p.bias, o)), `conv2d ${t.c}`).toBe(atOnce);
      for (const mode of ['tune', 'eval'] as const)
        expect(await settlesAtOnce(convBn(x, p, { ...o, mode })), `convBn ${mode} ${t.c}`).toBe(atOnce);
      expect((await conv2d(x, p.weight, p.bias, o)).dataSync()).toEqual(conv2dSync(x, p.weight, p.bias, o).dataSync());
      expect((await convBn(x, p, { ...o, mode: 'tune' })).y.dataSync()).toEqual(convBnSync(x, p, { ...o, mode: 'tune' }).y.dataSync());
    }
  });
});

describe('convBn modes', () => {
  for (const [k, t] of [AWKWARD[0], AWKWARD[1], AWKWARD[3], AWKWARD[4], AWKWARD[5], AWKWARD[6]].entries()) {
    it(`tune, eval and deploy agree with the unfused float64 layer (${JSON.stringify(t)})`, async () => {
      const p = params(t, 100 + k);
      const xv = randomArray(sizes(t).x, 200 + k);
      const x = tensor(xv, [t.n, t.c, t.h, t.w]);
      for (const activation of [null, 'relu'] as const) {
        const bnv = {
          mean: p.bn.mean.dataSync() as Float32Array, var: p.bn.var.dataSync() as Float32Array,
          gamma: p.bn.gamma.dataSync() as Float32Array, beta: p.bn.beta.dataSync() as Float32Array, eps: p.bn.eps,
        };
        const ref = convBn64(t, xv, p.weight.dataSync(), p.bias.dataSync(), bnv, activation === 'relu');
        const ys: Float32Array[] = [];
        for (const mode of ['tune', 'eval', 'deploy'] as const) {
          const { y } = await convBn(x, p, { ...opts(t), mode, activation });
          expectNear(y.dataSync(), ref, 1e-5, `${mode} ${activation}`);
          ys.push(y.dataSync() as Float32Array);
        }
        // Deploy runs the very conv Tune runs, with the same folded weights: identical bits.
        expect(ys[2]).toEqual(ys[0]);
      }
    });
  }

  // Deep layers on small maps (few pixels): Tune packs W * s per call straight from the weights, a K slice
  // at a time in channel blocks of 32 (partial blocks, slices across blocks, several 48-wide panels and a
  // partial one, groups); Deploy reads prepared panels of the folded weights in the same order. The 3x3
  // cases with >= 128 channels and few tiles run Winograd with the tiles as rows, Tune transforming W * s per
  // panel and K slice (one slice of 130 channels; 330 in two; odd maps, 48-wide panels and a partial one).
  it('few pixels, many channels: tune = deploy = prepared conv2d bit for bit, both layouts, 1 or 2 threads, sync or async', async () => {
    const cases: ConvCase[] = [
      { n: 1, c: 72, h: 7, w: 7, cout: 100, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
      { n: 1, c: 136, h: 4, w: 5, cout: 98, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 2 },
      { n: 2, c: 200, h: 4, w: 4, cout: 130, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
      { n: 1, c: 45, h: 6, w: 6, cout: 50, k: [2, 3], s: [2, 1], p: [1, 0], d: [1, 2], g: 1 },
      { n: 1, c: 130, h: 7, w: 9, cout: 140, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
      { n: 2, c: 330, h: 5, w: 4, cout: 150, k: [3, 3], s: [1, 1], p: [0, 2], d: [1, 1], g: 1 },
      // 1x1 on one NCHW image: the pixels-as-rows GEMM reads x as it is (no channels-last copy)
      { n: 1, c: 200, h: 7, w: 7, cout: 130, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 2 },
      { n: 1, c: 36, h: 3, w: 8, cout: 52, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 4 },
    ];
    for (const [k, t] of cases.entries()) {
      const p = params(t, 700 + k);
      const xv = randomArray(sizes(t).x, 800 + k);
      const s = sizes(t);
      const bnv = {
        mean: p.bn.mean.dataSync() as Float32Array, var: p.bn.var.dataSync() as Float32Array,
        gamma: p.bn.gamma.dataSync() as Float32Array, beta: p.bn.beta.dataSync() as Float32Array, eps: p.bn.eps,
      };
      const ref = convBn64(t, xv, p.weight.dataSync(), p.bias.dataSync(), bnv, true);
      const { weight: cw, bias } = foldConvBn(p, { prepare: true, groups: t.g });
      for (const layout of ['nchw', 'nhwc'] as const) {
        const x = layout === 'nchw' ? tensor(xv, [t.n, t.c, t.h, t.w]) : tensor(toNhwc(xv, t.n, t.c, t.h, t.w), [t.n, t.h, t.w, t.c]);
        const o = { ...opts(t), activation: 'relu' as const, layout };
        const nchw = (y: Tensor) => (layout === 'nchw' ? (y.dataSync() as Float32Array) : toNchw(y.dataSync(), t.n, t.cout, s.oh, s.ow));
        const ys: Float32Array[] = [];
        for (const threads of [1, 2]) {
          setNumThreads(threads);
          ys.push(nchw(convBnSync(x, p, o).y), nchw((await convBn(x, p, o)).y), nchw((await convBn(x, p, { ...o, mode: 'deploy' })).y),
            nchw(conv2dSync(x, cw, bias, o)));
        }
        setNumThreads(info().cpu.threads);
        expectNear(ys[0], ref, 1e-5, `tune ${layout} ${JSON.stringify(t)}`);
        for (const [i, y] of ys.entries()) expect(y, `${layout} case ${k} variant ${i}`).toEqual(ys[0]);
      }
      cw.dispose();
    }
  });

  it('float16 and bfloat16 activations run in float32 inside: Tune equals Tune on the decoded values', async () => {
    const t = AWKWARD[3];
    const p = params(t, 11);
    const s = sizes(t);
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const x = tensor(randomArray(s.x, 12), [t.n, t.c, t.h, t.w], { dtype });
      const dy = tensor(randomArray(s.y, 13), [t.n, t.cout, s.oh, s.ow], { dtype });
      const half = await convBn(x, p, { ...opts(t), activation: 'relu', saveForBackward: true });
      const full = await convBn(tensor(x.float32Sync(), x.shape), p, { ...opts(t), activation: 'relu', saveForBackward: true });
      expect(half.y.dtype).toBe(dtype);
      expect(half.saved!.bytes).toBe(s.x * 2 + t.cout * 4 + Math.ceil(s.y / 32) * 4);
      // y and dx are rounded once, at the end
      const round = tensor(full.y.dataSync() as Float32Array, full.y.shape, { dtype }).float32Sync();
      expect(half.y.float32Sync()).toEqual(round);
      const gh = await convBnBackward(half.saved!, dy);
      const gf = await convBnBackward(full.saved!, tensor(dy.float32Sync(), dy.shape));
      expect(gh.dx!.dtype).toBe(dtype);
      expect(gh.dx!.float32Sync()).toEqual(tensor(gf.dx!.dataSync() as Float32Array, gf.dx!.shape, { dtype }).float32Sync());
      for (const k of ['dWeight', 'dBias', 'dGamma', 'dBeta'] as const) expect(gh[k]!.dataSync()).toEqual(gf[k]!.dataSync());
      // Eval keeps its conv output z in the activation dtype, so it agrees only up to that rounding.
      const ev = await convBn(x, p, { ...opts(t), activation: 'relu', mode: 'eval' });
      expectNear(ev.y.float32Sync(), half.y.float32Sync(), dtype === 'float16' ? 4e-3 : 3e-2, `${dtype} eval y`);
    }
  });

  it('nhwc gives the nchw result transposed, forward and backward', async () => {
    const t = AWKWARD[3];
    const p = params(t, 7);
    const s = sizes(t);
    const xv = randomArray(s.x, 8), dyv = randomArray(s.y, 9);
    const a = await convBn(tensor(xv, [t.n, t.c, t.h, t.w]), p, { ...opts(t), activation: 'relu', saveForBackward: true });
    const b = await convBn(tensor(toNhwc(xv, t.n, t.c, t.h, t.w), [t.n, t.h, t.w, t.c]), p,
      { ...opts(t), activation: 'relu', layout: 'nhwc', saveForBackward: true });
    expect(b.y.shape).toEqual([t.n, s.oh, s.ow, t.cout]);
    expectNear(toNchw(b.y.dataSync(), t.n, t.cout, s.oh, s.ow), a.y.dataSync(), 1e-6, 'y');
    const ga = await convBnBackward(a.saved!, tensor(dyv, a.y.shape));
    const gb = await convBnBackward(b.saved!, tensor(toNhwc(dyv, t.n, t.cout, s.oh, s.ow), b.y.shape));
    expectNear(toNchw(gb.dx!.dataSync(), t.n, t.c, t.h, t.w), ga.dx!.dataSync(), 1e-6, 'dx');
    for (const k of ['dWeight', 'dBias', 'dGamma', 'dBeta'] as const) expectNear(gb[k]!.dataSync(), ga[k]!.dataSync(), 1e-6, k);
  });

  it('foldConvBn gives W*s and (b - mean)*s + beta; missing bias/gamma/beta are 0/1/0', () => {
    const w = tensor([1, 2, 3, 4], [2, 2, 1, 1]);
    const f = foldConvBn({ weight: w, bn: { mean: tensor([1, -1], [2]), var: tensor([3, 0], [2]), eps: 1 } });
    expect(Array.from(f.weight.dataSync())).toEqual([0.5, 1, 3, 4]);
    expect(Array.from(f.bias.dataSync())).toEqual([-0.5, 1]);
    const g = foldConvBn({ weight: w, bias: tensor([2, 2], [2]), bn: { mean: tensor([1, -1], [2]), var: tensor([3, 0], [2]), gamma: tensor([2, 1], [2]), beta: tensor([1, 0], [2]), eps: 1 } });
    expect(Array.from(g.weight.dataSync())).toEqual([1, 2, 3, 4]);
    expect(Array.from(g.bias.dataSync())).toEqual([2, 3]);
  });

  it('sync and async forms, and 1 vs 2 threads, give bit-identical results', async () => {
    const t = AWKWARD[9];
    const p = params(t, 3);
    const s = sizes(t);
    const x = tensor(randomArray(s.x, 4), [t.n, t.c, t.h, t.w]);
    const dy = tensor(randomArray(s.y, 5), [t.n, t.cout, s.oh, s.ow]);
    const o = { ...opts(t), activation: 'relu' as const, saveForBackward: true };
    const results = [];
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      const a = await convBn(x, p, o);
      const b = convBnSync(x, p, o);
      expect(b.y.dataSync()).toEqual(a.y.dataSync());
      const ga = await convBnBackward(a.saved!, dy), gb = convBnBackwardSync(b.saved!, dy);
      for (const k of ['dx', 'dWeight', 'dBias', 'dGamma', 'dBeta'] as const) expect(gb[k]!.dataSync()).toEqual(ga[k]!.dataSync());
      results.push({ y: a.y.dataSync(), g: ga });
    }
    setNumThreads(info().cpu.threads);
    expect(results[1].y).toEqual(results[0].y);
    for (const k of ['dx', 'dWeight', 'dBias', 'dGamma', 'dBeta'] as const)
      expect(results[1].g[k]!.dataSync()).toEqual(results[0].g[k]!.dataSync());
    const c2 = await conv2d(x, p.weight, p.bias, opts(t));
    expect(conv2dSync(x, p.weight, p.bias, opts(t)).dataSync()).toEqual(c2.dataSync());
  });
});

describe('saved state', () => {
  const t = AWKWARD[0];
  const s = sizes(t);
  const x = tensor(randomArray(s.x, 1), [t.n, t.c, t.h, t.w]);
  const dy = tensor(randomArray(s.y, 2), [t.n, t.cout, s.oh, s.ow]);

  it('Tune keeps x and s (+1 bit per output with ReLU); Eval keeps x and z (+y)', async () => {
    const p = params(t, 1);
    const tune = await convBn(x, p, { ...opts(t), saveForBackward: true });
    expect(tune.saved!.bytes).toBe(s.x * 4 + t.cout * 4);
    const tuneRelu = await convBn(x, p, { ...opts(t), activation: 'relu', saveForBackward: true });
    expect(tuneRelu.saved!.bytes).toBe(s.x * 4 + t.cout * 4 + Math.ceil(s.y / 32) * 4);
    const ev = await convBn(x, p, { ...opts(t), mode: 'eval', activation: 'relu', saveForBackward: true });
    expect(ev.saved!.bytes).toBe(s.x * 4 + 2 * s.y * 4);
    expect((await convBn(x, p, opts(t))).saved).toBeUndefined();
  });

  it('a disposed saved state throws ERR_XNORM_DISPOSED; a foreign object ERR_XNORM_ARGUMENT', async () => {
    const p = params(t, 1);
    const { saved } = await convBn(x, p, { ...opts(t), saveForBackward: true });
    saved!.dispose();
    saved!.dispose();
    expect(saved!.disposed).toBe(true);
    expect(saved!.bytes).toBe(0);
    await expect(convBnBackward(saved!, dy)).rejects.toMatchObject({ code: 'ERR_XNORM_DISPOSED' });
    expect(() => convBnBackwardSync(saved!, dy)).toThrow(expect.objectContaining({ code: 'ERR_XNORM_DISPOSED' }));
    for (const bad of [{}, null, Object.create(ConvBnSaved.prototype), x])
      await expect(convBnBackward(bad as ConvBnSaved, dy)).rejects.toMatchObject({ code: 'ERR_XNORM_ARGUMENT' });
    {
      using scoped = (await convBn(x, p, { ...opts(t), saveForBackward: true })).saved!;
      expect(scoped.bytes).toBeGreaterThan(0);
    }
  });

  it('needs masks return only what was asked for, with the same values', async () => {
    const p = params(t, 1);
    const { saved } = await convBn(x, p, { ...opts(t), activation: 'relu', saveForBackward: true });
    const all = await convBnBackward(saved!, dy);
    const some = await convBnBackward(saved!, dy, { needs: { x: false, weight: false, beta: false } });
    expect(Object.keys(some).sort()).toEqual(['dBias', 'dGamma']);
    expect(some.dGamma!.dataSync()).toEqual(all.dGamma!.dataSync());
    expect(some.dBias!.dataSync()).toEqual(all.dBias!.dataSync());
    const onlyX = await convBnBackward(saved!, dy, { needs: { weight: false, bias: false, gamma: false, beta: false } });
    expect(Object.keys(onlyX)).toEqual(['dx']);
    expect(onlyX.dx!.dataSync()).toEqual(all.dx!.dataSync());
  });
});

describe('bad input', () => {
  const x = tensor(new Float32Array(2 * 4 * 5 * 5), [2, 4, 5, 5]);
  const w = tensor(new Float32Array(6 * 4 * 3 * 3), [6, 4, 3, 3]);
  const bn = { mean: tensor(new Float32Array(6), [6]), var: tensor(new Float32Array(6).fill(1), [6]) };
  const code = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      expect(e).toBeInstanceOf(XnormError);
      return (e as XnormError).code;
    }
    return 'resolved';
  };

  it('rejects bad shapes, strides and channels with XnormError codes', async () => {
    expect(await code(convBn(x, { weight: tensor(new Float32Array(6 * 3 * 9), [6, 3, 3, 3]), bn }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: w, bn }, { groups: 3 }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: tensor(new Float32Array(6 * 4 * 9), [6, 4, 3, 3]), bn }, { groups: 2 }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: tensor(new Float32Array(5 * 2 * 9), [5, 2, 3, 3]), bn }, { groups: 2 }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: tensor(new Float32Array(6 * 4 * 49), [6, 4, 7, 7]), bn }))).toBe('ERR_XNORM_SHAPE');
    expect((await convBn(x, { weight: tensor(new Float32Array(6 * 4 * 49), [6, 4, 7, 7]), bn }, { padding: 1 })).y.shape).toEqual([2, 6, 1, 1]);
    expect(await code(convBn(x, { weight: tensor(new Float32Array(6 * 4 * 49), [6, 4, 7, 7]), bn }, { padding: 1, dilation: [1, 2] }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: w, bn }, { stride: 0 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { stride: [1, -2] }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { padding: -1 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { dilation: 0.5 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { groups: 0 }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { mode: 'train' as 'tune' }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { activation: 'gelu' as 'relu' }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn }, { mode: 'deploy', saveForBackward: true }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(x, { weight: w, bn: { ...bn, mean: tensor([0, 0], [2]) } }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(x, { weight: w, bn: { ...bn, var: tensor(new Float32Array(6).fill(-1), [6]) } }))).toBe('ERR_XNORM_ARGUMENT');
    expect(await code(convBn(tensor([1, 2], [2]), { weight: w, bn }))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBn(tensor(new Int32Array(100), [1, 4, 5, 5], { dtype: 'int32' }), { weight: w, bn }))).toBe('ERR_XNORM_DTYPE');
    expect(await code(convBn(x, undefined as never))).toBe('ERR_XNORM_ARGUMENT');
    const disposed = tensor(new Float32Array(100), [1, 4, 5, 5]);
    disposed.dispose();
    expect(await code(convBn(disposed, { weight: w, bn }))).toBe('ERR_XNORM_DISPOSED');
  });

  it('rejects a shape whose output or im2col size overflows', async () => {
    // A view-free way to get a huge logical shape: a 1-element weight with an enormous kernel would need
    // the data, so instead ask the native layer directly, which re-checks everything lib/ checks.
    const huge = { ...geo({ n: 2 ** 20, c: 2 ** 12, h: 2 ** 12, w: 2 ** 12, cout: 1, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 }) };
    expect(() => raw().conv2d({ ...huge, x: new Float32Array(1), weight: new Float32Array(4096), y: new Float32Array(1) }))
      .toThrow(expect.objectContaining({ code: 'ERR_XNORM_SHAPE' }));
    const wide = geo({ n: 1, c: 1, h: 1, w: 1, cout: 1, k: [1, 1], s: [1, 1], p: [2 ** 30, 2 ** 30], d: [1, 1], g: 1 });
    expect(() => raw().conv2d({ ...wide, x: new Float32Array(1), weight: new Float32Array(1), y: new Float32Array(1) }))
      .toThrow(expect.objectContaining({ code: 'ERR_XNORM_SHAPE' }));
  });

  it('the native layer re-checks buffer lengths, kinds and strides', () => {
    const g = geo({ n: 1, c: 2, h: 4, w: 4, cout: 3, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 });
    const ok = { ...g, x: new Float32Array(32), weight: new Float32Array(54), y: new Float32Array(48) };
    expect(() => raw().conv2d(ok)).not.toThrow();
    expect(() => raw().conv2d({ ...ok, y: new Float32Array(47) })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_SHAPE' }));
    expect(() => raw().conv2d({ ...ok, x: new Float64Array(32) })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_DTYPE' }));
    expect(() => raw().conv2d({ ...ok, strideH: 0 })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_ARGUMENT' }));
    expect(() => raw().conv2d({ ...ok, groups: 2 })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_SHAPE' }));
    const bnArgs = { mean: new Float32Array(3), var: new Float32Array(3).fill(1), eps: 1e-5 };
    // The saved state is a native object made from the forward's arguments, checked then; backward takes it as is.
    const saved = raw().convBnSaved({ ...ok, ...bnArgs, mode: 'tune', relu: true });
    expect(() => raw().convBnBackward({ saved, dy: new Float32Array(48) })).not.toThrow();
    expect(() => raw().convBnBackward({ saved, dy: new Float32Array(47) })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_SHAPE' }));
    expect(() => raw().convBnBackward({ saved: { s: new Float32Array(3) }, dy: new Float32Array(48) }))
      .toThrow(expect.objectContaining({ code: 'ERR_XNORM_ARGUMENT' }));
    expect(() => raw().convBnForward({ ...ok, ...bnArgs, mode: 'eval', saved })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_ARGUMENT' }));
    raw().releaseSaved({ saved });
    expect(() => raw().convBnBackward({ saved, dy: new Float32Array(48) })).toThrow(expect.objectContaining({ code: 'ERR_XNORM_DISPOSED' }));
  });

  it('rejects a dy of the wrong shape or dtype', async () => {
    const { saved } = await convBn(x, { weight: w, bn }, { padding: 1, saveForBackward: true });
    expect(await code(convBnBackward(saved!, tensor(new Float32Array(10), [10])))).toBe('ERR_XNORM_SHAPE');
    expect(await code(convBnBackward(saved!, tensor(new Float32Array(300), [2, 6, 5, 5], { dtype: 'float16' })))).toBe('ERR_XNORM_DTYPE');
    expect(await code(convBnBackward(saved!, tensor(new Float32Array(300), [2, 6, 5, 5]), { needs: { x: 1 as unknown as boolean } }))).toBe('ERR_XNORM_ARGUMENT');
    expect(Tensor).toBeDefined();
  });
});
