// Child process for the CUDA plugin tests: loads the addon directly (the plugin state is per process),
// probes the plugin with the search paths given on stdin, tries a CUDA allocation, runs a CPU op, and
// prints JSON. The environment (XNORM_CUDA_PLUGIN, XNORM_CUDA) is set by the parent.
'use strict';
const path = require('path');
const addon = require('node-gyp-build')(path.join(__dirname, '..', '..'));

const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = { info: addon.cudaInfo({ paths: input.paths }) };
try {
  addon.cudaAlloc({ device: 0, bytes: 16 });
  out.alloc = 'ok';
} catch (e) {
  out.alloc = e.code;
  out.allocMessage = e.message;
}
const mean = new Float64Array(2);
const m2 = new Float64Array(2);
out.cpuCount = addon.moments({ x: Float32Array.from([1, 2, 3, 4]), dtype: 'float32', shape: [2, 2], layout: 'nchw',
  over: 'channel', groups: 1, mean, m2 });
out.cpuMean = Array.from(mean);
process.stdout.write(JSON.stringify(out));
