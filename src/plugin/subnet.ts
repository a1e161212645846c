// The node's pod subnet as the plugin uses it, checked before anything is
// created: the agent's file (or a hand-written one) may name a subnet no pod
// can live in, and explicit ipam.ranges may point outside it.
import { CniError, ErrorCode } from '../cni/errors.js';
import { clip } from '../cni/validate.js';
import type { SubnetEnv } from '../flannel/subnet-env.js';
import type { IpamRange } from '../ipam/index.js';
import { blockSize, canonicalCidr, cidrContainsCidr, cidrOverlaps, formatIp, networkOf, parseCidr, type Cidr } from '../net/ip.js';

export interface NodeSubnet {
  /** FLANNEL_NETWORK as a network, e.g. 10.244.0.0/16 */
  clusterNetwork: string;
  /** the node's pod network, e.g. 10.244.5.0/24 */
  network: string;
  /** the bridge's address, e.g. 10.244.5.1 */
  gateway: string;
  /** the bridge's address with the node prefix, e.g. 10.244.5.1/24 */
  gatewayCidr: string;
  mtu: number;
}

/** Blocks no pod subnet may touch: their addresses mean something else to every host. */
const SPECIAL: readonly [string, string][] = [
  ['0.0.0.0/8', '"this network"'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved (class E and broadcast)'],
];

function cidr(text: string): Cidr {
  const c = parseCidr(text, 4);
  if (!c) throw new Error(`not an IPv4 CIDR: ${text}`);
  return c;
}

function specialBlock(c: Cidr): string | undefined {
  for (const [block, what] of SPECIAL) if (cidrOverlaps(cidr(block), c)) return `${what} ${block}`;
  return undefined;
}

/**
 * FLANNEL_NETWORK / FLANNEL_SUBNET made safe to use. The gateway is the
 * address FLANNEL_SUBNET names (flanneld writes 10.244.5.1/24); a subnet
 * written as its network address (10.244.5.0/24) gets the first host, .1,
 * as flannel's own plugin gives it (it hands host-local only the network,
 * whose default gateway is network+1). The broadcast address is refused.
 */
export function nodeSubnet(env: SubnetEnv, file: string): NodeSubnet {
  const bad = (msg: string) => new CniError(ErrorCode.InvalidNetworkConfig, `invalid subnet file ${clip(file)}: ${msg}`);
  const cluster = cidr(env.network);
  const node = cidr(env.subnet);
  if (!cidrContainsCidr(cluster, node)) {
    throw bad(`FLANNEL_SUBNET ${env.subnet} is not inside FLANNEL_NETWORK ${env.network}`);
  }
  for (const [key, c] of [['FLANNEL_NETWORK', cluster], ['FLANNEL_SUBNET', node]] as const) {
    const block = specialBlock(c);
    if (block) throw bad(`${key} ${canonicalCidr(c)} overlaps the ${block} block`);
  }
  if (node.prefix > 30) throw bad(`FLANNEL_SUBNET ${env.subnet} is too small: a /${node.prefix} has no room for a gateway and pods`);
  const first = networkOf(node);
  const last = first + blockSize(4, node.prefix) - 1n;
  let gw = node.ip.value;
  if (gw === first) gw = first + 1n;
  const v4 = (value: bigint): string => formatIp({ family: 4, value });
  if (gw === last) throw bad(`FLANNEL_SUBNET ${env.subnet} names the broadcast address; write the gateway, e.g. ${v4(first + 1n)}/${node.prefix}`);
  const gateway = v4(gw);
  return {
    clusterNetwork: canonicalCidr(cluster),
    network: canonicalCidr(node),
    gateway,
    gatewayCidr: `${gateway}/${node.prefix}`,
    mtu: env.mtu,
  };
}

/** Explicit IPv4 ranges must lie inside the node subnet, or pods get addresses no route leads to. */
export function checkRangesInSubnet(ranges: IpamRange[][], subnet: NodeSubnet): void {
  const node = cidr(subnet.network);
  ranges.forEach((set, i) =>
    set.forEach((r, j) => {
      const c = parseCidr(r.subnet, 4);
      if (!c) return; // IPv6 or malformed: the IPAM layer names those
      const key = `ipam.ranges[${i}][${j}].subnet`;
      const block = specialBlock(c);
      if (block) throw new CniError(ErrorCode.InvalidNetworkConfig, `${key} ${clip(r.subnet)} overlaps the ${block} block`);
      if (!cidrContainsCidr(node, c)) {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `${key} ${clip(r.subnet)} is outside the node subnet ${subnet.network}`);
      }
    }),
  );
}
