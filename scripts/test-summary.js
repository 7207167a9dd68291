#!/usr/bin/env node
// Prints "N passed, N failed[, N skipped]" from vitest JSON reports (summed over all files given).
'use strict';
const fs = require('fs');

let passed = 0, failed = 0, skipped = 0;
for (const file of process.argv.slice(2)) {
  if (!fs.existsSync(file)) {
    console.error(`${file}: no report (the test run did not finish)`);
    failed++;
    continue;
  }
  const r = JSON.parse(fs.readFileSync(file, 'utf8'));
  passed += r.numPassedTests;
  // A file that failed without a failing test (it did not load, a hook threw) counts as one failure.
  const brokenFiles = (r.testResults || []).filter(
    (f) => f.status === 'failed' && !(f.assertionResults || []).some((a) => a.status === 'failed'),
  ).length;
  failed += r.numFailedTests + brokenFiles;
  skipped += r.numPendingTests + (r.numTodoTests || 0);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
