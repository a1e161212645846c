// tsflanneld's start-up errors as an operator meets them: one clear line
// naming what is wrong, and a non-zero exit.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/tsflannel', import.meta.url));
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function agent(args: string[]) {
  return spawnSync(AGENT, args, { encoding: 'utf8', timeout: 20_000 });
}

describe('tsflanneld start-up errors', () => {
  it('names the bad field of net-conf.json and exits non-zero', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-agentcli-'));
    try {
      const conf = join(dir, 'net-conf.json');
      writeFileSync(conf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 0 } }));
      const out = agent(['--kube-subnet-mgr', '--net-config-path', conf, '--kube-api-url', 'http://127.0.0.1:9', '--node-name', 'n1', '--cni-socket', join(dir, 'cni.sock')]);
      expect(out.status).toBe(1);
      expect(out.stderr).toContain('Backend.VNI');
      expect(out.stdout).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects an unknown flag with usage exit code 2', () => {
    const out = agent(['--no-such-flag']);
    expect(out.status).toBe(2);
    expect(out.stderr).toContain('Unknown argument');
  });

  it('prints help and exits 0 without starting', () => {
    const out = agent(['--help']);
    expect(out.status).toBe(0);
    expect(out.stdout).toContain('--kube-subnet-mgr');
    expect(out.stdout).toContain('--cni-socket');
  });

  it('refuses a relative --cni-socket and a --cni-workers out of range with exit code 2', () => {
    const rel = agent(['--cni-socket', 'run/cni.sock']);
    expect(rel.status).toBe(2);
    expect(rel.stderr).toContain('--cni-socket must be an absolute path');
    const workers = agent(['--cni-workers', '0']);
    expect(workers.status).toBe(2);
    expect(workers.stderr).toContain('--cni-workers');
  });

  it('--version prints the package version on stdout and exits 0, for tsflanneld and tsflannel', () => {
    const d = agent(['--version']);
    expect([d.status, d.stdout]).toEqual([0, `tsflanneld ${VERSION}\n`]);
    // Without CNI_COMMAND in the environment tsflannel is the node tool (an empty one is a runtime's bad call).
    const { CNI_COMMAND: _unset, ...toolEnv } = process.env;
    const c = spawnSync(CLI, ['--version'], { encoding: 'utf8', timeout: 20_000, env: toolEnv });
    expect([c.status, c.stdout]).toEqual([0, `tsflannel ${VERSION}\n`]);
  });

  it('reads flags from FLANNELD_* and names the flag when a value from there is wrong', () => {
    const out = spawnSync(AGENT, [], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '5000' } });
    expect(out.status).toBe(2);
    expect(out.stderr).toBe('tsflanneld: --subnet-lease-renew-margin must be whole minutes from 1 to 1439, got 5000\n');
  });
});
