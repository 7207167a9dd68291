// A tfjs-layers model on the 'xnorm' tfjs backend: the same model object predicts on 'cpu', then on
// 'xnorm' after one setBackend (its weights move over on first use), with the times and the largest
// difference between the two outputs.
import * as tf from '@tensorflow/tfjs';
import '../lib/tfjs'; // registers the 'xnorm' backend (from the package: import 'xnorm/tfjs')

/** conv + BN + ReLU, a depthwise-separable block with a stride-2 depthwise, global average pool, dense. */
function buildModel(): tf.LayersModel {
  const seed = 7;
  const init = () => tf.initializers.heUniform({ seed });
  const bn = () => tf.layers.batchNormalization({ epsilon: 1e-3 });
  const input = tf.input({ shape: [32, 32, 3] });
  let x = tf.layers.conv2d({ filters: 32, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: init() }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.reLU().apply(bn().apply(x)) as tf.SymbolicTensor;
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same', useBias: false, depthwiseInitializer: init() }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.reLU({ maxValue: 6 }).apply(bn().apply(x)) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 64, kernelSize: 1, useBias: false, kernelInitializer: init() }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.reLU().apply(bn().apply(x)) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const logits = tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed }) }).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: logits });
  // Trained-looking BN layers: gamma, beta, moving mean and variance away from 1, 0, 0, 1.
  for (const layer of model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) {
    const c = layer.getWeights()[0].shape[0];
    layer.setWeights([
      tf.randomUniform([c], 0.5, 1.5, 'float32', seed + 1),
      tf.randomUniform([c], -0.2, 0.2, 'float32', seed + 2),
      tf.randomUniform([c], -0.3, 0.3, 'float32', seed + 3),
      tf.randomUniform([c], 0.5, 1.5, 'float32', seed + 4),
    ]);
  }
  return model;
}

/** Median time (ms) of 5 predictions after a warm-up one, and the output of the last. */
async function timePredict(model: tf.LayersModel, x: tf.Tensor): Promise<{ ms: number; y: Float32Array }> {
  let y: Float32Array = new Float32Array();
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    const out = model.predict(x) as tf.Tensor;
    y = (await out.data()) as Float32Array;
    out.dispose();
    if (i > 0) times.push(performance.now() - t0);
  }
  return { ms: times.sort((a, b) => a - b)[2], y };
}

export async function main(): Promise<void> {
  const previous = tf.getBackend();
  await tf.setBackend('cpu');
  const model = buildModel();
  const x = tf.randomUniform([8, 32, 32, 3], -1, 1, 'float32', 42);
  const cpu = await timePredict(model, x);

  await tf.setBackend('xnorm');
  const xnorm = await timePredict(model, x);
  console.log(`tfjs backend now: ${tf.getBackend()}`);

  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < cpu.y.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(xnorm.y[i] - cpu.y[i]));
    maxAbs = Math.max(maxAbs, Math.abs(cpu.y[i]));
  }
  console.log(`predict [8, 32, 32, 3] -> [8, 10]: cpu ${cpu.ms.toFixed(2)} ms, xnorm ${xnorm.ms.toFixed(2)} ms (${(cpu.ms / xnorm.ms).toFixed(1)}x)`);
  console.log(`largest |xnorm - cpu| ${maxDiff.toExponential(2)} on logits up to ${maxAbs.toFixed(3)}`);
  if (!(maxDiff <= 1e-4 * Math.max(maxAbs, 1))) throw new Error(`xnorm and cpu disagree: ${maxDiff}`);

  x.dispose();
  model.dispose();
  await tf.setBackend(previous ?? 'cpu');
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
