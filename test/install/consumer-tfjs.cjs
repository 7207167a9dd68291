// The tfjs backend from the installed package: `require('xnorm/tfjs')` registers 'xnorm' beside the
// user's tfjs (here tfjs-core and tfjs-backend-cpu from the repository, through NODE_PATH: the optional
// peers are not installed with xnorm), and a conv gives the 'cpu' backend's result.
'use strict';
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const { BACKEND_NAME, kernelStats } = require('xnorm/tfjs');

(async () => {
  const x = tf.tensor4d(Float32Array.from({ length: 2 * 5 * 5 * 3 }, (_, i) => Math.sin(i)), [2, 5, 5, 3]);
  const f = tf.tensor4d(Float32Array.from({ length: 3 * 3 * 3 * 4 }, (_, i) => Math.cos(i)), [3, 3, 3, 4]);
  await tf.setBackend('cpu');
  const want = tf.conv2d(x, f, 2, 'same').dataSync();
  if (!(await tf.setBackend(BACKEND_NAME)) || tf.getBackend() !== 'xnorm') throw new Error('backend xnorm not set');
  const got = tf.conv2d(x, f, 2, 'same').dataSync();
  const err = Math.max(...Array.from(want, (v, i) => Math.abs(v - got[i])));
  if (!(err < 1e-5) || !kernelStats().native.Conv2D) throw new Error(`xnorm/tfjs conv differs from cpu by ${err}`);
  console.log(`tfjs ok: conv2d on 'xnorm' matches 'cpu' (max difference ${err.toExponential(1)})`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
