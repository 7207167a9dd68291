#!/usr/bin/env node
// Runs a TypeScript entry point (bench/run.ts, examples/demo.ts) on plain Node 20: compiles lib/,
// bench/ and examples/ to CommonJS under .run/ with tsc, then runs the compiled file.
'use strict';
const { execFileSync, spawnSync } = require('child_process');
const path = require('path');

const root = path.join(__dirname, '..');
const [entry, ...args] = process.argv.slice(2);
if (!entry || !entry.endsWith('.ts')) {
  console.error('usage: node scripts/run-ts.js <file.ts> [args...]');
  process.exit(2);
}
execFileSync(
  process.execPath,
  [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.run.json'],
  { cwd: root, stdio: 'inherit' },
);
const compiled = path.join(root, '.run', entry.replace(/\.ts$/, '.js'));
const r = spawnSync(process.execPath, ['--expose-gc', compiled, ...args], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
