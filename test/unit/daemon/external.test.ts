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
