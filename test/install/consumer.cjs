// CommonJS consumer of the installed package: one op of each family.
'use strict';
const xnorm = require('xnorm');

const x = xnorm.tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
const m = xnorm.momentsSync(x);
const mean = Array.from(m.mean.dataSync());
if (mean.join() !== '7.5,11.5,15.5') throw new Error(`unexpected moments mean ${mean}`);

// Conv + BN with identity BN and a 1x1 conv that sums the 3 channels: y = x0 + x1 + x2
const img = xnorm.tensor(Float32Array.from({ length: 3 * 2 * 2 }, (_, i) => i), [1, 3, 2, 2]);
const ones = (n) => xnorm.tensor(new Float32Array(n).fill(1), [n]);
const { y } = xnorm.convBnSync(img, {
  weight: xnorm.tensor([1, 1, 1], [1, 3, 1, 1]),
  bn: { mean: xnorm.zeros([1]), var: ones(1), gamma: ones(1), beta: xnorm.zeros([1]), eps: 0 },
});
const conv = Array.from(y.dataSync());
if (conv.join() !== '12,15,18,21') throw new Error(`unexpected convBn output ${conv}`);

// Binary conv: +1 everywhere against +1 weights gives K = 9 * 32 inside, less at zero-padded borders
const bits = xnorm.packBitsSync(xnorm.tensor(new Float32Array(32 * 3 * 3).fill(1), [1, 32, 3, 3]));
const w = xnorm.packWeightsSync(xnorm.tensor(new Float32Array(32 * 9).fill(1), [1, 32, 3, 3]));
const b = Array.from(xnorm.binaryConv2dSync(bits, w, { padding: 1, output: 'int32', padValue: 'zero' }).dataSync());
if (b[4] !== 288 || b[0] !== 128) throw new Error(`unexpected binaryConv2d output ${b}`);
console.log(`cjs ok: xnorm ${xnorm.info().version}: moments ${mean}, convBn ${conv}, binaryConv2d centre ${b[4]}`);
