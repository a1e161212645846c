// The etcd subnet manager's dual-stack and IPv6-only leases against a real
// etcd (Debian's etcd-server): flannel's keys and LeaseAttrs JSON, so a
// flanneld sharing the store reads our leases and we read its.
import { describe, expect, it } from 'vitest';
import { SubnetError } from '../../src/daemon/subnet/etcd.js';
import { inRange } from '../../src/daemon/subnet/allocate.js';
import type { Lease, LeaseAttrs } from '../../src/daemon/types.js';
import { requireOrSkip } from '../helpers/require.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { useEtcdSubnetSuite } from '../helpers/etcd-suite.js';
import { pollFor as waitFor } from '../helpers/eventually.js';

const hex = (i: number) => i.toString(16).padStart(2, '0');

/** A dual-stack node: IPv4 and IPv6 public addresses, one VTEP per family. */
const dualAttrs = (i: number, tail = hex(i)): LeaseAttrs => ({
  publicIP: `198.51.100.${i}`,
  publicIPv6: `2001:db8::${i.toString(16)}`,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: `0a:00:00:00:00:${tail}` },
  backendV6Data: { VNI: 1, VtepMAC: `0a:00:00:00:06:${tail}` },
});

/** An IPv6-only node: no IPv4 address ('' by the LeaseAttrs contract). */
const v6Attrs = (i: number, tail = hex(i)): LeaseAttrs => ({
  publicIP: '',
  publicIPv6: `2001:db8::${i.toString(16)}`,
  backendType: 'vxlan',
  backendData: {},
  backendV6Data: { VNI: 1, VtepMAC: `0a:00:00:00:06:${tail}` },
});

const DUAL = { Network: '10.60.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:60::/56' };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:61::/56' };

describe.skipIf(requireOrSkip('etcd subnet manager, IPv6', { [`etcd (${ETCD_BIN})`]: haveEtcd }))('etcd subnet manager: dual-stack and IPv6-only (real etcd)', () => {
  const suite = useEtcdSubnetSuite('tsf-v6');
  const { network, manager } = suite;

  async function stored(prefix: string): Promise<Record<string, string>> {
    const all = await suite.admin.getAll().prefix(`${prefix}/subnets/`).strings();
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k.slice(`${prefix}/subnets/`.length), v]));
  }

  it("gives 6 dual-stack agents distinct subnets of both families under flannel's keys and JSON", async () => {
    const prefix = await network(DUAL);
    const leases = await Promise.all(Array.from({ length: 6 }, (_, i) => manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(dualAttrs(i + 1))));
    expect(new Set(leases.map((l) => l.subnet)).size).toBe(6);
    expect(new Set(leases.map((l) => l.ipv6Subnet)).size).toBe(6);
    const v4Range = { network: '10.60.0.0/16', subnetLen: 24, subnetMin: '10.60.1.0', subnetMax: '10.60.255.0' };
    const v6Range = { network: 'fd00:60::/56', subnetLen: 64, subnetMin: 'fd00:60:0:1::', subnetMax: 'fd00:60:0:ff::' };
    for (const l of leases) {
      expect(inRange(v4Range, l.subnet), l.subnet).toBe(true);
      expect(inRange(v6Range, l.ipv6Subnet!), l.ipv6Subnet).toBe(true);
      expect(l).toMatchObject({ publicIPv6: expect.stringMatching(/^2001:db8::/), backendV6Data: { VNI: 1 } });
    }
    const keys = await stored(prefix);
    const one = leases[0]!;
    const key = `${one.subnet.replace('/', '-')}&${one.ipv6Subnet!.replace('/', '-')}`;
    // Byte for byte what Go's json.Marshal(LeaseAttrs) gives: field order, PublicIPv6 a string, BackendV6Data last.
    expect(keys[key]).toBe(
      '{"PublicIP":"198.51.100.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan",' +
        '"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:01"}}',
    );
    expect(Object.keys(keys).every((k) => /^10\.60\.\d+\.0-24&fd00:60:0:[0-9a-f]+::-64$/.test(k))).toBe(true);
  });

  it('never gives two dual-stack agents one IPv4 subnet when they race with different IPv6 picks', async () => {
    const prefix = await network(DUAL);
    // Every agent draws the same IPv4 subnet and its own IPv6 one: each dual-stack key is new, so
    // Create == 0 alone would let all six keep the same IPv4 subnet.
    const scripted = (i: number) => {
      let call = 0;
      return () => (call++ % 2 === 0 ? 0 : (i + 0.5) / 6);
    };
    const leases = await Promise.all(
      Array.from({ length: 6 }, (_, i) => manager({ prefix, leaseTtlSeconds: 60, random: scripted(i) }).acquireLease(dualAttrs(i + 1))),
    );
    expect(new Set(leases.map((l) => l.subnet)).size).toBe(6);
    expect(new Set(leases.map((l) => l.ipv6Subnet)).size).toBe(6);
    const keys = Object.keys(await stored(prefix));
    expect(keys).toHaveLength(6);
    expect(new Set(keys.map((k) => k.split('&')[0])).size).toBe(6);
  });

  it("writes an IPv6-only lease as flanneld does: key 0.0.0.0-0&<v6>, PublicIP 0.0.0.0, no BackendData", async () => {
    const prefix = await network(V6ONLY);
    const lease = await manager({ prefix }).acquireLease(v6Attrs(7));
    expect(lease.subnet).toBe('');
    expect(lease.ipv6Subnet).toMatch(/^fd00:61:0:[0-9a-f]+::\/64$/);
    expect(lease.publicIP).toBe('');
    const keys = await stored(prefix);
    expect(keys).toEqual({
      [`0.0.0.0-0&${lease.ipv6Subnet!.replace('/', '-')}`]:
        '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::7","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:07"}}',
    });
  });

  it('reads leases flanneld wrote (dual-stack and IPv6-only) through watchLeases, with every IPv6 field', async () => {
    const prefix = await network(DUAL);
    // What a flanneld node stores for itself; our manager must see the same lease.
    await suite.admin
      .put(`${prefix}/subnets/10.60.9.0-24&fd00:60:0:9::-64`)
      .value('{"PublicIP":"192.0.2.9","PublicIPv6":"2001:db8:9::9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:09"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:00:06:09"}}');
    const m = manager({ prefix });
    const own = await m.acquireLease(dualAttrs(1));
    const seen: Lease[][] = [];
    const stop = new AbortController();
    const watching = m.watchLeases((l) => seen.push(l), stop.signal);
    try {
      const first = await waitFor('the first lease set', () => seen[0]);
      const theirs = first.find((l) => l.subnet === '10.60.9.0/24');
      expect(theirs).toMatchObject({
        subnet: '10.60.9.0/24',
        ipv6Subnet: 'fd00:60:0:9::/64',
        publicIP: '192.0.2.9',
        publicIPv6: '2001:db8:9::9',
        backendData: { VNI: 1, VtepMAC: 'aa:bb:cc:00:00:09' },
        backendV6Data: { VNI: 1, VtepMAC: 'aa:bb:cc:00:06:09' },
      });
      expect(first.find((l) => l.subnet === own.subnet)?.ipv6Subnet).toBe(own.ipv6Subnet);
      // A flanneld IPv6-only neighbour appearing later arrives through the
      // watch, on an IPv6 subnet our own (random) lease is not: it drew
      // fd00:60:0:20::/64 in one CI run, and the lookup found our lease.
      const v6 = own.ipv6Subnet === 'fd00:60:0:20::/64' ? '21' : '20';
      await suite.admin
        .put(`${prefix}/subnets/0.0.0.0-0&fd00:60:0:${v6}::-64`)
        .value('{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8:20::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:00:06:20"}}');
      const later = await waitFor('the IPv6-only lease', () => seen.at(-1)?.find((l) => l.ipv6Subnet === `fd00:60:0:${v6}::/64`));
      expect(later).toMatchObject({ subnet: '', publicIP: '', publicIPv6: '2001:db8:20::1', backendData: {} });
    } finally {
      stop.abort();
      await watching;
    }
  });

  it('gives a restarted agent both of its old subnets back, and the ones subnet.env remembers when free', async () => {
    const prefix = await network(DUAL);
    const first = manager({ prefix, leaseTtlSeconds: 60 });
    const before = await first.acquireLease(dualAttrs(1));
    await first.close();
    const again = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(dualAttrs(1, 'ee'));
    expect([again.subnet, again.ipv6Subnet]).toEqual([before.subnet, before.ipv6Subnet]);
    expect(again.backendV6Data?.VtepMAC).toBe('0a:00:00:00:06:ee');

    // Two remembered pairs the first agent's (random) subnets are not: it
    // took 10.60.78.0/24 in one CI run, and the IPv4 half was then taken.
    const [a, b] = [77, 78, 79, 80].filter((n) => before.subnet !== `10.60.${n}.0/24` && before.ipv6Subnet !== `fd00:60:0:${n}::/64`);
    const remembered = await manager({ prefix }).acquireLease(dualAttrs(2), undefined, { subnet: `10.60.${a}.0/24`, ipv6Subnet: `fd00:60:0:${a}::/64` });
    expect([remembered.subnet, remembered.ipv6Subnet]).toEqual([`10.60.${a}.0/24`, `fd00:60:0:${a}::/64`]);
    // Someone else's IPv6 subnet is never handed out again.
    const clash = await manager({ prefix }).acquireLease(dualAttrs(3), undefined, { subnet: `10.60.${b}.0/24`, ipv6Subnet: before.ipv6Subnet! });
    expect(clash.subnet).toBe(`10.60.${b}.0/24`);
    expect([before.ipv6Subnet, remembered.ipv6Subnet]).not.toContain(clash.ipv6Subnet);
  });

  it('finds an IPv6-only node by its public IPv6 address on restart, and by subnet + IPv6 VTEP MAC after the address changed', async () => {
    const prefix = await network(V6ONLY);
    const m1 = manager({ prefix, leaseTtlSeconds: 60 });
    const before = await m1.acquireLease(v6Attrs(1));
    const other = await manager({ prefix }).acquireLease(v6Attrs(2));
    await m1.close();
    const again = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(v6Attrs(1));
    expect(again.ipv6Subnet).toBe(before.ipv6Subnet);
    expect(again.ipv6Subnet).not.toBe(other.ipv6Subnet);

    const moved = { ...v6Attrs(1), publicIPv6: '2001:db8::99' };
    const found = await manager({ prefix }).acquireLease(moved, undefined, { ipv6Subnet: before.ipv6Subnet! });
    expect(found.ipv6Subnet).toBe(before.ipv6Subnet);
    const values = Object.values(await stored(prefix)).map((v) => JSON.parse(v) as { PublicIPv6: string });
    expect(values.map((v) => v.PublicIPv6).sort()).toEqual(['2001:db8::2', '2001:db8::99']);
  });

  it('re-registers an IPv6-only key at once when it disappears', async () => {
    const prefix = await network(V6ONLY);
    const m = manager({ prefix });
    const lease = await m.acquireLease(v6Attrs(5));
    const key = `${prefix}/subnets/0.0.0.0-0&${lease.ipv6Subnet!.replace('/', '-')}`;
    const stop = new AbortController();
    const watching = m.watchLeases(() => undefined, stop.signal);
    try {
      await new Promise((r) => setTimeout(r, 300));
      await suite.admin.delete().key(key);
      await waitFor('the key back', async () => (await suite.admin.get(key).string()) !== null, 5000);
    } finally {
      stop.abort();
      await watching;
    }
  });

  it('moves an IPv4-only lease to a dual-stack key when IPv6 is switched on, as flannel does', async () => {
    const prefix = await network({ Network: '10.62.0.0/16' });
    const attrs = dualAttrs(4);
    const v4only = await manager({ prefix }).acquireLease({ publicIP: attrs.publicIP, backendType: 'vxlan', backendData: attrs.backendData });
    expect(v4only.ipv6Subnet).toBeUndefined();
    await suite.admin.put(`${prefix}/config`).value(JSON.stringify({ Network: '10.62.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:62::/56' }));
    const dual = await manager({ prefix }).acquireLease(attrs, undefined, { subnet: v4only.subnet });
    expect(dual.subnet).toBe(v4only.subnet);
    expect(dual.ipv6Subnet).toMatch(/^fd00:62:0:[0-9a-f]+::\/64$/);
    expect(Object.keys(await stored(prefix))).toEqual([`${v4only.subnet.replace('/', '-')}&${dual.ipv6Subnet!.replace('/', '-')}`]);
  });

  it('refuses to acquire when the config enables a family the node has no address in', async () => {
    const prefix = await network(DUAL);
    const noV6 = { publicIP: '198.51.100.8', backendType: 'vxlan' as const, backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:08' } };
    await expect(manager({ prefix }).acquireLease(noV6)).rejects.toThrow(SubnetError);
    await expect(manager({ prefix }).acquireLease(noV6)).rejects.toThrow(/EnableIPv6 is true but this node publishes no IPv6 address/);
    const v4prefix = await network({ Network: '10.63.0.0/16' });
    await expect(manager({ prefix: v4prefix }).acquireLease(v6Attrs(9))).rejects.toThrow(/EnableIPv4 is true but this node publishes no IPv4 address/);
    await expect(manager({ prefix }).acquireLease({ ...dualAttrs(9), publicIPv6: '10.0.0.1' })).rejects.toThrow(/publicIPv6 must be an IPv6 address/);
  });
});
