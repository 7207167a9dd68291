#!/usr/bin/env node
// Prints the newest glibc and libstdc++ symbol versions a built addon needs (from `objdump -T`):
// the oldest Linux it can load on. Usage: node scripts/abi-requirements.js [--max-glibc V] [--max-glibcxx V] <file>...
// With a --max option it exits 1 when a file needs something newer (CI keeps the prebuild portable).
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
const newer = (v, max) => max !== undefined && v !== undefined && newest([v, max]) === v && v !== max;
let tooNew = false;

for (const file of args) {
  const dump = execFileSync('objdump', ['-T', file], { encoding: 'utf8' });
  const glibc = [...dump.matchAll(/GLIBC_([0-9.]+)/g)].map((m) => m[1]);
  const glibcxx = [...dump.matchAll(/GLIBCXX_([0-9.]+)/g)].map((m) => m[1]);
  const needs = [...dump.matchAll(/\(GLIBC_([0-9.]+)\)\s+(\S+)/g)].filter((m) => m[1] === newest(glibc));
  console.log(
    `${file}: glibc >= ${newest(glibc) ?? 'none'}${glibcxx.length ? `, libstdc++ >= GLIBCXX_${newest(glibcxx)}` : ''}` +
      (needs.length ? ` (glibc ${needs[0][1]} for ${[...new Set(needs.map((m) => m[2]))].join(', ')})` : ''),
  );
  if (newer(newest(glibc), maxGlibc) || newer(newest(glibcxx), maxGlibcxx)) {
    console.log(`  needs more than glibc ${maxGlibc ?? 'any'} / GLIBCXX ${maxGlibcxx ?? 'any'}: the prebuild would not load on older systems`);
    tooNew = true;
  }
}
process.exit(tooNew ? 1 : 0);
