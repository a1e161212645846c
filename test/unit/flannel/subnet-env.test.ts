import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSubnetEnv, parseSubnetEnv, readSubnetEnv, subnetEnvFor, SubnetEnvError, writeSubnetEnv } from '../../../src/flannel/subnet-env.js';

// What flanneld's WriteSubnetFile writes (pkg/subnet/subnet.go), byte for byte.
const FLANNELD_V4 = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const FLANNELD_DUAL =
  'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n' +
  'FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n' +
  'FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n';
const FLANNELD_V6 = 'FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n';

function errorOf(text: string): string {
  try {
    parseSubnetEnv(text);
  } catch (err) {
    if (err instanceof SubnetEnvError) return err.message;
    throw err;
  }
  throw new Error(`expected a SubnetEnvError for ${JSON.stringify(text)}`);
}

describe('subnet.env as flanneld writes it', () => {
  it('writes IPv4-only exactly as flanneld does', () => {
    expect(formatSubnetEnv({ network: '10.244.0.0/16', subnet: '10.244.1.1/24', mtu: 1450, ipMasq: true })).toBe(FLANNELD_V4);
  });

  it('writes dual-stack in flanneld order: IPv4 lines, IPv6 lines, MTU, IPMASQ', () => {
    const env = { network: '10.244.0.0/16', subnet: '10.244.1.1/24', ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64', mtu: 1430, ipMasq: false };
    expect(formatSubnetEnv(env)).toBe(FLANNELD_DUAL);
  });

  it('leaves the IPv4 lines out for an IPv6-only node', () => {
    expect(formatSubnetEnv({ network: '', subnet: '', ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64', mtu: 1430, ipMasq: true })).toBe(FLANNELD_V6);
  });

  it("reads flanneld's three layouts back", () => {
    expect(parseSubnetEnv(FLANNELD_V4)).toEqual({ network: '10.244.0.0/16', subnet: '10.244.1.1/24', mtu: 1450, ipMasq: true });
    expect(parseSubnetEnv(FLANNELD_DUAL)).toEqual({
      network: '10.244.0.0/16',
      subnet: '10.244.1.1/24',
      ipv6Network: 'fd00:10:244::/56',
      ipv6Subnet: 'fd00:10:244:1::1/64',
      mtu: 1430,
      ipMasq: false,
    });
    expect(parseSubnetEnv(FLANNELD_V6)).toEqual({ network: '', subnet: '', ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64', mtu: 1430, ipMasq: true });
  });

  it('round-trips through the file, atomically replaced', () => {
    const dir = mkdtempSync(join(tmpdir(), 'h15a-subnet-env-'));
    try {
      const path = join(dir, 'run', 'subnet.env');
      writeSubnetEnv(path, parseSubnetEnv(FLANNELD_DUAL));
      expect(readFileSync(path, 'utf8')).toBe(FLANNELD_DUAL);
      writeSubnetEnv(path, parseSubnetEnv(FLANNELD_V6));
      expect(readSubnetEnv(path)).toEqual(parseSubnetEnv(FLANNELD_V6));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('subnet.env errors name the variable', () => {
  it.each([
    ['no family at all', 'FLANNEL_MTU=1450\n', /^FLANNEL_NETWORK and FLANNEL_SUBNET are missing, and so are FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET/],
    ['IPv4 subnet without network', 'FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n', /^FLANNEL_NETWORK is missing \(FLANNEL_SUBNET is set\)$/],
    ['IPv6 network without subnet', 'FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_MTU=1450\n', /^FLANNEL_IPV6_SUBNET is missing \(FLANNEL_IPV6_NETWORK is set\)$/],
    ['half an IPv4 pair next to IPv6', `FLANNEL_NETWORK=10.244.0.0/16\n${FLANNELD_V6}`, /^FLANNEL_SUBNET is missing \(FLANNEL_NETWORK is set\)$/],
    ['IPv6 value in an IPv4 variable', 'FLANNEL_NETWORK=fd00::/56\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n', /FLANNEL_NETWORK is not an IPv4 CIDR: "fd00::\/56"/],
    ['IPv4 value in an IPv6 variable', 'FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n', /FLANNEL_IPV6_SUBNET is not an IPv6 CIDR/],
    ['IPv6 prefix too long', 'FLANNEL_IPV6_NETWORK=fd00::/129\nFLANNEL_IPV6_SUBNET=fd00::1/64\nFLANNEL_MTU=1450\n', /FLANNEL_IPV6_NETWORK is not an IPv6 CIDR/],
    ['leading zero (Go refuses it too)', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.01.1/24\nFLANNEL_MTU=1450\n', /FLANNEL_SUBNET is not an IPv4 CIDR/],
    ['no MTU', 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n', /^FLANNEL_MTU is missing$/],
  ])('%s', (_name, text, message) => {
    expect(errorOf(text)).toMatch(message);
  });
});

describe('subnetEnvFor: the file for a lease, as flanneld derives it', () => {
  const dualConfig = { network: '10.244.0.0/16', ipv6Network: 'fd00:10:244::/56' };

  it('IPv4-only: the gateway (subnet + 1) with the node prefix, no IPv6 lines', () => {
    const env = subnetEnvFor({ network: '10.244.0.0/16' }, { subnet: '10.244.1.0/24' }, 1450, true);
    expect(formatSubnetEnv(env)).toBe(FLANNELD_V4);
  });

  it('dual-stack: both gateways', () => {
    const env = subnetEnvFor(dualConfig, { subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64' }, 1430, false);
    expect(formatSubnetEnv(env)).toBe(FLANNELD_DUAL);
  });

  it('IPv6-only: no IPv4 lines', () => {
    const env = subnetEnvFor({ network: '', ipv6Network: 'fd00:10:244::/56' }, { subnet: '', ipv6Subnet: 'fd00:10:244:1::/64' }, 1430, true);
    expect(formatSubnetEnv(env)).toBe(FLANNELD_V6);
  });

  it('refuses subnets of the wrong family or an IPv6 lease without IPv6Network', () => {
    expect(() => subnetEnvFor(dualConfig, { subnet: 'fd00::/64' }, 1450, true)).toThrow(/not an IPv4 CIDR/);
    expect(() => subnetEnvFor(dualConfig, { subnet: '', ipv6Subnet: '10.244.1.0/24' }, 1450, true)).toThrow(/not an IPv6 CIDR/);
    expect(() => subnetEnvFor({ network: '10.244.0.0/16' }, { subnet: '10.244.1.0/24', ipv6Subnet: 'fd00::/64' }, 1450, true)).toThrow(/no IPv6Network/);
  });
});
