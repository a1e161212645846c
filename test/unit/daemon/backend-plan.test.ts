import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  diffFdb,
  diffNeighs,
  diffNexthops,
  diffRoutes,
  NEXTHOP_PROTOCOL,
  normalizeMac,
  planVxlanLease,
  ownedRoute,
  planHostGw,
  planVxlan,
  type CurrentFdb,
  type CurrentNexthop,
  type CurrentRoute,
  type DesiredRoute,
  type NexthopDiff,
  type PlanContext,
  type RouteForm,
} from '../../../src/daemon/backend/plan.js';
import type { Lease } from '../../../src/daemon/types.js';
import { parseCidr } from '../../../src/net/ip.js';

const cidr = (text: string) => {
  const c = parseCidr(text, 4);
  if (!c) throw new Error(text);
  return c;
};

const ctx: PlanContext = {
  network: cidr('10.244.0.0/16'),
  ownSubnet: cidr('10.244.1.0/24'),
  extCidr: cidr('192.168.77.1/24'),
  ownIPs: ['192.168.77.1'],
};

function lease(n: number, publicIP: string, mac?: string, extra: Partial<Lease> = {}): Lease {
  return {
    subnet: `10.244.${n}.0/24`,
    publicIP,
    backendType: 'vxlan',
    backendData: mac ? { VNI: 1, VtepMAC: mac } : { VNI: 1 },
    nodeName: `node${n}`,
    ...extra,
  };
}

describe('MAC addresses', () => {
  it('accepts only unicast MACs, in lower case', () => {
    expect(normalizeMac('0A:58:0a:f4:01:01')).toBe('0a:58:0a:f4:01:01');
    expect(normalizeMac('01:00:5e:00:00:01')).toBeUndefined();
    expect(normalizeMac('00:00:00:00:00:00')).toBeUndefined();
    expect(normalizeMac('0a:58:0a:f4:01')).toBeUndefined();
    // the canonical form comes back as it is; others trimmed and lowered, or refused
    expect(normalizeMac('6a:00:00:00:01:02')).toBe('6a:00:00:00:01:02');
    expect(normalizeMac(' 6A:00:00:00:01:02\n')).toBe('6a:00:00:00:01:02');
    expect(normalizeMac('03:00:00:00:01:02')).toBeUndefined();
    expect(normalizeMac('6A-00-00-00-01-02')).toBeUndefined();
    expect(normalizeMac('6g:00:00:00:01:02')).toBeUndefined();
  });
});

describe('planned destinations and gateways', () => {
  it('are the canonical network, also when the lease spells its subnet with host bits', () => {
    const exact = planVxlanLease(lease(2, '192.168.77.2', '0a:00:00:00:00:02'), ctx, { directRouting: false });
    const hostBits = planVxlanLease({ ...lease(3, '192.168.77.3', '0a:00:00:00:00:03'), subnet: '10.244.3.7/24' }, ctx, { directRouting: false });
    expect('route' in exact && exact.route).toEqual({ dst: '10.244.2.0/24', gw: '10.244.2.0', via: 'overlay' });
    expect('route' in hostBits && hostBits.route).toEqual({ dst: '10.244.3.0/24', gw: '10.244.3.0', via: 'overlay' });
    expect('neigh' in hostBits && hostBits.neigh).toEqual({ ip: '10.244.3.0', mac: '0a:00:00:00:00:03' });
  });
});

describe('a peer\'s public IP', () => {
  it('is planned as the kernel prints it, so an IPv6 lease spelt another way does not rewrite a right FDB entry or route on every pass', () => {
    const ctx6: PlanContext = {
      network: parseCidr('fd00:10::/56', 6)!,
      ownSubnet: parseCidr('fd00:10:0:1::/64', 6)!,
      extCidr: parseCidr('fd00:88::1/64', 6)!,
      ownIPs: ['fd00:88::1'],
    };
    const lease6 = (publicIP: string): Lease => ({ ...lease(2, publicIP, '0a:00:00:00:00:02'), subnet: 'fd00:10:0:2::/64' });
    const overlay = planVxlanLease(lease6('FD00:0088:0:0::2'), ctx6, { directRouting: false });
    expect('fdb' in overlay && overlay.fdb).toEqual({ mac: '0a:00:00:00:00:02', dst: 'fd00:88::2' });
    const direct = planVxlanLease(lease6('FD00:88:0:0:0:0:0:2'), ctx6, { directRouting: true });
    expect('route' in direct && direct.route).toEqual({ dst: 'fd00:10:0:2::/64', gw: 'fd00:88::2', via: 'underlay' });
    const hostGw = planHostGw([{ ...lease6('fd00:88:0::2'), backendType: 'host-gw' }], ctx6);
    expect(hostGw.plans.map((p) => p.route.gw)).toEqual(['fd00:88::2']);
    const own = planVxlanLease(lease6('FD00:88::1'), ctx6, { directRouting: false });
    expect('reason' in own && own.reason).toBe('public IP FD00:88::1 is our own');
  });
});

describe('planVxlan', () => {
  it('asks for route, ARP and FDB per remote node', () => {
    const plan = planVxlan([lease(2, '192.168.77.2', '0A:00:00:00:00:02')], ctx, { directRouting: false });
    expect(plan.skipped).toEqual([]);
    expect(plan.plans.map(({ route, neigh, fdb }) => ({ route, neigh, fdb }))).toEqual([
      {
        route: { dst: '10.244.2.0/24', gw: '10.244.2.0', via: 'overlay' },
        neigh: { ip: '10.244.2.0', mac: '0a:00:00:00:00:02' },
        fdb: { mac: '0a:00:00:00:00:02', dst: '192.168.77.2' },
      },
    ]);
  });

  it('uses a plain underlay route with DirectRouting only for same-L2 peers', () => {
    const plan = planVxlan(
      [lease(2, '192.168.77.2', '0a:00:00:00:00:02'), lease(3, '192.168.88.3', '0a:00:00:00:00:03')],
      ctx,
      { directRouting: true },
    );
    expect(plan.plans.map((p) => [p.route, p.neigh !== undefined, p.fdb !== undefined])).toEqual([
      [{ dst: '10.244.2.0/24', gw: '192.168.77.2', via: 'underlay' }, false, false],
      [{ dst: '10.244.3.0/24', gw: '10.244.3.0', via: 'overlay' }, true, true],
    ]);
  });

  it('skips own subnet, other backends and missing MACs quietly, and refuses bad leases loudly', () => {
    const plan = planVxlan(
      [
        lease(1, '192.168.77.1', '0a:00:00:00:00:01'), // our own
        lease(4, '192.168.77.4', '0a:00:00:00:00:04', { backendType: 'host-gw' }),
        lease(5, '192.168.77.5'), // no VtepMAC yet
        lease(6, '192.168.77.6', 'ff:ff:ff:ff:ff:ff'),
        lease(7, '192.168.77.7', '0a:00:00:00:00:07', { subnet: '10.99.7.0/24' }),
        lease(8, 'not-an-ip', '0a:00:00:00:00:08'),
        lease(9, '192.168.77.1', '0a:00:00:00:00:09'), // claims our public IP
        lease(10, '192.168.77.10', '0a:00:00:00:00:10'),
        lease(10, '192.168.77.11', '0a:00:00:00:00:11'), // same subnet again
        lease(12, '192.168.77.12', '0a:00:00:00:00:10'), // same MAC again
        lease(13, '192.168.77.13', '0a:00:00:00:00:13', { subnet: '10.244.0.0/23' }), // overlaps ours
      ],
      ctx,
      { directRouting: false },
    );
    expect(plan.plans.map((p) => p.lease.subnet)).toEqual(['10.244.10.0/24']);
    const why = Object.fromEntries(plan.skipped.map((s) => [`${s.lease.nodeName}`, [s.error, s.reason]]));
    expect(why.node1).toEqual([false, 'is our own subnet']);
    expect(why.node4).toEqual([false, 'backend type host-gw is not vxlan']);
    expect(why.node5).toEqual([false, 'has no VtepMAC']);
    expect(why.node6?.[0]).toBe(true);
    expect(why.node7?.[1]).toMatch(/outside the cluster network 10\.244\.0\.0\/16/);
    expect(why.node8?.[1]).toMatch(/not an IPv4 address/);
    expect(why.node9?.[1]).toMatch(/is our own/);
    expect(why.node10).toEqual([true, 'another lease already claims 10.244.10.0/24']);
    expect(why.node12?.[1]).toMatch(/already used by 10\.244\.10\.0\/24 \(node10\)/);
    expect(why.node13?.[1]).toMatch(/overlaps our own subnet/);
  });
});

describe('planHostGw', () => {
  it('routes same-L2 peers and refuses the others', () => {
    const hg = (n: number, ip: string): Lease => ({ ...lease(n, ip), backendType: 'host-gw', backendData: {} });
    const plan = planHostGw([hg(2, '192.168.77.2'), hg(3, '192.168.88.3')], ctx);
    expect(plan.plans.map((p) => p.route)).toEqual([{ dst: '10.244.2.0/24', gw: '192.168.77.2', via: 'underlay' }]);
    expect(plan.skipped).toHaveLength(1);
    expect(plan.skipped[0]?.error).toBe(true);
    expect(plan.skipped[0]?.reason).toMatch(/192\.168\.88\.3 is not on our L2 subnet 192\.168\.77\.0\/24/);
  });
});

describe('route ownership', () => {
  const r = (over: Partial<CurrentRoute>): CurrentRoute => ({ dst: '10.244.2.0/24', via: 'underlay', onlink: false, metric: 0, protocol: 3, gw: '192.168.77.2', ...over });
  it('owns gateway routes into the cluster network and everything on the overlay, never kernel or default routes', () => {
    expect(ownedRoute(r({}), ctx.network)).toBe(true);
    expect(ownedRoute(r({ dst: '10.0.0.0/8' }), ctx.network)).toBe(false);
    expect(ownedRoute(r({ dst: '192.168.77.0/24', gw: undefined, protocol: 2 }), ctx.network)).toBe(false);
    expect(ownedRoute(r({ gw: undefined }), ctx.network)).toBe(false);
    expect(ownedRoute(r({ dst: 'default' }), ctx.network)).toBe(false);
    expect(ownedRoute(r({ via: 'overlay', dst: '172.16.0.0/24', gw: '172.16.0.0' }), ctx.network)).toBe(true);
  });
});

describe('diffRoutes', () => {
  const overlay = (n: number): DesiredRoute => ({ dst: `10.244.${n}.0/24`, gw: `10.244.${n}.0`, via: 'overlay' });
  const cur = (d: DesiredRoute, over: Partial<CurrentRoute> = {}): CurrentRoute => ({ ...d, onlink: d.via === 'overlay', metric: 0, protocol: 3, ...over });

  it('writes nothing when the kernel already matches', () => {
    const want = [overlay(2), overlay(3)];
    expect(diffRoutes(want, want.map((d) => cur(d)))).toEqual({ write: [], remove: [] });
  });

  it('replaces a changed route in place and removes departed and extra ones', () => {
    const direct: DesiredRoute = { dst: '10.244.2.0/24', gw: '192.168.77.2', via: 'underlay' };
    const stale = cur(overlay(9));
    const otherMetric = cur(overlay(3), { metric: 100 });
    const diff = diffRoutes([direct, overlay(3), overlay(4)], [cur(overlay(2)), cur(overlay(3)), otherMetric, stale, cur(overlay(4), { onlink: false })]);
    expect(diff.write).toEqual([
      { route: direct, existed: true },
      { route: overlay(4), existed: true },
    ]);
    expect(diff.remove).toEqual([otherMetric, stale]);
  });

  it('applied to any kernel state, leaves exactly the desired routes (model check)', () => {
    const route = fc.record({
      n: fc.integer({ min: 2, max: 8 }),
      via: fc.constantFrom<'overlay' | 'underlay'>('overlay', 'underlay'),
      gwHost: fc.integer({ min: 0, max: 3 }),
      metric: fc.constantFrom(0, 0, 100),
      onlink: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.uniqueArray(route, { selector: (r) => `${r.n}/${r.metric}` }), fc.uniqueArray(route, { selector: (r) => r.n }), (curSpec, wantSpec) => {
        const current: CurrentRoute[] = curSpec.map((s) => ({ dst: `10.244.${s.n}.0/24`, gw: `192.168.77.${s.gwHost}`, via: s.via, onlink: s.onlink, metric: s.metric, protocol: 3 }));
        const desired: DesiredRoute[] = wantSpec.map((s) => ({ dst: `10.244.${s.n}.0/24`, gw: `192.168.77.${s.gwHost}`, via: s.via }));
        const diff = diffRoutes(desired, current);
        // kernel model: routes keyed by (dst, metric); replace overwrites the metric-0 slot
        const table = new Map(current.map((r) => [`${r.dst}|${r.metric}`, r]));
        for (const r of diff.remove) table.delete(`${r.dst}|${r.metric}`);
        for (const w of diff.write) {
          expect(w.existed).toBe(table.has(`${w.route.dst}|0`));
          table.set(`${w.route.dst}|0`, { ...w.route, onlink: w.route.via === 'overlay', metric: 0, protocol: 3 });
        }
        const result = [...table.values()].map((r) => ({ dst: r.dst, gw: r.gw, via: r.via, metric: r.metric })).sort((a, b) => a.dst.localeCompare(b.dst));
        expect(result).toEqual(desired.map((d) => ({ ...d, metric: 0 })).sort((a, b) => a.dst.localeCompare(b.dst)));
        // removals never hit a slot that is about to be replaced
        for (const r of diff.remove) expect(r.metric !== 0 || !diff.write.some((w) => w.route.dst === r.dst)).toBe(true);
      }),
    );
  });
});

describe('routes through nexthop objects', () => {
  const overlay = (n: number): DesiredRoute => ({ dst: `10.244.${n}.0/24`, gw: `10.244.${n}.0`, via: 'overlay' });
  const direct = (n: number): DesiredRoute => ({ dst: `10.244.${n}.0/24`, gw: `192.168.77.${n}`, via: 'underlay' });
  const ours = (id: number, d: DesiredRoute, over: Partial<CurrentNexthop> = {}): CurrentNexthop =>
    ({ id, via: d.via, gw: d.gw, onlink: d.via === 'overlay', protocol: NEXTHOP_PROTOCOL, ...over });
  const cur = (d: DesiredRoute, nhid?: number): CurrentRoute =>
    ({ ...d, onlink: d.via === 'overlay', metric: 0, protocol: 3, ...(nhid !== undefined ? { nhid } : {}) });
  const viaNexthops = (nh: NexthopDiff): RouteForm => ({ kind: 'nexthop', nexthops: nh.use });

  it('writes nothing when every route goes through our nexthop for its gateway', () => {
    const want = [overlay(2), overlay(3), direct(4)];
    const nhs = [ours(1, overlay(2)), ours(2, overlay(3)), ours(3, direct(4))];
    const nh = diffNexthops(want, nhs);
    expect(nh.remove).toEqual([]);
    expect(diffRoutes(want, [cur(overlay(2), 1), cur(overlay(3), 2), cur(direct(4), 3)], 0, viaNexthops(nh))).toEqual({ write: [], remove: [] });
  });

  it('replaces a plain gateway route (flannel\'s or an older tsflannel\'s) in place by the nexthop form', () => {
    const want = [overlay(2), direct(3)];
    const nh = diffNexthops(want, [ours(1, overlay(2))]);
    const diff = diffRoutes(want, [cur(overlay(2)), cur(direct(3))], 0, viaNexthops(nh));
    expect(diff).toEqual({ write: [{ route: overlay(2), existed: true }, { route: direct(3), existed: true }], remove: [] });
  });

  it('and back: with the plain form (a kernel without nexthops), a route through a nexthop is rewritten', () => {
    expect(diffRoutes([overlay(2)], [cur(overlay(2), 7)])).toEqual({ write: [{ route: overlay(2), existed: true }], remove: [] });
  });

  it('rewrites a route through somebody else\'s nexthop or a duplicate of ours, and deletes our nexthops no route needs', () => {
    const want = [overlay(2), overlay(3)];
    const foreign = ours(1, overlay(2), { protocol: 4 });
    const dup = ours(5, overlay(3));
    const orphan = ours(6, overlay(9));
    const group = { id: 7, via: 'overlay' as const, onlink: false, protocol: NEXTHOP_PROTOCOL };
    const nh = diffNexthops(want, [dup, foreign, ours(4, overlay(3)), orphan, group]);
    expect([...nh.use.overlay]).toEqual([['10.244.3.0', 4]]);
    expect(nh.use.underlay.size).toBe(0);
    // never the foreign one; our duplicate, our orphan and our gateway-less one go
    expect(nh.remove.map((n) => n.id)).toEqual([5, 6, 7]);
    const diff = diffRoutes(want, [cur(overlay(2), 1), cur(overlay(3), 5)], 0, viaNexthops(nh));
    expect(diff.write).toEqual([{ route: overlay(2), existed: true }, { route: overlay(3), existed: true }]);
    expect(diff.remove).toEqual([]);
  });

  it('tells overlay and underlay nexthops for the same gateway apart', () => {
    const nh = diffNexthops([direct(2)], [ours(1, { ...direct(2), via: 'overlay' }), ours(2, direct(2))]);
    expect([...nh.use.underlay]).toEqual([['192.168.77.2', 2]]);
    expect(nh.remove.map((n) => n.id)).toEqual([1]);
    // an underlay nexthop with the onlink flag is not the one the shim writes: replaced
    const odd = diffNexthops([direct(2)], [ours(3, direct(2), { onlink: true })]);
    expect(odd.use.underlay.size).toBe(0);
    expect(odd.remove.map((n) => n.id)).toEqual([3]);
  });
});

describe('diffNeighs', () => {
  it('keeps matching permanent entries, rewrites changed or non-permanent ones, removes the rest', () => {
    const diff = diffNeighs(
      [
        { ip: '10.244.2.0', mac: '0a:00:00:00:00:02' },
        { ip: '10.244.3.0', mac: '0a:00:00:00:00:33' },
        { ip: '10.244.4.0', mac: '0a:00:00:00:00:04' },
        { ip: '10.244.5.0', mac: '0a:00:00:00:00:05' },
      ],
      [
        { ip: '10.244.2.0', mac: '0A:00:00:00:00:02', permanent: true },
        { ip: '10.244.3.0', mac: '0a:00:00:00:00:03', permanent: true },
        { ip: '10.244.4.0', mac: '0a:00:00:00:00:04', permanent: false },
        { ip: '10.244.9.0', mac: '0a:00:00:00:00:09', permanent: true },
      ],
    );
    expect(diff.write.map((w) => [w.neigh.ip, w.existed])).toEqual([
      ['10.244.3.0', true],
      ['10.244.4.0', true],
      ['10.244.5.0', false],
    ]);
    expect(diff.remove.map((n) => n.ip)).toEqual(['10.244.9.0']);
  });
});

describe('diffFdb', () => {
  it('treats a MAC that moved to another VTEP as remove-then-add, reported as moved', () => {
    const current: CurrentFdb[] = [
      { mac: '0a:00:00:00:00:02', dst: '192.168.77.2' },
      { mac: '0a:00:00:00:00:03', dst: '192.168.77.3' },
      { mac: '0a:00:00:00:00:09', dst: '192.168.77.9' },
      { mac: '00:00:00:00:00:00', dst: '192.168.77.99' },
    ];
    const diff = diffFdb(
      [
        { mac: '0a:00:00:00:00:02', dst: '192.168.77.2' },
        { mac: '0a:00:00:00:00:03', dst: '192.168.77.13' },
        { mac: '0a:00:00:00:00:04', dst: '192.168.77.4' },
      ],
      current,
    );
    expect(diff.add).toEqual([
      { mac: '0a:00:00:00:00:03', dst: '192.168.77.13' },
      { mac: '0a:00:00:00:00:04', dst: '192.168.77.4' },
    ]);
    expect(diff.remove).toEqual(current.slice(1));
    expect([...diff.moved]).toEqual(['0a:00:00:00:00:03']);
  });

  it('matches every remote of a MAC that has several, whatever the case the kernel used', () => {
    const current: CurrentFdb[] = [
      { mac: '00:00:00:00:00:00', dst: '192.168.77.5' },
      { mac: '00:00:00:00:00:00', dst: '192.168.77.6' },
      { mac: '00:00:00:00:00:00', dst: '192.168.77.7' },
      { mac: '0A:00:00:00:00:02', dst: '192.168.77.2' },
    ];
    const diff = diffFdb(
      [
        { mac: '00:00:00:00:00:00', dst: '192.168.77.6' },
        { mac: '00:00:00:00:00:00', dst: '192.168.77.8' },
        { mac: '0a:00:00:00:00:02', dst: '192.168.77.2' },
      ],
      current,
    );
    expect(diff.add).toEqual([{ mac: '00:00:00:00:00:00', dst: '192.168.77.8' }]);
    expect(diff.remove).toEqual([current[0], current[2]]);
    expect([...diff.moved]).toEqual(['00:00:00:00:00:00']);
  });
});
