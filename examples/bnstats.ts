// BN statistics: moments over a batch, merging two workers' moments, running statistics,
// test-time mixing, and BN apply.
import {
  batchNorm,
  mergeMoments,
  mixStats,
  moments,
  tensor,
  updateRunningStats,
  variance,
} from '../lib';

function fill(n: number, offset: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = offset + (s / 2 ** 32 - 0.5) * 2;
  }
  return x;
}

const fmt = (t: { dataSync(): ArrayLike<number> }) => Array.from(t.dataSync(), (v) => v.toFixed(4)).join(', ');

export async function main(): Promise<void> {
  // Two "workers" each see half of a batch of 8 NCHW images with 3 channels and a large offset.
  const a = tensor(fill(4 * 3 * 32 * 32, 1000, 1), [4, 3, 32, 32]);
  const b = tensor(fill(4 * 3 * 32 * 32, 1000, 2), [4, 3, 32, 32]);
  let t0 = performance.now();
  const [ma, mb] = await Promise.all([moments(a), moments(b)]);
  const merged = mergeMoments(ma, mb);
  console.log(`moments of two half-batches, merged (${(performance.now() - t0).toFixed(2)} ms): count ${merged.count}`);
  console.log(`  mean     [${fmt(merged.mean)}]`);
  console.log(`  variance [${fmt(variance(merged))}]`);

  // Running statistics, as PyTorch's BatchNorm2d keeps them in training mode.
  const running = updateRunningStats({ mean: tensor([1000, 1000, 1000], [3]), var: tensor([1, 1, 1], [3]) }, merged, { momentum: 0.1 });
  console.log(`  running mean [${fmt(running.mean)}], running var [${fmt(running.var)}]`);

  // Test-time adaptation: mix the source statistics with the target batch (alpha-BN / TTN).
  const mixed = mixStats(running, ma, { sourceWeight: 0.7, crossTerm: true });
  t0 = performance.now();
  const y = await batchNorm(a, mixed, { eps: 1e-5, activation: 'relu' });
  console.log(`batchNorm with mixed statistics + ReLU (${(performance.now() - t0).toFixed(2)} ms): y[0..3] = ${Array.from(y.dataSync().slice(0, 4), (v) => v.toFixed(4)).join(', ')}`);
}
