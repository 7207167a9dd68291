// worker_threads body: loads the addon in this worker's own environment and runs async ops.
'use strict';
const path = require('path');
const { parentPort, workerData } = require('worker_threads');
const addon = process.env.XNORM_ADDON ? require(path.resolve(process.env.XNORM_ADDON)) : require('node-gyp-build')(path.join(__dirname, '..', '..'));

// Each environment registers its own error class (kept in per-environment instance data).
class WorkerXnormError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}
addon.setup(WorkerXnormError, require('worker_threads').markAsUntransferable);

async function main() {
  const { id, rounds, size } = workerData;
  const x = new Float32Array(size);
  for (let i = 0; i < size; i++) x[i] = (i % 13) + id;
  const c = 8;
  for (let r = 0; r < rounds; r++) {
    const mean = new Float64Array(c), m2 = new Float64Array(c);
    const p = addon.moments({ x, dtype: 'float32', shape: [size / c / 64, c, 64], layout: 'nchw', over: 'channel', mean, m2 }, true);
    parentPort.postMessage({ type: 'started', id, round: r });
    await p;
    parentPort.postMessage({ type: 'result', id, round: r, mean: Array.from(mean) });
  }
  // an error from this worker's environment must be this worker's XnormError
  try {
    addon.moments({ x: new Float32Array(3) }, false);
  } catch (e) {
    parentPort.postMessage({ type: 'error', id, code: e.code, name: e.constructor.name });
  }
  parentPort.postMessage({ type: 'done', id });
}
main();
