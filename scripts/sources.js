#!/usr/bin/env node
// Lists the C++ sources for one build target, so binding.gyp and CMakeLists.txt never go out of date
// when a kernel file is added. Usage: node scripts/sources.js avx512|avx2|neon|base
// A file's instruction set is its name's suffix: foo_avx512.cc, foo_avx2.cc (x86-64 builds only),
// foo_neon.cc (aarch64 builds only); everything else is base, built on every architecture.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const which = process.argv[2];
if (!['avx512', 'avx2', 'neon', 'base'].includes(which)) {
  console.error('usage: node scripts/sources.js avx512|avx2|neon|base');
  process.exit(2);
}

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

const files = ['native/core', 'native/addon']
  .flatMap((d) => walk(path.join(root, d)))
  .filter((f) => f.endsWith('.cc'))
  .map((f) => path.relative(root, f).split(path.sep).join('/'))
  .filter((f) => {
    const isa = /_(avx512|avx2|neon)\.cc$/.exec(f);
    return which === 'base' ? !isa : isa && isa[1] === which;
  })
  .sort();
process.stdout.write(files.join('\n') + '\n');
