// tsflanneld's start-up errors as an operator meets them: one clear line
// naming what is wrong, and a non-zero exit.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));

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
});
