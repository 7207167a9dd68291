// Small pieces the xnorm ops do not cover, in plain TypeScript: max pooling, a dense layer, softmax
// cross-entropy, Adam, and table printing.
import { rng } from './data';

/** Uniform values in [-a, a] from a seed. */
export function uniform(n: number, a: number, seed: number): Float32Array {
  const u = rng(seed);
  return Float32Array.from({ length: n }, () => (2 * u() - 1) * a);
}

export class Adam {
  private m: Float32Array[];
  private v: Float32Array[];
  private t = 0;
  constructor(
    readonly params: Float32Array[],
    public lr: number,
    private readonly b1 = 0.9,
    private readonly b2 = 0.999,
  ) {
    this.m = params.map((p) => new Float32Array(p.length));
    this.v = params.map((p) => new Float32Array(p.length));
  }
  step(grads: ArrayLike<number>[]): void {
    this.t++;
    const c1 = 1 - this.b1 ** this.t, c2 = 1 - this.b2 ** this.t;
    this.params.forEach((p, k) => {
      const g = grads[k], m = this.m[k], v = this.v[k];
      for (let i = 0; i < p.length; i++) {
        m[i] = this.b1 * m[i] + (1 - this.b1) * g[i];
        v[i] = this.b2 * v[i] + (1 - this.b2) * g[i] * g[i];
        p[i] -= (this.lr * m[i]) / c1 / (Math.sqrt(v[i] / c2) + 1e-8);
      }
    });
  }
}

/** 2x2 max pooling, stride 2, NCHW (H, W even); idx holds each output's source offset for backward. */
export function maxPool2(x: ArrayLike<number>, n: number, c: number, h: number, w: number) {
  const oh = h / 2, ow = w / 2;
  const y = new Float32Array(n * c * oh * ow);
  const idx = new Int32Array(y.length);
  let o = 0;
  for (let p = 0; p < n * c; p++)
    for (let r = 0; r < oh; r++)
      for (let q = 0; q < ow; q++, o++) {
        let best = p * h * w + 2 * r * w + 2 * q;
        for (const off of [1, w, w + 1]) if (x[p * h * w + 2 * r * w + 2 * q + off] > x[best]) best = p * h * w + 2 * r * w + 2 * q + off;
        y[o] = x[best];
        idx[o] = best;
      }
  return { y, idx };
}

export function maxPool2Backward(dy: ArrayLike<number>, idx: Int32Array, inputSize: number): Float32Array {
  const dx = new Float32Array(inputSize);
  for (let o = 0; o < idx.length; o++) dx[idx[o]] += dy[o];
  return dx;
}

/** logits[n, m] = x[n, :]·w[m, :] + b[m] */
export function dense(x: ArrayLike<number>, n: number, k: number, w: Float32Array, b: Float32Array, m: number): Float32Array {
  const out = new Float32Array(n * m);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < m; j++) {
      let s = b[j];
      for (let t = 0; t < k; t++) s += x[i * k + t] * w[j * k + t];
      out[i * m + j] = s;
    }
  return out;
}

export function denseBackward(x: ArrayLike<number>, dOut: Float32Array, w: Float32Array, n: number, k: number, m: number) {
  const dx = new Float32Array(n * k), dw = new Float32Array(m * k), db = new Float32Array(m);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < m; j++) {
      const g = dOut[i * m + j];
      if (g === 0) continue;
      db[j] += g;
      for (let t = 0; t < k; t++) {
        dx[i * k + t] += g * w[j * k + t];
        dw[j * k + t] += g * x[i * k + t];
      }
    }
  return { dx, dw, db };
}

/** Mean softmax cross-entropy over the batch, its gradient on the logits, and the correct count. */
export function softmaxCrossEntropy(logits: Float32Array, labels: ArrayLike<number>, n: number, m: number) {
  const grad = new Float32Array(n * m);
  let loss = 0, correct = 0;
  for (let i = 0; i < n; i++) {
    const row = logits.subarray(i * m, (i + 1) * m);
    let mx = -Infinity, arg = 0;
    for (let j = 0; j < m; j++) if (row[j] > mx) (mx = row[j]), (arg = j);
    let z = 0;
    for (let j = 0; j < m; j++) z += Math.exp(row[j] - mx);
    loss += Math.log(z) + mx - row[labels[i]];
    if (arg === labels[i]) correct++;
    for (let j = 0; j < m; j++) grad[i * m + j] = (Math.exp(row[j] - mx) / z - (j === labels[i] ? 1 : 0)) / n;
  }
  return { loss: loss / n, grad, correct };
}

/** Index of the largest value per row (the first on ties). */
export function argmax(v: ArrayLike<number>, n: number, m: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < m; j++) if (v[i * m + j] > v[i * m + best]) best = j;
    out[i] = best;
  }
  return out;
}

export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const width = header.map((_, c) => Math.max(...cells.map((r) => r[c].length)));
  const line = (r: string[]) => `| ${r.map((v, c) => v.padEnd(width[c])).join(' | ')} |`;
  return [line(cells[0]), `|${width.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

export const pct = (v: number) => `${(100 * v).toFixed(1)} %`;

export function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
