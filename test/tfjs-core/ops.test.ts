// tfjs-core's own op specs (SPEC_FILES in ./harness) against the backend under test: 'xnorm' (lib/tfjs),
// or another registered backend named by XNORM_TFJS_SPEC_BACKEND (e.g. 'cpu', the reference).
//
//   npx vitest run --project tfjs-core
//   XNORM_TFJS_SPEC_BACKEND=cpu npx vitest run --project tfjs-core
//   XNORM_TFJS_SPEC_STATS=1 npx vitest run --project tfjs-core   (prints, per spec file, the kernels
//                                        that ran natively on 'xnorm' and those handed to 'cpu')
//   node test/tfjs-core/report.cjs test-results/vitest.json     (per spec file counts and failures)
//
// Import order matters: tfjs-core, then the cpu backend (the xnorm backend copies its kernels), then
// lib/tfjs from source, so that it registers into the tfjs-core instance the spec files use.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { XnormBackend, kernelStats } from '../../lib/tfjs';
import { describe, expect, it } from 'vitest';
import { BACKEND, TFJS_CORE_DIST, describeSpecFiles } from './harness';

describe('harness', () => {
  it('the spec files, the cpu backend and lib/tfjs share one tfjs-core instance', async () => {
    const specTf = (await import(`${TFJS_CORE_DIST}/index.js`)) as typeof tf;
    expect(specTf.Tensor).toBe(tf.Tensor);
    // No CommonJS bundle of tfjs (a second instance) was loaded by anything.
    expect(Object.keys(require.cache).filter((f) => /[\\/]@tensorflow[\\/]/.test(f))).toEqual([]);
  });

  it.runIf(BACKEND === 'xnorm')("'xnorm' is lib/tfjs's XnormBackend", async () => {
    await tf.setBackend('xnorm');
    expect(tf.backend()).toBeInstanceOf(XnormBackend);
  });
});

describeSpecFiles(BACKEND, undefined, {
  afterFile: process.env.XNORM_TFJS_SPEC_STATS
    ? (file) => {
        const { native, fallback } = kernelStats(true);
        console.log(`${file}: native ${JSON.stringify(native)}, handed to cpu ${JSON.stringify(fallback)}`);
      }
    : undefined,
});
