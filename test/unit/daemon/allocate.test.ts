import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  freeSubnets,
  inRange,
  ipv6RangeOf,
  leaseKey,
  parseLeaseKey,
  pickFreeSubnet,
  subnetKey,
  type SubnetRange,
} from '../../../src/daemon/subnet/allocate.js';

/** The IPv4 subnet a flannel key names; undefined for an IPv6-only key or not a key. */
const ipv4OfKey = (key: string): string | undefined => {
  const subnets = parseLeaseKey(key);
  return subnets && subnets.subnet !== '' ? subnets.subnet : undefined;
};
// Plain-number IPv4 helpers, independent of src/net/ip.ts, for reference values.
const v4 = (text: string): number => text.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
const v4text = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
const v4cidr = (text: string): { ip: number; prefix: number } => {
  const [ip, prefix] = text.split('/');
  return { ip: v4(ip!), prefix: Number(prefix) };
};

const r16: SubnetRange = { network: '10.244.0.0/16', subnetLen: 24, subnetMin: '10.244.1.0', subnetMax: '10.244.255.0' };

function take<T>(it: Iterable<T>, n: number): T[] {
  const out: T[] = [];
  for (const x of it) {
    if (out.length >= n) break;
    out.push(x);
  }
  return out;
}

/** Independent reference: do two CIDRs share an address? */
function overlaps(a: string, b: string): boolean {
  const x = v4cidr(a);
  const y = v4cidr(b);
  const xs = x.ip - (x.ip % 2 ** (32 - x.prefix));
  const ys = y.ip - (y.ip % 2 ** (32 - y.prefix));
  return xs < ys + 2 ** (32 - y.prefix) && ys < xs + 2 ** (32 - x.prefix);
}

describe('candidate subnets', () => {
  it('walks SubnetMin..SubnetMax in steps of SubnetLen', () => {
    const all = [...freeSubnets(r16, [])];
    expect(all).toHaveLength(255);
    expect(all[0]).toBe('10.244.1.0/24');
    expect(all[1]).toBe('10.244.2.0/24');
    expect(all.at(-1)).toBe('10.244.255.0/24');
    expect([...freeSubnets({ network: '10.0.0.0/28', subnetLen: 30, subnetMin: '10.0.0.4', subnetMax: '10.0.0.12' }, [])]).toEqual([
      '10.0.0.4/30',
      '10.0.0.8/30',
      '10.0.0.12/30',
    ]);
  });

  it('reaches the very top of the address space without wrapping', () => {
    const top = [...freeSubnets({ network: '255.255.255.0/24', subnetLen: 26, subnetMin: '255.255.255.128', subnetMax: '255.255.255.192' }, [])];
    expect(top).toEqual(['255.255.255.128/26', '255.255.255.192/26']);
  });

  it('skips taken subnets, larger reservations and other-length subnets', () => {
    const taken = ['10.244.1.0/24', '10.244.3.0/24', '10.244.4.0/22', '10.244.9.128/25', '192.168.0.0/16'];
    expect(take(freeSubnets(r16, taken), 4)).toEqual(['10.244.2.0/24', '10.244.8.0/24', '10.244.10.0/24', '10.244.11.0/24']);
  });

  it('jumps over a huge reservation without walking it', () => {
    const range: SubnetRange = { network: '10.0.0.0/8', subnetLen: 30, subnetMin: '10.0.0.4', subnetMax: '10.255.255.252' };
    const start = Date.now();
    const first = take(freeSubnets(range, ['10.0.0.0/9', '10.128.0.4/30']), 2);
    expect(first).toEqual(['10.128.0.0/30', '10.128.0.8/30']);
    expect(Date.now() - start).toBeLessThan(500);
  });

  it('never yields a subnet that overlaps a taken one, and stays aligned and in range (property)', () => {
    const cidr = fc
      .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 16, max: 28 }))
      .map(([a, b, len]) => `10.244.${a}.${b}/${len}`);
    fc.assert(
      fc.property(fc.array(cidr, { maxLength: 30 }), fc.integer({ min: 18, max: 26 }), (taken, subnetLen) => {
        const size = 2 ** (32 - subnetLen);
        const range: SubnetRange = {
          network: '10.244.0.0/16',
          subnetLen,
          subnetMin: v4text(v4('10.244.0.0') + size),
          subnetMax: v4text(v4('10.244.0.0') + 65536 - size),
        };
        const free = [...freeSubnets(range, taken)];
        const all = [...freeSubnets(range, [])];
        for (const s of free) {
          expect(inRange(range, s)).toBe(true);
          expect(taken.some((t) => overlaps(s, t))).toBe(false);
        }
        // Completeness: every candidate not hit by a taken CIDR is offered.
        expect(free).toEqual(all.filter((s) => !taken.some((t) => overlaps(s, t))));
      }),
      { numRuns: 200 },
    );
  });
});

describe('pickFreeSubnet', () => {
  it('draws among the first 100 free subnets with the given random source', () => {
    expect(pickFreeSubnet(r16, [], () => 0)).toBe('10.244.1.0/24');
    expect(pickFreeSubnet(r16, [], () => 0.999999)).toBe('10.244.100.0/24');
    expect(pickFreeSubnet(r16, [], () => 0.5)).toBe('10.244.51.0/24');
    expect(pickFreeSubnet(r16, ['10.244.1.0/24'], () => 0)).toBe('10.244.2.0/24');
    // a random source returning exactly 1 must not run off the end
    expect(pickFreeSubnet(r16, [], () => 1)).toBe('10.244.100.0/24');
  });

  it('spreads picks over the pool', () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const picks = new Set(Array.from({ length: 50 }, () => pickFreeSubnet(r16, [], random)));
    expect(picks.size).toBeGreaterThan(25);
  });

  it('returns undefined when the range is full', () => {
    const small: SubnetRange = { network: '10.0.0.0/28', subnetLen: 30, subnetMin: '10.0.0.4', subnetMax: '10.0.0.12' };
    expect(pickFreeSubnet(small, ['10.0.0.4/30', '10.0.0.8/30', '10.0.0.12/30'])).toBeUndefined();
    expect(pickFreeSubnet(small, ['10.0.0.0/28'])).toBeUndefined();
    expect(pickFreeSubnet(small, ['10.0.0.4/30', '10.0.0.12/30'])).toBe('10.0.0.8/30');
  });
});

describe('lease keys', () => {
  it('formats flannel key names', () => {
    expect(subnetKey('10.244.1.0/24')).toBe('10.244.1.0-24');
    expect(subnetKey('10.5.52.128/25')).toBe('10.5.52.128-25');
    expect(() => subnetKey('10.244.1.1/24')).toThrow(RangeError);
    expect(() => subnetKey('nonsense')).toThrow(RangeError);
  });

  it('parses key names back, including dual-stack keys', () => {
    expect(ipv4OfKey('10.244.1.0-24')).toBe('10.244.1.0/24');
    expect(ipv4OfKey('10.5.52.0-24&fc00::-64')).toBe('10.5.52.0/24');
    for (const bad of ['10.244.1.0/24', '10.244.1.0-33', '10.244.1.5-24', '10.244.1-24', 'config', '10.244.1.0-24x', '']) {
      expect(ipv4OfKey(bad), bad).toBeUndefined();
    }
  });

  // /0 is left out: 0.0.0.0-0 is flannel's empty IPv4 subnet (see the IPv6-only keys below).
  it('round-trips every aligned subnet (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 1, max: 32 }), (ip, len) => {
        const size = 2 ** (32 - len);
        const cidr = `${v4text(ip - (ip % size))}/${len}`;
        expect(ipv4OfKey(subnetKey(cidr))).toBe(cidr);
      }),
    );
  });

  it('inRange checks length, alignment and bounds', () => {
    expect(inRange(r16, '10.244.1.0/24')).toBe(true);
    expect(inRange(r16, '10.244.0.0/24')).toBe(false);
    expect(inRange(r16, '10.244.1.0/25')).toBe(false);
    expect(inRange(r16, '10.244.1.128/24')).toBe(false);
    expect(inRange(r16, '10.245.1.0/24')).toBe(false);
  });
});

describe('IPv6 subnets (BigInt)', () => {
  const r56: SubnetRange = { network: 'fd00:10:244::/56', subnetLen: 64, subnetMin: 'fd00:10:244:1::', subnetMax: 'fd00:10:244:ff::' };

  it('offers /64s of a /56 in address order, skipping the first', () => {
    expect(take(freeSubnets(r56, []), 3)).toEqual(['fd00:10:244:1::/64', 'fd00:10:244:2::/64', 'fd00:10:244:3::/64']);
    expect([...freeSubnets(r56, [])]).toHaveLength(255);
    expect([...freeSubnets(r56, [])].at(-1)).toBe('fd00:10:244:ff::/64');
  });

  it('jumps over taken blocks of any length and ignores IPv4 ones', () => {
    const taken = ['fd00:10:244::/60', 'fd00:10:244:11::/64', '10.244.1.0/24', 'fd00:10:244:12::1/64'];
    expect(take(freeSubnets(r56, taken), 3)).toEqual(['fd00:10:244:10::/64', 'fd00:10:244:13::/64', 'fd00:10:244:14::/64']);
  });

  it('walks a /16 of /64s (2^48 candidates) with huge reservations in no time', () => {
    const huge: SubnetRange = { network: 'fd00::/16', subnetLen: 64, subnetMin: 'fd00:0:0:1::', subnetMax: 'fd00:ffff:ffff:ffff::' };
    const started = Date.now();
    expect(pickFreeSubnet(huge, ['fd00::/17', 'fd00:8000::/18'], () => 0)).toBe('fd00:c000::/64');
    expect(pickFreeSubnet(huge, ['fd00::/16'])).toBeUndefined();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('picks among the first 100 free IPv6 subnets', () => {
    expect(pickFreeSubnet(r56, [], () => 0)).toBe('fd00:10:244:1::/64');
    expect(pickFreeSubnet(r56, [], () => 0.999999)).toBe('fd00:10:244:64::/64');
  });

  it('inRange checks family, length, alignment and bounds', () => {
    expect(inRange(r56, 'fd00:10:244:7::/64')).toBe(true);
    expect(inRange(r56, 'fd00:10:244::/64')).toBe(false);
    expect(inRange(r56, 'fd00:10:244:7::/65')).toBe(false);
    expect(inRange(r56, 'fd00:10:244:7::1/64')).toBe(false);
    expect(inRange(r56, 'fd00:10:245:7::/64')).toBe(false);
    expect(inRange(r56, '10.244.7.0/24')).toBe(false);
  });

  it('never yields a subnet that overlaps a taken one (property, /120 in /112)', () => {
    const range: SubnetRange = { network: 'fd00::/112', subnetLen: 120, subnetMin: 'fd00::100', subnetMax: 'fd00::ff00' };
    const cidr = fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 112, max: 124 })).map(([v, len]) => ({ v: BigInt(v), len }));
    fc.assert(
      fc.property(fc.array(cidr, { maxLength: 20 }), (taken) => {
        const text = taken.map(({ v, len }) => `fd00::${v.toString(16)}/${len}`);
        const free = [...freeSubnets(range, text)];
        const all = [...freeSubnets(range, [])];
        const hit = (s: string) => {
          const start = BigInt(`0x${s.split('::')[1]!.split('/')[0]}`);
          return taken.some(({ v, len }) => {
            const size = 1n << BigInt(128 - len);
            const ts = v - (v % size);
            return start < ts + size && ts < start + 256n;
          });
        };
        expect(free).toEqual(all.filter((s) => !hit(s)));
      }),
      { numRuns: 100 },
    );
  });

  it('ipv6RangeOf gives the IPv6 range of a config, undefined when IPv6 is off', () => {
    expect(ipv6RangeOf({ enableIPv6: true, ipv6Network: 'fd00::/56', ipv6SubnetLen: 64, ipv6SubnetMin: 'fd00:0:0:1::', ipv6SubnetMax: 'fd00:0:0:ff::' })).toEqual({
      network: 'fd00::/56',
      subnetLen: 64,
      subnetMin: 'fd00:0:0:1::',
      subnetMax: 'fd00:0:0:ff::',
    });
    expect(ipv6RangeOf({ enableIPv6: false })).toBeUndefined();
  });
});

describe("flannel's dual-stack and IPv6-only lease keys", () => {
  it('writes keys as MakeSubnetKey does', () => {
    expect(leaseKey({ subnet: '10.244.1.0/24' })).toBe('10.244.1.0-24');
    expect(leaseKey({ subnet: '10.5.52.0/24', ipv6Subnet: 'fc00::/64' })).toBe('10.5.52.0-24&fc00::-64');
    expect(leaseKey({ subnet: '', ipv6Subnet: 'fd00:10:244:1::/64' })).toBe('0.0.0.0-0&fd00:10:244:1::-64');
    expect(() => leaseKey({ subnet: '' })).toThrow(RangeError);
    expect(() => leaseKey({ subnet: '10.244.1.0/24', ipv6Subnet: '10.0.0.0/8' })).toThrow(RangeError);
  });

  it('reads them back', () => {
    expect(parseLeaseKey('10.244.1.0-24')).toEqual({ subnet: '10.244.1.0/24' });
    expect(parseLeaseKey('10.5.52.0-24&fc00::-64')).toEqual({ subnet: '10.5.52.0/24', ipv6Subnet: 'fc00::/64' });
    expect(parseLeaseKey('0.0.0.0-0&fd00:10:244:1::-64')).toEqual({ subnet: '', ipv6Subnet: 'fd00:10:244:1::/64' });
    expect(ipv4OfKey('0.0.0.0-0&fd00:10:244:1::-64')).toBeUndefined();
    for (const bad of ['0.0.0.0-0', '10.5.52.0-24&fc00::1-64', '10.5.52.0-24&fc00::-129', '10.5.52.0-24&10.0.0.0-8', '10.5.52.0-24&']) {
      expect(parseLeaseKey(bad), bad).toBeUndefined();
    }
  });

  it('round-trips every aligned IPv6 subnet, with or without an IPv4 one (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 1, max: 128 }), fc.boolean(), (v, len, dual) => {
        const size = 1n << BigInt(128 - len);
        const hex = (v - (v % size)).toString(16).padStart(32, '0');
        const text = hex.match(/.{4}/g)!.join(':');
        const ipv6Subnet = parseLeaseKey(`0.0.0.0-0&${text}-${len}`)?.ipv6Subnet;
        expect(ipv6Subnet).toBeDefined();
        const subnets = { subnet: dual ? '10.244.1.0/24' : '', ipv6Subnet: ipv6Subnet! };
        expect(parseLeaseKey(leaseKey(subnets))).toEqual(subnets);
      }),
    );
  });
});
