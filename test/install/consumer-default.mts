// ESM TypeScript consumer: the default export (the module object) and the typed result of
// convBn with saveForBackward (saved is not optional there), with lib ES2022 and no @types/node.
import xnorm, { convBnSync, tensor, zeros } from 'xnorm';
import type { ConvBnSaved } from 'xnorm';

export function check(): number {
  const x = tensor(new Float32Array(12), [1, 3, 2, 2]);
  const { y, saved } = convBnSync(x, { weight: zeros([2, 3, 1, 1]), bn: { mean: zeros([2]), var: tensor([1, 1], [2]) } }, { saveForBackward: true });
  const s: ConvBnSaved = saved;
  using t = xnorm.zeros([2]);
  return y.size + s.bytes + t.size + xnorm.info().version.length;
}
