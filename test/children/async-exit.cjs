// Child process for the async-ops tests: with nothing else keeping the event loop alive, a pending async
// op must keep it alive until it settles, and the process must exit once no op is pending (an op that
// finished must not hold the loop open). Prints one line per settled op: its tag and whether it equals
// the Sync form.
'use strict';
const path = require('path');
const X = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));

const rnd = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
const same = (a, b) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const x = X.tensor(rnd(32 * 16, 1), [1, 32, 4, 4]);
const w = X.tensor(rnd(32 * 32 * 9, 2), [32, 32, 3, 3]); // 147,456 multiply-adds: above the inline limit
const want = X.conv2dSync(x, w, undefined, { padding: 1 }).dataSync();

X.conv2d(x, w, undefined, { padding: 1 }).then((y) => {
  console.log('first', same(y.dataSync(), want));
  // A second op once the loop has been idle for a while.
  setTimeout(() => {
    X.conv2d(x, w, undefined, { padding: 1 }).then((y2) => console.log('second', same(y2.dataSync(), want)));
  }, 50);
});
