// The VXLAN backend's periodic exact pass with its caches: an unchanged
// lease list is not planned again, and a kernel dump equal byte for byte to
// the last quiet one skips the diff. Neither may hide anything: entries
// changed by hand are rewritten on the next pass, and a lease object
// changed in place is planned again. One node netns, a few hundred peers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import type { Lease, ReconcileReport } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath, sortedLines as lines } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { nexthopsOf, routesResolved, TSF_NEXTHOP_PROTOCOL, tsfNexthopLines } from '../helpers/nexthops.js';

const N = 300;
const NETWORK = '10.0.0.0/8';

function macFor(i: number, tail = '01:02'): string {
  return `6a:${[i >> 16, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':')}:${tail}`;
}

function leaseFor(i: number): Lease {
  return {
    subnet: `10.${(i >> 8) + 1}.${i & 255}.0/24`,
    publicIP: `172.16.${Math.floor(i / 250) + 1}.${(i % 250) + 2}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: macFor(i) },
    nodeName: `node${i}`,
  };
}

const gwOf = (l: Lease): string => l.subnet.split('/')[0]!;

const quiet = (programmed: number): ReconcileReport => ({ added: 0, updated: 0, removed: 0, programmed, errors: [] });

describe.skipIf(requireOrSkip('VXLAN exact pass caches', { root: isRoot }))('VXLAN exact pass: cached plans and quiet dumps hide no drift', () => {
  let ns: string;
  let backend: VxlanBackend;
  let leases: Lease[];
  let valid: ReturnType<typeof stateOf>;

  const neighOf = (): string[] => lines(inNs(ns, 'ip', ['-4', 'neigh', 'show', 'dev', 'flannel.1']));
  const fdbOf = (): string[] => lines(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']));
  function stateOf() {
    return { routes: routesResolved(ns), nexthops: tsfNexthopLines(ns), neigh: neighOf(), fdb: fdbOf() };
  }
  const ip = (...args: string[]): void => {
    execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  };

  beforeAll(async () => {
    ns = addNetns('rsync');
    ip('link', 'set', 'lo', 'up');
    ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip('addr', 'add', '172.16.0.1/12', 'dev', 'eth0');
    ip('link', 'set', 'eth0', 'up');
    ip('link', 'set', 'eth1', 'up');
    backend = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: NETWORK, netns: nsPath(ns) });
    await backend.prepare({ name: 'eth0', index: 0, mtu: 1500, ip: '172.16.0.1', cidr: '172.16.0.1/12', publicIP: '172.16.0.1' });
    await backend.configure({ subnet: '10.255.255.0/24', publicIP: '172.16.0.1', backendType: 'vxlan', backendData: {} });
    leases = Array.from({ length: N }, (_, i) => leaseFor(i));
  });
  afterAll(() => cleanupAll());

  it('programs every peer once, then repeated passes over the same lease objects write nothing', () => {
    expect(backend.reconcile(leases)).toEqual({ added: 3 * N, updated: 0, removed: 0, programmed: N, errors: [] });
    valid = stateOf();
    expect(valid.neigh).toHaveLength(N);
    expect(valid.fdb).toHaveLength(N);
    expect(valid.nexthops).toHaveLength(N);
    for (let k = 0; k < 3; k++) expect(backend.reconcile(leases)).toEqual(quiet(N));
    expect(stateOf()).toEqual(valid);
  });

  it('rewrites a neighbour, FDB entry, route and nexthop deleted by hand after quiet passes, one drift per pass', () => {
    const l = leases[17]!;
    const drifts: [string, () => void, Partial<ReconcileReport>][] = [
      ['neighbour deleted', () => ip('neigh', 'del', gwOf(l), 'dev', 'flannel.1'), { added: 1 }],
      ['neighbour MAC changed', () => ip('neigh', 'replace', gwOf(l), 'lladdr', '6a:ff:ff:ff:01:02', 'dev', 'flannel.1', 'nud', 'permanent'), { updated: 1 }],
      ['FDB entry deleted', () => inNs(ns, 'bridge', ['fdb', 'del', macFor(17), 'dev', 'flannel.1', 'dst', l.publicIP]), { added: 1 }],
      ['route deleted', () => ip('route', 'del', l.subnet), { added: 1 }],
      ['foreign route on flannel.1', () => ip('route', 'add', '10.250.0.0/24', 'via', '10.250.0.0', 'dev', 'flannel.1', 'onlink'), { removed: 1 }],
      [
        'nexthop deleted (its route goes along)',
        () => {
          const nh = nexthopsOf(ns).find((n) => n.gateway === gwOf(l) && n.protocol === TSF_NEXTHOP_PROTOCOL);
          expect(nh).toBeDefined();
          ip('nexthop', 'del', 'id', String(nh!.id));
        },
        { added: 1 },
      ],
    ];
    for (const [what, drift, writes] of drifts) {
      expect(backend.reconcile(leases), `quiet before: ${what}`).toEqual(quiet(N));
      drift();
      expect(stateOf(), `the drift is in the kernel: ${what}`).not.toEqual(valid);
      expect(backend.reconcile(leases), `healed: ${what}`).toEqual({ ...quiet(N), ...writes });
      expect(stateOf(), `state after: ${what}`).toEqual(valid);
    }
    expect(backend.reconcile(leases)).toEqual(quiet(N));
  });

  it('plans a lease changed in place again: a new VTEP MAC and a new public IP on the same object reach the kernel', () => {
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    const l = leases[42]!;
    const oldMac = macFor(42);
    const newMac = macFor(42, '0a:0b');
    l.backendData.VtepMAC = newMac;
    // the same array, the same objects: only the lease's content differs
    expect(backend.reconcile(leases)).toEqual({ added: 1, updated: 1, removed: 1, programmed: N, errors: [] });
    expect(neighOf()).toContain(`${gwOf(l)} lladdr ${newMac} PERMANENT`);
    expect(fdbOf()).toContain(`${newMac} dst ${l.publicIP} self permanent`);
    expect(fdbOf().some((f) => f.startsWith(oldMac))).toBe(false);
    expect(backend.reconcile(leases)).toEqual(quiet(N));

    const oldIP = l.publicIP;
    l.publicIP = '172.16.99.9';
    expect(backend.reconcile(leases)).toEqual({ ...quiet(N), updated: 1 });
    expect(fdbOf()).toContain(`${newMac} dst 172.16.99.9 self permanent`);
    expect(fdbOf()).not.toContain(`${newMac} dst ${oldIP} self permanent`);
    expect(backend.reconcile(leases)).toEqual(quiet(N));

    // back as it was, so the snapshot holds again
    l.backendData.VtepMAC = oldMac;
    l.publicIP = oldIP;
    expect(backend.reconcile(leases)).toEqual({ added: 1, updated: 1, removed: 1, programmed: N, errors: [] });
    expect(stateOf()).toEqual(valid);
  });

  it('events between quiet passes go through the edge path and the next exact pass still finds nothing to do', () => {
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    const joined = [...leases, leaseFor(N)];
    expect(backend.update(joined)).toEqual({ added: 3, updated: 0, removed: 0, programmed: N + 1, errors: [] });
    expect(backend.reconcile(joined)).toEqual(quiet(N + 1));
    expect(neighOf()).toContain(`${gwOf(leaseFor(N))} lladdr ${macFor(N)} PERMANENT`);
    // a MAC change as a new lease object, after a quiet pass that kept its model
    const moved = joined.slice();
    moved[5] = { ...leases[5]!, backendData: { VNI: 1, VtepMAC: macFor(5, '0c:0d') } };
    // neighbour and FDB entry rewritten, both updates
    expect(backend.update(moved)).toEqual({ added: 0, updated: 2, removed: 0, programmed: N + 1, errors: [] });
    expect(fdbOf()).toContain(`${macFor(5, '0c:0d')} dst ${leases[5]!.publicIP} self permanent`);
    expect(backend.reconcile(moved)).toEqual(quiet(N + 1));
    // and back to the original list: the leaver's entries go, the MAC returns
    expect(backend.update(leases)).toEqual({ added: 0, updated: 2, removed: 3, programmed: N, errors: [] });
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    expect(stateOf()).toEqual(valid);
  });

  it('after an event, the exact pass still finds drift in every table, also the ones whose text and plans are unchanged since the last quiet pass', () => {
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    const macChange = (i: number, tail: string): Lease[] => {
      const next = leases.slice();
      next[i] = { ...leases[i]!, backendData: { VNI: 1, VtepMAC: macFor(i, tail) } };
      return next;
    };
    const drifts: [string, () => void, Partial<ReconcileReport>][] = [
      ['route deleted', () => ip('route', 'del', leases[11]!.subnet), { added: 1 }],
      ['neighbour MAC changed', () => ip('neigh', 'replace', gwOf(leases[12]!), 'lladdr', '6a:ff:ff:ff:01:03', 'dev', 'flannel.1', 'nud', 'permanent'), { updated: 1 }],
      ['FDB entry deleted', () => inNs(ns, 'bridge', ['fdb', 'del', macFor(13), 'dev', 'flannel.1', 'dst', leases[13]!.publicIP]), { added: 1 }],
    ];
    for (const [what, drift, writes] of drifts) {
      // a MAC change applied by the edge path: the neighbour and FDB tables change, the routes do not
      const moved = macChange(9, '0e:0f');
      expect(backend.update(moved), `event before: ${what}`).toEqual({ added: 0, updated: 2, removed: 0, programmed: N, errors: [] });
      drift();
      expect(backend.reconcile(moved), `healed after the event: ${what}`).toEqual({ ...quiet(N), ...writes });
      expect(backend.reconcile(moved), `quiet again: ${what}`).toEqual(quiet(N));
      expect(backend.update(leases)).toEqual({ added: 0, updated: 2, removed: 0, programmed: N, errors: [] });
      expect(backend.reconcile(leases)).toEqual(quiet(N));
      expect(stateOf(), `state after: ${what}`).toEqual(valid);
    }
  });

  it('rewrites routes whose plans changed while the route table\'s text did not (a subnet changed in place, no event)', () => {
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    const l = leases[50]!;
    const old = l.subnet;
    l.subnet = '10.200.50.0/24';
    const report = backend.reconcile(leases);
    expect(report.errors).toEqual([]);
    expect(report.added).toBeGreaterThanOrEqual(2); // route and neighbour of the new subnet
    expect(routesResolved(ns).join('\n')).toContain('10.200.50.0/24');
    expect(routesResolved(ns).join('\n')).not.toContain(`${old} `);
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    l.subnet = old;
    expect(backend.reconcile(leases).errors).toEqual([]);
    expect(backend.reconcile(leases)).toEqual(quiet(N));
    expect(stateOf()).toEqual(valid);
  });
});
