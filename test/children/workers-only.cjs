// Only worker_threads load the addon here (never this main thread), one worker is terminated mid-op,
// and after all workers exit the process lingers: Node may then unload the addon, which must not
// crash xnorm's still-running pool threads.
'use strict';
const path = require('path');
const { Worker } = require('worker_threads');

const script = path.join(__dirname, 'worker-ops.cjs');
let done = 0;
const workers = [0, 1, 2, 3].map((id) => {
  const w = new Worker(script, { workerData: { id, rounds: id === 3 ? 1000 : 3, size: 8 * 64 * 4096 } });
  w.on('message', (m) => {
    if (id === 3 && m.type === 'started' && m.round === 1) void w.terminate();
    if (m.type === 'done') done++;
  });
  return new Promise((resolve) => w.on('exit', resolve));
});
Promise.all(workers).then(() => setTimeout(() => console.log(`finished ${done}`), 300));
