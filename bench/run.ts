// npm run bench [-- name ...]: runs bench/<name>.ts for each name (all benchmarks when none is given).
import * as path from 'path';
import { info } from '../lib';

async function main() {
  // Named here, not read from the compiled folder, where scratch files of old runs may linger.
  const available = ['binary', 'bnstats', 'convbn', 'latency', 'server', 'tfjs'];
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !available.includes(w));
  if (unknown.length) {
    console.error(`unknown benchmark ${unknown.join(', ')}; available: ${available.join(', ')}`);
    process.exit(2);
  }
  const i = info();
  console.log(`xnorm ${i.version} | ISA ${i.cpu.level} (${i.cpu.isa.join(', ')}) | ${i.cpu.threads} threads | ${i.build.compiler}`);
  for (const name of wanted.length ? wanted : available) {
    console.log(`\n## ${name}\n`);
    const mod = (await import(path.join(__dirname, name))) as { run(): Promise<void> };
    await mod.run();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
