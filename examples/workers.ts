// worker_threads: four workers each load xnorm and run ops on their own data; one is terminated in the
// middle of an op; the process and the other workers carry on.
import * as path from 'path';
import { Worker } from 'worker_threads';
import { momentsSync, tensor } from '../lib';
import { packageRoot } from '../lib/native';

// The worker body. In your project this would be a file that does `require('xnorm')`; here it loads
// this checkout's build (dist/, made by `npm run build`).
const body = `
const { parentPort, workerData } = require('worker_threads');
const xnorm = require(workerData.entry);
(async () => {
  const x = xnorm.tensor(new Float32Array(16 * 32 * 64 * 64).map((_, i) => (i % 9) + workerData.id), [16, 32, 64, 64]);
  for (let round = 0; round < workerData.rounds; round++) {
    parentPort.postMessage({ round, started: true });
    const m = await xnorm.moments(x);
    parentPort.postMessage({ round, mean: m.mean.dataSync()[0] });
  }
})();
`;

export async function main(): Promise<void> {
  const entry = path.join(packageRoot(), 'dist', 'cjs', 'index.js');
  const t0 = performance.now();
  const runs = [0, 1, 2, 3].map(
    (id) =>
      new Promise<string>((resolve) => {
        const w = new Worker(body, { eval: true, workerData: { id, entry, rounds: id === 3 ? 100 : 3 } });
        let last = 'no result';
        w.on('message', (m: { round: number; started?: boolean; mean?: number }) => {
          if (m.mean !== undefined) last = `round ${m.round} mean[0] = ${m.mean.toFixed(3)}`;
          if (id === 3 && m.started && m.round === 1) void w.terminate(); // mid-op
        });
        w.on('exit', (code) => resolve(`worker ${id}: exit ${code}, ${last}`));
      }),
  );
  for (const line of await Promise.all(runs)) console.log(line);
  const check = momentsSync(tensor([1, 2, 3, 4], [2, 2])).mean.dataSync();
  console.log(`main thread still fine: [${Array.from(check).join(', ')}] (${(performance.now() - t0).toFixed(0)} ms)`);
}
