import { describe, expect, it } from 'vitest';
import { LeaseList } from '../../../src/daemon/subnet/lease-list.js';
import { addressOrderKey, compareAddresses } from '../../../src/net/ip.js';
import type { Lease } from '../../../src/daemon/types.js';

function lease(subnet: string, mac = '0a:00:00:00:00:01', ipv6Subnet?: string): Lease {
  const l: Lease = { subnet, publicIP: '192.168.0.1', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac }, nodeName: `n-${subnet}` };
  if (ipv6Subnet) l.ipv6Subnet = ipv6Subnet;
  return l;
}

const byAddress = (l: Lease) => addressOrderKey(l.subnet || l.ipv6Subnet || '');

describe('LeaseList', () => {
  it('keeps leases in address order across inserts, moves and deletes, as a full sort would', () => {
    const list = new LeaseList(byAddress);
    const held = new Map<string, Lease>();
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let step = 0; step < 2000; step++) {
      const key = `k${rand(300)}`;
      const op = rand(4);
      if (op === 0) {
        list.delete(key);
        held.delete(key);
      } else {
        const l = rand(5) === 0 ? lease('', `0a:00:00:00:00:${(rand(200) + 16).toString(16)}`, `fd00:${rand(300).toString(16)}::/64`) : lease(`10.${rand(3) * 100}.${rand(256)}.0/24`, `0a:00:00:00:00:${(rand(200) + 16).toString(16)}`);
        list.set(key, l);
        held.set(key, l);
      }
    }
    const got = list.take(true)!;
    const want = [...held.entries()]
      .sort(([ka, a], [kb, b]) => compareAddresses(a.subnet || a.ipv6Subnet!, b.subnet || b.ipv6Subnet!) || (ka < kb ? -1 : ka > kb ? 1 : 0))
      .map(([, l]) => l);
    expect(got).toEqual(want);
    expect(got.length).toBe(list.size);
    // IPv4 before IPv6, as compareAddresses orders them.
    const firstV6 = got.findIndex((l) => l.subnet === '');
    if (firstV6 >= 0) expect(got.slice(firstV6).every((l) => l.subnet === '')).toBe(true);
  });

  it('keeps the old object for an equal lease and reports no change', () => {
    const list = new LeaseList(byAddress);
    const a = lease('10.244.1.0/24');
    expect(list.set('a', a)).toBe(true);
    expect(list.take()).toEqual([a]);
    expect(list.set('a', { ...a, backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' } })).toBe(false);
    expect(list.take()).toBeUndefined();
    expect(list.take(true)![0]).toBe(a);
  });

  it('hands out a new array each time, so the last list a backend kept is not changed under it', () => {
    const list = new LeaseList(byAddress);
    list.set('a', lease('10.244.1.0/24'));
    list.set('b', lease('10.244.2.0/24'));
    const first = list.take()!;
    const b2 = lease('10.244.2.0/24', '0a:00:00:00:00:99');
    expect(list.set('b', b2)).toBe(true);
    const second = list.take()!;
    expect(second).not.toBe(first);
    expect(first[1]!.backendData).toEqual({ VNI: 1, VtepMAC: '0a:00:00:00:00:01' });
    expect(second[1]).toBe(b2);
    expect(second[0]).toBe(first[0]);
  });

  it('replaceAll keeps equal objects, takes changed ones and drops the unlisted', () => {
    const list = new LeaseList(byAddress);
    const a = lease('10.244.1.0/24');
    const b = lease('10.244.2.0/24');
    const c = lease('10.244.3.0/24');
    list.replaceAll([['a', a], ['b', b], ['c', c]]);
    list.take();
    const b2 = lease('10.244.2.0/24', '0a:00:00:00:00:42');
    list.replaceAll([['a', { ...a }], ['b', b2]]);
    const got = list.take()!;
    expect(got).toHaveLength(2);
    expect(got[0]).toBe(a);
    expect(got[1]).toBe(b2);
    list.replaceAll([['a', { ...a }], ['b', { ...b2 }]]);
    expect(list.take()).toBeUndefined();
  });

  it('moves a lease whose order changed (a key that now holds another subnet)', () => {
    const list = new LeaseList(byAddress);
    list.set('x', lease('10.244.9.0/24'));
    list.set('y', lease('10.244.5.0/24'));
    list.set('x', lease('10.244.1.0/24'));
    expect(list.take()!.map((l) => l.subnet)).toEqual(['10.244.1.0/24', '10.244.5.0/24']);
    expect(list.delete('x')).toBe(true);
    expect(list.delete('x')).toBe(false);
    expect(list.take()!.map((l) => l.subnet)).toEqual(['10.244.5.0/24']);
  });

  it('at 50,000 leases hands out every unchanged lease as the same object, so the backend finds the changes by identity', () => {
    const list = new LeaseList(byAddress);
    const entries: [string, Lease][] = [];
    for (let i = 0; i < 50_000; i++) entries.push([`k${i}`, lease(`10.${(i >> 8) & 255}.${i & 255}.0/24`)]);
    list.replaceAll(entries);
    list.take();
    // One MAC change, one leave and one join.
    const before = list.take(true)!;
    list.set('k123', lease(`10.0.123.0/24`, '0a:00:00:00:00:77'));
    list.delete('k200');
    list.set('new', lease('10.255.255.0/24'));
    const after = list.take()!;
    expect(after).toHaveLength(50_000);
    const beforeSet = new Set(before);
    expect(after.filter((l) => !beforeSet.has(l)).map((l) => l.subnet)).toEqual(['10.0.123.0/24', '10.255.255.0/24']);
  });
});
