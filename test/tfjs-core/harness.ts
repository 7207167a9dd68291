// Runs tfjs-core's own op spec files (node_modules/@tensorflow/tfjs-core/dist/**/*_test.js, jasmine
// specs) under vitest against one named tfjs backend.
//
// Only for the 'tfjs-core' vitest project (vitest.config.mts): there tfjs-core and tfjs-backend-cpu are
// inlined, so the spec files, the cpu backend and the backend under test share one tfjs-core instance.
//
// The spec files are written for jasmine. What they need of it is provided here on globalThis, mapped
// onto vitest: describe/it/fit/xit/..., before/after hooks (with jasmine's `done` callbacks), `fail`,
// `pending`, `expect` plus jasmine's `nothing` matcher (tfjs-core's test_util calls expect().nothing()),
// a few `jasmine.*` asymmetric matchers and a small `expectAsync`. The matchers the listed spec files use
// (toBe, toEqual, toThrowError with a regex or no argument) behave the same in vitest; `spyOn` and the
// jasmine clock are not provided.
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';
import { setTestEnvs } from '@tensorflow/tfjs-core/dist/jasmine_util';

/**
 * The tfjs-core spec files to run, relative to @tensorflow/tfjs-core/dist, without '.js'.
 * Each becomes one top-level suite of test/tfjs-core/ops.test.ts.
 */
export const SPEC_FILES: readonly string[] = [
  'ops/conv2d_test', // Conv2D, and its gradients: Conv2DBackpropInput, Conv2DBackpropFilter
  'ops/fused/fused_conv2d_test', // FusedConv2D (+ gradients)
  'ops/depthwise_conv2d_test', // DepthwiseConv2dNative (+ gradients)
  'ops/fused/fused_depthwise_conv2d_test', // FusedDepthwiseConv2D
  'ops/batchnorm_test', // FusedBatchNorm (+ gradients)
  'ops/mat_mul_test', // BatchMatMul
  'ops/fused/fused_mat_mul_test', // _FusedMatMul
  'ops/conv2d_transpose_test', // Conv2DBackpropInput
  'ops/conv1d_test', // Conv2D through a reshape
  'ops/conv2d_separable_test', // DepthwiseConv2dNative + Conv2D
  'ops/avg_pool_test',
  'ops/max_pool_test',
  'ops/relu_test',
  'ops/relu6_test',
  'ops/add_test',
  'ops/mean_test',
  'ops/sum_test',
  'ops/max_test',
  'ops/min_test',
  'ops/sub_test',
  'ops/arithmetic_test', // Multiply, RealDiv
  'ops/binary_ops_test', // Maximum, Minimum, SquaredDifference
  'ops/neg_test',
  'ops/square_test',
  'ops/sqrt_test',
  'ops/rsqrt_test',
  'ops/abs_test',
  'ops/exp_test',
  'ops/sigmoid_test',
  'ops/tanh_test',
  'ops/step_test',
  'ops/leaky_relu_test',
  'ops/elu_test',
  'ops/tile_test',
  'ops/add_n_test',
  'ops/greater_test',
  'ops/greater_equal_test',
  'ops/less_test',
  'ops/less_equal_test',
  'ops/equal_test',
  'ops/not_equal_test',
  'ops/pool_test',
];

/**
 * The backend under test. 'xnorm' (lib/tfjs) unless XNORM_TFJS_SPEC_BACKEND names another registered
 * backend: XNORM_TFJS_SPEC_BACKEND=cpu npx vitest run --project tfjs-core runs tfjs's own cpu backend,
 * the reference the counts are compared with.
 */
export const BACKEND = process.env.XNORM_TFJS_SPEC_BACKEND || 'xnorm';

export const TFJS_CORE_DIST = path.join(path.dirname(require.resolve('@tensorflow/tfjs-core/package.json')), 'dist');

type Fn = (...args: any[]) => unknown;
type Done = (() => void) & { fail: (err?: unknown) => void };

/** Jasmine hands functions that take an argument a `done` callback; vitest wants a promise. */
function withDone(fn: Fn | undefined): Fn | undefined {
  if (fn == null || fn.length === 0) return fn;
  return () =>
    new Promise<void>((resolve, reject) => {
      const done = (() => resolve()) as Done;
      done.fail = (err?: unknown) => reject(err instanceof Error ? err : new Error(String(err ?? 'done.fail()')));
      Promise.resolve()
        .then(() => fn(done))
        .catch(reject);
    });
}

function jasmineSpec(register: (name: string, fn?: Fn, timeout?: number) => void) {
  return (name: string, fn?: Fn, timeout?: number) => register(name, withDone(fn), timeout);
}

function jasmineHook(register: (fn: Fn, timeout?: number) => void) {
  return (fn: Fn, timeout?: number) => register(withDone(fn)!, timeout);
}

/** jasmine's `expectAsync(promise)`, for the matchers tfjs specs use with it. */
function expectAsync(actual: Promise<unknown>) {
  const settled = () =>
    actual.then(
      (value) => ({ resolved: true as const, value }),
      (error: unknown) => ({ resolved: false as const, error }),
    );
  return {
    async toBeResolved() {
      const r = await settled();
      if (!r.resolved) throw new Error(`Expected a promise to be resolved but it was rejected with ${String(r.error)}`);
    },
    async toBeResolvedTo(expected: unknown) {
      const r = await settled();
      if (!r.resolved) throw new Error(`Expected a promise to be resolved but it was rejected with ${String(r.error)}`);
      expect(r.value).toEqual(expected);
    },
    async toBeRejected() {
      const r = await settled();
      if (r.resolved) throw new Error('Expected a promise to be rejected but it was resolved');
    },
    async toBeRejectedWithError(errorType?: unknown, message?: string | RegExp) {
      const r = await settled();
      if (r.resolved) throw new Error('Expected a promise to be rejected but it was resolved');
      if (typeof errorType === 'function') expect(r.error).toBeInstanceOf(errorType);
      const msg = typeof errorType === 'string' || errorType instanceof RegExp ? errorType : message;
      if (msg != null) expect(() => { throw r.error; }).toThrowError(msg);
    },
  };
}

let installed = false;

/** Puts the jasmine API the tfjs specs use onto globalThis (once per worker). */
export function installJasmineGlobals(): void {
  if (installed) return;
  installed = true;
  expect.extend({
    // jasmine's expect().nothing(): a spec that checks its results by throwing still "expects" something.
    nothing: () => ({ pass: true, message: () => 'expect().nothing()' }),
  });
  const g = globalThis as Record<string, unknown>;
  Object.assign(g, {
    describe,
    fdescribe: describe.only,
    xdescribe: describe.skip,
    it: jasmineSpec(it),
    fit: jasmineSpec(it.only),
    xit: jasmineSpec(it.skip),
    beforeAll: jasmineHook(beforeAll),
    afterAll: jasmineHook(afterAll),
    beforeEach: jasmineHook(beforeEach),
    afterEach: jasmineHook(afterEach),
    expect,
    expectAsync,
    fail: (err?: unknown) => {
      throw err instanceof Error ? err : new Error(`Failed: ${String(err ?? '')}`);
    },
    pending: (reason?: string) => {
      throw new Error(`pending() is not supported by the vitest harness${reason ? `: ${reason}` : ''}`);
    },
    jasmine: {
      any: expect.any,
      anything: expect.anything,
      objectContaining: expect.objectContaining,
      arrayContaining: expect.arrayContaining,
      stringMatching: expect.stringMatching,
      DEFAULT_TIMEOUT_INTERVAL: 20_000,
    },
  });
}

export interface SpecFileOptions {
  /** Runs once after each spec file's specs (e.g. to print which kernels they ran). */
  afterFile?: (file: string) => void;
}

/**
 * Defines one suite per spec file, each running that file's specs against `backend`. Call it at the top
 * level of a test file after the backend's module has been imported (so it is registered).
 */
export function describeSpecFiles(backend: string, files: readonly string[] = SPEC_FILES, options: SpecFileOptions = {}): void {
  installJasmineGlobals();
  // describeWithFlags (tfjs-core's jasmine_util) wraps each spec group in a describe whose beforeAll
  // resets the engine and sets this backend.
  setTestEnvs([{ name: backend, backendName: backend, flags: {}, isDataSync: true }]);

  for (const file of files) {
    describe(file, async () => {
      beforeAll(() => {
        // Fails the whole file (rather than silently testing another backend) when it is not registered.
        expect(tf.findBackendFactory(backend), `backend '${backend}' is not registered in the spec files' tfjs-core`).toBeTruthy();
      });
      beforeEach(() => {
        // Runs after describeWithFlags' beforeAll has set the backend: every spec checks it runs on it.
        expect(tf.getBackend()).toBe(backend);
      });
      if (options.afterFile) afterAll(() => options.afterFile!(file));
      await import(path.join(TFJS_CORE_DIST, `${file}.js`));
    });
  }
}
