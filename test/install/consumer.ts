// TypeScript consumer, type-checked with tsc --noEmit against the installed package's types.
import { BinaryWeights, ConvBnSaved, Moments, Tensor, XnormError, binaryConv2d, convBn, info, moments, packBits, packWeightsSync, tensor, zeros } from 'xnorm';

export async function check(): Promise<number> {
  const x: Tensor = tensor(new Float32Array(24), [2, 3, 2, 2]);
  const m: Moments = await moments(x, { layout: 'nchw', over: 'channel' });
  const r: { y: Tensor; saved?: ConvBnSaved } = await convBn(
    x,
    { weight: zeros([4, 3, 1, 1]), bn: { mean: zeros([4]), var: tensor([1, 1, 1, 1], [4]) } },
    { mode: 'tune', saveForBackward: true },
  );
  const w: BinaryWeights = packWeightsSync(zeros([8, 3, 1, 1]));
  const b: Tensor = await binaryConv2d(await packBits(x), w, { output: 'float' });
  const version: string = info().version;
  try {
    tensor([1], [2]);
  } catch (e) {
    if (e instanceof XnormError && e.code === 'ERR_XNORM_SHAPE') return m.count + r.y.size + b.size + version.length;
  }
  return -1;
}
