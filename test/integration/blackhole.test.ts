// --ip-blackhole-route in a node netns: the node's own subnet gets a
// blackhole route when nothing else routes it (traffic to pod addresses
// that do not exist is dropped here, not sent out the default route), and
// a subnet already owned by a bridge is left alone, as flanneld's add does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { ensureBlackholeRoute } from '../../src/daemon/traffic/blackhole.js';
import { addNetns, cleanupAll, isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

describe.skipIf(requireOrSkip('blackhole', { root: isRoot }))('blackhole route for the node subnet', () => {
  let ns = '';
  const ip = (args: string[]) => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });

  beforeAll(() => {
    ns = addNetns('blackhole');
    ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    ip(['addr', 'add', '192.168.220.2/24', 'dev', 'eth0']);
    ip(['link', 'set', 'eth0', 'up']);
    ip(['link', 'set', 'eth0p', 'up']);
    ip(['route', 'add', 'default', 'via', '192.168.220.1']);
  });
  afterAll(() => cleanupAll());

  it('adds blackhole <subnet> once; a pod address then has no way out instead of the default route', () => {
    expect(ip(['route', 'get', '10.244.3.7'])).toContain('via 192.168.220.1');
    expect(ensureBlackholeRoute('10.244.3.0/24', ns)).toBe(true);
    expect(ip(['route', 'show', 'type', 'blackhole'])).toContain('blackhole 10.244.3.0/24');
    expect(() => ip(['route', 'get', '10.244.3.7'])).toThrow();
    expect(ensureBlackholeRoute('10.244.3.0/24', ns)).toBe(false); // idempotent
    expect(ip(['route', 'show', 'type', 'blackhole']).trim().split('\n')).toHaveLength(1);
  });

  it('leaves a subnet a bridge already routes alone', () => {
    ip(['link', 'add', 'cni0', 'type', 'bridge']);
    ip(['addr', 'add', '10.244.4.1/24', 'dev', 'cni0']);
    ip(['link', 'set', 'cni0', 'up']);
    expect(ensureBlackholeRoute('10.244.4.0/24', ns)).toBe(false);
    expect(ip(['route', 'show', '10.244.4.0/24'])).toContain('dev cni0');
    expect(ip(['route', 'show', 'type', 'blackhole'])).not.toContain('10.244.4.0/24');
  });
});
