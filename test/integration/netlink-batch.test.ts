// nl.applyBatch and nl.dumpTables against the real kernel, inside a private
// netns: mixed route/neighbour/FDB changes in one call, per-entry errors
// that do not stop the others, groups, idempotence, and the netns boundary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as nl from '../../src/netlink/index.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath, sortedLines as lines } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';


describe.skipIf(requireOrSkip('netlink-batch', { root: isRoot }))('netlink batch.apply and state.dump', () => {
  let ns: string;
  let opts: nl.InNetns;
  const ip = (...args: string[]): void => void execFileSync('ip', ['-n', ns, ...args]);
  const routes = (): string[] => lines(inNs(ns, 'ip', ['-4', 'route', 'show']));
  const neighs = (): string[] => lines(inNs(ns, 'ip', ['-4', 'neigh', 'show', 'dev', 'vx0']));
  const fdb = (): string[] => lines(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'vx0']));

  beforeAll(() => {
    ns = addNetns('batch');
    opts = { netns: nsPath(ns) };
    ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip('addr', 'add', '192.168.90.1/24', 'dev', 'eth0');
    ip('link', 'set', 'eth0', 'up');
    ip('link', 'set', 'eth1', 'up');
    ip('link', 'add', 'vx0', 'type', 'vxlan', 'id', '7', 'local', '192.168.90.1', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    ip('link', 'set', 'vx0', 'up');
  });
  afterAll(() => cleanupAll());

  const peers: nl.BatchEntry[] = [
    { kind: 'neigh.set', dev: 'vx0', ip: '10.50.1.0', mac: '6a:00:00:00:01:01', group: 1 },
    { kind: 'fdb.append', dev: 'vx0', mac: '6a:00:00:00:01:01', dst: '192.168.91.11', group: 1 },
    { kind: 'route.replace', dev: 'vx0', dst: '10.50.1.0/24', gw: '10.50.1.0', onlink: true, group: 1 },
    { kind: 'neigh.set', dev: 'vx0', ip: '10.50.2.0', mac: '6a:00:00:00:02:01', group: 2 },
    { kind: 'fdb.append', dev: 'vx0', mac: '6a:00:00:00:02:01', dst: '192.168.91.12', group: 2 },
    { kind: 'route.replace', dev: 'vx0', dst: '10.50.2.0/24', gw: '10.50.2.0', onlink: true, group: 2 },
    { kind: 'route.replace', dev: 'eth0', dst: '10.50.3.0/24', gw: '192.168.90.3' },
  ];

  it('applies mixed route, neighbour and FDB entries in one call, in the given netns only', () => {
    const res = nl.applyBatch(peers, opts);
    expect(res).toEqual({ applied: 7, failures: [], nexthopsUnsupported: false });
    expect(routes()).toEqual(expect.arrayContaining([
      '10.50.1.0/24 via 10.50.1.0 dev vx0 onlink',
      '10.50.2.0/24 via 10.50.2.0 dev vx0 onlink',
      '10.50.3.0/24 via 192.168.90.3 dev eth0',
    ]));
    expect(neighs()).toEqual(['10.50.1.0 lladdr 6a:00:00:00:01:01 PERMANENT', '10.50.2.0 lladdr 6a:00:00:00:02:01 PERMANENT']);
    expect(fdb()).toEqual(expect.arrayContaining([
      '6a:00:00:00:01:01 dst 192.168.91.11 self permanent',
      '6a:00:00:00:02:01 dst 192.168.91.12 self permanent',
    ]));
    // Our own namespace got none of it (read only; vx0 exists only in the test's netns).
    expect(execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' })).not.toContain('dev vx0');
  });

  it('is idempotent: the same batch again succeeds and leaves the tables as they were', () => {
    const before = { r: routes(), n: neighs(), f: fdb() };
    expect(nl.applyBatch(peers, opts)).toEqual({ applied: 7, failures: [], nexthopsUnsupported: false });
    expect({ r: routes(), n: neighs(), f: fdb() }).toEqual(before);
  });

  it('reads routes of several devices, neighbours and FDB with one dump each', () => {
    const state = nl.dumpTables({ ...opts, routeDevs: ['vx0', 'eth0', 'nosuch0'], neighDev: 'vx0', fdbDev: 'vx0' });
    expect(state.missing).toEqual(['nosuch0']);
    expect(state.routes).toEqual(expect.arrayContaining([
      { dev: 'vx0', dst: '10.50.1.0/24', gw: '10.50.1.0', onlink: true, protocol: 3 },
      { dev: 'eth0', dst: '10.50.3.0/24', gw: '192.168.90.3', protocol: 3 },
    ]));
    // the kernel's own route for eth0's address comes with protocol kernel (2)
    expect(state.routes).toContainEqual(expect.objectContaining({ dev: 'eth0', dst: '192.168.90.0/24', protocol: 2 }));
    expect(state.neighs.map((n) => `${n.ip} ${n.mac} ${n.state & nl.NudState.permanent ? 'permanent' : ''}`).sort()).toEqual([
      '10.50.1.0 6a:00:00:00:01:01 permanent',
      '10.50.2.0 6a:00:00:00:02:01 permanent',
    ]);
    expect(state.fdb).toEqual(expect.arrayContaining([
      expect.objectContaining({ mac: '6a:00:00:00:01:01', ip: '192.168.91.11' }),
      expect.objectContaining({ mac: '6a:00:00:00:02:01', ip: '192.168.91.12' }),
    ]));
  });

  it('dumps only the asked devices and the main table: other devices\' neighbours and FDB, other tables and metrics read right', () => {
    ip('link', 'add', 'vx9', 'type', 'vxlan', 'id', '9', 'local', '192.168.90.1', 'dev', 'eth0', 'dstport', '8479', 'nolearning');
    ip('link', 'set', 'vx9', 'up');
    ip('neigh', 'replace', '10.59.1.0', 'lladdr', '6a:00:00:00:09:01', 'dev', 'vx9', 'nud', 'permanent');
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', 'fdb', 'append', '6a:00:00:00:09:01', 'dev', 'vx9', 'dst', '192.168.91.19', 'self', 'permanent']);
    ip('neigh', 'replace', '192.168.90.77', 'lladdr', '6a:00:00:00:09:77', 'dev', 'eth0', 'nud', 'permanent');
    ip('route', 'replace', '10.59.1.0/24', 'via', '10.59.1.0', 'dev', 'vx9', 'onlink');
    ip('route', 'replace', '10.59.2.0/24', 'via', '192.168.90.9', 'dev', 'eth0', 'table', '100');
    ip('route', 'replace', '10.59.3.0/24', 'via', '192.168.90.9', 'dev', 'eth0', 'metric', '77');
    try {
      const state = nl.dumpTables({ ...opts, routeDevs: ['vx0', 'eth0'], neighDev: 'vx0', fdbDev: 'vx0' });
      expect(state.routes.map((r) => r.dst)).not.toContain('10.59.1.0/24'); // vx9: not asked
      expect(state.routes.map((r) => r.dst)).not.toContain('10.59.2.0/24'); // table 100
      expect(state.routes).toContainEqual({ dev: 'eth0', dst: '10.59.3.0/24', gw: '192.168.90.9', metric: 77, protocol: 3 });
      expect(state.neighs.map((n) => n.ip).sort()).toEqual(['10.50.1.0', '10.50.2.0']);
      expect(state.fdb.map((e) => e.mac)).not.toContain('6a:00:00:00:09:01');
      expect(state.fdb.filter((e) => e.ip).map((e) => `${e.mac} ${e.ip}`).sort()).toEqual(['6a:00:00:00:01:01 192.168.91.11', '6a:00:00:00:02:01 192.168.91.12']);
      const other = nl.dumpTables({ ...opts, routeDevs: ['vx9'], neighDev: 'vx9', fdbDev: 'vx9' });
      expect(other.routes).toEqual([{ dev: 'vx9', dst: '10.59.1.0/24', gw: '10.59.1.0', onlink: true, protocol: 3 }]);
      expect(other.neighs).toEqual([{ ip: '10.59.1.0', mac: '6a:00:00:00:09:01', state: nl.NudState.permanent }]);
      expect(other.fdb).toContainEqual(expect.objectContaining({ mac: '6a:00:00:00:09:01', ip: '192.168.91.19' }));
    } finally {
      ip('route', 'del', '10.59.2.0/24', 'table', '100');
      ip('route', 'del', '10.59.3.0/24', 'via', '192.168.90.9', 'dev', 'eth0', 'metric', '77');
      ip('neigh', 'del', '192.168.90.77', 'dev', 'eth0');
      ip('link', 'del', 'vx9');
    }
  });

  it('reads IPv6 routes and neighbours when asked for inet6, and keeps them out of the IPv4 dump', () => {
    ip('-6', 'neigh', 'replace', 'fd00:50:4::', 'lladdr', '6a:00:00:00:04:01', 'dev', 'vx0', 'nud', 'permanent');
    ip('-6', 'route', 'replace', 'fd00:50:4::/64', 'via', 'fd00:50:4::', 'dev', 'vx0', 'onlink');
    try {
      const v6 = nl.dumpTables({ ...opts, routeDevs: ['vx0'], neighDev: 'vx0', family: 'inet6' });
      expect(v6.routes).toContainEqual(expect.objectContaining({ dev: 'vx0', dst: 'fd00:50:4::/64', gw: 'fd00:50:4::', onlink: true }));
      expect(v6.neighs).toContainEqual({ ip: 'fd00:50:4::', mac: '6a:00:00:00:04:01', state: nl.NudState.permanent });
      const v4 = nl.dumpTables({ ...opts, routeDevs: ['vx0'], neighDev: 'vx0' });
      expect(v4.routes.map((r) => r.dst)).not.toContain('fd00:50:4::/64');
      expect(v4.neighs.map((n) => n.ip)).not.toContain('fd00:50:4::');
    } finally {
      ip('-6', 'route', 'del', 'fd00:50:4::/64', 'dev', 'vx0');
      ip('-6', 'neigh', 'del', 'fd00:50:4::', 'dev', 'vx0');
    }
  });

  it('reports each failing entry with its index and errno, skips the rest of its group, and applies the others', () => {
    const res = nl.applyBatch([
      { kind: 'route.replace', dev: 'nosuch0', dst: '10.60.1.0/24', gw: '10.60.1.0', onlink: true },
      { kind: 'route.replace', dev: 'vx0', dst: '10.60.2.0/33', gw: '10.60.2.0', onlink: true },
      { kind: 'neigh.set', dev: 'vx0', ip: '10.60.3.0', mac: 'not-a-mac', group: 5 },
      { kind: 'route.replace', dev: 'vx0', dst: '10.60.3.0/24', gw: '10.60.3.0', onlink: true, group: 5 },
      { kind: 'route.del', dev: 'vx0', dst: '10.60.4.0/24', gw: '10.60.4.0' },
      { kind: 'route.replace', dev: 'vx0', dst: '10.60.5.0/24', gw: '10.60.5.0', onlink: true },
      { kind: 'route.del', dev: 'eth0', dst: '10.50.3.0/24', gw: '192.168.90.3' },
    ], opts);
    expect(res.applied).toBe(2);
    expect(res.failures.map((f) => [f.index, f.error.errno])).toEqual([
      [0, 'ENOENT'],
      [1, 'EINVAL'],
      [2, 'EINVAL'],
      [3, 'ECANCELED'],
      [4, 'ESRCH'],
    ]);
    expect(res.failures.every((f) => f.error instanceof nl.NetlinkError)).toBe(true);
    expect(nl.isNotFound(res.failures[4]!.error)).toBe(true);
    const r = routes();
    expect(r).toContain('10.60.5.0/24 via 10.60.5.0 dev vx0 onlink');
    expect(r.join('\n')).not.toContain('10.60.3.0');
    expect(r.join('\n')).not.toContain('10.50.3.0');
  });

  it('deletes neighbour and FDB entries, and reports ENOENT for ones already gone', () => {
    const del: nl.BatchEntry[] = [
      { kind: 'route.del', dev: 'vx0', dst: '10.50.2.0/24', gw: '10.50.2.0' },
      { kind: 'neigh.del', dev: 'vx0', ip: '10.50.2.0' },
      { kind: 'fdb.del', dev: 'vx0', mac: '6a:00:00:00:02:01', dst: '192.168.91.12' },
    ];
    expect(nl.applyBatch(del, opts)).toEqual({ applied: 3, failures: [], nexthopsUnsupported: false });
    expect(neighs()).toEqual(['10.50.1.0 lladdr 6a:00:00:00:01:01 PERMANENT']);
    expect(fdb().join('\n')).not.toContain('6a:00:00:00:02:01');
    const again = nl.applyBatch(del, opts);
    expect(again.applied).toBe(0);
    expect(again.failures.map((f) => nl.isNotFound(f.error))).toEqual([true, true, true]);
  });

  it('reports kernel errors by entry across pipelined chunks of hundreds of entries, and skips only the failed peers\' later entries', () => {
    // Neighbour and FDB writes go to the kernel up to 256 per send; errors
    // come back by sequence number. Failing peers sit at chunk boundaries.
    const n = 600;
    const failing = [0, 137, 255, 256, 511, 599];
    const hex = (b: number): string => b.toString(16).padStart(2, '0');
    const ipOf = (i: number): string => `10.80.${i >> 8}.${i & 255}`;
    const macOf = (i: number): string => `6a:00:00:80:${hex(i >> 8)}:${hex(i & 255)}`;
    const entries: nl.BatchEntry[] = [];
    const expected: [number, string][] = [];
    for (let i = 0; i < n; i++) {
      if (failing.includes(i)) {
        expected.push([entries.length, 'ENOENT']); // a neighbour that is not there
        entries.push({ kind: 'neigh.del', dev: 'vx0', ip: `10.81.${i >> 8}.${i & 255}`, group: i + 1 });
        expected.push([entries.length, 'ECANCELED']);
      }
      entries.push({ kind: 'neigh.set', dev: 'vx0', ip: ipOf(i), mac: macOf(i), group: i + 1 });
    }
    for (let i = 0; i < n; i++) {
      if (failing.includes(i)) {
        // still in flight when the next entry, of a failed peer, is skipped
        expected.push([entries.length, 'ENOENT']);
        entries.push({ kind: 'neigh.del', dev: 'vx0', ip: `10.82.${i >> 8}.${i & 255}` });
        expected.push([entries.length, 'ECANCELED']);
      }
      entries.push({ kind: 'fdb.append', dev: 'vx0', mac: macOf(i), dst: `192.168.92.${(i % 250) + 1}`, group: i + 1 });
    }
    const res = nl.applyBatch(entries, opts);
    expect(res.failures.map((f) => [f.index, f.error.errno])).toEqual(expected);
    expect(res.failures[0]!.error.message).toBe('batch.apply: neigh.del: no such file or directory');
    expect(res.applied).toBe(2 * (n - failing.length));
    const ours = (rows: string[], prefix: string): string[] => rows.filter((l) => l.startsWith(prefix));
    const got = ours(neighs(), '10.80.');
    expect(got).toHaveLength(n - failing.length);
    expect(got).toContain(`${ipOf(1)} lladdr ${macOf(1)} PERMANENT`);
    for (const i of failing) expect(got.join('\n')).not.toContain(`${ipOf(i)} `);
    const fdbRows = ours(fdb(), '6a:00:00:80:');
    expect(fdbRows).toHaveLength(n - failing.length);
    expect(fdbRows).toContain(`${macOf(300)} dst 192.168.92.51 self permanent`);
    // Deleting all of them: only the failed peers' entries are not found.
    const del: nl.BatchEntry[] = [];
    for (let i = 0; i < n; i++) del.push({ kind: 'neigh.del', dev: 'vx0', ip: ipOf(i) }, { kind: 'fdb.del', dev: 'vx0', mac: macOf(i), dst: `192.168.92.${(i % 250) + 1}` });
    const gone = nl.applyBatch(del, opts);
    expect(gone.failures.map((f) => f.index)).toEqual(failing.flatMap((i) => [2 * i, 2 * i + 1]));
    expect(gone.failures.every((f) => nl.isNotFound(f.error))).toBe(true);
    expect(ours(neighs(), '10.80.')).toEqual([]);
    expect(ours(fdb(), '6a:00:00:80:')).toEqual([]);
  });

  it('leaves no socket open behind a pipelined batch (the agent calls it for years)', () => {
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const many: nl.BatchEntry[] = Array.from({ length: 40 }, (_, k) => ({ kind: 'neigh.set', dev: 'vx0', ip: `10.86.0.${k + 1}`, mac: `6a:00:00:86:00:${(k + 1).toString(16).padStart(2, '0')}` }));
    expect(nl.applyBatch(many, opts).failures).toEqual([]); // the shim loaded, its first sockets made
    const before = fds();
    for (let k = 0; k < 10; k++) expect(nl.applyBatch(many, opts).failures).toEqual([]);
    expect(fds()).toBe(before);
    expect(nl.applyBatch(many.map((e) => ({ kind: 'neigh.del', dev: 'vx0', ip: (e as nl.NeighEntry).ip })), opts).failures).toEqual([]);
  });

  describe('nexthop objects', () => {
    const nexthops = (family = '-4'): { id: number; gateway?: string; dev?: string; protocol?: string; flags?: string[] }[] =>
      JSON.parse(inNs(ns, 'ip', ['-j', family, 'nexthop', 'show'])) as { id: number; gateway?: string; dev?: string; protocol?: string; flags?: string[] }[];
    const nhLine = (n: { id: number; gateway?: string; dev?: string; protocol?: string; flags?: string[] }): string =>
      `${n.id} via ${n.gateway} dev ${n.dev}${n.flags?.includes('onlink') ? ' onlink' : ''} proto ${n.protocol ?? 'unspec'}`;
    const viaNexthop = (dst: string, gw: string, dev: string, onlink = dev === 'vx0'): nl.RouteEntry =>
      ({ kind: 'route.replace', dev, dst, gw, ...(onlink ? { onlink: true } : {}), nexthop: true });

    it('writes each route through a nexthop of protocol 157, reusing ours and skipping an id somebody else holds', () => {
      // somebody else's nexthop for the very gateway we want, holding id 1
      ip('nexthop', 'add', 'id', '1', 'via', '10.50.4.0', 'dev', 'vx0', 'onlink', 'proto', 'static');
      const res = nl.applyBatch([viaNexthop('10.50.4.0/24', '10.50.4.0', 'vx0'), viaNexthop('10.50.5.0/24', '10.50.5.0', 'vx0'), viaNexthop('10.50.6.0/24', '192.168.90.6', 'eth0')], opts);
      expect(res).toEqual({ applied: 3, failures: [], nexthopsUnsupported: false });
      expect(nexthops().map(nhLine)).toEqual([
        '1 via 10.50.4.0 dev vx0 onlink proto static',
        '2 via 10.50.4.0 dev vx0 onlink proto 157',
        '3 via 10.50.5.0 dev vx0 onlink proto 157',
        '4 via 192.168.90.6 dev eth0 proto 157',
      ]);
      expect(routes()).toEqual(expect.arrayContaining([
        '10.50.4.0/24 nhid 2 via 10.50.4.0 dev vx0 onlink',
        '10.50.5.0/24 nhid 3 via 10.50.5.0 dev vx0 onlink',
        '10.50.6.0/24 nhid 4 via 192.168.90.6 dev eth0',
      ]));
      // the same batch again: the same nexthops, nothing new
      expect(nl.applyBatch([viaNexthop('10.50.4.0/24', '10.50.4.0', 'vx0'), viaNexthop('10.50.5.0/24', '10.50.5.0', 'vx0')], opts).failures).toEqual([]);
      expect(nexthops().map((n) => n.id)).toEqual([1, 2, 3, 4]);
      // a second route to one gateway shares its nexthop
      expect(nl.applyBatch([viaNexthop('10.50.7.0/24', '192.168.90.6', 'eth0')], opts).failures).toEqual([]);
      expect(routes()).toContain('10.50.7.0/24 nhid 4 via 192.168.90.6 dev eth0');
    });

    it('dumps each route\'s nexthop id and the nexthops of the asked devices and family', () => {
      const state = nl.dumpTables({ ...opts, routeDevs: ['vx0', 'eth0'], nexthops: true });
      expect(state.nexthopsUnsupported).toBe(false);
      expect(state.routes).toEqual(expect.arrayContaining([
        { dev: 'vx0', dst: '10.50.4.0/24', gw: '10.50.4.0', onlink: true, protocol: 3, nhid: 2 },
        { dev: 'eth0', dst: '10.50.6.0/24', gw: '192.168.90.6', protocol: 3, nhid: 4 },
      ]));
      expect(state.nexthops).toEqual([
        { dev: 'vx0', id: 1, gw: '10.50.4.0', onlink: true, protocol: 4 },
        { dev: 'vx0', id: 2, gw: '10.50.4.0', onlink: true, protocol: 157 },
        { dev: 'vx0', id: 3, gw: '10.50.5.0', onlink: true, protocol: 157 },
        { dev: 'eth0', id: 4, gw: '192.168.90.6', protocol: 157 },
      ]);
      expect(nl.dumpTables({ ...opts, routeDevs: ['eth0'], nexthops: true }).nexthops.map((n) => n.id)).toEqual([4]);
      expect(nl.dumpTables({ ...opts, routeDevs: ['vx0', 'eth0'], nexthops: true, family: 'inet6' }).nexthops).toEqual([]);
      // without the flag, no nexthop dump
      expect(nl.dumpTables({ ...opts, routeDevs: ['vx0'] }).nexthops).toEqual([]);
    });

    it('deletes routes by their nexthop and our nexthops by id or gateway, and never somebody else\'s', () => {
      const res = nl.applyBatch([
        { kind: 'route.del', dev: 'vx0', dst: '10.50.5.0/24', gw: '10.50.5.0', onlink: true, nexthop: true },
        { kind: 'nexthop.del', dev: 'vx0', gw: '10.50.5.0', onlink: true },
        { kind: 'route.del', dev: 'eth0', dst: '10.50.7.0/24', nhid: 4 },
        { kind: 'nexthop.del', dev: 'vx0', nhid: 1 },
        { kind: 'nexthop.del', dev: 'vx0', nhid: 3 },
      ], opts);
      expect(res.applied).toBe(3);
      expect(res.failures.map((f) => [f.index, f.error.errno])).toEqual([[3, 'EPERM'], [4, 'ENOENT']]);
      expect(nexthops().map((n) => n.id)).toEqual([1, 2, 4]);
      const r = routes().join('\n');
      expect(r).not.toContain('10.50.5.0/24');
      expect(r).not.toContain('10.50.7.0/24');
      expect(r).toContain('10.50.6.0/24 nhid 4 via 192.168.90.6 dev eth0');
      // deleting a nexthop takes the routes on it along
      expect(nl.applyBatch([{ kind: 'nexthop.del', dev: 'eth0', nhid: 4 }], opts).failures).toEqual([]);
      expect(routes().join('\n')).not.toContain('10.50.6.0/24');
      ip('nexthop', 'del', 'id', '1');
      expect(nl.applyBatch([{ kind: 'nexthop.del', dev: 'vx0', nhid: 2 }], opts).failures).toEqual([]);
      expect(nexthops()).toEqual([]);
    });

    it('finds out when a nexthop it remembers was deleted or taken over by hand', () => {
      const route = viaNexthop('10.50.9.0/24', '10.50.9.0', 'vx0');
      expect(nl.applyBatch([route], opts).failures).toEqual([]);
      const first = nexthops().find((n) => n.gateway === '10.50.9.0')!;
      // the shim remembers the nexthops of the last dump between calls
      nl.dumpTables({ ...opts, routeDevs: ['vx0'], nexthops: true });
      ip('nexthop', 'del', 'id', String(first.id)); // takes the route along
      expect(routes().join('\n')).not.toContain('10.50.9.0/24');
      expect(nl.applyBatch([route], opts).failures).toEqual([]);
      const second = nexthops().find((n) => n.gateway === '10.50.9.0')!;
      expect(nhLine(second)).toBe(`${second.id} via 10.50.9.0 dev vx0 onlink proto 157`);
      expect(routes()).toContain(`10.50.9.0/24 nhid ${second.id} via 10.50.9.0 dev vx0 onlink`);
      // somebody replaces it by their own under the same id: never deleted
      ip('nexthop', 'del', 'id', String(second.id));
      ip('nexthop', 'add', 'id', String(second.id), 'via', '10.50.9.0', 'dev', 'vx0', 'onlink', 'proto', 'static');
      const res = nl.applyBatch([{ kind: 'nexthop.del', dev: 'vx0', gw: '10.50.9.0', onlink: true }], opts);
      expect(res.failures.map((f) => f.error.errno)).toEqual(['EPERM']);
      expect(nexthops().map(nhLine)).toContain(`${second.id} via 10.50.9.0 dev vx0 onlink proto static`);
      ip('nexthop', 'del', 'id', String(second.id));
    });

    it('writes IPv6 routes through IPv6 nexthops', () => {
      const res = nl.applyBatch([viaNexthop('fd00:50:8::/64', 'fd00:50:8::', 'vx0')], opts);
      expect(res.failures).toEqual([]);
      const [nh] = nexthops('-6');
      expect(nh && nhLine(nh)).toMatch(/^\d+ via fd00:50:8:: dev vx0 onlink proto 157$/);
      expect(inNs(ns, 'ip', ['-6', 'route', 'show', 'fd00:50:8::/64']).trim()).toBe(`fd00:50:8::/64 nhid ${nh!.id} via fd00:50:8:: dev vx0 metric 1024 onlink pref medium`);
      const v6 = nl.dumpTables({ ...opts, routeDevs: ['vx0'], family: 'inet6', nexthops: true });
      expect(v6.nexthops).toEqual([{ dev: 'vx0', id: nh!.id, gw: 'fd00:50:8::', onlink: true, protocol: 157 }]);
      expect(v6.routes).toContainEqual({ dev: 'vx0', dst: 'fd00:50:8::/64', gw: 'fd00:50:8::', onlink: true, metric: 1024, protocol: 3, nhid: nh!.id });
      expect(nl.applyBatch([{ kind: 'nexthop.del', dev: 'vx0', nhid: nh!.id }], opts).failures).toEqual([]);
      expect(inNs(ns, 'ip', ['-6', 'route', 'show', 'fd00:50:8::/64']).trim()).toBe('');
    });
    it('reports a nexthop the kernel refuses on its own route and writes the batch\'s other routes', () => {
      ip('link', 'add', 'dn0', 'type', 'veth', 'peer', 'name', 'dn1'); // left down: no nexthop can use it
      try {
        // more than a handful of entries: the batch is pipelined, its nexthops created ahead of the routes
        const more = Array.from({ length: 20 }, (_, k) => viaNexthop(`10.82.${10 + k}.0/24`, `10.82.${10 + k}.0`, 'vx0'));
        // and host-gw's form: gateways on the underlay, not onlink
        const underlay = Array.from({ length: 3 }, (_, k) => viaNexthop(`10.82.${40 + k}.0/24`, `192.168.90.${40 + k}`, 'eth0'));
        const res = nl.applyBatch([
          viaNexthop('10.82.1.0/24', '10.82.1.0', 'vx0'),
          viaNexthop('10.82.2.0/24', '10.82.2.0', 'dn0', true),
          viaNexthop('10.82.3.0/24', '10.82.3.0', 'vx0'),
          ...more,
          ...underlay,
        ], opts);
        expect(res.applied).toBe(25);
        expect(res.failures.map((f) => f.index)).toEqual([1]);
        expect(res.failures[0]!.error.message).toMatch(/nexthop via 10\.82\.2\.0 dev dn0/);
        const r = routes().join('\n');
        expect(r).toMatch(/10\.82\.1\.0\/24 nhid \d+ via 10\.82\.1\.0 dev vx0 onlink/);
        expect(r).toMatch(/10\.82\.3\.0\/24 nhid \d+ via 10\.82\.3\.0 dev vx0 onlink/);
        expect(r).not.toContain('10.82.2.0');
        expect(r).toMatch(/10\.82\.29\.0\/24 nhid \d+ via 10\.82\.29\.0 dev vx0 onlink/);
        expect(r).toMatch(/10\.82\.42\.0\/24 nhid \d+ via 192\.168\.90\.42 dev eth0 ?$/m);
        expect(nexthops().filter((n) => n.gateway === '192.168.90.41').map(nhLine)).toEqual([expect.stringMatching(/^\d+ via 192\.168\.90\.41 dev eth0 proto 157$/)]);
        expect(nexthops().filter((n) => n.dev === 'dn0')).toEqual([]);
      } finally {
        const gws = ['10.82.1.0', '10.82.3.0', ...Array.from({ length: 20 }, (_, k) => `10.82.${10 + k}.0`)];
        nl.applyBatch([
          ...gws.map((gw): nl.BatchEntry => ({ kind: 'nexthop.del', dev: 'vx0', gw, onlink: true })),
          ...[40, 41, 42].map((k): nl.BatchEntry => ({ kind: 'nexthop.del', dev: 'eth0', gw: `192.168.90.${k}` })),
        ], opts);
        ip('link', 'del', 'dn0');
      }
      expect(nexthops().filter((n) => n.gateway?.startsWith('10.82.') || n.gateway?.startsWith('192.168.90.4'))).toEqual([]);
    });

    it('never takes an id somebody else took after the remembered dump, also when nexthops are created ahead of a pipelined batch', () => {
      const many = Array.from({ length: 20 }, (_, k) => viaNexthop(`10.84.${k}.0/24`, `10.84.${k}.0`, 'vx0'));
      nl.dumpTables({ ...opts, routeDevs: ['vx0'], nexthops: true }); // the shim remembers the ids in use
      const used = new Set(nexthops().map((n) => n.id));
      let free = 1;
      while (used.has(free)) free++;
      // somebody else takes the id the shim would pick next
      ip('nexthop', 'add', 'id', String(free), 'via', '10.84.99.0', 'dev', 'vx0', 'onlink', 'proto', 'static');
      try {
        const res = nl.applyBatch(many, opts);
        expect(res).toEqual({ applied: 20, failures: [], nexthopsUnsupported: false });
        const all = nexthops();
        expect(all.filter((n) => n.id === free).map(nhLine)).toEqual([`${free} via 10.84.99.0 dev vx0 onlink proto static`]);
        const ours = all.filter((n) => n.gateway?.startsWith('10.84.') && n.gateway !== '10.84.99.0');
        expect(ours).toHaveLength(20);
        expect(ours.map((n) => n.protocol)).toEqual(new Array(20).fill('157'));
        const r = routes().filter((l) => l.startsWith('10.84.'));
        expect(r).toHaveLength(20);
        expect(r.join('\n')).not.toContain(`nhid ${free} `);
      } finally {
        nl.applyBatch(many.map((x) => ({ kind: 'nexthop.del', dev: 'vx0', gw: x.gw, onlink: true })), opts);
        ip('nexthop', 'del', 'id', String(free));
      }
    });

    it('pipelines IPv6 neighbours and IPv6 routes through IPv6 nexthops like IPv4 ones', () => {
      const peers = Array.from({ length: 20 }, (_, k) => ({ gw: `fd00:85:${(k + 1).toString(16)}::`, dst: `fd00:85:${(k + 1).toString(16)}::/64`, mac: `6a:00:00:85:00:${k.toString(16).padStart(2, '0')}` }));
      const entries: nl.BatchEntry[] = [
        ...peers.map((p, k): nl.BatchEntry => ({ kind: 'neigh.set', dev: 'vx0', ip: p.gw, mac: p.mac, group: k + 1 })),
        ...peers.map((p, k): nl.BatchEntry => ({ ...viaNexthop(p.dst, p.gw, 'vx0'), group: k + 1 })),
      ];
      try {
        expect(nl.applyBatch(entries, opts)).toEqual({ applied: 40, failures: [], nexthopsUnsupported: false });
        const v6 = nl.dumpTables({ ...opts, routeDevs: ['vx0'], neighDev: 'vx0', family: 'inet6', nexthops: true });
        for (const p of peers) {
          expect(v6.neighs).toContainEqual({ ip: p.gw, mac: p.mac, state: nl.NudState.permanent });
          const nh = v6.nexthops.find((n) => n.gw === p.gw);
          expect(nh).toMatchObject({ dev: 'vx0', onlink: true, protocol: 157 });
          expect(v6.routes).toContainEqual({ dev: 'vx0', dst: p.dst, gw: p.gw, onlink: true, metric: 1024, protocol: 3, nhid: nh!.id });
        }
      } finally {
        nl.applyBatch([
          ...peers.map((p): nl.BatchEntry => ({ kind: 'nexthop.del', dev: 'vx0', gw: p.gw, onlink: true })),
          ...peers.map((p): nl.BatchEntry => ({ kind: 'neigh.del', dev: 'vx0', ip: p.gw })),
        ], opts);
      }
      expect(nl.dumpTables({ ...opts, routeDevs: ['vx0'], neighDev: 'vx0', family: 'inet6' }).neighs.filter((n) => n.ip?.startsWith('fd00:85:'))).toEqual([]);
    });

    it('rewrites on its own a pipelined route whose remembered nexthop was deleted by hand, and the batch\'s other routes with it', () => {
      const many = Array.from({ length: 20 }, (_, k) => viaNexthop(`10.83.${k}.0/24`, `10.83.${k}.0`, 'vx0'));
      try {
        expect(nl.applyBatch(many, opts).failures).toEqual([]);
        nl.dumpTables({ ...opts, routeDevs: ['vx0'], nexthops: true }); // the shim remembers these nexthops
        const victim = nexthops().find((n) => n.gateway === '10.83.5.0')!;
        ip('nexthop', 'del', 'id', String(victim.id)); // takes its route along
        expect(routes().join('\n')).not.toContain('10.83.5.0/24');
        const res = nl.applyBatch(many, opts);
        expect(res).toEqual({ applied: 20, failures: [], nexthopsUnsupported: false });
        const again = nexthops().find((n) => n.gateway === '10.83.5.0')!;
        expect(nhLine(again)).toBe(`${again.id} via 10.83.5.0 dev vx0 onlink proto 157`);
        expect(routes()).toContain(`10.83.5.0/24 nhid ${again.id} via 10.83.5.0 dev vx0 onlink`);
        expect(routes().filter((l) => l.startsWith('10.83.'))).toHaveLength(20);
      } finally {
        nl.applyBatch(many.map((r) => ({ kind: 'nexthop.del', dev: 'vx0', gw: r.gw, onlink: true })), opts);
      }
    });
  });

  it('throws one error, applying nothing, when the netns does not exist', () => {
    expect(() => nl.applyBatch(peers, { netns: '/var/run/netns/tsf-no-such-ns' })).toThrow(/netns/);
  });
});
