// --iface-can-reach against a real kernel routing table in a node netns:
// the interface and source address of the route to the target are chosen,
// the default route does not win over a more specific one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chooseExternalInterface, ExternalInterfaceError } from '../../src/daemon/external.js';
import { addNetns, cleanupAll, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

describe.skipIf(requireOrSkip('iface-can-reach', { root: isRoot }))('--iface-can-reach in a node netns', () => {
  let ns = '';
  const ip = (args: string[]) => execFileSync('ip', ['-n', ns, ...args]);

  beforeAll(() => {
    ns = addNetns('canreach');
    for (const [name, cidr] of [['eth0', '10.0.2.15/24'], ['eth1', '192.168.50.12/24']] as const) {
      ip(['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
      ip(['addr', 'add', cidr, 'dev', name]);
      ip(['link', 'set', name, 'up']);
      ip(['link', 'set', `${name}p`, 'up']);
    }
    // a second address on eth1, and a routed cluster network through eth1 that uses it as source
    ip(['addr', 'add', '192.168.51.12/24', 'dev', 'eth1']);
    ip(['route', 'add', 'default', 'via', '10.0.2.2']);
    ip(['route', 'add', '172.20.0.0/16', 'via', '192.168.51.1', 'src', '192.168.51.12']);
  });
  afterAll(() => cleanupAll());

  it('picks the route\'s interface and source address, like `ip route get`', () => {
    const netns = nsPath(ns);
    expect(chooseExternalInterface({ netns, ifaceCanReach: '172.20.4.5' })).toMatchObject({ name: 'eth1', ip: '192.168.51.12' });
    expect(chooseExternalInterface({ netns, ifaceCanReach: '192.168.50.99' })).toMatchObject({ name: 'eth1', ip: '192.168.50.12' });
    expect(chooseExternalInterface({ netns, ifaceCanReach: '8.8.8.8' })).toMatchObject({ name: 'eth0', ip: '10.0.2.15' });
    // the kernel agrees
    expect(execFileSync('ip', ['-n', ns, 'route', 'get', '172.20.4.5'], { encoding: 'utf8' })).toMatch(/dev eth1 src 192\.168\.51\.12/);
  });

  it('fails naming the flag when nothing routes there', () => {
    ip(['route', 'del', 'default']);
    expect(() => chooseExternalInterface({ netns: nsPath(ns), ifaceCanReach: '8.8.8.8' })).toThrow(ExternalInterfaceError);
    expect(() => chooseExternalInterface({ netns: nsPath(ns), ifaceCanReach: '8.8.8.8' })).toThrow(/--iface-can-reach 8\.8\.8\.8: no route to it/);
  });
});
