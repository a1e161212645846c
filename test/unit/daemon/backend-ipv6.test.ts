// The pure parts of IPv6 in the backends and rules: each lease's IPv6 view,
// planning on it, route ownership and the kernel's IPv6 base metric, and the
// per-family rule sets.
import { describe, expect, it } from 'vitest';
import { externalView, leaseView, LeaseViews } from '../../../src/daemon/backend/family.js';
import { baseMetric, diffRoutes, ownedRoute, planHostGw, planVxlan, type CurrentRoute } from '../../../src/daemon/backend/plan.js';
import { flannelChains, ruleText } from '../../../src/daemon/traffic/iptables.js';
import { nftScript } from '../../../src/daemon/traffic/nftables.js';
import type { ExternalInterface, Lease } from '../../../src/daemon/types.js';
import { parseCidr } from '../../../src/net/ip.js';

const dual = (n: number, extra: Partial<Lease> = {}): Lease => ({
  subnet: `10.244.${n}.0/24`,
  ipv6Subnet: `fd00:10:244:${n}::/64`,
  publicIP: `192.168.1.${n}`,
  publicIPv6: `fd00:50::${n}`,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: `0a:58:00:00:04:0${n}` },
  backendV6Data: { VNI: 1, VtepMAC: `0a:58:00:00:06:0${n}` },
  nodeName: `node${n}`,
  ...extra,
});

const ctx6 = {
  network: parseCidr('fd00:10:244::/56')!,
  ownSubnet: parseCidr('fd00:10:244:1::/64')!,
  extCidr: parseCidr('fd00:50::1/64')!,
  ownIPs: ['fd00:50::1'],
};

describe('the IPv6 view of a lease', () => {
  it('puts IPv6Subnet, PublicIPv6 and BackendV6Data in the places of Subnet, PublicIP and BackendData', () => {
    expect(leaseView(dual(2), 6)).toEqual({
      subnet: 'fd00:10:244:2::/64',
      publicIP: 'fd00:50::2',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '0a:58:00:00:06:02' },
      nodeName: 'node2',
    });
  });

  it('is the lease itself for IPv4, and none for a node without an IPv6 subnet', () => {
    const l = dual(2);
    expect(leaseView(l, 4)).toBe(l);
    const { ipv6Subnet: _, ...v4only } = l;
    expect(leaseView(v4only, 6)).toBeUndefined();
  });

  it('is cached per lease object, so one lease keeps one view (the peer model compares by identity)', () => {
    const views = new LeaseViews(6);
    const a = dual(2);
    const b = dual(3, { ipv6Subnet: undefined });
    const first = views.all([a, b]);
    expect(first.map((v) => v.subnet)).toEqual(['fd00:10:244:2::/64']);
    expect(views.all([a, b])[0]).toBe(first[0]);
    const v4 = new LeaseViews(4);
    const list = [a, b];
    expect(v4.all(list)).toBe(list);
  });

  it('gives a lease changed in place a new view (so its plan is made again), and keeps the view while it is unchanged', () => {
    const views = new LeaseViews(6);
    const a = dual(2);
    const first = views.of(a)!;
    expect(views.of(a)).toBe(first);
    a.publicIPv6 = 'fd00:50::22';
    const moved = views.of(a)!;
    expect(moved).not.toBe(first);
    expect(moved.publicIP).toBe('fd00:50::22');
    expect(views.of(a)).toBe(moved);
    a.backendV6Data = { VNI: 1, VtepMAC: '0a:58:00:00:06:22' };
    expect(views.of(a)!.backendData.VtepMAC).toBe('0a:58:00:00:06:22');
    a.ipv6Subnet = 'fd00:10:244:22::/64';
    expect(views.of(a)!.subnet).toBe('fd00:10:244:22::/64');
    a.ipv6Subnet = undefined;
    expect(views.of(a)).toBeUndefined();
    a.ipv6Subnet = 'fd00:10:244:2::/64';
    expect(views.of(a)!.subnet).toBe('fd00:10:244:2::/64');
  });

  it('takes the external interface\'s IPv6 half, canonical, and names what is missing', () => {
    const ext: ExternalInterface = { name: 'eth0', index: 2, mtu: 1500, ip: '192.168.1.1', cidr: '192.168.1.1/24', publicIP: '192.168.1.1', ipv6: 'FD00:50:0::1', ipv6Cidr: 'fd00:50::1/64' };
    expect(externalView(ext, 6)).toEqual({ name: 'eth0', index: 2, mtu: 1500, ip: 'fd00:50::1', cidr: 'fd00:50::1/64', publicIP: 'fd00:50::1' });
    expect(externalView({ ...ext, publicIPv6: 'fd00:99::1' }, 6).publicIP).toBe('fd00:99::1');
    expect(externalView(ext, 4)).toBe(ext);
    expect(() => externalView({ ...ext, ipv6: undefined }, 6)).toThrow(/eth0 has no global IPv6 address/);
  });
});

describe('planning IPv6 leases', () => {
  it('VXLAN: an onlink route via the remote /128, a permanent neighbour and an FDB entry towards PublicIPv6', () => {
    const views = new LeaseViews(6);
    const plan = planVxlan(views.all([dual(2), dual(3)]), ctx6, { directRouting: false });
    expect(plan.skipped).toEqual([]);
    expect(plan.plans.map(({ route, neigh, fdb }) => ({ route, neigh, fdb }))).toEqual([
      {
        route: { dst: 'fd00:10:244:2::/64', gw: 'fd00:10:244:2::', via: 'overlay' },
        neigh: { ip: 'fd00:10:244:2::', mac: '0a:58:00:00:06:02' },
        fdb: { mac: '0a:58:00:00:06:02', dst: 'fd00:50::2' },
      },
      {
        route: { dst: 'fd00:10:244:3::/64', gw: 'fd00:10:244:3::', via: 'overlay' },
        neigh: { ip: 'fd00:10:244:3::', mac: '0a:58:00:00:06:03' },
        fdb: { mac: '0a:58:00:00:06:03', dst: 'fd00:50::3' },
      },
    ]);
  });

  it('VXLAN with DirectRouting and host-gw: same-L2 IPv6 peers get a route via PublicIPv6; others are refused by host-gw', () => {
    const views = new LeaseViews(6);
    const far = dual(4, { publicIPv6: 'fd00:60::4' });
    const direct = planVxlan(views.all([dual(2), far]), ctx6, { directRouting: true });
    expect(direct.plans.map((p) => p.route)).toEqual([
      { dst: 'fd00:10:244:2::/64', gw: 'fd00:50::2', via: 'underlay' },
      { dst: 'fd00:10:244:4::/64', gw: 'fd00:10:244:4::', via: 'overlay' },
    ]);
    const hg = planHostGw(new LeaseViews(6).all([dual(2, { backendType: 'host-gw' }), dual(4, { backendType: 'host-gw', publicIPv6: 'fd00:60::4' })]), ctx6);
    expect(hg.plans.map((p) => p.route)).toEqual([{ dst: 'fd00:10:244:2::/64', gw: 'fd00:50::2', via: 'underlay' }]);
    expect(hg.skipped.map((s) => s.reason)).toEqual(['public IP fd00:60::4 is not on our L2 subnet fd00:50::/64; host-gw needs every node on one segment']);
  });

  it('refuses an IPv6 view with an IPv4 public address, and our own IPv6 subnet', () => {
    const plan = planVxlan(new LeaseViews(6).all([dual(1), dual(5, { publicIPv6: '192.168.1.5' })]), ctx6, { directRouting: false });
    expect(plan.plans).toEqual([]);
    expect(plan.skipped.map((s) => [s.reason, s.error])).toEqual([
      ['is our own subnet', false],
      ['public IP "192.168.1.5" is not an IPv6 address', true],
    ]);
  });
});

describe('IPv6 routes read back from the kernel', () => {
  const cur = (r: Partial<CurrentRoute>): CurrentRoute => ({ dst: 'fd00:10:244:2::/64', gw: 'fd00:10:244:2::', via: 'overlay', onlink: true, metric: 1024, protocol: 3, ...r });

  it('a route we wrote (metric 1024, the kernel\'s IPv6 default) matches; one of another metric is replaced', () => {
    expect(baseMetric(6)).toBe(1024);
    expect(baseMetric(4)).toBe(0);
    const want = { dst: 'fd00:10:244:2::/64', gw: 'fd00:10:244:2::', via: 'overlay' as const };
    expect(diffRoutes([want], [cur({})], 1024)).toEqual({ write: [], remove: [] });
    const odd = cur({ metric: 5 });
    expect(diffRoutes([want], [odd], 1024)).toEqual({ write: [{ route: want, existed: false }], remove: [odd] });
  });

  it('owns routes inside the IPv6 cluster network only, never the kernel\'s or a default route', () => {
    const net = parseCidr('fd00:10:244::/56')!;
    expect(ownedRoute(cur({ via: 'underlay', gw: 'fd00:50::2' }), net)).toBe(true);
    expect(ownedRoute(cur({ via: 'underlay', dst: 'fd00:99::/64', gw: 'fd00:50::2' }), net)).toBe(false);
    expect(ownedRoute(cur({ dst: '::/0' }), net)).toBe(false);
    expect(ownedRoute(cur({ dst: 'fe80::/64', protocol: 2 }), net)).toBe(false);
  });
});

describe('IPv6 rule sets', () => {
  it('iptables: flannel\'s chains with IPv6 CIDRs and ff00::/8 as the multicast exception', () => {
    const sets = flannelChains({ network: 'fd00:10:244::/56', subnet: 'fd00:10:244:1::/64', ipMasq: true, forwardRules: true, randomFully: false });
    const masq = sets.find((s) => s.chain === 'FLANNEL-POSTRTG')!.rules.map(ruleText);
    expect(masq[4]).toBe('-t nat -A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE');
    expect(masq.join('\n')).not.toContain('224.0.0.0/4');
  });

  it('nftables: table ip6 flannel-ipv6 with ip6 matches', () => {
    const script = nftScript({ network: 'fd00:10:244::/56', subnet: 'fd00:10:244:1::/64', ipMasq: true, forwardRules: true, randomFully: true });
    expect(script.split('\n').slice(0, 3)).toEqual(['add table ip6 flannel-ipv6', 'delete table ip6 flannel-ipv6', 'add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6"; }']);
    expect(script).toContain('add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random');
    expect(script).toContain('add rule ip6 flannel-ipv6 forward ip6 daddr fd00:10:244::/56 accept');
    expect(script).not.toMatch(/\bip (saddr|daddr)/);
  });
});
