// worker_threads body for the output-pool test: xnorm (the built dist/) in this worker's environment,
// async convs whose inputs and outputs are pooled blocks, each output disposed after it is checked.
'use strict';
const path = require('path');
const { parentPort, workerData } = require('worker_threads');
const x = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));

async function main() {
  const { id, rounds } = workerData;
  const input = x.unpackBitsSync(x.packBitsSync(x.tensor(new Float32Array(2 * 32 * 32 * 32).fill(id % 2 ? 1 : -1), [2, 32, 32, 32])));
  const w = x.tensor(new Float32Array(32 * 32 * 9).fill(0.01), [32, 32, 3, 3]);
  for (let r = 0; r < rounds; r++) {
    const p = x.conv2d(input, w, undefined, { padding: 1 });
    parentPort.postMessage({ type: 'started', id, round: r });
    const y = await p;
    const v = y.dataSync()[32 * 32 + 33];  // an interior pixel: 32 channels * 9 taps * 0.01 * ±1
    y.dispose();
    parentPort.postMessage({ type: 'result', id, round: r, value: v });
  }
  parentPort.postMessage({ type: 'done', id, pool: x.outputPool() });
}
main();
