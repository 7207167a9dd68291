// ESM consumer of the installed package: one op of each family, async forms.
import xnorm, { binaryConv2d, convBn, info, moments, packBits, packWeightsSync, tensor, zeros } from 'xnorm';

const x = tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
const mean = Array.from((await moments(x)).mean.dataSync());
if (mean.join() !== '7.5,11.5,15.5') throw new Error(`unexpected moments mean ${mean}`);
if (xnorm.moments !== moments) throw new Error('the default export and the named exports differ');

const img = tensor(Float32Array.from({ length: 3 * 2 * 2 }, (_, i) => i), [1, 3, 2, 2]);
const one = tensor([1], [1]);
const { y } = await convBn(img, { weight: tensor([1, 1, 1], [1, 3, 1, 1]), bn: { mean: zeros([1]), var: one, eps: 0 } });
const conv = Array.from(y.dataSync());
if (conv.join() !== '12,15,18,21') throw new Error(`unexpected convBn output ${conv}`);

const bits = await packBits(tensor(new Float32Array(32 * 9).fill(-1), [1, 32, 3, 3]));
const w = packWeightsSync(tensor(new Float32Array(32 * 9).fill(1), [1, 32, 3, 3]));
const b = Array.from((await binaryConv2d(bits, w, { output: 'int32' })).dataSync());
if (b.join() !== '-288') throw new Error(`unexpected binaryConv2d output ${b}`);
console.log(`esm ok: xnorm ${info().version} (${info().cpu.level}): moments ${mean}, convBn ${conv}, binaryConv2d ${b}`);
