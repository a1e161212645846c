// The netlink shim's own Go tests (native/tsfnl/*_test.go), built the way
// scripts/go-build.sh builds the shim: GOPATH mode against Debian's Go sources.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { requireOrSkip } from '../helpers/require.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const haveGo = spawnSync('go', ['version']).status === 0;

/** Runs the shim's Go tests matching `pattern`; every one must pass. */
function goTest(pattern: string): void {
  const gopath = join(ROOT, 'native/build/gopath');
  const pkg = join(gopath, 'src/tsflannel/tsfnl');
  if (!existsSync(pkg)) {
    mkdirSync(join(gopath, 'src/tsflannel'), { recursive: true });
    symlinkSync(join(ROOT, 'native/tsfnl'), pkg);
  }
  const r = spawnSync('go', ['test', '-count=1', '-v', '-run', pattern, '.'], {
    cwd: pkg,
    encoding: 'utf8',
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: `${gopath}:/usr/share/gocode`,
      GOCACHE: process.env.GOCACHE ?? join(ROOT, 'native/build/gocache'),
      GOFLAGS: '',
    },
    timeout: 300_000,
  });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/^ok\s/m);
  // -run matching nothing also says ok: the tests must have run
  expect(r.stdout).toMatch(/^--- PASS: Test/m);
  expect(r.stdout).not.toMatch(/^--- FAIL/m);
}

describe.skipIf(requireOrSkip('netlink shim Go tests', { go: haveGo }))('netlink shim Go tests', () => {
  it('a panic in an op replies with a one-line message and keeps the Go stack in its own field', () => {
    goTest('TestPanicReply');
  }, 300_000);

  it('batch.apply\'s request text decodes to the entries encodeBatch wrote, and a malformed line is refused naming its entry', () => {
    goTest('TestBatchText');
  }, 300_000);
});
