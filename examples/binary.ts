// Binary convolution: pack float activations and weights to signs, run an XNOR/popcount 3x3 conv with a
// fused BN-style scale/bias, feed its 'bits' output to the next binary layer, then build an MST channel-
// reuse plan, check it gives the same result, and save / restore it.
import {
  MstPlan,
  binaryConv2d,
  binaryLinear,
  mstPlan,
  mstRegularizer,
  packBits,
  packWeights,
  tensor,
  unpackBits,
} from '../lib';

function fill(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = s / 2 ** 32 - 0.5;
  }
  return x;
}

const ms = (t0: number) => `${(performance.now() - t0).toFixed(2)} ms`;

export async function main(): Promise<void> {
  const N = 2, C = 128, H = 16, W = 16, COUT = 128;

  // 1. Float NCHW activations -> bit-packed NHWC (bit 1 = -1, bit 0 = +1).
  const x = tensor(fill(N * C * H * W, 1), [N, C, H, W]);
  let t0 = performance.now();
  const xb = await packBits(x); // layout 'nchw' by default
  console.log(`packBits: ${x.shape.join('x')} float32 -> bit ${xb.shape.join('x')} (${xb.packedWords} words/pixel) in ${ms(t0)}`);

  // 2. Weights: prototypes with a few flipped signs, like a trained binary layer whose filters cluster.
  const per = C * 9;
  const proto = fill(8 * per, 2);
  const flips = fill(COUT * per, 3);
  const wf = Float32Array.from({ length: COUT * per }, (_, i) => (flips[i] < -0.49 ? -1 : 1) * proto[(Math.floor(i / per) % 8) * per + (i % per)]);
  const w = await packWeights(tensor(wf, [COUT, C, 3, 3]));

  // 3. 3x3 binary conv with a folded BN (y * scale + bias), float output.
  const scale = tensor(Float32Array.from({ length: COUT }, (_, i) => 0.01 + (i % 5) * 0.002), [COUT]);
  const bias = tensor(Float32Array.from({ length: COUT }, (_, i) => (i % 3) - 1), [COUT]);
  t0 = performance.now();
  const y = await binaryConv2d(xb, w, { padding: 1, scale, bias });
  const yv = y.dataSync() as Float32Array;
  console.log(`binaryConv2d 3x3 ${C}->${COUT}: output ${y.dtype} ${y.shape.join('x')} in ${ms(t0)}; y[0..4] = ${Array.from(yv.slice(0, 4), (v) => v.toFixed(3)).join(', ')}`);

  // 4. The raw dot products are integers in [-K, K], K = 9 * C.
  const dots = (await binaryConv2d(xb, w, { padding: 1, output: 'int32' })).dataSync() as Int32Array;
  console.log(`int32 output: first dots ${Array.from(dots.slice(0, 4)).join(', ')} (K = ${9 * C})`);

  // 5. 'bits' output feeds the next binary layer directly; it equals packBits of the float output.
  const yb = await binaryConv2d(xb, w, { padding: 1, scale, bias, output: 'bits' });
  const same = (await packBits(y, { layout: 'nhwc' })).dataSync().every((v, i) => v === yb.dataSync()[i]);
  console.log(`bits output: ${yb.shape.join('x')}, equal to packBits(float output): ${same}`);

  // 6. MST plan: close output channels are computed from each other.
  t0 = performance.now();
  const plan = await mstPlan(w, { reuse: 'always', maxDepth: 8 });
  console.log(
    `mstPlan: ${plan.levels[0].length} roots, depth ${plan.depth}, totalDistance ${plan.totalDistance} bits, ` +
      `opsReduction ${(100 * plan.opsReduction).toFixed(1)}% (built in ${ms(t0)})`,
  );
  t0 = performance.now();
  const yPlan = await binaryConv2d(xb, plan, { padding: 1, scale, bias });
  const identical = (yPlan.dataSync() as Float32Array).every((v, i) => Object.is(v, yv[i]));
  console.log(`binaryConv2d with the plan in ${ms(t0)}: bit-identical to dense = ${identical}`);
  const auto = await mstPlan(w); // reuse: 'auto' keeps only the edges this CPU runs faster than dense
  console.log(`auto plan: opsReduction ${(100 * auto.opsReduction).toFixed(1)}%, depth ${auto.depth}`);

  // 7. Plans serialize to checksummed bytes and are checked against the weights when loaded.
  const bytes = plan.serialize();
  const restored = MstPlan.deserialize(bytes, w);
  console.log(`serialized plan: ${bytes.length} bytes; restored parents equal: ${restored.parent.every((p, i) => p === plan.parent[i])}`);
  try {
    MstPlan.deserialize(bytes.slice(0, bytes.length - 1), w);
  } catch (e) {
    console.log(`truncated plan rejected: ${(e as { code: string }).code}`);
  }

  // 8. With { weights: true } the bytes carry the weights as well, compressed along the tree.
  const withWeights = plan.serialize({ weights: true });
  const alone = MstPlan.deserialize(withWeights);
  const sameWords = alone.weights.words.every((v, i) => v === w.words[i]);
  console.log(
    `plan with weights: ${withWeights.length} bytes, ${((8 * withWeights.length) / (COUT * per)).toFixed(2)} bits per weight ` +
      `(packed signs: 1); weights rebuilt without the float tensor, equal: ${sameWords}`,
  );

  // 9. MST-aware training: gradient steps on the regularizer pull channels toward their parents' signs.
  let latent = tensor(wf, [COUT, C, 3, 3]);
  const first = mstRegularizer(latent);
  for (let step = 0; step < 50; step++) {
    const { grad } = mstRegularizer(latent, { plan: first.plan });
    const g = grad.dataSync() as Float32Array, v = latent.dataSync() as Float32Array;
    latent = tensor(v.map((x, i) => x - 0.02 * g[i]), latent.shape);
  }
  const after = mstRegularizer(latent, { plan: first.plan });
  console.log(`mstRegularizer: total MST distance ${first.totalDistance} -> ${after.totalDistance} bits after 50 steps`);

  // 10. binaryLinear: the fully connected case, [N, K] bits x [Cout, K] weights.
  const feat = await packBits(tensor(fill(N * 512, 4), [N, 512]));
  const fcw = await packWeights(tensor(fill(10 * 512, 5), [10, 512]));
  const logits = await binaryLinear(feat, fcw, { output: 'int32' });
  console.log(`binaryLinear 512->10: ${Array.from(logits.dataSync()).join(', ')}`);
  console.log(`unpackBits of the first pixel: ${Array.from((await unpackBits(xb, { layout: 'nhwc' })).dataSync().slice(0, 8)).join(', ')}`);
}

if (require.main === module) main();
