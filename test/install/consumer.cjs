// CommonJS consumer of the installed package: one op of each implemented family.
'use strict';
const xnorm = require('xnorm');

const x = xnorm.tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
const m = xnorm.momentsSync(x);
const mean = Array.from(m.mean.dataSync());
if (mean.join() !== '7.5,11.5,15.5') throw new Error(`unexpected moments mean ${mean}`);
console.log(`cjs ok: xnorm ${xnorm.info().version}, moments mean ${mean}`);
