// A restarted agent's first exact pass: a new VXLAN backend (no plans, no
// model, no quiet dump) over a kernel that already holds every peer. The
// pass compares the dump's lines with the lines its plans render and
// decodes only the rest (src/daemon/backend/exact.ts), so this proves, on
// the real kernel: the rendered lines are what the shim dumps for what the
// backend wrote (IPv4 and IPv6, nexthop and DirectRouting routes,
// neighbours, FDB), a right kernel takes no write, and drifts of every kind
// are healed, exactly those.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import type { ExternalInterface, Lease, ReconcileReport } from '../../src/daemon/types.js';
import * as nl from '../../src/netlink/index.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath, sortedLines as sorted } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { nexthopsOf, routesResolved, TSF_NEXTHOP_PROTOCOL, tsfNexthopLines } from '../helpers/nexthops.js';

const N = 300;
const NETWORK = '10.0.0.0/8';
const NETWORK6 = 'fd00:10::/32';
const EXT: ExternalInterface = {
  name: 'eth0',
  index: 0,
  mtu: 1500,
  ip: '172.16.0.1',
  cidr: '172.16.0.1/12',
  publicIP: '172.16.0.1',
  ipv6: 'fd00:77::1',
  ipv6Cidr: 'fd00:77::1/64',
  publicIPv6: 'fd00:77::1',
};
const OWN: Lease = { subnet: '10.255.255.0/24', publicIP: '172.16.0.1', ipv6Subnet: 'fd00:10:ffff::/64', publicIPv6: 'fd00:77::1', backendType: 'vxlan', backendData: {} };

const hex = (n: number): string => n.toString(16).padStart(2, '0');
const macFor = (i: number, tail = '01:02'): string => `6a:00:${hex(i >> 8)}:${hex(i & 255)}:${tail}`;
/** Every tenth peer shares our underlay (a DirectRouting route); the others are behind routers (overlay). */
const onL2 = (i: number): boolean => i % 10 === 3;

function leaseFor(i: number): Lease {
  return {
    subnet: `10.${(i >> 8) + 1}.${i & 255}.0/24`,
    publicIP: onL2(i) ? `172.16.${(i >> 7) + 1}.${(i & 127) + 1}` : `192.168.${i >> 7}.${(i & 127) + 1}`,
    ipv6Subnet: `fd00:10:${i + 1}::/64`,
    publicIPv6: onL2(i) ? `fd00:77::${(i + 2).toString(16)}` : `fd00:88::${(i + 2).toString(16)}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: macFor(i) },
    backendV6Data: { VNI: 1, VtepMAC: macFor(i, '06:02') },
    nodeName: `node${i}`,
  };
}

const gwOf = (l: Lease): string => l.subnet.split('/')[0]!;
const quiet = (programmed: number): ReconcileReport => ({ added: 0, updated: 0, removed: 0, programmed, errors: [] });

describe.skipIf(requireOrSkip('VXLAN restart pass', { root: isRoot }))('VXLAN: a restarted agent\'s first exact pass over a kernel that holds the peers', () => {
  let ns: string;
  let leases: Lease[];
  let valid: ReturnType<typeof stateOf>;

  const ip = (...args: string[]): void => {
    execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  function stateOf() {
    return {
      routes: routesResolved(ns),
      nexthops: tsfNexthopLines(ns),
      neigh: sorted(inNs(ns, 'ip', ['-4', 'neigh', 'show', 'dev', 'flannel.1'])),
      fdb: sorted(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])),
    };
  }
  /** A new backend, as a restarted agent makes it (nothing cached). */
  async function agent(family: 4 | 6 = 4): Promise<VxlanBackend> {
    const b = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: true }, family, network: family === 4 ? NETWORK : NETWORK6, netns: nsPath(ns) });
    await b.prepare(EXT);
    await b.configure(OWN);
    return b;
  }

  beforeAll(async () => {
    ns = addNetns('restart');
    ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip('addr', 'add', '172.16.0.1/12', 'dev', 'eth0');
    ip('addr', 'add', 'fd00:77::1/64', 'dev', 'eth0', 'nodad');
    ip('link', 'set', 'eth0', 'up');
    ip('link', 'set', 'eth1', 'up');
    leases = Array.from({ length: N }, (_, i) => leaseFor(i));
    const overlay = leases.filter((_, i) => !onL2(i)).length;
    for (const family of [4, 6] as const) {
      const first = (await agent(family)).reconcile(leases);
      expect(first.errors, `IPv${family} programmed`).toEqual([]);
      expect(first.added).toBe(N + 2 * overlay);
    }
    valid = stateOf();
  });
  afterAll(() => cleanupAll());

  it('the lines rendered from what the backend wrote are the lines the shim dumps (IPv4 and IPv6)', () => {
    for (const family of [4, 6] as const) {
      const dev = family === 4 ? 'flannel.1' : 'flannel-v6.1';
      const text = nl.dumpTableText({ netns: nsPath(ns), routeDevs: [dev, 'eth0'], neighDev: dev, fdbDev: dev, nexthops: true, ...(family === 6 ? { family: 'inet6' as const } : {}) });
      const nexthops = nl.decodeNexthops(text.nexthops ?? '', [dev, 'eth0']);
      const idOf = (gw: string): number | undefined => nexthops.find((n) => n.gw === gw && n.protocol === nl.NEXTHOP_PROTOCOL)?.id;
      const metric = family === 4 ? 0 : 1024;
      const want = { routes: [] as string[], nexthops: [] as string[], neighs: [] as string[], fdb: [] as string[] };
      leases.forEach((l, i) => {
        const subnet = family === 4 ? l.subnet : l.ipv6Subnet!;
        const underlay = onL2(i);
        const gw = underlay ? (family === 4 ? l.publicIP : l.publicIPv6!) : subnet.split('/')[0]!;
        const id = idOf(gw);
        expect(id, `nexthop for ${gw}`).toBeDefined();
        want.routes.push(nl.routeLine(underlay ? 1 : 0, subnet, gw, !underlay, metric, nl.ROUTE_PROTOCOL, id));
        want.nexthops.push(nl.nexthopLine(underlay ? 1 : 0, id!, gw, !underlay, nl.NEXTHOP_PROTOCOL));
        if (underlay) return;
        const mac = family === 4 ? macFor(i) : macFor(i, '06:02');
        want.neighs.push(nl.neighLine(gw, mac, nl.NudState.permanent));
        want.fdb.push(nl.fdbEntryText(mac, family === 4 ? l.publicIP : l.publicIPv6!));
      });
      const dumped = {
        routes: new Set(nl.dumpLines(text.routes)),
        nexthops: new Set(nl.dumpLines(text.nexthops ?? '')),
        neighs: new Set(nl.dumpLines(text.neighs)),
        fdb: new Set(nl.dumpLines(text.fdb).map(nl.fdbLineEntry)),
      };
      for (const table of ['routes', 'nexthops', 'neighs', 'fdb'] as const) {
        const missing = want[table].filter((line) => !dumped[table].has(line));
        expect(missing, `IPv${family} ${table}: rendered lines the dump lacks`).toEqual([]);
      }
    }
  });

  it('a dump started on the shim\'s thread (state.dump.start) reads what the synchronous dump reads, once', () => {
    const req: nl.TableStateRequest = { netns: nsPath(ns), routeDevs: ['flannel.1', 'eth0'], neighDev: 'flannel.1', fdbDev: 'flannel.1', nexthops: true };
    const pending = nl.startTableDump(req);
    const again = nl.startTableDump(req);
    expect(pending.wait()).toEqual(nl.dumpTableText(req));
    expect(() => pending.wait()).toThrow(/already read/);
    expect(again.wait()).toEqual(nl.dumpTableText(req));
  });

  it('a new backend over the kernel as it left it writes nothing, IPv4 and IPv6', async () => {
    expect((await agent(4)).reconcile(leases)).toEqual(quiet(N));
    expect((await agent(6)).reconcile(leases)).toEqual(quiet(N));
    expect(stateOf()).toEqual(valid);
  });

  it('a new backend heals exactly the drifts of every kind made while no agent ran', async () => {
    const l = (i: number): Lease => leases[i]!;
    // route: deleted; made a plain route (flannel's form); a DirectRouting route deleted; a foreign one added
    ip('route', 'del', l(11).subnet);
    ip('route', 'replace', l(12).subnet, 'via', gwOf(l(12)), 'dev', 'flannel.1', 'onlink');
    ip('route', 'del', l(23).subnet);
    ip('route', 'add', '10.250.0.0/24', 'via', '10.250.0.0', 'dev', 'flannel.1', 'onlink');
    // nexthop: deleted (its route goes along); an orphan of ours; a second one of ours for a peer's gateway
    const nh = nexthopsOf(ns).find((n) => n.gateway === gwOf(l(20)) && n.protocol === TSF_NEXTHOP_PROTOCOL);
    expect(nh).toBeDefined();
    ip('nexthop', 'del', 'id', String(nh!.id));
    ip('nexthop', 'add', 'id', '90001', 'via', '10.252.0.0', 'dev', 'flannel.1', 'onlink', 'proto', TSF_NEXTHOP_PROTOCOL);
    ip('nexthop', 'add', 'id', '90002', 'via', gwOf(l(21)), 'dev', 'flannel.1', 'onlink', 'proto', TSF_NEXTHOP_PROTOCOL);
    // neighbour: deleted; another MAC; no longer permanent; a stray permanent one
    ip('neigh', 'del', gwOf(l(14)), 'dev', 'flannel.1');
    ip('neigh', 'replace', gwOf(l(15)), 'lladdr', '6a:ff:ff:ff:01:02', 'dev', 'flannel.1', 'nud', 'permanent');
    ip('neigh', 'replace', gwOf(l(16)), 'lladdr', macFor(16), 'dev', 'flannel.1', 'nud', 'reachable');
    ip('neigh', 'add', '10.251.0.0', 'lladdr', '6a:ee:ee:ee:01:02', 'dev', 'flannel.1', 'nud', 'permanent');
    // FDB: deleted; moved to another remote; a stray entry
    inNs(ns, 'bridge', ['fdb', 'del', macFor(17), 'dev', 'flannel.1', 'dst', l(17).publicIP]);
    inNs(ns, 'bridge', ['fdb', 'replace', macFor(18), 'dev', 'flannel.1', 'dst', '192.168.99.99', 'self', 'permanent']);
    inNs(ns, 'bridge', ['fdb', 'append', '6a:ee:ee:ee:02:02', 'dev', 'flannel.1', 'dst', '192.168.99.98', 'self', 'permanent']);
    expect(stateOf()).not.toEqual(valid);

    const report = (await agent(4)).reconcile(leases);
    // added: route 11, route 23, route 20 (and its nexthop), neighbour 14, FDB 17;
    // updated: route 12 (plain -> nexthop), neighbours 15 and 16, FDB 18 (moved);
    // removed: the foreign route, the stray neighbour, the stray FDB entry
    // (nexthops are counted with their routes: the orphan and the second one go uncounted)
    expect(report).toEqual({ added: 5, updated: 4, removed: 3, programmed: N, errors: [] });
    expect(stateOf()).toEqual(valid);
    expect(nexthopsOf(ns).some((n) => n.id === 90001 || n.id === 90002)).toBe(false);
    // and the pass after it, and another restart, find nothing
    expect((await agent(4)).reconcile(leases)).toEqual(quiet(N));
  });
  it('the peer model an exact pass keeps (after healing a drift, then reused by a quiet pass) drives events exactly: a MAC change and a departure write that peer only', async () => {
    const b = await agent(4);
    expect(b.reconcile(leases)).toEqual(quiet(N));
    const gw30 = gwOf(leases[30]!);
    ip('neigh', 'del', gw30, 'dev', 'flannel.1');
    expect(b.reconcile(leases)).toEqual({ ...quiet(N), added: 1 });
    expect(b.reconcile(leases)).toEqual(quiet(N));
    expect(stateOf()).toEqual(valid);

    // events go through the model, never the exact pass
    const exact = vi.spyOn(b, 'reconcile');
    const moved = { ...leases[31]!, backendData: { VNI: 1, VtepMAC: '6a:dd:dd:dd:01:02' } };
    const changed = leases.map((l, i) => (i === 31 ? moved : l));
    expect(b.update(changed).errors).toEqual([]);
    const gw31 = gwOf(moved);
    expect(inNs(ns, 'ip', ['-4', 'neigh', 'show', gw31, 'dev', 'flannel.1'])).toContain('6a:dd:dd:dd:01:02');
    const fdb = inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']);
    expect(fdb).toContain(`6a:dd:dd:dd:01:02 dst ${moved.publicIP}`);
    expect(fdb).not.toContain(macFor(31));

    const gone = changed.filter((_, i) => i !== 32);
    expect(b.update(gone).errors).toEqual([]);
    expect(exact).not.toHaveBeenCalled();
    expect(inNs(ns, 'ip', ['-4', 'route', 'show', leases[32]!.subnet])).toBe('');
    expect(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain(macFor(32));
    // what the events left is what a new agent's exact pass wants: it writes nothing
    expect((await agent(4)).reconcile(gone)).toEqual(quiet(N - 1));
    // put the kernel back for any later test
    expect((await agent(4)).reconcile(leases).errors).toEqual([]);
    expect(stateOf()).toEqual(valid);
  });
  it('a flannel.1 re-created by someone else with another VNI (same MAC, up) is rebuilt by the next pass, and every peer with it', async () => {
    const b = await agent(4);
    expect(b.reconcile(leases)).toEqual(quiet(N));
    const mac = (JSON.parse(inNs(ns, 'ip', ['-j', 'link', 'show', 'flannel.1'])) as { address: string }[])[0]!.address;
    ip('link', 'del', 'flannel.1');
    ip('link', 'add', 'flannel.1', 'address', mac, 'type', 'vxlan', 'id', '2', 'local', '172.16.0.1', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    ip('link', 'set', 'flannel.1', 'up');
    expect(b.reconcile(leases).errors).toEqual([]);
    expect(inNs(ns, 'ip', ['-d', 'link', 'show', 'flannel.1'])).toMatch(/vxlan id 1 /);
    expect(stateOf()).toEqual(valid);
    expect(b.reconcile(leases)).toEqual(quiet(N));
  });
});
