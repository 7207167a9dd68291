import { createRequire } from 'node:module';
import * as path from 'node:path';
import { configDefaults, defineConfig } from 'vitest/config';

// tfjs-core's own op specs (test/tfjs-core/) run in a project of their own: there tfjs-core and
// tfjs-backend-cpu are inlined (transformed by vite from their ESM dist, whose imports have no file
// extensions), so the spec files, the cpu backend and lib/tfjs share one tfjs-core instance. The other
// tests keep Node's own resolution of the tfjs packages (CJS), so they never see a second instance.
const TFJS_CORE_SPECS = 'test/tfjs-core/**';

// vitest resolves bare package ids through "main" (here the CJS bundles tf-core.node.js and
// tf-backend-cpu.node.js), while the spec files import the ESM dist ('../index'). In the spec project the
// bare ids are pointed at the ESM entry ("module") too, so that every importer gets the same instance.
const require = createRequire(import.meta.url);
function esmEntry(pkg: string): string {
  const manifest = require.resolve(`${pkg}/package.json`);
  return path.join(path.dirname(manifest), (require(manifest) as { module: string }).module);
}

export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Child-process tests (forced ISA levels, workers) need real processes, not threads.
    pool: 'forks',
    // The JSON report lets .ci/run print a plain "N passed, N failed" line (it counts both projects).
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/vitest.json' },
    projects: [
      {
        extends: true,
        test: {
          name: 'main',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, TFJS_CORE_SPECS],
        },
      },
      {
        extends: true,
        test: {
          name: 'tfjs-core',
          include: [`${TFJS_CORE_SPECS}/*.test.ts`],
          alias: [
            { find: /^@tensorflow\/tfjs-core$/, replacement: esmEntry('@tensorflow/tfjs-core') },
            { find: /^@tensorflow\/tfjs-backend-cpu$/, replacement: esmEntry('@tensorflow/tfjs-backend-cpu') },
          ],
          server: { deps: { inline: [/[\\/]@tensorflow[\\/]tfjs-core[\\/]/, /[\\/]@tensorflow[\\/]tfjs-backend-cpu[\\/]/] } },
        },
      },
    ],
  },
});
