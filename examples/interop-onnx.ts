// Run an ONNX model in onnxruntime-node and feed its output to xnorm: the features' BN statistics,
// then normalise them, then hand the result back to onnxruntime as an ort.Tensor.
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { batchNorm, from, moments, variance } from '../lib';

export async function main(): Promise<void> {
  const session = await ort.InferenceSession.create(path.join(__dirname, 'models', 'conv-relu.onnx'));
  const image = new Float32Array(4 * 3 * 16 * 16).map((_, i) => Math.sin(i * 0.01));
  const { features } = await session.run({ image: new ort.Tensor('float32', image, [4, 3, 16, 16]) });

  const x = from(features); // shares the ort tensor's data: no copy
  const m = await moments(x);
  console.log(`onnxruntime features ${x.shape.join('x')}: per-channel mean ${Array.from(m.mean.dataSync(), (v) => v.toFixed(3)).join(', ')}`);
  console.log(`  variance ${Array.from(variance(m).dataSync(), (v) => v.toFixed(3)).join(', ')}`);

  const y = await batchNorm(x, m); // training-mode BN with the batch's own statistics
  const back = y.toOnnx(ort);
  console.log(`normalised features back as ort.Tensor: type ${back.type}, dims [${back.dims.join(', ')}]`);
}
