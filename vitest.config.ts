import { defineConfig } from 'vitest/config';

// Two projects: pure unit tests run in parallel; tests that build network
// namespaces, run real daemons and measure pings run one file at a time, so
// a 2-core machine never starves a ping or a lease timer into a false failure.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        extends: true,
        test: {
          name: 'system',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts', 'test/fuzz/**/*.test.ts'],
          fileParallelism: false,
        },
      },
    ],
  },
});
