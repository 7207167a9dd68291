// Child process for the async-ops tests, run with UV_THREADPOOL_SIZE=1: async ops must not hold libuv's
// only thread. Four long convs are issued, then a file read; on libuv's one thread the read would queue
// behind all four. Prints the order of completion.
'use strict';
const fs = require('fs');
const path = require('path');
const X = require(path.join(__dirname, '..', '..', 'dist', 'cjs', 'index.js'));

const rnd = (n, seed) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
const x = X.tensor(rnd(2 * 64 * 64 * 64, 1), [2, 64, 64, 64]);
const w = X.tensor(rnd(64 * 64 * 9, 2), [64, 64, 3, 3]); // 0.6 GFLOP each: milliseconds at least
const order = [];
const convs = [0, 1, 2, 3].map(() => X.conv2d(x, w, undefined, { padding: 1 }).then(() => order.push('conv')));
const read = fs.promises.readFile(__filename).then(() => order.push('read'));
Promise.all([...convs, read]).then(() => console.log(order.join(' ')));
