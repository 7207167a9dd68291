// npm run demo: one short example per op family, with results and timings.
import { cudaStatus, info } from '../lib';
import * as binary from './binary';
import * as bnstats from './bnstats';
import * as convbn from './convbn';
import * as workers from './workers';

async function main() {
  const i = info();
  const cuda = await cudaStatus();  // probes once, off the JS thread
  console.log(`xnorm ${i.version} on ${i.cpu.level} (${i.cpu.threads} threads); CUDA: ${cuda.available ? 'yes' : `no (${cuda.reason})`}\n`);
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
