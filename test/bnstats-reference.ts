// Plain float64 references for the BN-statistic ops (two passes, no tricks).
export type Layout = 'nchw' | 'nhwc';
export type Over = 'channel' | 'instance' | 'group';

export function geometry(shape: readonly number[], layout: Layout) {
  const n = shape[0];
  const c = layout === 'nchw' ? shape[1] : shape[shape.length - 1];
  const s = shape.reduce((a, b) => a * b, 1) / (n * c);
  return { n, c, s };
}

export function index(layout: Layout, g: { n: number; c: number; s: number }, n: number, c: number, s: number): number {
  return layout === 'nchw' ? (n * g.c + c) * g.s + s : (n * g.s + s) * g.c + c;
}

export function refMoments(x: ArrayLike<number>, shape: readonly number[], layout: Layout, over: Over, groups = 1) {
  const g = geometry(shape, layout);
  const slot = (n: number, c: number) =>
    over === 'channel' ? c : over === 'instance' ? n * g.c + c : n * groups + Math.floor(c / (g.c / groups));
  const slots = over === 'channel' ? g.c : over === 'instance' ? g.n * g.c : g.n * groups;
  const sum = new Float64Array(slots);
  const cnt = new Float64Array(slots);
  for (let n = 0; n < g.n; n++)
    for (let c = 0; c < g.c; c++)
      for (let s = 0; s < g.s; s++) {
        sum[slot(n, c)] += x[index(layout, g, n, c, s)];
        cnt[slot(n, c)]++;
      }
  const mean = sum.map((v, i) => v / cnt[i]);
  const m2 = new Float64Array(slots);
  for (let n = 0; n < g.n; n++)
    for (let c = 0; c < g.c; c++)
      for (let s = 0; s < g.s; s++) {
        const d = x[index(layout, g, n, c, s)] - mean[slot(n, c)];
        m2[slot(n, c)] += d * d;
      }
  return { count: cnt[0], mean, m2 };
}

export function refBatchNorm(
  x: ArrayLike<number>,
  shape: readonly number[],
  layout: Layout,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  eps: number,
  relu: boolean,
): Float64Array {
  const g = geometry(shape, layout);
  const y = new Float64Array(x.length);
  for (let n = 0; n < g.n; n++)
    for (let c = 0; c < g.c; c++)
      for (let s = 0; s < g.s; s++) {
        const i = index(layout, g, n, c, s);
        const v = ((x[i] - mean[c]) / Math.sqrt(variance[c] + eps)) * gamma[c] + beta[c];
        y[i] = relu ? Math.max(0, v) : v;
      }
  return y;
}
