// `import 'xnorm/tfjs'` registers the tfjs backend 'xnorm': every 'cpu' kernel, with xnorm's native
// kernels in place of the heavy ones. Then `await tf.setBackend('xnorm')`.
import { getKernelsForBackend, registerBackend, registerKernel, getKernel } from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BACKEND_NAME, XnormBackend } from './backend';
import { batchNormKernels } from './batchnorm';
import { convKernels } from './conv';
import { elementwiseKernels } from './elementwise';
import { matmulKernels } from './matmul';
import { poolKernels } from './pool';

export { BACKEND_NAME, XnormBackend, kernelStats } from './backend';
export type { KernelStats } from './backend';

const natives = [...convKernels, ...matmulKernels, ...batchNormKernels, ...elementwiseKernels, ...poolKernels];

/**
 * The tfjs kernels xnorm runs natively on the 'xnorm' backend (the rest are the 'cpu' backend's).
 * @example
 * console.log(nativeKernelNames.includes('Conv2D')); // true
 */
export const nativeKernelNames: readonly string[] = Object.freeze(natives.map((k) => k.kernelName));

// Priority 3: above 'wasm' (2) and 'cpu' (1), so importing it makes 'xnorm' tfjs's default backend.
if (registerBackend(BACKEND_NAME, () => new XnormBackend(), 3)) {
  for (const k of getKernelsForBackend('cpu'))
    if (!nativeKernelNames.includes(k.kernelName)) registerKernel({ ...k, backendName: BACKEND_NAME });
  for (const k of natives) if (!getKernel(k.kernelName, BACKEND_NAME)) registerKernel(k);
}
