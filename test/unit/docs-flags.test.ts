// The flag reference lists every flag tsflanneld accepts, with its env var,
// and the observability page every metric the agent registers.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { envName, FLAGS } from '../../src/daemon/options.js';
import { createAgentMetrics } from '../../src/daemon/metrics.js';

const doc = (p: string) => readFileSync(new URL(`../../docs/${p}`, import.meta.url), 'utf8');

describe('agent docs', () => {
  it('configuration-agent-flags.md has a row for every visible flag, with its FLANNELD_* variable', () => {
    const text = doc('configuration-agent-flags.md');
    for (const [flag, spec] of Object.entries(FLAGS)) {
      if (spec.hidden) continue;
      const row = text.split('\n').find((l) => l.startsWith(`| \`--${flag}\` |`));
      expect(row, `row for --${flag}`).toBeDefined();
      expect(row).toContain(`\`${envName(flag)}\``);
    }
  });

  it('observability.md names every tsflannel_* metric', async () => {
    const text = doc('observability.md');
    const names = (await createAgentMetrics({ processMetrics: false }).registry.getMetricsAsJSON()).map((m) => m.name);
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) expect(text, name).toContain(`\`${name}\``);
  });
});
