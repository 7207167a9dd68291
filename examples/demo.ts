// npm run demo: one short example per op family, with results and timings.
import { info } from '../lib';
import * as binary from './binary';
import * as bnstats from './bnstats';
import * as convbn from './convbn';
import * as workers from './workers';

async function main() {
  const i = info();
  console.log(`xnorm ${i.version} on ${i.cpu.level} (${i.cpu.threads} threads); CUDA: ${i.cuda.available ? 'yes' : `no (${i.cuda.reason})`}\n`);
  console.log('== BN statistics ==');
  await bnstats.main();
  console.log('\n== Conv + BN ==');
  await convbn.main();
  console.log('\n== Binary convolution and MST ==');
  await binary.main();
  console.log('\n== worker_threads ==');
  await workers.main();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
