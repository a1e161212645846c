import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  blockSize,
  canonicalCidr,
  cidrContainsCidr,
  cidrContainsIp,
  cidrOverlaps,
  compareAddresses,
  formatCidr,
  formatIp,
  gatewayCidr,
  isAligned,
  networkAddress,
  networkOf,
  parseCidr,
  parseIp,
  sameNetwork,
  splitCidr,
  type Cidr,
} from '../../../src/net/ip.js';

const cidr = (text: string): Cidr => {
  const c = parseCidr(text);
  if (!c) throw new Error(text);
  return c;
};

describe('parseIp / formatIp', () => {
  it('parses IPv4 as Go does: four decimal octets, no leading zeros', () => {
    expect(parseIp('10.244.1.0')).toEqual({ family: 4, value: 0x0af40100n });
    expect(parseIp('10.244.01.0')).toBeUndefined();
    expect(parseIp('256.1.1.1')).toBeUndefined();
    expect(parseIp('1.2.3')).toBeUndefined();
    expect(parseIp('0.0.0.0')).toEqual({ family: 4, value: 0n });
    expect(parseIp('255.255.255.255')).toEqual({ family: 4, value: 0xffffffffn });
    for (const bad of ['1..2.3', '.1.2.3', '1.2.3.', '1.2.3.4.5', '00.1.2.3', '1.2.3.0256', ' 1.2.3.4', '1.2.3.+4', '1.2.3.4 ', '1.2.3.a', '']) {
      expect(parseIp(bad), bad).toBeUndefined();
    }
  });

  it('parses IPv6 with :: and an embedded IPv4 tail', () => {
    expect(parseIp('fd00::1')).toEqual({ family: 6, value: (0xfd00n << 112n) | 1n });
    expect(parseIp('::ffff:10.0.0.1')?.value).toBe((0xffffn << 32n) | 0x0a000001n);
    expect(parseIp('1::2::3')).toBeUndefined();
    expect(parseIp('fd00:::1')).toBeUndefined();
    // Go takes a dotted IPv4 part only as the address's last part.
    expect(parseIp('1.2.3.4::')).toBeUndefined();
    expect(parseIp('1:1.2.3.4::5')).toBeUndefined();
    expect(parseIp('1:2:3:4:5:6:1.2.3.4')?.value).toBe((1n << 112n) | (2n << 96n) | (3n << 80n) | (4n << 64n) | (5n << 48n) | (6n << 32n) | 0x01020304n);
  });

  it('restricts to one family when asked', () => {
    expect(parseIp('10.0.0.1', 4)).toBeDefined();
    expect(parseIp('10.0.0.1', 6)).toBeUndefined();
    expect(parseIp('fd00::1', 4)).toBeUndefined();
    expect(parseCidr('fd00::/64', 4)).toBeUndefined();
    expect(parseCidr('10.0.0.0/8', 6)).toBeUndefined();
  });

  it('prints IPv6 as Go net.IP.String() (RFC 5952: longest zero run, leftmost on a tie, no single-group ::)', () => {
    const go = (t: string) => formatIp(parseIp(t)!);
    expect(go('FD00:0:0:0:0:0:0:1')).toBe('fd00::1');
    expect(go('fd00:0:0:1:0:0:0:1')).toBe('fd00:0:0:1::1');
    expect(go('fd00:0:0:1:1:0:0:1')).toBe('fd00::1:1:0:0:1');
    expect(go('fd00:1:2:3:4:5:0:7')).toBe('fd00:1:2:3:4:5:0:7');
    expect(go('::')).toBe('::');
  });

  it('round-trips every IPv4 address (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (v) => {
        const ip = { family: 4 as const, value: BigInt(v) };
        expect(parseIp(formatIp(ip))).toEqual(ip);
      }),
    );
  });

  it('round-trips every IPv6 address (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), (v) => {
        const ip = { family: 6 as const, value: v };
        expect(parseIp(formatIp(ip))).toEqual(ip);
      }),
    );
  });
});

describe('CIDR helpers, both families', () => {
  it('parseCidr keeps host bits; canonicalCidr and networkAddress drop them', () => {
    expect(formatCidr(cidr('10.244.1.7/24'))).toBe('10.244.1.7/24');
    expect(canonicalCidr(cidr('10.244.1.7/24'))).toBe('10.244.1.0/24');
    expect(canonicalCidr(cidr('fd00:10:244:1::7/64'))).toBe('fd00:10:244:1::/64');
    expect(networkAddress(cidr('fd00:10:244:1:ffff::7/56'))).toBe('fd00:10:244::');
    expect(parseCidr('10.244.1.7/33')).toBeUndefined();
    expect(parseCidr('fd00::/129')).toBeUndefined();
    expect(parseCidr('fd00::/064')).toBeUndefined();
  });

  it('blockSize and networkOf are exact on BigInt, also for IPv6 /0', () => {
    expect(blockSize(4, 24)).toBe(256n);
    expect(blockSize(6, 64)).toBe(1n << 64n);
    expect(blockSize(6, 0)).toBe(1n << 128n);
    expect(networkOf(cidr('255.255.255.255/0'))).toBe(0n);
    expect(networkOf(cidr('ffff::1/16'))).toBe(0xffffn << 112n);
    expect(isAligned(6, cidr('fd00:0:0:1::/64').ip.value, 64)).toBe(true);
    expect(isAligned(6, cidr('fd00:0:0:1::1/64').ip.value, 64)).toBe(false);
  });

  it('contains and overlaps within a family, never across', () => {
    expect(cidrContainsCidr(cidr('10.244.0.0/16'), cidr('10.244.9.0/24'))).toBe(true);
    expect(cidrContainsCidr(cidr('10.244.0.0/16'), cidr('10.0.0.0/8'))).toBe(false);
    expect(cidrContainsCidr(cidr('10.244.0.0/16'), cidr('10.245.0.0/24'))).toBe(false);
    expect(cidrContainsCidr(cidr('fd00:10:244::/56'), cidr('fd00:10:244:7::/64'))).toBe(true);
    expect(cidrContainsCidr(cidr('fd00:10:244::/56'), cidr('fd00:10:245::/64'))).toBe(false);
    expect(cidrContainsIp(cidr('::/0'), parseIp('10.0.0.1')!)).toBe(false);
    expect(cidrContainsIp(cidr('0.0.0.0/0'), parseIp('::1')!)).toBe(false);
    expect(cidrOverlaps(cidr('10.0.0.0/8'), cidr('10.1.0.0/16'))).toBe(true);
    expect(cidrOverlaps(cidr('::/96'), cidr('0.0.0.0/0'))).toBe(false);
    expect(sameNetwork(cidr('10.244.1.7/24'), cidr('10.244.1.0/24'))).toBe(true);
    expect(sameNetwork(cidr('10.244.1.0/24'), cidr('10.244.1.0/25'))).toBe(false);
  });

  it('contains agrees with plain interval arithmetic (property, IPv6)', () => {
    const addr = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });
    fc.assert(
      fc.property(addr, fc.integer({ min: 0, max: 128 }), addr, (net, prefix, ip) => {
        const size = 1n << BigInt(128 - prefix);
        const start = net - (net % size);
        const c = { ip: { family: 6 as const, value: net }, prefix };
        expect(cidrContainsIp(c, { family: 6, value: ip })).toBe(ip >= start && ip < start + size);
      }),
    );
  });

  it('splitCidr names the address, prefix and network of both families', () => {
    expect(splitCidr('10.244.1.1/24')).toEqual({ ip: '10.244.1.1', prefix: 24, network: '10.244.1.0/24' });
    expect(splitCidr('fd00:10:244:1::1/64')).toEqual({ ip: 'fd00:10:244:1::1', prefix: 64, network: 'fd00:10:244:1::/64' });
    expect(() => splitCidr('10.244.1.1')).toThrow(/not a CIDR/);
  });

  it('compareAddresses sorts by address, IPv4 before IPv6, numerically not textually', () => {
    const list = ['fd00::2/64', '10.244.10.0/24', '10.244.9.0/24', 'fd00::10/64', '10.244.9.1'];
    expect([...list].sort(compareAddresses)).toEqual(['10.244.9.0/24', '10.244.9.1', '10.244.10.0/24', 'fd00::2/64', 'fd00::10/64']);
  });
});

describe('gatewayCidr', () => {
  it('gives the first address of a node subnet with its prefix, as FLANNEL_SUBNET holds it', () => {
    expect(gatewayCidr('10.244.1.0/24')).toBe('10.244.1.1/24');
    expect(gatewayCidr('10.244.128.0/17')).toBe('10.244.128.1/17');
    // host bits as written are dropped first; carrying past an octet works
    expect(gatewayCidr('10.244.1.77/24')).toBe('10.244.1.1/24');
    expect(gatewayCidr('10.0.255.255/16')).toBe('10.0.0.1/16');
  });

  it('gives the IPv6 gateway as FLANNEL_IPV6_SUBNET holds it', () => {
    expect(gatewayCidr('fd00:10:244:1::/64')).toBe('fd00:10:244:1::1/64');
    expect(gatewayCidr('fd00:10:244:1::9/64')).toBe('fd00:10:244:1::1/64');
  });

  it('is undefined for what is not a CIDR', () => {
    expect(gatewayCidr('10.244.1.0')).toBeUndefined();
    expect(gatewayCidr('fd00::')).toBeUndefined();
    expect(gatewayCidr('10.244.1.0/33')).toBeUndefined();
  });
});
