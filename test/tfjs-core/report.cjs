#!/usr/bin/env node
// Per spec file counts and failures of the tfjs-core spec project, from a vitest JSON report:
//   node test/tfjs-core/report.cjs [test-results/vitest.json]
// Failures with the same first message line are listed once, with their spec names.
'use strict';
const fs = require('fs');

const report = JSON.parse(fs.readFileSync(process.argv[2] || 'test-results/vitest.json', 'utf8'));
const files = new Map();
for (const result of report.testResults) {
  if (!/[\\/]test[\\/]tfjs-core[\\/]/.test(result.name)) continue;
  if (result.status === 'failed' && result.message) console.log(`${result.name}: ${result.message}`);
  for (const a of result.assertionResults) {
    const file = a.ancestorTitles[0] ?? '(top level)';
    if (!files.has(file)) files.set(file, { passed: 0, failed: 0, skipped: 0, failures: new Map() });
    const f = files.get(file);
    if (a.status === 'passed') f.passed++;
    else if (a.status === 'failed') {
      f.failed++;
      const msg = (a.failureMessages[0] ?? '').split('\n')[0];
      if (!f.failures.has(msg)) f.failures.set(msg, []);
      f.failures.get(msg).push(a.ancestorTitles.slice(1).concat(a.title).join(' > '));
    } else f.skipped++;
  }
}
const width = Math.max(...[...files.keys()].map((k) => k.length));
for (const [file, f] of files)
  console.log(`${file.padEnd(width)}  ${String(f.passed).padStart(4)} passed  ${String(f.failed).padStart(3)} failed${f.skipped ? `  ${f.skipped} skipped` : ''}`);
for (const [file, f] of files) {
  if (!f.failed) continue;
  console.log(`\n${file}:`);
  for (const [msg, specs] of f.failures) {
    console.log(`  ${msg}`);
    for (const s of specs) console.log(`    - ${s}`);
  }
}
