// The VXLAN backend's peer model: which lease events can be applied peer by
// peer, and which need the exact pass.
import { describe, expect, it } from 'vitest';
import { PeerModel, type PeerChange } from '../../../src/daemon/backend/peers.js';
import { planVxlan, planVxlanLease, type PlanContext } from '../../../src/daemon/backend/plan.js';
import { parseCidr } from '../../../src/net/ip.js';
import type { Lease } from '../../../src/daemon/types.js';

const ctx: PlanContext = {
  network: parseCidr('10.244.0.0/16', 4)!,
  ownSubnet: parseCidr('10.244.0.0/24', 4)!,
  extCidr: parseCidr('192.168.1.1/24', 4)!,
  ownIPs: ['192.168.1.1'],
};
const planOne = (l: Lease) => planVxlanLease(l, ctx, { directRouting: false });

function lease(n: number, mac = `6a:00:00:00:00:${n.toString(16).padStart(2, '0')}`, publicIP = `192.168.2.${n}`): Lease {
  return { subnet: `10.244.${n}.0/24`, publicIP, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } };
}

function modelOf(leases: Lease[]): PeerModel {
  const plan = planVxlan(leases, ctx, { directRouting: false }, planOne);
  const waiting = new Set(plan.skipped.filter((s) => !('reason' in planOne(s.lease))).map((s) => s.lease));
  return new PeerModel(leases, plan.plans, waiting);
}

const summary = (c: PeerChange[] | { exact: string }) =>
  'exact' in c ? c : c.map((x) => `${x.key}: ${x.before?.fdb?.mac ?? '-'} -> ${x.after?.fdb?.mac ?? '-'}`);

describe('PeerModel', () => {
  const base = [1, 2, 3, 4].map((n) => lease(n));

  it('finds no change in an equal list of new objects', () => {
    const m = modelOf(base);
    expect(m.changes(base.map((l) => ({ ...l })), planOne, 64)).toEqual([]);
    expect(m.programmed).toBe(4);
  });

  it('reports a MAC change, a node leaving and a node joining as one change each', () => {
    const m = modelOf(base);
    const next = [lease(1), lease(2, '6a:00:00:00:00:ee'), lease(4), lease(5)];
    const changes = m.changes(next, planOne, 64);
    expect(summary(changes)).toEqual([
      '10.244.3.0/24: 6a:00:00:00:00:03 -> -',
      '10.244.2.0/24: 6a:00:00:00:00:02 -> 6a:00:00:00:00:ee',
      '10.244.5.0/24: - -> 6a:00:00:00:00:05',
    ]);
    for (const c of changes as PeerChange[]) m.commit(c);
    expect(m.programmed).toBe(4);
    expect(m.changes(next, planOne, 64)).toEqual([]);
  });

  it('needs the exact pass for a lease list with two leases for one subnet, a MAC claimed twice, or too many changes', () => {
    expect(modelOf(base).changes([...base, { ...lease(1), publicIP: '192.168.2.99' }], planOne, 64)).toEqual({ exact: 'two leases for 10.244.1.0/24' });
    expect(modelOf(base).changes([...base, lease(9, '6a:00:00:00:00:01')], planOne, 64)).toEqual({ exact: 'VtepMAC 6a:00:00:00:00:01 claimed twice' });
    expect(modelOf(base).changes([lease(5), lease(6), lease(7)], planOne, 2)).toEqual({ exact: 'many changes' });
  });

  it('keeps the edge path for a lease refused for its own content, but not while a lease waits on another', () => {
    const bad = { ...lease(7), backendData: { VNI: 1, VtepMAC: 'ff:ff:ff:ff:ff:ff' } };
    const m = modelOf([...base, bad]);
    expect(m.programmed).toBe(4);
    expect(summary(m.changes([...base.slice(1), bad], planOne, 64))).toEqual(['10.244.1.0/24: 6a:00:00:00:00:01 -> -']);
    // lease 8 reuses lease 1's MAC: it waits until lease 1 goes, which only the exact pass sees
    const dup = lease(8, '6a:00:00:00:00:01');
    const w = modelOf([...base, dup]);
    expect(w.programmed).toBe(4);
    expect(w.changes(base.slice(1).concat(dup), planOne, 64)).toEqual({ exact: 'some leases wait on others' });
  });
  it('finds changes by position when the list keeps its objects and order, also when the caller reuses its array', () => {
    const list = [1, 2, 3, 4].map((n) => lease(n));
    const m = modelOf(list);
    list[2] = lease(3, '6a:00:00:00:00:e3'); // the same array, changed in place
    const changes = m.changes(list, planOne, 64);
    expect(summary(changes)).toEqual(['10.244.3.0/24: 6a:00:00:00:00:03 -> 6a:00:00:00:00:e3']);
    for (const c of changes as PeerChange[]) m.commit(c);
    expect(m.changes(list, planOne, 64)).toEqual([]);
    // another order falls back to the scan, which still finds nothing
    expect(m.changes([...list].reverse(), planOne, 64)).toEqual([]);
    // and a node leaving (another length) is found by the scan
    expect(summary(m.changes(list.slice(1), planOne, 64))).toEqual(['10.244.1.0/24: 6a:00:00:00:00:01 -> -']);
  });

  it('counts the peers on each gateway\'s nexthop after a set of changes, so a shared nexthop is kept', () => {
    const dr = (l: Lease) => planVxlanLease(l, ctx, { directRouting: true });
    // two subnets of one same-L2 node share its address as gateway, a third peer is on the overlay
    const leases = [lease(1, undefined, '192.168.1.50'), lease(2, undefined, '192.168.1.50'), lease(3)];
    const plan = planVxlan(leases, ctx, { directRouting: true }, dr);
    const m = new PeerModel(leases, plan.plans, new Set());
    const oneLeft = m.changes([leases[1]!, leases[2]!], dr, 64) as PeerChange[];
    expect(m.nexthopUsersAfter(oneLeft)).toEqual({ overlay: new Map(), underlay: new Map([['192.168.1.50', 1]]) });
    const m1 = new PeerModel(leases, plan.plans, new Set());
    const bothLeft = m1.changes([leases[2]!], dr, 64) as PeerChange[];
    expect(m1.nexthopUsersAfter(bothLeft)).toEqual({ overlay: new Map(), underlay: new Map([['192.168.1.50', 0]]) });
    // the overlay peer moving to the shared address takes a user along
    const moved = { ...leases[2]!, publicIP: '192.168.1.50' };
    const m2 = new PeerModel(leases, plan.plans, new Set());
    const change = m2.changes([leases[0]!, leases[1]!, moved], dr, 64) as PeerChange[];
    expect(m2.nexthopUsersAfter(change)).toEqual({ overlay: new Map([['10.244.3.0', 0]]), underlay: new Map([['192.168.1.50', 3]]) });
  });

  it('finds a node leaving or joining (the list grows or shrinks) by walking both lists, and falls back to the scan for anything less plain', () => {
    const leases = [1, 2, 3, 4, 5, 6].map((n) => lease(n));
    const m = modelOf(leases);
    // node 3 leaves, node 7 joins at the end, node 5 changes its MAC in place
    const next = [leases[0]!, leases[1]!, leases[3]!, lease(5, '6a:00:00:00:00:55'), leases[5]!, lease(7)];
    const changes = m.changes(next, planOne, 64) as PeerChange[];
    expect((summary(changes) as string[]).sort()).toEqual(['10.244.3.0/24: 6a:00:00:00:00:03 -> -', '10.244.5.0/24: 6a:00:00:00:00:05 -> 6a:00:00:00:00:55', '10.244.7.0/24: - -> 6a:00:00:00:00:07']);
    for (const c of changes) m.commit(c);
    expect(m.programmed).toBe(6);
    // a lease moved to the front while another leaves: the same answer as the scan gives
    const moved = [next[5]!, next[0]!, next[1]!, next[2]!, next[3]!];
    expect(summary(m.changes(moved, planOne, 64))).toEqual(['10.244.6.0/24: 6a:00:00:00:00:06 -> -']);
    // a subnet that leaves and comes back in the same list, with another MAC: one change, not two
    const m2 = modelOf(leases);
    const back = [leases[0]!, leases[1]!, leases[3]!, leases[4]!, leases[5]!, lease(3, '6a:00:00:00:00:33')];
    expect(summary(m2.changes(back, planOne, 64))).toEqual(['10.244.3.0/24: 6a:00:00:00:00:03 -> 6a:00:00:00:00:33']);
    // two joins for one subnet: the scan refuses them
    const m3 = modelOf(leases);
    expect(m3.changes([...leases, lease(8), lease(8, '6a:00:00:00:00:88')], planOne, 64)).toEqual({ exact: 'two leases for 10.244.8.0/24' });
  });
});
