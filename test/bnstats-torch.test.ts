// updateRunningStats and training-mode BN against PyTorch's BatchNorm2d (fixtures from
// scripts/gen_bnstats_fixtures.py; PyTorch itself is not needed to run this).
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { batchNormSync, momentsSync, tensor, updateRunningStats } from '../lib';
import type { Stats } from '../lib';
import { refBatchNorm, refMoments } from './bnstats-reference';

interface Batch { x: number[]; y: number[]; runningMean: number[]; runningVar: number[]; numBatchesTracked: number }
interface Case {
  name: string; shape: number[]; momentum: number | null; eps: number; gamma: number[]; beta: number[];
  runningMean: number[]; runningVar: number[]; batches: Batch[];
}
const fixtures: { cases: Case[] } = JSON.parse(
  fs.readFileSync(path.join(__dirname, 'fixtures', 'bnstats_running.json'), 'utf8'),
);

function expectRel(actual: ArrayLike<number>, expected: number[], rel: number, what: string) {
  expected.forEach((e, i) => {
    if (!(Math.abs(actual[i] - e) <= rel * Math.max(1, Math.abs(e))))
      throw new Error(`${what}[${i}]: ${actual[i]} vs PyTorch ${e}`);
  });
}

describe('against PyTorch BatchNorm2d (training mode)', () => {
  for (const c of fixtures.cases) {
    it(`updateRunningStats and BN output: ${c.name}`, () => {
      const ch = c.shape[1];
      let running: Stats = { mean: tensor(c.runningMean, [ch]), var: tensor(c.runningVar, [ch]) };
      let tracked = 0;
      for (const [k, b] of c.batches.entries()) {
        const x = tensor(b.x, c.shape);
        const m = momentsSync(x);
        const next = updateRunningStats(running, m, { momentum: c.momentum, numBatchesTracked: tracked });
        expect(next.numBatchesTracked).toBe(b.numBatchesTracked);
        expectRel(next.mean.dataSync(), b.runningMean, 1e-6, `${c.name} batch ${k} running mean`);
        expectRel(next.var.dataSync(), b.runningVar, 1e-6, `${c.name} batch ${k} running var`);
        running = next;
        tracked = next.numBatchesTracked;
        // Training-mode output: normalised with the batch's own (biased) statistics.
        const y = batchNormSync(x, m, {
          gamma: tensor(c.gamma, [ch]), beta: tensor(c.beta, [ch]), eps: c.eps,
        });
        // PyTorch rounds the batch mean to float32 before subtracting it; with an offset of 1e4 and a
        // spread of 1e-2 that costs it up to ~1e-2. xnorm keeps the mean in double, so it is checked
        // tightly against the exact float64 answer, and PyTorch only loosely against the same answer.
        const r = refMoments(b.x, c.shape, 'nchw', 'channel');
        const exact = refBatchNorm(b.x, c.shape, 'nchw', r.mean, r.m2.map((q) => q / r.count), c.gamma, c.beta, c.eps, false);
        expectRel(y.dataSync(), Array.from(exact), 2e-6, `${c.name} batch ${k} y vs float64`);
        expectRel(b.y, Array.from(exact), c.name.includes('large offset') ? 0.1 : 2e-5, `${c.name} batch ${k} PyTorch y vs float64`);
      }
    });
  }
});
