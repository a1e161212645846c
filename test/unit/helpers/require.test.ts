// The skip guard of the system tests: outside CI a missing requirement skips
// (and says which), under CI it fails instead of letting the run pass empty.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { MissingRequirementError, requireOrSkip, skipOrFail, strictMode } from '../../helpers/require.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));

describe('requireOrSkip', () => {
  it('reads CI as strict unless it is empty, 0 or false', () => {
    for (const ci of ['true', '1', 'yes', 'TRUE']) expect(strictMode({ CI: ci }), ci).toBe(true);
    for (const ci of [undefined, '', '0', 'false', 'False']) expect(strictMode({ CI: ci }), String(ci)).toBe(false);
  });

  it('runs the suite when every requirement is met, in CI or not', () => {
    expect(requireOrSkip('s', { root: true, etcd: true }, { CI: 'true' })).toBe(false);
    expect(requireOrSkip('s', { root: true }, {})).toBe(false);
    expect(requireOrSkip('s', {}, { CI: 'true' })).toBe(false);
  });

  it('skips outside CI and names what is missing on stderr', () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(requireOrSkip('etcd suite', { root: true, 'etcd (/nope)': false, strace: false }, {})).toBe(true);
      expect(write).toHaveBeenCalledWith('[skip] etcd suite: missing etcd (/nope), strace\n');
    } finally {
      write.mockRestore();
    }
  });

  it('throws under CI=true instead of skipping, naming the suite and what is missing', () => {
    expect(() => requireOrSkip('etcd suite', { root: true, 'etcd (/nope)': false }, { CI: 'true' })).toThrow(MissingRequirementError);
    expect(() => requireOrSkip('etcd suite', { 'etcd (/nope)': false }, { CI: 'true' })).toThrow(/etcd suite cannot run: missing etcd \(\/nope\)\. CI=true forbids/);
  });

  it('skipOrFail skips a running test outside CI and fails it under CI', () => {
    const skip = vi.fn();
    skipOrFail(skip, 'sea', 'build failed', {});
    expect(skip).toHaveBeenCalledWith('build failed');
    skip.mockClear();
    expect(() => skipOrFail(skip, 'sea', 'build failed', { CI: 'true' })).toThrow(/sea cannot run: build failed/);
    expect(skip).not.toHaveBeenCalled();
  });

  it('makes a vitest run of a suite with a missing tool fail under CI=true and pass (skipped) without it', () => {
    // A throwaway test file whose requirement can never be met, with its own
    // config, under build/ (ignored by git and by the project's test globs).
    mkdirSync(join(REPO, 'build'), { recursive: true });
    const dir = mkdtempSync(join(REPO, 'build/require-probe-'));
    try {
      const file = join(dir, 'needs-missing-tool.test.ts');
      writeFileSync(
        file,
        `import { describe, it, expect } from 'vitest';
import { requireOrSkip } from '${join(REPO, 'test/helpers/require.js')}';
describe.skipIf(requireOrSkip('probe', { 'tool /nonexistent/tsf-tool': false }))('probe', () => { it('runs', () => expect(1).toBe(1)); });
`,
      );
      writeFileSync(join(dir, 'vitest.config.ts'), `export default { test: { include: ['*.test.ts'] } };\n`);
      const run = (ci: string) =>
        spawnSync(join(REPO, 'node_modules/.bin/vitest'), ['run', '--root', dir, '--config', join(dir, 'vitest.config.ts')], {
          encoding: 'utf8',
          env: { ...process.env, CI: ci },
          timeout: 60_000,
        });
      const strict = run('true');
      expect(strict.status, strict.stdout + strict.stderr).toBe(1);
      expect(strict.stdout + strict.stderr).toMatch(/probe cannot run: missing tool \/nonexistent\/tsf-tool/);
      const lax = run('');
      expect(lax.status, lax.stdout + lax.stderr).toBe(0);
      expect(lax.stdout + lax.stderr).toMatch(/1 skipped/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('is how every system suite skips: no bare skipIf, skip or todo in test/integration, test/e2e or test/fuzz', () => {
    const files = ['test/integration', 'test/e2e', 'test/fuzz'].flatMap((dir) =>
      readdirSync(join(REPO, dir), { recursive: true, encoding: 'utf8' })
        .filter((f) => f.endsWith('.ts'))
        .map((f) => join(dir, f)),
    );
    expect(files.length).toBeGreaterThan(10);
    const offenders: string[] = [];
    for (const file of files) {
      readFileSync(join(REPO, file), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          // skipIf only with requireOrSkip(...) or a value computed by it (mustSkip in the runtime suites).
          const m = /\.skipIf\(([^)]*)/.exec(line);
          if (m && !/^(requireOrSkip\(|skip$)/.test(m[1]!)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
          if (/\b(describe|it|test)\.(skip|todo)\(/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(offenders).toEqual([]);
  });
});
