// Float64 JavaScript references for the Conv + BN tests: convolution (NCHW), the folded-free
// conv -> BN -> ReLU forward, and layout helpers. Written from the definitions, independent of the C++.

export interface ConvCase {
  n: number;
  c: number;
  h: number;
  w: number;
  cout: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
  d: [number, number];
  g: number;
}

export function outSize(t: ConvCase): [number, number] {
  const oh = Math.floor((t.h + 2 * t.p[0] - (t.k[0] - 1) * t.d[0] - 1) / t.s[0]) + 1;
  const ow = Math.floor((t.w + 2 * t.p[1] - (t.k[1] - 1) * t.d[1] - 1) / t.s[1]) + 1;
  return [oh, ow];
}

export function sizes(t: ConvCase) {
  const [oh, ow] = outSize(t);
  return { oh, ow, x: t.n * t.c * t.h * t.w, w: t.cout * (t.c / t.g) * t.k[0] * t.k[1], y: t.n * t.cout * oh * ow };
}

/** Calls fn(xi, wi, yi) for every tap of the conv (NCHW indices of x, w and y), skipping padding. */
export function forEachTap(t: ConvCase, fn: (xi: number, wi: number, yi: number) => void): void {
  const [oh, ow] = outSize(t);
  const cg = t.c / t.g, og = t.cout / t.g, [kh, kw] = t.k;
  for (let n = 0; n < t.n; n++)
    for (let co = 0; co < t.cout; co++) {
      const gr = Math.floor(co / og);
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          const yi = ((n * t.cout + co) * oh + oy) * ow + ox;
          for (let ci = 0; ci < cg; ci++)
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * t.s[0] - t.p[0] + ky * t.d[0];
              if (iy < 0 || iy >= t.h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * t.s[1] - t.p[1] + kx * t.d[1];
                if (ix < 0 || ix >= t.w) continue;
                fn(((n * t.c + gr * cg + ci) * t.h + iy) * t.w + ix, ((co * cg + ci) * kh + ky) * kw + kx, yi);
              }
            }
        }
    }
}

/** y[n, co, oy, ox] = b[co] + sum over the group's taps of x * w, in float64 (NCHW). */
export function conv64(t: ConvCase, x: ArrayLike<number>, w: ArrayLike<number>, b?: ArrayLike<number>): Float64Array {
  const [oh, ow] = outSize(t);
  const y = new Float64Array(t.n * t.cout * oh * ow);
  if (b) for (let i = 0; i < y.length; i++) y[i] = b[Math.floor(i / (oh * ow)) % t.cout];
  forEachTap(t, (xi, wi, yi) => { y[yi] += x[xi] * w[wi]; });
  return y;
}

export interface Bn64 {
  mean: ArrayLike<number>;
  var: ArrayLike<number>;
  gamma: ArrayLike<number>;
  beta: ArrayLike<number>;
  eps: number;
}

/** relu?(BN_eval(conv(x, w) + b)) in float64, NCHW: the unfused definition of the layer. */
export function convBn64(t: ConvCase, x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, bn: Bn64, relu: boolean): Float64Array {
  const z = conv64(t, x, w, b);
  const per = z.length / (t.n * t.cout);
  for (let i = 0; i < z.length; i++) {
    const co = Math.floor(i / per) % t.cout;
    const v = ((z[i] - bn.mean[co]) / Math.sqrt(bn.var[co] + bn.eps)) * bn.gamma[co] + bn.beta[co];
    z[i] = relu && v < 0 ? 0 : v;
  }
  return z;
}

/** NCHW <-> NHWC for an [n, c, h, w] tensor. */
export function toNhwc(a: ArrayLike<number>, n: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) out[(i * h * w + p) * c + ch] = a[(i * c + ch) * h * w + p];
  return out;
}

export function toNchw(a: ArrayLike<number>, n: number, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) out[(i * c + ch) * h * w + p] = a[(i * h * w + p) * c + ch];
  return out;
}

/** The awkward shapes every path is tested on. */
/** Whether the forward of t takes Winograd F(4x4, 3x3) (algorithm.cc's rule; 'Winograd path choice' in
 * convbn.test.ts pins it). */
export function takesWinograd4(t: ConvCase): boolean {
  const [oh, ow] = outSize(t), tiles4 = t.n * Math.ceil(oh / 4) * Math.ceil(ow / 4);
  return t.k[0] === 3 && t.k[1] === 3 && t.s[0] === 1 && t.s[1] === 1 && t.d[0] === 1 && t.d[1] === 1 && t.g === 1 &&
    t.c >= 32 && t.c <= 512 && t.cout >= 32 && tiles4 >= 32 && (t.c >= 128 || tiles4 >= 512);
}

/** The forward error the tests allow of the automatically chosen path, of max(1, max |y|): 2e-6, or
 * F(4x4)'s 1.5e-5 (convbn.test.ts, WINOGRAD_FORMS; DESIGN.md "Winograd accuracy"). */
export function forwardTolerance(t: ConvCase): number {
  return takesWinograd4(t) ? 1.5e-5 : 2e-6;
}

export const AWKWARD: ConvCase[] = [
  { n: 1, c: 3, h: 7, w: 9, cout: 5, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 2, c: 17, h: 13, w: 11, cout: 19, k: [3, 3], s: [2, 2], p: [0, 0], d: [1, 1], g: 1 },
  { n: 1, c: 16, h: 9, w: 10, cout: 33, k: [3, 3], s: [1, 1], p: [3, 3], d: [2, 2], g: 1 },
  { n: 2, c: 6, h: 8, w: 7, cout: 10, k: [3, 3], s: [1, 2], p: [1, 0], d: [1, 1], g: 2 },
  { n: 2, c: 8, h: 10, w: 10, cout: 8, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 8 },
  { n: 1, c: 5, h: 9, w: 8, cout: 10, k: [5, 5], s: [1, 1], p: [2, 2], d: [1, 1], g: 5 },
  // depthwise with one output per input channel (NCHW: channels interleaved in vector lanes): partial
  // blocks of channels, dilation, an uneven kernel, stride 2 with more than 16 pixels, a wide map,
  { n: 2, c: 37, h: 7, w: 7, cout: 37, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 37 },
  { n: 1, c: 20, h: 9, w: 6, cout: 20, k: [5, 3], s: [1, 1], p: [2, 0], d: [2, 1], g: 20 },
  { n: 2, c: 18, h: 15, w: 14, cout: 18, k: [3, 3], s: [2, 2], p: [0, 1], d: [1, 1], g: 18 },
  { n: 1, c: 19, h: 20, w: 35, cout: 19, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 19 },
  // ... and maps large enough that the rows are split into bands (stride 1 with dilation, stride 2)
  { n: 1, c: 17, h: 50, w: 47, cout: 17, k: [3, 3], s: [1, 1], p: [2, 1], d: [2, 1], g: 17 },
  { n: 1, c: 5, h: 99, w: 90, cout: 5, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 5 },
  { n: 3, c: 35, h: 6, w: 7, cout: 70, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 2, c: 20, h: 9, w: 9, cout: 30, k: [1, 1], s: [2, 2], p: [0, 0], d: [1, 1], g: 1 },
  // grouped 1x1: channels-last backward runs it on NHWC as it is, one GEMM (and epilogue) per group
  { n: 2, c: 12, h: 5, w: 6, cout: 18, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 3 },
  { n: 1, c: 300, h: 5, w: 5, cout: 20, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 2, c: 40, h: 23, w: 29, cout: 150, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 1, c: 4, h: 5, w: 5, cout: 3, k: [5, 5], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 2, c: 3, h: 8, w: 8, cout: 4, k: [2, 3], s: [3, 1], p: [3, 1], d: [1, 3], g: 1 },
  // >= 1024 output pixels per image: the per-image GEMM paths rather than the batch-spanning ones
  { n: 2, c: 5, h: 33, w: 32, cout: 7, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 1 },
  { n: 2, c: 6, h: 32, w: 33, cout: 9, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1], g: 1 },
  { n: 2, c: 4, h: 34, w: 31, cout: 6, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 2 },
  // depthwise with channel multipliers (channels-last passes on rows expanded per band of 16
  // output rows): 8 with stride 2, 3 with output rows that read no input row, 2 over three bands, 5
  // (the expansion's loop for a multiplier without a fixed-count copy)
  { n: 2, c: 3, h: 9, w: 11, cout: 24, k: [3, 3], s: [2, 2], p: [1, 1], d: [1, 1], g: 3 },
  { n: 1, c: 7, h: 4, w: 5, cout: 21, k: [1, 3], s: [1, 1], p: [2, 1], d: [1, 1], g: 7 },
  { n: 2, c: 4, h: 37, w: 6, cout: 8, k: [3, 3], s: [1, 1], p: [1, 1], d: [2, 1], g: 4 },
  { n: 1, c: 2, h: 5, w: 6, cout: 10, k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], g: 2 },
];
