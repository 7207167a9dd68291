// The output pool (native/addon/output_pool.h): CPU outputs of 128 KiB and more come from blocks reused
// across calls and are never zero-filled, so (1) every op must write each element of its outputs: each
// is checked here by running it on blocks poisoned with 0xFF bytes; (2) a block must never be reused
// while an op in flight reads or writes it; (3) dispose() returns a block at once and the GC returns
// the blocks of tensors never disposed; (4) the idle limit holds.
import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import {
  Tensor,
  batchNormSync,
  binaryConv2dSync,
  conv2d,
  conv2dSync,
  convBnBackwardSync,
  convBnSync,
  momentsSync,
  outputPool,
  packBitsSync,
  packWeightsSync,
  prepareConvSync,
  tensor,
  unpackBitsSync,
} from '../lib';
import { expectCode, randomArray } from './helpers';

/** Poisons the outputs' memory, disposes them (their blocks go idle) and runs the op again: the new
 * outputs land on the poisoned blocks and must equal the first ones bit for bit. */
function expectFullWrites(what: string, run: () => Tensor[]) {
  const first = run();
  const want = first.map((t) => t.dataSync());
  for (const t of first) {
    const s = t.storage();
    expect(s.byteLength, `${what}: an output under 128 KiB is not pooled`).toBeGreaterThanOrEqual(128 << 10);
    new Uint8Array(s.buffer, s.byteOffset, s.byteLength).fill(0xff);
    t.dispose();
  }
  const idle = outputPool().idleBytes;
  const second = run();
  expect(outputPool().idleBytes, `${what}: the second run reused idle blocks`).toBeLessThan(idle);
  second.forEach((t, k) => {
    const got = t.dataSync();
    for (let i = 0; i < got.length; i++)
      if (!Object.is(got[i], want[k][i])) throw new Error(`${what}: output ${k} element ${i} was not written (${got[i]} vs ${want[k][i]})`);
    t.dispose();
  });
}

function expectSameBits(got: ArrayLike<number>, want: ArrayLike<number>) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) throw new Error(`word ${i}: ${got[i]} vs ${want[i]}`);
}

describe('output pool', () => {
  const n = 2, c = 32, h = 24, w = 24;
  const x = tensor(randomArray(n * c * h * w, 1), [n, c, h, w]);
  const xh = tensor(randomArray(n * c * h * w, 1), [n, h, w, c]);
  const weight = tensor(randomArray(c * c * 9, 2, 0.2), [c, c, 3, 3]);
  const ch = (seed: number, off = 0) => tensor(randomArray(c, seed, 0.5, off), [c]);
  const bn = { mean: ch(3), var: ch(4, 1.5), gamma: ch(5, 1), beta: ch(6), eps: 1e-5 };
  const p = { weight, bias: ch(7), bn };

  it('every op writes each element of its CPU outputs', () => {
    for (const layout of ['nchw', 'nhwc'] as const) {
      const xi = layout === 'nchw' ? x : xh;
      const o = { padding: 1, layout, activation: 'relu' as const };
      expectFullWrites(`conv2d ${layout}`, () => [conv2dSync(xi, weight, ch(7), o)]);
      expectFullWrites(`conv2d prepared ${layout}`, () => [conv2dSync(xi, prepareConvSync(weight), ch(7), o)]);
      expectFullWrites(`conv2d depthwise ${layout}`, () => [conv2dSync(xi, tensor(randomArray(c * 9, 8), [c, 1, 3, 3]), undefined, { ...o, groups: c })]);
      expectFullWrites(`conv2d 1x1 ${layout}`, () => [conv2dSync(xi, tensor(randomArray(c * c, 9), [c, c, 1, 1]), undefined, { layout })]);
      for (const mode of ['tune', 'eval', 'deploy'] as const)
        expectFullWrites(`convBn ${mode} ${layout}`, () => [convBnSync(xi, p, { ...o, mode }).y]);
      for (const mode of ['tune', 'eval'] as const)
        expectFullWrites(`convBnBackward ${mode} ${layout}`, () => {
          const { y, saved } = convBnSync(xi, p, { ...o, mode, saveForBackward: true });
          const g = convBnBackwardSync(saved!, y);
          saved!.dispose();
          return [g.dx!];
        });
      expectFullWrites(`batchNorm ${layout}`, () => [batchNormSync(xi, momentsSync(xi, { layout }), { layout, activation: 'relu' })]);
      expectFullWrites(`packBits/unpackBits ${layout}`, () => {
        const b = packBitsSync(tensor(randomArray(n * 256 * 64 * 64, 10), layout === 'nchw' ? [n, 256, 64, 64] : [n, 64, 64, 256]), { layout });
        return [b, unpackBitsSync(b, { layout })];
      });
    }
    const xb = packBitsSync(tensor(randomArray(2 * 64 * 64 * 64, 11), [2, 64, 64, 64]));
    const wb = packWeightsSync(tensor(randomArray(128 * 64 * 9, 12), [128, 64, 3, 3]));
    for (const output of ['float', 'int32', 'bits'] as const)
      expectFullWrites(`binaryConv2d ${output}`, () => [binaryConv2dSync(xb, wb, { padding: 1, output })]);
  });

  it('a steady loop reuses the same blocks: the pool does not grow', () => {
    const run = () => conv2dSync(x, weight, undefined, { padding: 1 }).dispose();
    run();
    const before = outputPool();
    for (let i = 0; i < 20; i++) run();
    const after = outputPool();
    expect(after.idleBytes + after.liveBytes).toBe(before.idleBytes + before.liveBytes);
    expect(after.idleBytes).toBeGreaterThanOrEqual(n * c * h * w * 4);
  });

  it('dispose() detaches the memory; the tensor then reads as disposed', () => {
    const y = conv2dSync(x, weight, undefined, { padding: 1 });
    const s = y.storage();
    expect(s.length).toBe(y.size);
    y.dispose();
    expect(s.length).toBe(0);
    expect(y.disposed).toBe(true);
    expectCode(() => y.dataSync(), 'ERR_XNORM_DISPOSED');
    expect(() => y.dispose()).not.toThrow();
  });

  it('outputs of 16 to 128 KiB: JS memory until one of their size is disposed, then pool blocks', () => {
    // packBits of [1, 64, 80, 64]: 5120 pixels x 2 words = 40 KiB, a size class no other test here makes.
    const xs = tensor(randomArray(64 * 80 * 64, 21), [1, 64, 80, 64]);
    const want = packBitsSync(xs).dataSync();
    const live = () => outputPool().liveBytes;
    const fresh = Array.from({ length: 3 }, () => packBitsSync(xs));  // never disposed: JS memory
    const before = outputPool();
    const undisposed = packBitsSync(xs);
    expect(live(), 'an undisposed-size output is not pooled').toBe(before.liveBytes);
    undisposed.dispose();  // adds an idle block of its class
    const warmed = outputPool().idleBytes;
    expect(warmed).toBeGreaterThanOrEqual(before.idleBytes + 40 * 1024);
    const pooled = packBitsSync(xs);
    expect(live(), 'the next output of that size takes the idle block').toBeGreaterThanOrEqual(before.liveBytes + 40 * 1024);
    expect(outputPool().idleBytes).toBe(warmed - (live() - before.liveBytes));
    expectSameBits(pooled.dataSync(), want);
    const s = pooled.storage();
    pooled.dispose();
    expect(s.length, 'a pooled small output is detached by dispose()').toBe(0);
    expect(live()).toBe(before.liveBytes);
    // A steady loop that disposes reuses that block: the pool does not grow.
    const total = () => outputPool().idleBytes + outputPool().liveBytes;
    const t0 = total();
    for (let i = 0; i < 10; i++) {
      const y = packBitsSync(xs);
      expectSameBits(y.dataSync(), want);
      y.dispose();
    }
    expect(total()).toBe(t0);
    for (const t of fresh) expectSameBits(t.dataSync(), want);
  });

  it('an input disposed while an async op reads it keeps its block until the op ends', async () => {
    const big = conv2dSync(tensor(randomArray(2 * 64 * 56 * 56, 13), [2, 64, 56, 56]), tensor(randomArray(64 * 64, 14), [64, 64, 1, 1]));
    const cw = tensor(randomArray(64 * 64 * 9, 15, 0.1), [64, 64, 3, 3]);
    const want = conv2dSync(big, cw, undefined, { padding: 1 }).dataSync();
    const pending = conv2d(big, cw, undefined, { padding: 1 });
    big.dispose();
    // Outputs of big's size made now must not land on its block while the op reads it.
    const others = Array.from({ length: 4 }, () => {
      const t = unpackBitsSync(packBitsSync(tensor(new Float32Array(big.size).fill(-7), big.shape)));
      const s = t.storage();
      new Uint8Array(s.buffer, s.byteOffset, s.byteLength).fill(0xff);
      return t;
    });
    const got = (await pending).dataSync();
    for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) throw new Error(`element ${i}: ${got[i]} vs ${want[i]}`);
    for (const t of others) t.dispose();
  });

  it('tensors never disposed give their blocks back when collected (child process with --expose-gc)', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'children', 'pool-gc.cjs')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<'start' | 'held' | 'collected', { idleBytes: number; liveBytes: number }>;
    expect(out.held.liveBytes - out.start.liveBytes).toBeGreaterThanOrEqual(8 * (1 << 18));
    expect(out.collected.liveBytes).toBe(out.start.liveBytes);
    expect(out.collected.idleBytes).toBeGreaterThan(out.held.idleBytes);
  });

  it('maxIdleBytes bounds what is kept, and is validated', () => {
    const before = outputPool().maxIdleBytes;
    try {
      conv2dSync(x, weight, undefined, { padding: 1 }).dispose();
      expect(outputPool({ maxIdleBytes: 0 }).idleBytes).toBe(0);
      conv2dSync(x, weight, undefined, { padding: 1 }).dispose();
      expect(outputPool().idleBytes).toBe(0);
    } finally {
      outputPool({ maxIdleBytes: before });
    }
    expectCode(() => outputPool({ maxIdleBytes: -1 }), 'ERR_XNORM_ARGUMENT');
    expectCode(() => outputPool({ max: 1 } as never), 'ERR_XNORM_ARGUMENT');
  });
});
