// TypeScript consumer, type-checked with tsc --noEmit against the installed package's types.
import { Moments, Tensor, XnormError, info, moments, tensor } from 'xnorm';

export async function check(): Promise<number> {
  const x: Tensor = tensor(new Float32Array(24), [2, 3, 4]);
  const m: Moments = await moments(x, { layout: 'nchw', over: 'channel' });
  const version: string = info().version;
  try {
    tensor([1], [2]);
  } catch (e) {
    if (e instanceof XnormError && e.code === 'ERR_XNORM_SHAPE') return m.count + version.length;
  }
  return -1;
}
