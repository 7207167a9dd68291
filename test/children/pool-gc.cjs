// Child process (run with --expose-gc) for the output pool: tensors never disposed give their blocks
// back when the GC collects them. Prints the pool's figures as JSON.
'use strict';
const path = require('path');
const x = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));

(async () => {
  const input = x.tensor(new Float32Array(1 << 16).fill(0.5), [1, 16, 64, 64]);
  const out = { start: x.outputPool() };
  let kept = [];
  for (let i = 0; i < 8; i++) kept.push(x.unpackBitsSync(x.packBitsSync(input)));
  out.held = x.outputPool();
  kept = null;
  for (let i = 0; i < 5; i++) {
    global.gc();
    await new Promise((r) => setImmediate(r));
  }
  out.collected = x.outputPool();
  process.stdout.write(JSON.stringify(out));
})();
