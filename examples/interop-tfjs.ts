// tfjs tensors in, tfjs tensors out: statistics of a tfjs batch with xnorm, normalised, back to tfjs.
import * as tf from '@tensorflow/tfjs';
import { batchNorm, from, moments } from '../lib';

export async function main(): Promise<void> {
  const batch = tf.randomNormal([8, 16, 16, 4], 5, 2, 'float32', 42); // NHWC, as tfjs lays images out
  const x = from(batch);
  const m = await moments(x, { layout: 'nhwc' });
  const y = await batchNorm(x, m, { layout: 'nhwc' });
  const out = y.toTfjs(tf);
  const { mean, variance } = tf.moments(out, [0, 1, 2]);
  console.log(`xnorm moments of a tfjs batch ${x.shape.join('x')}: mean ${Array.from(m.mean.dataSync(), (v) => v.toFixed(3)).join(', ')}`);
  console.log(`after batchNorm, tfjs sees mean ${Array.from(mean.dataSync(), (v) => v.toFixed(4)).join(', ')} and variance ${Array.from(variance.dataSync(), (v) => v.toFixed(4)).join(', ')}`);
  tf.dispose([batch, out, mean, variance]);
}
