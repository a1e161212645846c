import { describe, expect, it } from 'vitest';
import { ExternalInterfaceError, selectExternalInterface, type KernelView } from '../../../src/daemon/external.js';

// A node with loopback, a NAT interface every VM shares (the Vagrant case),
// a cluster interface, and a bridge without IPv4.
const view: KernelView = {
  interfaces: [
    { name: 'lo', index: 1, mtu: 65536, addrs: [{ cidr: '127.0.0.1/8', scope: 254 }] },
    { name: 'eth0', index: 2, mtu: 1500, addrs: [{ cidr: '10.0.2.15/24', scope: 0 }] },
    {
      name: 'eth1',
      index: 3,
      mtu: 9000,
      addrs: [
        { cidr: '169.254.3.3/16', scope: 253 },
        { cidr: '192.168.50.12/24', scope: 0 },
        { cidr: '192.168.51.12/24', scope: 0 },
      ],
    },
    { name: 'br0', index: 4, mtu: 1500, addrs: [] },
  ],
  defaultRouteIndex: 2,
};

function failure(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ExternalInterfaceError);
    return (err as Error).message;
  }
  throw new Error('expected a failure');
}

describe('selectExternalInterface', () => {
  it('uses the default-route interface when nothing is given', () => {
    expect(selectExternalInterface(view, {})).toEqual({
      name: 'eth0',
      index: 2,
      mtu: 1500,
      ip: '10.0.2.15',
      cidr: '10.0.2.15/24',
      publicIP: '10.0.2.15',
    });
  });

  it('picks --iface by name, preferring a global address over a link-local one', () => {
    const ext = selectExternalInterface(view, { iface: ['eth1'] });
    expect([ext.name, ext.ip, ext.cidr, ext.mtu]).toEqual(['eth1', '192.168.50.12', '192.168.50.12/24', 9000]);
  });

  it('picks --iface by address and uses exactly that address', () => {
    const ext = selectExternalInterface(view, { iface: ['192.168.51.12'] });
    expect([ext.name, ext.ip, ext.cidr]).toEqual(['eth1', '192.168.51.12', '192.168.51.12/24']);
  });

  it('tries --iface entries in order and skips ones that do not fit', () => {
    const ext = selectExternalInterface(view, { iface: ['eth9', 'br0', '10.9.9.9', 'eth1', 'eth0'] });
    expect(ext.name).toBe('eth1');
  });

  it('matches --iface-regex against addresses before names', () => {
    // "eth0" would match the name of eth0, but 192.168.* matches an address first
    expect(selectExternalInterface(view, { ifaceRegex: ['^192\\.168\\.51\\.'] }).ip).toBe('192.168.51.12');
    expect(selectExternalInterface(view, { ifaceRegex: ['^eth1$'] }).ip).toBe('192.168.50.12');
    expect(selectExternalInterface(view, { ifaceRegex: ['nomatch', '^10\\.0\\.'] }).name).toBe('eth0');
  });

  it('never chooses a loopback address, even for a catch-all regex', () => {
    expect(selectExternalInterface(view, { ifaceRegex: ['.*'] }).name).toBe('eth0');
  });

  it('tries --iface before --iface-regex', () => {
    expect(selectExternalInterface(view, { iface: ['eth0'], ifaceRegex: ['eth1'] }).name).toBe('eth0');
    expect(selectExternalInterface(view, { iface: ['nope'], ifaceRegex: ['eth1'] }).name).toBe('eth1');
  });

  it('advertises --public-ip while keeping the interface address as ip', () => {
    const ext = selectExternalInterface(view, { iface: ['eth1'], publicIP: '203.0.113.7' });
    expect([ext.ip, ext.publicIP]).toEqual(['192.168.50.12', '203.0.113.7']);
  });

  it('without --iface, finds the interface owning --public-ip', () => {
    const ext = selectExternalInterface(view, { publicIP: '192.168.51.12' });
    expect([ext.name, ext.ip, ext.publicIP]).toEqual(['eth1', '192.168.51.12', '192.168.51.12']);
  });

  it('names everything it tried when nothing matches', () => {
    const msg = failure(() => selectExternalInterface(view, { iface: ['eth7', '10.1.1.1', 'br0'], ifaceRegex: ['^wlan'] }));
    expect(msg).toContain('--iface eth7: no such interface');
    expect(msg).toContain('--iface 10.1.1.1: no interface has this address');
    expect(msg).toContain('--iface br0: interface has no IPv4 address');
    expect(msg).toContain('--iface-regex ^wlan');
    expect(msg).toContain('eth1 192.168.50.12,192.168.51.12');
  });

  it('explains a NATed --public-ip that no interface owns', () => {
    expect(failure(() => selectExternalInterface(view, { publicIP: '203.0.113.7' }))).toMatch(/no interface has the --public-ip 203\.0\.113\.7/);
  });

  it('refuses bad input and missing defaults with a reason', () => {
    expect(failure(() => selectExternalInterface(view, { publicIP: 'example.com' }))).toMatch(/not an IPv4 address/);
    expect(failure(() => selectExternalInterface(view, { ifaceRegex: ['('] }))).toMatch(/not a valid regular expression/);
    expect(failure(() => selectExternalInterface({ interfaces: view.interfaces }, {}))).toMatch(/no IPv4 default route/);
    expect(failure(() => selectExternalInterface({ ...view, defaultRouteIndex: 4 }, {}))).toMatch(/br0 has no IPv4 address/);
    const zeroMtu: KernelView = { interfaces: [{ name: 'x0', index: 9, mtu: 0, addrs: [{ cidr: '10.1.0.1/24', scope: 0 }] }] };
    expect(failure(() => selectExternalInterface(zeroMtu, { iface: ['x0'] }))).toMatch(/MTU 0/);
  });
});

describe('--iface-can-reach', () => {
  const routed: KernelView = {
    ...view,
    routes: [
      { dst: 'default', linkIndex: 2, metric: 0 },
      { dst: '192.168.50.0/24', linkIndex: 3, metric: 0, src: '192.168.50.12' },
      { dst: '192.168.51.0/24', linkIndex: 3, metric: 0, src: '192.168.51.12' },
      { dst: '10.20.0.0/16', linkIndex: 3, metric: 100, src: '192.168.51.12' },
      { dst: '10.20.0.0/16', linkIndex: 2, metric: 200 },
    ],
  };

  it('picks the interface and source of the longest matching route, lowest metric first', () => {
    expect(selectExternalInterface(routed, { ifaceCanReach: '192.168.51.7' })).toMatchObject({ name: 'eth1', ip: '192.168.51.12' });
    expect(selectExternalInterface(routed, { ifaceCanReach: '192.168.50.7' })).toMatchObject({ name: 'eth1', ip: '192.168.50.12' });
    expect(selectExternalInterface(routed, { ifaceCanReach: '10.20.3.4' })).toMatchObject({ name: 'eth1', ip: '192.168.51.12' });
    expect(selectExternalInterface(routed, { ifaceCanReach: '8.8.8.8' })).toMatchObject({ name: 'eth0', ip: '10.0.2.15' });
  });

  it('comes after --iface and --iface-regex, as in flannel, and names itself when nothing routes there', () => {
    expect(selectExternalInterface(routed, { iface: ['eth0'], ifaceCanReach: '192.168.50.7' })).toMatchObject({ name: 'eth0' });
    expect(selectExternalInterface(routed, { iface: ['nope'], ifaceCanReach: '192.168.50.7' })).toMatchObject({ name: 'eth1' });
    const noDefault: KernelView = { ...routed, routes: routed.routes!.filter((r) => r.dst !== 'default') };
    expect(failure(() => selectExternalInterface(noDefault, { ifaceCanReach: '8.8.8.8' }))).toMatch(/--iface-can-reach 8\.8\.8\.8: no route to it/);
  });
});

describe('IPv6: dual-stack and IPv6-only selection', () => {
  // eth0 is the NAT interface with both default routes; eth1 the cluster
  // interface with a link-local, a global and a second global IPv6 address.
  const v6view: KernelView = {
    interfaces: [
      { name: 'lo', index: 1, mtu: 65536, addrs: [{ cidr: '127.0.0.1/8', scope: 254 }, { cidr: '::1/128', scope: 254 }] },
      { name: 'eth0', index: 2, mtu: 1500, addrs: [{ cidr: '10.0.2.15/24', scope: 0 }, { cidr: '2001:db8:2::15/64', scope: 0 }] },
      {
        name: 'eth1',
        index: 3,
        mtu: 9000,
        addrs: [
          { cidr: '192.168.50.12/24', scope: 0 },
          { cidr: 'fe80::12/64', scope: 253 },
          { cidr: 'fd50::12/64', scope: 0 },
          { cidr: 'fd51::12/64', scope: 0 },
        ],
      },
      { name: 'v4only', index: 4, mtu: 1500, addrs: [{ cidr: '192.168.60.1/24', scope: 0 }, { cidr: 'fe80::1/64', scope: 253 }] },
    ],
    defaultRouteIndex: 2,
    defaultV6RouteIndex: 2,
    routes: [
      { dst: 'default', linkIndex: 2, metric: 0 },
      { dst: '::/0', linkIndex: 2, metric: 1024 },
      { dst: 'fd51::/64', linkIndex: 3, metric: 256, src: 'fd51::12' },
      { dst: 'fd60::/48', linkIndex: 3, metric: 1024, src: 'fd51::12' },
    ],
  };
  const dual = { ipv4: true, ipv6: true };
  const v6only = { ipv4: false, ipv6: true };

  it('dual-stack: the IPv4 rules pick the interface, which then gives its first global IPv6 address', () => {
    expect(selectExternalInterface(v6view, { families: dual })).toEqual({
      name: 'eth0',
      index: 2,
      mtu: 1500,
      ip: '10.0.2.15',
      cidr: '10.0.2.15/24',
      publicIP: '10.0.2.15',
      ipv6: '2001:db8:2::15',
      ipv6Cidr: '2001:db8:2::15/64',
      publicIPv6: '2001:db8:2::15',
    });
    // never the link-local one
    expect(selectExternalInterface(v6view, { iface: ['eth1'], families: dual })).toMatchObject({ ip: '192.168.50.12', ipv6: 'fd50::12' });
  });

  it('dual-stack: --iface <IPv6 address> picks its interface and exactly that IPv6 address (flannel needs --public-ipv6 for that)', () => {
    expect(selectExternalInterface(v6view, { iface: ['fd51::12'], families: dual })).toMatchObject({ name: 'eth1', ip: '192.168.50.12', ipv6: 'fd51::12' });
  });

  it('dual-stack: --iface-regex matches IPv6 addresses too, and --public-ipv6 is advertised', () => {
    expect(selectExternalInterface(v6view, { ifaceRegex: ['^fd51:'], families: dual })).toMatchObject({ name: 'eth1', ipv6: 'fd51::12' });
    expect(selectExternalInterface(v6view, { iface: ['eth1'], publicIPv6: '2001:db8::99', families: dual })).toMatchObject({
      ipv6: 'fd50::12',
      publicIPv6: '2001:db8::99',
    });
    // --public-ipv6 naming an address of the interface selects that one as the VTEP address
    expect(selectExternalInterface(v6view, { iface: ['eth1'], publicIPv6: 'fd51::12', families: dual })).toMatchObject({ ipv6: 'fd51::12' });
  });

  it('dual-stack: --iface-can-reach an IPv6 target takes the route\'s interface and IPv6 source', () => {
    expect(selectExternalInterface(v6view, { ifaceCanReach: 'fd60::7', families: dual })).toMatchObject({ name: 'eth1', ip: '192.168.50.12', ipv6: 'fd51::12' });
    expect(selectExternalInterface(v6view, { ifaceCanReach: '2001:db8:9::1', families: dual })).toMatchObject({ name: 'eth0', ipv6: '2001:db8:2::15' });
  });

  it('dual-stack: an interface without a global IPv6 address is refused, naming EnableIPv6', () => {
    expect(failure(() => selectExternalInterface(v6view, { iface: ['v4only'], families: dual }))).toMatch(/v4only has no global IPv6 address, which EnableIPv6 needs/);
  });

  it('IPv6-only: the IPv6 default route, IPv6 rules and --public-ipv6 pick the interface; no IPv4 fields', () => {
    expect(selectExternalInterface(v6view, { families: v6only })).toEqual({
      name: 'eth0',
      index: 2,
      mtu: 1500,
      ip: '',
      cidr: '',
      publicIP: '',
      ipv6: '2001:db8:2::15',
      ipv6Cidr: '2001:db8:2::15/64',
      publicIPv6: '2001:db8:2::15',
    });
    expect(selectExternalInterface(v6view, { iface: ['eth1'], families: v6only })).toMatchObject({ name: 'eth1', ip: '', ipv6: 'fd50::12' });
    expect(selectExternalInterface(v6view, { publicIPv6: 'fd51::12', families: v6only })).toMatchObject({ name: 'eth1', ipv6: 'fd51::12' });
    expect(selectExternalInterface(v6view, { ifaceCanReach: 'fd60::1', families: v6only })).toMatchObject({ name: 'eth1', ipv6: 'fd51::12' });
    expect(failure(() => selectExternalInterface(v6view, { iface: ['v4only'], families: v6only }))).toMatch(/--iface v4only: interface has no IPv6 address/);
    expect(failure(() => selectExternalInterface({ interfaces: v6view.interfaces, defaultRouteIndex: 2 }, { families: v6only }))).toMatch(/no IPv6 default route/);
    expect(failure(() => selectExternalInterface(v6view, { publicIPv6: '2001:db8::77', families: v6only }))).toMatch(/no interface has the --public-ipv6 2001:db8::77/);
  });

  it('refuses a --public-ipv6 that is not an IPv6 address', () => {
    expect(failure(() => selectExternalInterface(v6view, { publicIPv6: '10.0.0.1', families: dual }))).toMatch(/--public-ipv6 "10.0.0.1" is not an IPv6 address/);
  });

  it('IPv4-only ignores IPv6 entirely: same answer with or without IPv6 addresses and routes', () => {
    const stripped: KernelView = {
      interfaces: v6view.interfaces.map((i) => ({ ...i, addrs: i.addrs.filter((a) => !a.cidr.includes(':')) })),
      defaultRouteIndex: 2,
      routes: v6view.routes!.filter((r) => !r.dst.includes(':')),
    };
    for (const sel of [{}, { iface: ['eth1'] }, { ifaceRegex: ['^192'] }, { ifaceCanReach: '10.0.2.7' }]) {
      expect(selectExternalInterface(v6view, sel)).toEqual(selectExternalInterface(stripped, sel));
    }
    // an IPv6 --iface-can-reach target is routed by the IPv6 table and gives that interface's IPv4 address
    expect(selectExternalInterface(v6view, { ifaceCanReach: 'fd60::1' })).toMatchObject({ name: 'eth1', ip: '192.168.50.12' });
    expect(selectExternalInterface(v6view, { ifaceCanReach: 'fd60::1' }).ipv6).toBeUndefined();
  });
});
