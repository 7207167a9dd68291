// Child process (run with --expose-gc) for the finalizer test: device memory whose tensor is dropped
// without dispose() is released when the GC collects the handle; prints the external-memory deltas.
'use strict';
const path = require('path');
const addon = require('node-gyp-build')(path.join(__dirname, '..', '..'));

const info = addon.cudaInfo({ paths: [] });
if (!info.available) throw new Error(`no CUDA device: ${info.reason}`);
const before = addon.externalMemory();
let handles = Array.from({ length: 8 }, () => addon.cudaAlloc({ device: 0, bytes: 1 << 20, zero: true }));
const held = addon.externalMemory() - before;
handles = null;
// Finalizers run on a later turn of the event loop after the collection.
global.gc();
setTimeout(() => {
  global.gc();
  setTimeout(() => process.stdout.write(JSON.stringify({ held, after: addon.externalMemory() - before })), 50);
}, 50);
