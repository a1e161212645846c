// --ip-blackhole-route in a node netns: the node's own subnet gets a
// blackhole route when nothing else routes it (traffic to pod addresses
// that do not exist is dropped here, not sent out the default route), and
// a bridge routing the subnet (before or after the blackhole) wins over it.
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

  it('stays behind a bridge that already routes the subnet (the connected route\'s metric 0 wins)', () => {
    ip(['link', 'add', 'cni0', 'type', 'bridge']);
    ip(['addr', 'add', '10.244.4.1/24', 'dev', 'cni0']);
    ip(['link', 'set', 'cni0', 'up']);
    ensureBlackholeRoute('10.244.4.0/24', ns);
    expect(ensureBlackholeRoute('10.244.4.0/24', ns)).toBe(false); // idempotent
    expect(ip(['route', 'get', '10.244.4.7'])).toContain('dev cni0');
  });

  it('a blackhole added before cni0 exists (fresh node: the agent starts before the first pod) does not swallow the pods cni0 gets later', () => {
    expect(ensureBlackholeRoute('10.244.6.0/24', ns)).toBe(true);
    // what the plugin's first ADD does: the bridge with the gateway address, a pod behind it
    ip(['link', 'add', 'cni1', 'type', 'bridge']);
    ip(['link', 'add', 'vpod1', 'type', 'veth', 'peer', 'name', 'vpod1p']);
    ip(['link', 'set', 'vpod1', 'master', 'cni1']);
    ip(['link', 'set', 'vpod1', 'up']);
    ip(['link', 'set', 'vpod1p', 'up']);
    ip(['addr', 'add', '10.244.6.1/24', 'dev', 'cni1']);
    ip(['link', 'set', 'cni1', 'up']);
    expect(ip(['route', 'get', '10.244.6.7'])).toContain('dev cni1');
    expect(ensureBlackholeRoute('10.244.6.0/24', ns)).toBe(false); // the next resync changes nothing
    expect(ip(['route', 'get', '10.244.6.7'])).toContain('dev cni1');
  });

  it('replaces a metric-0 blackhole of the subnet (an earlier run\'s or flanneld\'s) with its metric-1024 one', () => {
    ip(['route', 'add', 'blackhole', '10.244.7.0/24']);
    expect(ensureBlackholeRoute('10.244.7.0/24', ns)).toBe(true);
    expect(ip(['route', 'show', 'exact', '10.244.7.0/24']).trim()).toBe('blackhole 10.244.7.0/24 metric 1024');
  });
});
