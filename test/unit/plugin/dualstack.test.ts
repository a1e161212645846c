// The plugin's pure dual-stack logic: the subnet file read as flannel's CNI
// plugin reads it (either family alone), each family's node subnet checked,
// the range sets and the pod's routes per family.
import { describe, expect, it } from 'vitest';
import { parsePodSubnetEnv, SubnetEnvError } from '../../../src/flannel/subnet-env.js';
import { netConfFromObject } from '../../../src/cni/config.js';
import { parsePluginConfig } from '../../../src/plugin/config.js';
import { podRoutes } from '../../../src/plugin/network.js';
import { checkRangesInSubnet, nodeSubnet, rangeSetsFor } from '../../../src/plugin/subnet.js';
import { cniErrorOf } from '../../helpers/cni-error.js';

const DUAL = [
  'FLANNEL_NETWORK=10.244.0.0/16',
  'FLANNEL_SUBNET=10.244.5.1/24',
  'FLANNEL_IPV6_NETWORK=fd00:10:244::/56',
  'FLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64',
  'FLANNEL_MTU=1450',
  'FLANNEL_IPMASQ=true',
].join('\n');
const V6_ONLY = 'FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:5::/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n';

describe('subnet file as the plugin reads it', () => {
  it('reads both families of a dual-stack file as flanneld writes it', () => {
    expect(parsePodSubnetEnv(DUAL)).toEqual({
      mtu: 1450,
      ipMasq: true,
      ipv4: { network: '10.244.0.0/16', subnet: '10.244.5.1/24' },
      ipv6: { network: 'fd00:10:244::/56', subnet: 'fd00:10:244:5::1/64' },
    });
  });

  it('reads an IPv6-only file (no IPv4 lines, as flanneld writes with EnableIPv4 false)', () => {
    expect(parsePodSubnetEnv(V6_ONLY)).toEqual({ mtu: 1430, ipMasq: false, ipv6: { network: 'fd00:10:244::/56', subnet: 'fd00:10:244:5::/64' } });
  });

  it('refuses a file with neither family, or half a pair, naming the keys', () => {
    expect(() => parsePodSubnetEnv('FLANNEL_MTU=1450\n')).toThrow(SubnetEnvError);
    expect(() => parsePodSubnetEnv('FLANNEL_MTU=1450\n')).toThrow(/FLANNEL_NETWORK and FLANNEL_SUBNET are missing, and so are FLANNEL_IPV6_NETWORK/);
    expect(() => parsePodSubnetEnv('FLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_MTU=1450\n')).toThrow('FLANNEL_IPV6_SUBNET is missing (FLANNEL_IPV6_NETWORK is set)');
    expect(() => parsePodSubnetEnv('FLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n')).toThrow('FLANNEL_NETWORK is missing (FLANNEL_SUBNET is set)');
  });
});

describe('node subnet per family', () => {
  it('keeps both gateways flanneld writes, IPv4 first', () => {
    expect(nodeSubnet(parsePodSubnetEnv(DUAL), 'f')).toEqual({
      mtu: 1450,
      families: [
        { family: 4, clusterNetwork: '10.244.0.0/16', network: '10.244.5.0/24', gateway: '10.244.5.1', gatewayCidr: '10.244.5.1/24' },
        { family: 6, clusterNetwork: 'fd00:10:244::/56', network: 'fd00:10:244:5::/64', gateway: 'fd00:10:244:5::1', gatewayCidr: 'fd00:10:244:5::1/64' },
      ],
    });
  });

  it('gives an IPv6 subnet written as its network address the first host, ::1', () => {
    expect(nodeSubnet(parsePodSubnetEnv(V6_ONLY), 'f').families).toEqual([
      { family: 6, clusterNetwork: 'fd00:10:244::/56', network: 'fd00:10:244:5::/64', gateway: 'fd00:10:244:5::1', gatewayCidr: 'fd00:10:244:5::1/64' },
    ]);
  });

  it('refuses IPv6 subnets outside the cluster network, in special blocks, too small, or of the wrong family (code 7)', () => {
    const v6 = (network: string, subnet: string) => ({ mtu: 1450, ipMasq: true, ipv6: { network, subnet } });
    const bad: [string, string, string][] = [
      ['fd00:10:244::/56', 'fd00:10:245:5::1/64', 'not inside FLANNEL_IPV6_NETWORK'],
      ['fe80::/10', 'fe80::1/64', 'link-local fe80::/10'],
      ['ff00::/8', 'ff05::1/64', 'multicast'],
      ['::/0', 'fd00::1/64', 'FLANNEL_IPV6_NETWORK ::/0 overlaps'],
      ['fd00:10:244::/56', 'fd00:10:244:5::1/127', 'too small'],
      ['fd00:10:244::/56', '10.244.5.1/24', 'FLANNEL_IPV6_SUBNET is not an IPv6 CIDR'],
    ];
    for (const [network, subnet, words] of bad) {
      const { code, msg } = cniErrorOf(() => nodeSubnet(v6(network, subnet), '/run/flannel/subnet.env'));
      expect(code).toBe(7);
      expect(msg).toContain(words);
    }
    const v4InV6 = cniErrorOf(() => nodeSubnet({ mtu: 1450, ipMasq: true, ipv4: { network: 'fd00::/56', subnet: 'fd00::1/64' } }, 'f'));
    expect(v4InV6.msg).toContain('FLANNEL_NETWORK is not an IPv4 CIDR');
  });
});

describe('range sets per family', () => {
  const node = nodeSubnet(parsePodSubnetEnv(DUAL), 'f');

  it('allocates from both node subnets with their gateways when no ranges are given', () => {
    expect(rangeSetsFor(undefined, node)).toEqual([
      [{ subnet: '10.244.5.0/24', gateway: '10.244.5.1' }],
      [{ subnet: 'fd00:10:244:5::/64', gateway: 'fd00:10:244:5::1' }],
    ]);
  });

  it('lets explicit ranges replace the node subnet of their own family only', () => {
    const v6 = [{ subnet: 'fd00:10:244:5::/64', rangeStart: 'fd00:10:244:5::100', rangeEnd: 'fd00:10:244:5::1ff' }];
    expect(rangeSetsFor([v6], node)).toEqual([[{ subnet: '10.244.5.0/24', gateway: '10.244.5.1' }], v6]);
  });

  it('refuses explicit IPv6 ranges outside the node\'s IPv6 subnet, or on a node without one', () => {
    expect(cniErrorOf(() => checkRangesInSubnet([[{ subnet: 'fd00:10:244:6::/64' }]], node)).msg).toContain('outside the node subnet fd00:10:244:5::/64');
    expect(() => checkRangesInSubnet([[{ subnet: '10.244.5.0/25' }], [{ subnet: 'fd00:10:244:5::/80' }]], node)).not.toThrow();
    const v4only = nodeSubnet({ mtu: 1450, ipMasq: true, ipv4: { network: '10.244.0.0/16', subnet: '10.244.5.1/24' } }, 'f');
    const err = cniErrorOf(() => checkRangesInSubnet([[{ subnet: '10.244.5.0/24' }], [{ subnet: 'fd00:10:244:5::/64' }]], v4only));
    expect(err.code).toBe(7);
    expect(err.msg).toContain('ipam.ranges[1][0].subnet fd00:10:244:5::/64 is IPv6, but the subnet file has no FLANNEL_IPV6_SUBNET');
  });
});

describe('pod routes per family', () => {
  const fams = [
    { family: 4 as const, clusterNetwork: '10.244.0.0/16', gateway: '10.244.5.1' },
    { family: 6 as const, clusterNetwork: 'fd00:10:244::/56', gateway: 'fd00:10:244:5::1' },
  ];

  it('routes each cluster network and, with isDefaultGateway, 0.0.0.0/0 and ::/0 via their own gateways', () => {
    expect(podRoutes(fams, true, [])).toEqual([
      { dst: '10.244.0.0/16', gw: '10.244.5.1' },
      { dst: '0.0.0.0/0', gw: '10.244.5.1' },
      { dst: 'fd00:10:244::/56', gw: 'fd00:10:244:5::1' },
      { dst: '::/0', gw: 'fd00:10:244:5::1' },
    ]);
    expect(podRoutes(fams, false, []).map((r) => r.dst)).toEqual(['10.244.0.0/16', 'fd00:10:244::/56']);
  });

  it('sends extra routes via the gateway of their family, written as the kernel lists them', () => {
    const extra = podRoutes(fams, false, [{ dst: '2001:db8:0:0::/64' }, { dst: '192.168.7.0/24' }, { dst: '2001:db9::/64', gw: 'FD00:10:244:5:0::9' }]);
    expect(extra.slice(2)).toEqual([
      { dst: '2001:db8::/64', gw: 'fd00:10:244:5::1' },
      { dst: '192.168.7.0/24', gw: '10.244.5.1' },
      { dst: '2001:db9::/64', gw: 'fd00:10:244:5::9' },
    ]);
    const err = cniErrorOf(() => podRoutes(fams.slice(0, 1), false, [{ dst: '2001:db8::/64' }]));
    expect(err.msg).toContain('ipam.routes[0].dst 2001:db8::/64 is IPv6, but this node has no pod subnet of that family');
  });

  it('accepts IPv6 ipam.routes in the config and refuses a gateway of the other family', () => {
    const conf = (routes: unknown) =>
      netConfFromObject({ cniVersion: '1.1.0', name: 'n', type: 'tsflannel', ipam: { routes } }, 'ADD');
    expect(parsePluginConfig(conf([{ dst: 'fd00:1::/64', gw: 'fd00:10:244:5::9' }])).routes).toEqual([{ dst: 'fd00:1::/64', gw: 'fd00:10:244:5::9' }]);
    const err = cniErrorOf(() => parsePluginConfig(conf([{ dst: 'fd00:1::/64', gw: '10.244.5.9' }])));
    expect(err.code).toBe(7);
    expect(err.msg).toContain('ipam.routes[0].gw must be an IPv6 address like its dst fd00:1::/64');
  });
});
