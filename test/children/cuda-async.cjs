// Child process for test/cuda-async.test.ts: info() must not probe CUDA; cudaStatus() probes once per
// process without blocking the event loop, and worker threads then see that result without probing.
// XNORM_CUDA_PLUGIN is set by the parent. Prints JSON.
'use strict';
const path = require('path');
const { Worker } = require('worker_threads');
const dist = path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js');
const x = require(dist);

(async () => {
  const out = { before: x.info().cuda };
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const t0 = process.hrtime.bigint();
  const pending = x.cudaStatus();
  out.returnedMs = Number(process.hrtime.bigint() - t0) / 1e6;  // time the JS thread was held
  out.isPromise = pending instanceof Promise;
  out.same = pending === x.cudaStatus();  // one probe for concurrent callers
  out.status = await pending;
  clearInterval(timer);
  out.ticks = ticks;
  out.after = x.info().cuda;
  out.sync = x.cudaStatusSync();
  const w = new Worker(`require('worker_threads').parentPort.postMessage(require(${JSON.stringify(dist)}).info().cuda)`, { eval: true });
  out.worker = await new Promise((resolve, reject) => w.once('message', resolve).once('error', reject));
  await w.terminate();
  process.stdout.write(JSON.stringify(out));
})();
