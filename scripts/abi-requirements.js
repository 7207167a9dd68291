#!/usr/bin/env node
// Prints the newest glibc and libstdc++ symbol versions (GLIBCXX and CXXABI) a built binary needs (from
// `objdump -T`): the oldest Linux it can load on.
// Usage: node scripts/abi-requirements.js [--max-glibc V] [--max-glibcxx V] [--max-cxxabi V] <file>...
// With a --max option it exits 1 when a file needs something newer (CI keeps the prebuild portable).
// OBJDUMP=<program> reads other architectures' files (aarch64-linux-gnu-objdump for the arm64 prebuild).
'use strict';
const { execFileSync } = require('child_process');

function newest(versions) {
  const cmp = (a, b) => {
    const x = a.split('.').map(Number), y = b.split('.').map(Number);
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
    return 0;
  };
  return [...versions].sort(cmp).pop();
}

const args = process.argv.slice(2);
const limit = (flag) => {
  const i = args.indexOf(flag);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const maxGlibc = limit('--max-glibc');
const maxGlibcxx = limit('--max-glibcxx');
const maxCxxabi = limit('--max-cxxabi');
const newer = (v, max) => max !== undefined && v !== undefined && newest([v, max]) === v && v !== max;
let tooNew = false;

for (const file of args) {
  const dump = execFileSync(process.env.OBJDUMP || 'objdump', ['-T', file], { encoding: 'utf8' });
  const glibc = [...dump.matchAll(/GLIBC_([0-9.]+)/g)].map((m) => m[1]);
  const glibcxx = [...dump.matchAll(/GLIBCXX_([0-9.]+)/g)].map((m) => m[1]);
  const cxxabi = [...dump.matchAll(/CXXABI_([0-9.]+)/g)].map((m) => m[1]);
  const needs = [...dump.matchAll(/\(GLIBC_([0-9.]+)\)\s+(\S+)/g)].filter((m) => m[1] === newest(glibc));
  console.log(
    `${file}: glibc >= ${newest(glibc) ?? 'none'}${glibcxx.length ? `, libstdc++ >= GLIBCXX_${newest(glibcxx)}` : ''}` +
      `${cxxabi.length ? ` and CXXABI_${newest(cxxabi)}` : ''}` +
      (needs.length ? ` (glibc ${needs[0][1]} for ${[...new Set(needs.map((m) => m[2]))].join(', ')})` : ''),
  );
  if (newer(newest(glibc), maxGlibc) || newer(newest(glibcxx), maxGlibcxx) || newer(newest(cxxabi), maxCxxabi)) {
    const over = [...dump.matchAll(/\(CXXABI_([0-9.]+)\)\s+(\S+)/g)].filter((m) => newer(m[1], maxCxxabi)).map((m) => m[2]);
    console.log(`  needs more than glibc ${maxGlibc ?? 'any'} / GLIBCXX ${maxGlibcxx ?? 'any'} / CXXABI ${maxCxxabi ?? 'any'}` +
      `${over.length ? ` (CXXABI for ${over.join(', ')})` : ''}: the prebuild would not load on older systems`);
    tooNew = true;
  }
}
process.exit(tooNew ? 1 : 0);
