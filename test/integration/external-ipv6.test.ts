// The external interface of a dual-stack and an IPv6-only node, read from a
// real kernel in a node netns: IPv6 addresses and routes come through the
// netlink shim, link-local and tentative-free global addresses are told
// apart, and --iface-can-reach follows the kernel's IPv6 route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chooseExternalInterface, readInterfaces } from '../../src/daemon/external.js';
import { addNetns, cleanupAll, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

describe.skipIf(requireOrSkip('external interface, IPv6', { root: isRoot }))('IPv6 external interface in a node netns', () => {
  let ns = '';
  const ip = (args: string[]) => execFileSync('ip', ['-n', ns, ...args]);

  beforeAll(() => {
    ns = addNetns('ext6');
    ip(['link', 'set', 'lo', 'up']);
    // eth0: the NAT side with both default routes; eth1: the cluster side.
    for (const [name, v4, v6] of [
      ['eth0', '10.0.2.15/24', '2001:db8:2::15/64'],
      ['eth1', '192.168.50.12/24', 'fd50::12/64'],
    ] as const) {
      ip(['link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
      ip(['addr', 'add', v4, 'dev', name]);
      ip(['-6', 'addr', 'add', v6, 'dev', name, 'nodad']);
      ip(['link', 'set', name, 'up']);
      ip(['link', 'set', `${name}p`, 'up']);
    }
    ip(['-6', 'addr', 'add', 'fd51::12/64', 'dev', 'eth1', 'nodad']);
    ip(['route', 'add', 'default', 'via', '10.0.2.2']);
    ip(['-6', 'route', 'add', 'default', 'via', '2001:db8:2::1']);
    ip(['-6', 'route', 'add', 'fd60::/48', 'via', 'fd51::1', 'src', 'fd51::12']);
  });
  afterAll(() => cleanupAll());

  it('reads IPv6 addresses (with their scope) and the IPv6 default route from the kernel', () => {
    const view = readInterfaces({ netns: nsPath(ns) });
    const eth1 = view.interfaces.find((i) => i.name === 'eth1')!;
    expect(eth1.addrs.map((a) => a.cidr)).toEqual(expect.arrayContaining(['192.168.50.12/24', 'fd50::12/64', 'fd51::12/64']));
    // the kernel's own link-local address is there, with link scope
    expect(eth1.addrs.find((a) => a.cidr.startsWith('fe80:'))?.scope).toBe(253);
    const eth0 = view.interfaces.find((i) => i.name === 'eth0')!;
    expect(view.defaultRouteIndex).toBe(eth0.index);
    expect(view.defaultV6RouteIndex).toBe(eth0.index);
  });

  it('dual-stack: IPv4 rules pick the interface, its global IPv6 address comes along', () => {
    const netns = nsPath(ns);
    const dual = { ipv4: true, ipv6: true };
    expect(chooseExternalInterface({ netns, families: dual })).toMatchObject({ name: 'eth0', ip: '10.0.2.15', ipv6: '2001:db8:2::15', ipv6Cidr: '2001:db8:2::15/64' });
    // eth1's first global IPv6 address in the kernel's order, as `ip -6 addr` lists it (newest first)
    const first = ipJson<{ addr_info: { local: string }[] }[]>(ns, ['-6', 'addr', 'show', 'dev', 'eth1', 'scope', 'global'])[0]!.addr_info[0]!.local;
    expect(['fd50::12', 'fd51::12']).toContain(first);
    expect(chooseExternalInterface({ netns, families: dual, iface: ['eth1'] })).toMatchObject({ ip: '192.168.50.12', ipv6: first });
    // --public-ipv6 naming one of eth1's addresses makes that one the IPv6 VTEP address
    expect(chooseExternalInterface({ netns, families: dual, iface: ['eth1'], publicIPv6: 'fd50::12' })).toMatchObject({ ipv6: 'fd50::12' });
    expect(chooseExternalInterface({ netns, families: dual, iface: ['fd51::12'] })).toMatchObject({ name: 'eth1', ipv6: 'fd51::12' });
  });

  it("--iface-can-reach an IPv6 target takes the kernel's route and source, as `ip -6 route get` does", () => {
    const netns = nsPath(ns);
    expect(chooseExternalInterface({ netns, families: { ipv4: true, ipv6: true }, ifaceCanReach: 'fd60::7' })).toMatchObject({ name: 'eth1', ipv6: 'fd51::12' });
    expect(execFileSync('ip', ['-n', ns, '-6', 'route', 'get', 'fd60::7'], { encoding: 'utf8' })).toMatch(/dev eth1 .*src fd51::12/);
    expect(chooseExternalInterface({ netns, families: { ipv4: false, ipv6: true }, ifaceCanReach: '2001:db8:9::1' })).toMatchObject({ name: 'eth0', ip: '', ipv6: '2001:db8:2::15' });
  });

  it('IPv6-only: the IPv6 default route picks the interface; IPv4-only answers stay as before', () => {
    const netns = nsPath(ns);
    expect(chooseExternalInterface({ netns, families: { ipv4: false, ipv6: true } })).toMatchObject({ name: 'eth0', ip: '', publicIP: '', ipv6: '2001:db8:2::15' });
    const v4 = chooseExternalInterface({ netns });
    expect(v4).toEqual({ name: 'eth0', index: v4.index, mtu: 1500, ip: '10.0.2.15', cidr: '10.0.2.15/24', publicIP: '10.0.2.15' });
  });
});
