// The exact pass's text-first diff (src/daemon/backend/exact.ts): the lines
// the plans render are the shim's dump lines (samples taken from real
// dumps of entries the backend wrote, IPv4 and IPv6), and for any kernel
// state the diff equals the one of decoding the whole dump and diffing it
// (the code path the exact pass took before), drift by drift and over
// random kernel states.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { exactDiff, matchLines, type ExactDiff, type ExactInput } from '../../../src/daemon/backend/exact.js';
import { ownedRoutes, sideNexthops, type RouteDevices } from '../../../src/daemon/backend/common.js';
import { diffFdb, diffNeighs, diffNexthops, diffRoutes, type DesiredFdb, type DesiredNeigh, type DesiredRoute, type RouteForm } from '../../../src/daemon/backend/plan.js';
import {
  decodeNeighs,
  decodeNexthops,
  decodeRoutes,
  fdbEntryText,
  fdbLineEntry,
  neighLine,
  nexthopLine,
  ROUTE_PROTOCOL,
  routeLine,
  type TableText,
} from '../../../src/netlink/batch.js';
import { NudState } from '../../../src/netlink/types.js';
import { parseCidr } from '../../../src/net/ip.js';

// Lines native/tsfnl/state_dump.go printed for entries the VXLAN backend
// wrote (DirectRouting on: peer 2 shares the underlay), plus a plain route
// written by `ip route replace ... onlink` and an FDB entry written by
// `bridge fdb append ... self permanent` (state 192).
const REAL = {
  v4: {
    routes: ['0 10.244.1.0/24 10.244.1.0 o 0 3 1', '1 10.244.2.0/24 172.16.0.9 - 0 3 2', '0 10.244.9.0/24 10.244.9.0 o 0 3 -'],
    nexthops: ['0 1 10.244.1.0 o 157', '1 2 172.16.0.9 - 157'],
    neigh: '10.244.1.0 6a:00:00:00:01:02 128',
    fdb: '6a:00:00:00:01:02 192.168.5.2 128',
    fdbByBridge: '6a:00:00:00:01:02 172.16.0.2 192',
  },
  v6: {
    routes: ['0 fd00:10:244:1::/64 fd00:10:244:1:: o 1024 3 3', '1 fd00:10:244:2::/64 fd00:77::9 - 1024 3 4', '0 fd00:10:244:9::/64 fd00:10:244:9:: o 1024 3 -'],
    nexthops: ['0 3 fd00:10:244:1:: o 157', '1 4 fd00:77::9 - 157'],
    neigh: 'fd00:10:244:1:: 6a:00:00:00:06:02 128',
    fdb: '6a:00:00:00:06:02 fd00:88::2 128',
  },
};

describe('the dump lines rendered from what the backend writes', () => {
  it('routes through a nexthop and plain, on the overlay (onlink) and the underlay, IPv4 and IPv6', () => {
    expect([
      routeLine(0, '10.244.1.0/24', '10.244.1.0', true, 0, ROUTE_PROTOCOL, 1),
      routeLine(1, '10.244.2.0/24', '172.16.0.9', false, 0, ROUTE_PROTOCOL, 2),
      routeLine(0, '10.244.9.0/24', '10.244.9.0', true, 0, ROUTE_PROTOCOL, undefined),
    ]).toEqual(REAL.v4.routes);
    expect([
      routeLine(0, 'fd00:10:244:1::/64', 'fd00:10:244:1::', true, 1024, ROUTE_PROTOCOL, 3),
      routeLine(1, 'fd00:10:244:2::/64', 'fd00:77::9', false, 1024, ROUTE_PROTOCOL, 4),
      routeLine(0, 'fd00:10:244:9::/64', 'fd00:10:244:9::', true, 1024, ROUTE_PROTOCOL, undefined),
    ]).toEqual(REAL.v6.routes);
  });

  it('nexthop objects of tsflannel, IPv4 and IPv6', () => {
    expect([nexthopLine(0, 1, '10.244.1.0', true, 157), nexthopLine(1, 2, '172.16.0.9', false, 157)]).toEqual(REAL.v4.nexthops);
    expect([nexthopLine(0, 3, 'fd00:10:244:1::', true, 157), nexthopLine(1, 4, 'fd00:77::9', false, 157)]).toEqual(REAL.v6.nexthops);
  });

  it('permanent neighbours, IPv4 and IPv6', () => {
    expect(neighLine('10.244.1.0', '6a:00:00:00:01:02', NudState.permanent)).toBe(REAL.v4.neigh);
    expect(neighLine('fd00:10:244:1::', '6a:00:00:00:06:02', NudState.permanent)).toBe(REAL.v6.neigh);
  });

  it('FDB entries with their remote, compared without the state whoever wrote them', () => {
    expect(fdbLineEntry(REAL.v4.fdb)).toBe(fdbEntryText('6a:00:00:00:01:02', '192.168.5.2'));
    expect(fdbLineEntry(REAL.v4.fdbByBridge)).toBe(fdbEntryText('6a:00:00:00:01:02', '172.16.0.2'));
    expect(fdbLineEntry(REAL.v6.fdb)).toBe(fdbEntryText('6a:00:00:00:06:02', 'fd00:88::2'));
  });
});

describe('matchLines', () => {
  const want = ['a 1', 'b 2', 'c 3'];
  const key = (l: string): string => l.split(' ')[0]!;
  const match = (dump: string[], w = want) => matchLines(w.length, (i) => key(w[i]!), (i) => w[i], dump, key);

  it('leaves nothing when every line equals one desired entry, in any order', () => {
    expect(match(['c 3', 'a 1', 'b 2'])).toEqual({ desired: [], lines: [] });
  });

  it('leaves a changed entry on both sides, a missing one on the desired side, an extra line on the dump side', () => {
    expect(match(['a 1', 'b 9', 'd 4'])).toEqual({ desired: [1, 2], lines: ['b 9', 'd 4'] });
  });

  it('a duplicate line takes the matched one of its key along, and so does a second desired entry of one key', () => {
    const m = match(['a 1', 'b 2', 'c 3', 'b 2']);
    expect(m.desired).toEqual([1]);
    expect([...m.lines].sort()).toEqual(['b 2', 'b 2']);
    const dup = match(['a 1', 'b 2', 'c 3'], [...want, 'a 5']);
    expect(dup.desired).toEqual([0, 3]);
    expect(dup.lines).toEqual(['a 1']);
  });
});

// ---- the whole diff against decoding everything

const DEVS: RouteDevices = { overlay: 'flannel.1', underlay: 'eth0' };
const ROUTE_DEVS = ['flannel.1', 'eth0'];
const NETWORK = parseCidr('10.0.0.0/8', 4)!;

/** The exact pass as it was: decode every line, then the diffs of plan.ts. */
function decodedDiff(x: ExactInput): ExactDiff {
  const nexthops = sideNexthops(decodeNexthops(x.text.nexthops ?? '', x.routeDevs), x.devs);
  const routes = ownedRoutes(decodeRoutes(x.text.routes, x.routeDevs), x.devs, x.network, nexthops);
  const nh = x.nexthop ? diffNexthops(x.routes, nexthops) : undefined;
  const form: RouteForm = nh ? { kind: 'nexthop', nexthops: nh.use } : { kind: 'plain' };
  const neighs = decodeNeighs(x.text.neighs, false)
    .filter((n) => n.ip)
    .map((n) => ({ ip: n.ip!, mac: n.mac, permanent: (n.state & NudState.permanent) !== 0 }));
  const fdb = decodeNeighs(x.text.fdb, true).map((e) => ({ mac: e.mac.toLowerCase(), dst: e.ip ?? '' }));
  return {
    routes: diffRoutes(x.routes, routes, x.metric, form),
    ...(nh ? { nexthops: nh } : {}),
    neighs: diffNeighs(x.neighs, neighs),
    fdb: diffFdb(x.fdb, fdb),
  };
}

/** A diff as sorted texts: the same writes and removals, whatever their order. */
function normal(d: ExactDiff) {
  const s = (xs: unknown[]) => xs.map((x) => JSON.stringify(x)).sort();
  return {
    routeWrites: s(d.routes.write.map((w) => [w.route.dst, w.route.gw, w.route.via, w.existed])),
    routeRemoves: s(d.routes.remove),
    use: d.nexthops ? { overlay: s([...d.nexthops.use.overlay]), underlay: s([...d.nexthops.use.underlay]) } : undefined,
    nexthopRemoves: d.nexthops ? s(d.nexthops.remove) : undefined,
    neighWrites: s(d.neighs.write.map((w) => [w.neigh.ip, w.neigh.mac, w.existed])),
    neighRemoves: s(d.neighs.remove),
    fdbAdds: s(d.fdb.add),
    fdbRemoves: s(d.fdb.remove),
    moved: [...d.fdb.moved].sort(),
  };
}

interface Peer {
  route: DesiredRoute;
  neigh?: DesiredNeigh;
  fdb?: DesiredFdb;
}

const hex = (n: number): string => n.toString(16).padStart(2, '0');

/** Peer i: on the overlay (route + neighbour + FDB), or with `underlay` a DirectRouting route only. */
function peer(i: number, underlay: boolean): Peer {
  const dst = `10.${i + 1}.0.0/24`;
  if (underlay) return { route: { dst, gw: `172.16.0.${i + 2}`, via: 'underlay' } };
  const gw = `10.${i + 1}.0.0`;
  const mac = `6a:00:00:00:${hex(i)}:02`;
  return { route: { dst, gw, via: 'overlay' }, neigh: { ip: gw, mac }, fdb: { mac, dst: `172.16.1.${i + 2}` } };
}

/** The dump of a kernel holding exactly what the peers want (nexthop ids from 1, or plain routes). */
function rightDump(peers: readonly Peer[], nexthop: boolean): { routes: string[]; nexthops: string[]; neighs: string[]; fdb: string[] } {
  const out = { routes: [] as string[], nexthops: [] as string[], neighs: [] as string[], fdb: [] as string[] };
  const ids = new Map<string, number>();
  for (const p of peers) {
    const r = p.route;
    const pos = r.via === 'overlay' ? 0 : 1;
    let id: number | undefined;
    if (nexthop) {
      id = ids.get(`${pos} ${r.gw}`);
      if (id === undefined) {
        id = ids.size + 1;
        ids.set(`${pos} ${r.gw}`, id);
        out.nexthops.push(nexthopLine(pos, id, r.gw, pos === 0, 157));
      }
    }
    out.routes.push(routeLine(pos, r.dst, r.gw, pos === 0, 0, 3, id));
    if (p.neigh) out.neighs.push(neighLine(p.neigh.ip, p.neigh.mac, 128));
    if (p.fdb) out.fdb.push(`${p.fdb.mac} ${p.fdb.dst} 128`);
  }
  return out;
}

type Dump = ReturnType<typeof rightDump>;

/** Kernel drifts, each on the dump of a right kernel; `k` picks the entry. */
const DRIFTS: Record<string, (d: Dump, k: number) => void> = {
  'route deleted': (d, k) => d.routes.length && void d.routes.splice(k % d.routes.length, 1),
  'route through another nexthop': (d, k) => d.routes.length && (d.routes[k % d.routes.length] = d.routes[k % d.routes.length]!.replace(/ (\d+)$/, ' 99')),
  'route made plain': (d, k) => d.routes.length && (d.routes[k % d.routes.length] = d.routes[k % d.routes.length]!.replace(/ \d+$/, ' -')),
  'route via another gateway': (d, k) => d.routes.length && (d.routes[k % d.routes.length] = d.routes[k % d.routes.length]!.replace(/^(\d) (\S+) (\S+) /, '$1 $2 10.200.0.1 ')),
  'route with another metric beside it': (d, k) => d.routes.length && d.routes.push(d.routes[k % d.routes.length]!.replace(/ (\S) 0 3 /, ' $1 100 3 ')),
  'route of protocol static': (d, k) => d.routes.length && (d.routes[k % d.routes.length] = d.routes[k % d.routes.length]!.replace(/ 0 3 /, ' 0 4 ')),
  'route of protocol kernel': (d, k) => d.routes.length && (d.routes[k % d.routes.length] = d.routes[k % d.routes.length]!.replace(/ 0 3 /, ' 0 2 ')),
  'route printed twice': (d, k) => d.routes.length && d.routes.push(d.routes[k % d.routes.length]!),
  'foreign route on the overlay': (d) => d.routes.push('0 10.250.0.0/24 10.250.0.0 o 0 3 -'),
  'underlay route outside the network': (d) => d.routes.push('1 192.168.0.0/16 172.16.0.254 - 0 3 -', '1 172.16.0.0/12 - - 0 2 -', '1 default 172.16.0.254 - 0 3 -'),
  'routes without gateway (nexthop_compat_mode=0)': (d) => (d.routes = d.routes.map((l) => (/ \d+$/.test(l) ? l.replace(/^(\d) (\S+) \S+ \S /, '$1 $2 - - ') : l))),
  'nexthop deleted': (d, k) => d.nexthops.length && void d.nexthops.splice(k % d.nexthops.length, 1),
  'nexthop twice (a higher id)': (d, k) => d.nexthops.length && d.nexthops.push(d.nexthops[k % d.nexthops.length]!.replace(/^(\d) \d+ /, '$1 500 ')),
  'nexthop twice (a lower id)': (d, k) => d.nexthops.length && d.nexthops.unshift(d.nexthops[k % d.nexthops.length]!.replace(/^(\d) \d+ /, '$1 0 ')),
  'nexthop without onlink on the overlay': (d, k) => d.nexthops.length && (d.nexthops[k % d.nexthops.length] = d.nexthops[k % d.nexthops.length]!.replace(' o 157', ' - 157')),
  'nexthop of another protocol for a wanted gateway': (d, k) => d.nexthops.length && d.nexthops.push(d.nexthops[k % d.nexthops.length]!.replace(/^(\d) \d+ (.*) 157$/, '$1 600 $2 4')),
  'orphaned nexthop of ours': (d) => d.nexthops.push('0 700 10.201.0.0 o 157'),
  'nexthops out of id order': (d) => d.nexthops.reverse(),
  'neighbour deleted': (d, k) => d.neighs.length && void d.neighs.splice(k % d.neighs.length, 1),
  'neighbour MAC changed': (d, k) => d.neighs.length && (d.neighs[k % d.neighs.length] = d.neighs[k % d.neighs.length]!.replace(/ \S+ 128$/, ' 6a:ff:ff:ff:ff:02 128')),
  'neighbour not permanent': (d, k) => d.neighs.length && (d.neighs[k % d.neighs.length] = d.neighs[k % d.neighs.length]!.replace(/ 128$/, ' 2')),
  'neighbour permanent and noarp': (d, k) => d.neighs.length && (d.neighs[k % d.neighs.length] = d.neighs[k % d.neighs.length]!.replace(/ 128$/, ' 192')),
  'neighbour nobody wants': (d) => d.neighs.push('10.202.0.0 6a:00:00:00:ee:02 128'),
  'neighbour without address': (d) => d.neighs.push('- 6a:00:00:00:ee:03 128'),
  'FDB entry deleted': (d, k) => d.fdb.length && void d.fdb.splice(k % d.fdb.length, 1),
  'FDB entry to another remote': (d, k) => d.fdb.length && (d.fdb[k % d.fdb.length] = d.fdb[k % d.fdb.length]!.replace(/ \S+ 128$/, ' 172.16.9.9 128')),
  'FDB entry with a second remote': (d, k) => d.fdb.length && d.fdb.push(d.fdb[k % d.fdb.length]!.replace(/ \S+ 128$/, ' 172.16.9.8 128')),
  'FDB entry written by bridge (state 192)': (d, k) => d.fdb.length && (d.fdb[k % d.fdb.length] = d.fdb[k % d.fdb.length]!.replace(/ 128$/, ' 192')),
  'FDB entry without remote': (d) => d.fdb.push('6a:00:00:00:ee:04 - 128'),
  'FDB entry nobody wants': (d) => d.fdb.push('6a:00:00:00:ee:05 172.16.7.7 128'),
};

function inputOf(peers: readonly Peer[], dump: Dump, nexthop: boolean): ExactInput {
  const text: TableText = {
    routes: dump.routes.map((l) => l + '\n').join(''),
    neighs: dump.neighs.map((l) => l + '\n').join(''),
    fdb: dump.fdb.map((l) => l + '\n').join(''),
    nexthops: dump.nexthops.map((l) => l + '\n').join(''),
    missing: [],
  };
  return {
    routes: peers.map((p) => p.route),
    neighs: peers.flatMap((p) => (p.neigh ? [p.neigh] : [])),
    fdb: peers.flatMap((p) => (p.fdb ? [p.fdb] : [])),
    text,
    routeDevs: ROUTE_DEVS,
    devs: DEVS,
    network: NETWORK,
    metric: 0,
    nexthop,
    known: { routes: false, neighs: false, fdb: false },
  };
}

function shuffle<T>(xs: T[], seed: number): T[] {
  let s = seed || 1;
  for (let i = xs.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

describe('exactDiff equals decoding the whole dump and diffing it', () => {
  const peers = Array.from({ length: 8 }, (_, i) => peer(i, i === 3));

  it('finds nothing to do on a right kernel, with nexthop routes or plain ones, and the whole dump matched by text', () => {
    for (const nexthop of [true, false]) {
      const x = inputOf(peers, rightDump(peers, nexthop), nexthop);
      const d = exactDiff(x);
      expect(normal(d)).toEqual(normal(decodedDiff(x)));
      expect(d.routes.write.length + d.routes.remove.length + d.neighs.write.length + d.neighs.remove.length + d.fdb.add.length + d.fdb.remove.length).toBe(0);
      if (nexthop) expect(d.nexthops!.remove).toEqual([]);
    }
  });

  for (const [what, drift] of Object.entries(DRIFTS)) {
    it(`${what}: the same writes and removals`, () => {
      for (const nexthop of [true, false]) {
        for (const k of [0, 3, 5]) {
          const dump = rightDump(peers, nexthop);
          drift(dump, k);
          const x = inputOf(peers, dump, nexthop);
          expect(normal(exactDiff(x)), `${what}, nexthop ${nexthop}, entry ${k}`).toEqual(normal(decodedDiff(x)));
        }
      }
    });
  }

  it('two peers sharing a gateway and its neighbour (overlapping subnets): the same diff', () => {
    const twins: Peer[] = [...peers, { route: { dst: '10.1.0.0/25', gw: '10.1.0.0', via: 'overlay' }, neigh: { ip: '10.1.0.0', mac: '6a:00:00:00:aa:02' }, fdb: { mac: '6a:00:00:00:aa:02', dst: '172.16.5.5' } }];
    for (const nexthop of [true, false]) {
      const x = inputOf(twins, rightDump(peers, nexthop), nexthop);
      expect(normal(exactDiff(x))).toEqual(normal(decodedDiff(x)));
    }
  });

  it('any mix of drifts, in any dump order: the same diff (property)', () => {
    const names = Object.keys(DRIFTS);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10 }),
        fc.array(fc.tuple(fc.constantFrom(...names), fc.nat(20)), { maxLength: 6 }),
        fc.boolean(),
        fc.nat(),
        fc.subarray([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (n, drifts, nexthop, seed, underlay) => {
          const ps = Array.from({ length: n }, (_, i) => peer(i, underlay.includes(i)));
          const dump = rightDump(ps, nexthop);
          for (const [name, k] of drifts) DRIFTS[name]!(dump, k);
          // the kernel's order for routes, neighbours and FDB is its own
          shuffle(dump.routes, seed);
          shuffle(dump.neighs, seed + 1);
          shuffle(dump.fdb, seed + 2);
          const x = inputOf(ps, dump, nexthop);
          expect(normal(exactDiff(x))).toEqual(normal(decodedDiff(x)));
        },
      ),
      { numRuns: 400 },
    );
  });

  it('skips the tables known to diff to nothing', () => {
    const dump = rightDump(peers, true);
    DRIFTS['neighbour deleted']!(dump, 0);
    DRIFTS['route deleted']!(dump, 0);
    const x = { ...inputOf(peers, dump, true), known: { routes: true, neighs: true, fdb: true } };
    const d = exactDiff(x);
    expect(d.routes).toEqual({ write: [], remove: [] });
    expect(d.nexthops).toBeUndefined();
    expect(d.neighs).toEqual({ write: [], remove: [] });
  });
});
