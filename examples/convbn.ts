// Fused Conv + BatchNorm: fine-tune a conv layer with frozen BN statistics (Tune mode), compare with
// the unfused Eval mode, then fold the BN into the weights once for deployment.
import { convBn, convBnBackward, foldConvBn, conv2d, tensor } from '../lib';

function fill(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const x = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = offset + scale * (s / 2 ** 32 - 0.5) * 2;
  }
  return x;
}

const ms = (t0: number) => `${(performance.now() - t0).toFixed(2)} ms`;

export async function main(): Promise<void> {
  // A ResNet-style 3x3 layer: 32 -> 64 channels on a batch of 4 images of 28x28.
  const [N, C, H, W, COUT] = [4, 32, 28, 28, 64];
  const x = tensor(fill(N * C * H * W, 1), [N, C, H, W]);
  const params = {
    weight: tensor(fill(COUT * C * 9, 2, 0.1), [COUT, C, 3, 3]),
    bias: tensor(fill(COUT, 3, 0.1), [COUT]),
    bn: {
      mean: tensor(fill(COUT, 4, 0.2), [COUT]),
      var: tensor(fill(COUT, 5, 0.3, 1), [COUT]),
      gamma: tensor(fill(COUT, 6, 0.2, 1), [COUT]),
      beta: tensor(fill(COUT, 7, 0.1), [COUT]),
      eps: 1e-5,
    },
  };
  const opts = { padding: 1, activation: 'relu' as const };

  await convBn(x, params, opts);  // warm-up: the first call starts the thread pool

  // Tune mode: BN folded into the conv on every call; keeps only x and the per-channel scale (+ a 1-bit
  // ReLU mask) for backward.
  let t0 = performance.now();
  const tune = await convBn(x, params, { ...opts, saveForBackward: true });
  console.log(`tune forward   ${tune.y.shape.join('x')} in ${ms(t0)}; saved ${(tune.saved!.bytes / 1024).toFixed(0)} KiB`);
  const dy = tensor(fill(tune.y.size, 8), tune.y.shape);
  t0 = performance.now();
  const g = await convBnBackward(tune.saved!, dy);
  console.log(`tune backward  in ${ms(t0)}: dx ${g.dx!.shape.join('x')}, dWeight ${g.dWeight!.shape.join('x')}, ` +
    `dGamma[0..2] = ${Array.from(g.dGamma!.dataSync().slice(0, 3), (v) => v.toFixed(3)).join(', ')}`);
  tune.saved!.dispose();

  // Eval mode: conv, then a separate BN pass, as frameworks run it; same values, more state kept.
  t0 = performance.now();
  const ev = await convBn(x, params, { ...opts, mode: 'eval', saveForBackward: true });
  console.log(`eval forward   in ${ms(t0)}; saved ${(ev.saved!.bytes / 1024).toFixed(0)} KiB`);
  const ge = await convBnBackward(ev.saved!, dy, { needs: { x: false, weight: false, bias: false, beta: false } });
  ev.saved!.dispose();
  let diff = 0;
  const a = tune.y.dataSync(), b = ev.y.dataSync();
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
  const dg = Math.max(...Array.from(g.dGamma!.dataSync(), (v, i) => Math.abs(v - ge.dGamma!.dataSync()[i])));
  console.log(`tune vs eval: max |y diff| = ${diff.toExponential(2)}, max |dGamma diff| = ${dg.toExponential(2)}`);

  // Deploy: fold once, then a plain conv with bias (and ReLU in the GEMM epilogue).
  const folded = foldConvBn(params);
  t0 = performance.now();
  const yd = await conv2d(x, folded.weight, folded.bias, opts);
  console.log(`deploy conv2d  in ${ms(t0)}; equals tune forward: ${yd.dataSync().every((v, i) => v === a[i])}`);
}
