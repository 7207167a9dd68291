import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Child-process tests (forced ISA levels, workers) need real processes, not threads.
    pool: 'forks',
  },
});
