// tsflanneld with EnableIPv6, as an operator meets it with a backend that
// has no IPv6 data path (wireguard) and with a node that cannot serve IPv6:
// one clear line naming EnableIPv6 and a non-zero exit, never an IPv4-only
// agent that silently ignores the key. Runs in a node netns with both families.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanupAll, isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));

describe.skipIf(requireOrSkip('agent with EnableIPv6', { root: isRoot }))('tsflanneld with EnableIPv6 in a node netns', () => {
  let ns = '';
  let dir = '';
  const ip = (args: string[]) => execFileSync('ip', ['-n', ns, ...args]);

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-agent6-'));
    ns = addNetns('agent6');
    ip(['link', 'set', 'lo', 'up']);
    for (const [name, v4, v6] of [
      ['eth0', '10.0.2.15/24', '2001:db8:2::15/64'],
      ['eth1', '192.168.50.12/24', undefined],
    ] as const) {
      ip(['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
      ip(['addr', 'add', v4, 'dev', name]);
      if (v6) ip(['-6', 'addr', 'add', v6, 'dev', name, 'nodad']);
      ip(['link', 'set', name, 'up']);
      ip(['link', 'set', `${name}p`, 'up']);
    }
    ip(['route', 'add', 'default', 'via', '10.0.2.2']);
    ip(['-6', 'route', 'add', 'default', 'via', '2001:db8:2::1']);
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  function agent(conf: object, extra: string[] = []) {
    const path = join(dir, `net-conf-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, JSON.stringify(conf));
    // The API server is never reached: start-up stops before the lease.
    const args = ['--kube-subnet-mgr', '--net-config-path', path, '--kube-api-url', 'http://127.0.0.1:9', '--node-name', 'n1', '--cni-socket', '', ...extra];
    return spawnSync('ip', ['netns', 'exec', ns, AGENT, ...args], { encoding: 'utf8', timeout: 30_000 });
  }

  const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'vxlan' } };

  it('refuses EnableIPv6 with a backend that does not carry IPv6, naming the key and the backend', () => {
    const out = agent({ ...DUAL, Backend: { Type: 'wireguard' } });
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/the wireguard backend of tsflannel carries IPv4 only; use vxlan or host-gw for IPv6 \(EnableIPv6\)/);
    // it got as far as the interface: both of eth0's addresses were found
    expect(out.stderr).toMatch(/"ipv6":"2001:db8:2::15"/);
    expect(out.stdout).toBe('');
    // no device was made
    expect(execFileSync('ip', ['-n', ns, '-o', 'link', 'show'], { encoding: 'utf8' })).not.toMatch(/flannel/);
  });

  it('refuses a dual-stack node whose interface has no global IPv6 address, naming EnableIPv6', () => {
    const out = agent(DUAL, ['--iface', 'eth1']);
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/interface eth1 has no global IPv6 address, which EnableIPv6 needs/);
  });

  it('refuses a --public-ipv6 that is not an IPv6 address with the usage exit code', () => {
    const out = agent(DUAL, ['--public-ipv6', '10.0.0.1']);
    expect(out.status).toBe(2);
    expect(out.stderr).toContain('--public-ipv6 must be an IPv6 address');
  });
});
