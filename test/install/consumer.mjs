// ESM consumer of the installed package: one op of each implemented family.
import { info, moments, tensor } from 'xnorm';
import xnorm from 'xnorm';

const x = tensor(Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i), [2, 3, 4]);
const m = await moments(x);
const mean = Array.from(m.mean.dataSync());
if (mean.join() !== '7.5,11.5,15.5') throw new Error(`unexpected moments mean ${mean}`);
if (xnorm.moments !== moments) throw new Error('the default export and the named exports differ');
console.log(`esm ok: xnorm ${info().version} (${info().cpu.level}), moments mean ${mean}`);
