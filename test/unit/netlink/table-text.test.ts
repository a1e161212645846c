// The undecoded state dump: what decides whether an exact pass may skip
// decoding and diffing (sameTableText), and that decoding it gives what
// dumpTables always gave.
import { describe, expect, it } from 'vitest';
import { decodeTables, sameTableText, type TableText } from '../../../src/netlink/batch.js';

const dump = (): TableText => ({
  routes: '0 10.1.0.0/24 10.1.0.0 o 0 3 7\n1 10.9.0.0/24 172.16.0.9 - 0 4 -\n',
  neighs: '10.1.0.0 6a:00:00:00:01:02 128\n',
  fdb: '6a:00:00:00:01:02 172.16.0.2 130\n',
  nexthops: '0 7 10.1.0.0 o 157\n',
  missing: [],
});

describe('sameTableText', () => {
  it('is true only for dumps equal table by table', () => {
    expect(sameTableText(dump(), dump())).toBe(true);
    const changes: [string, (d: TableText) => void][] = [
      ['a route gone', (d) => (d.routes = d.routes.split('\n').slice(1).join('\n'))],
      ['a route through another nexthop', (d) => (d.routes = d.routes.replace(' 7\n', ' 8\n'))],
      ['a neighbour MAC', (d) => (d.neighs = d.neighs.replace('01:02', '01:03'))],
      ['a neighbour no longer permanent', (d) => (d.neighs = d.neighs.replace(' 128', ' 2'))],
      ['an FDB remote', (d) => (d.fdb = d.fdb.replace('172.16.0.2', '172.16.0.3'))],
      ['a nexthop gone', (d) => (d.nexthops = '')],
      ['nexthops unsupported', (d) => (d.nexthopsUnsupported = true)],
      ['a device missing', (d) => (d.missing = ['flannel.1'])],
      ['the same entries in another order', (d) => (d.routes = d.routes.split('\n').filter(Boolean).reverse().join('\n') + '\n')],
    ];
    for (const [what, change] of changes) {
      const d = dump();
      change(d);
      expect(sameTableText(dump(), d), what).toBe(false);
    }
  });

  it('treats an absent nexthop table as an empty one', () => {
    const a = dump();
    const b = dump();
    a.nexthops = '';
    delete b.nexthops;
    expect(sameTableText(a, b)).toBe(true);
  });
});

describe('decodeTables', () => {
  it('decodes every table of the text as dumpTables does', () => {
    const s = decodeTables(dump(), { routeDevs: ['flannel.1', 'eth0'] });
    expect(s.routes).toEqual([
      { dev: 'flannel.1', dst: '10.1.0.0/24', gw: '10.1.0.0', onlink: true, protocol: 3, nhid: 7 },
      { dev: 'eth0', dst: '10.9.0.0/24', gw: '172.16.0.9', protocol: 4 },
    ]);
    expect(s.neighs).toEqual([{ ip: '10.1.0.0', mac: '6a:00:00:00:01:02', state: 128 }]);
    expect(s.fdb).toEqual([{ ip: '172.16.0.2', mac: '6a:00:00:00:01:02', state: 130 }]);
    expect(s.nexthops).toEqual([{ dev: 'flannel.1', id: 7, gw: '10.1.0.0', onlink: true, protocol: 157 }]);
    expect(s.nexthopsUnsupported).toBe(false);
  });
});
