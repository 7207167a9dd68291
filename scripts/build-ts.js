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

const names = Object.keys(require(path.join(dist, 'cjs', 'index.js'))).filter((n) => n !== '__esModule').sort();
fs.mkdirSync(path.join(dist, 'esm'), { recursive: true });
fs.writeFileSync(
  path.join(dist, 'esm', 'index.mjs'),
  `import xnorm from '../cjs/index.js';\nexport const { ${names.join(', ')} } = xnorm;\nexport default xnorm;\n`,
);
fs.writeFileSync(path.join(dist, 'esm', 'index.d.mts'), "export * from '../cjs/index.js';\n");
console.log(`dist/: ${names.length} exports (CommonJS build + ESM wrapper)`);
