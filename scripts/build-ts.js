#!/usr/bin/env node
// Compiles lib/ to CommonJS (dist/cjs) and writes the ESM entry (dist/esm), a thin wrapper that
// re-exports the CommonJS build, so ESM and CommonJS users share one module instance and one addon.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const dist = path.join(root, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
});
fs.writeFileSync(path.join(dist, 'cjs', 'package.json'), '{ "type": "commonjs" }\n');

// One ESM wrapper per entry point: the main one and the tfjs backend (xnorm/tfjs).
let count = 0;
for (const entry of ['index', 'tfjs/index']) {
  const names = Object.keys(require(path.join(dist, 'cjs', `${entry}.js`))).filter((n) => n !== '__esModule').sort();
  const up = '../'.repeat(entry.split('/').length);
  const file = path.join(dist, 'esm', entry);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.mjs`, `import m from '${up}cjs/${entry}.js';\nexport const { ${names.join(', ')} } = m;\nexport default m;\n`);
  // The default export is the module object, as in the .mjs (import xnorm from 'xnorm').
  fs.writeFileSync(`${file}.d.mts`, `export * from '${up}cjs/${entry}.js';\nimport * as m from '${up}cjs/${entry}.js';\nexport default m;\n`);
  if (entry === 'index') count = names.length;
}
console.log(`dist/: ${count} exports (CommonJS build + ESM wrapper)`);
