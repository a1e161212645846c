// The node's pod subnets as the plugin uses them, checked before anything is
// created: the agent's file (or a hand-written one) may name a subnet no pod
// can live in, and explicit ipam.ranges may point outside it. A node has an
// IPv4 subnet, an IPv6 subnet, or both (dual-stack).
import { CniError, ErrorCode } from '../cni/errors.js';
import { clip } from '../cni/validate.js';
import type { FamilySubnetEnv, PodSubnetEnv } from '../flannel/subnet-env.js';
import type { IpamRange } from '../ipam/index.js';
import {
  blockSize,
  canonicalCidr,
  cidrContainsCidr,
  cidrOverlaps,
  formatIp,
  networkOf,
  parseCidr,
  type Cidr,
  type Family,
} from '../net/ip.js';

/** One family's part of the node's pod network. */
export interface FamilySubnet {
  family: Family;
  /** FLANNEL_NETWORK (or FLANNEL_IPV6_NETWORK) as a network, e.g. 10.244.0.0/16 */
  clusterNetwork: string;
  /** the node's pod network, e.g. 10.244.5.0/24 or fd00:10:244:5::/64 */
  network: string;
  /** the bridge's address, e.g. 10.244.5.1 */
  gateway: string;
  /** the bridge's address with the node prefix, e.g. 10.244.5.1/24 */
  gatewayCidr: string;
}

export interface NodeSubnet {
  mtu: number;
  /** IPv4 first, then IPv6; one or two entries */
  families: FamilySubnet[];
}

const KEYS: Record<Family, { network: string; subnet: string; maxPrefix: number }> = {
  4: { network: 'FLANNEL_NETWORK', subnet: 'FLANNEL_SUBNET', maxPrefix: 30 },
  6: { network: 'FLANNEL_IPV6_NETWORK', subnet: 'FLANNEL_IPV6_SUBNET', maxPrefix: 126 },
};

/** Blocks no pod subnet may touch: their addresses mean something else to every host. */
const SPECIAL: Record<Family, readonly [string, string][]> = {
  4: [
    ['0.0.0.0/8', '"this network"'],
    ['127.0.0.0/8', 'loopback'],
    ['169.254.0.0/16', 'link-local'],
    ['224.0.0.0/4', 'multicast'],
    ['240.0.0.0/4', 'reserved (class E and broadcast)'],
  ],
  6: [
    ['::/128', 'unspecified'],
    ['::1/128', 'loopback'],
    ['::ffff:0:0/96', 'IPv4-mapped'],
    ['fe80::/10', 'link-local'],
    ['ff00::/8', 'multicast'],
  ],
};

function familyName(family: Family): string {
  return family === 4 ? 'IPv4' : 'IPv6';
}

function special(family: Family): [Cidr, string][] {
  return SPECIAL[family].map(([block, what]) => [parseCidr(block, family)!, `${what} ${block}`]);
}

function specialBlock(c: Cidr): string | undefined {
  for (const [block, what] of special(c.ip.family)) if (cidrOverlaps(block, c)) return what;
  return undefined;
}

/**
 * One family's pair made safe to use. The gateway is the address the subnet
 * line names (flanneld writes 10.244.5.1/24 and fd00:10:244:5::1/64); a
 * subnet written as its network address gets the first host, as flannel's
 * own plugin gives it (it hands host-local only the network, whose default
 * gateway is network+1). The IPv4 broadcast address is refused.
 */
function familySubnet(pair: FamilySubnetEnv, family: Family, file: string): FamilySubnet {
  const keys = KEYS[family];
  const bad = (msg: string) => new CniError(ErrorCode.InvalidNetworkConfig, `invalid subnet file ${clip(file)}: ${msg}`);
  const parse = (key: string, text: string): Cidr => {
    const c = parseCidr(text, family);
    if (!c) throw bad(`${key} is not an ${familyName(family)} CIDR: ${JSON.stringify(clip(text))}`);
    return c;
  };
  const cluster = parse(keys.network, pair.network);
  const node = parse(keys.subnet, pair.subnet);
  if (!cidrContainsCidr(cluster, node)) throw bad(`${keys.subnet} ${pair.subnet} is not inside ${keys.network} ${pair.network}`);
  for (const [key, c] of [[keys.network, cluster], [keys.subnet, node]] as const) {
    const block = specialBlock(c);
    if (block) throw bad(`${key} ${canonicalCidr(c)} overlaps the ${block} block`);
  }
  if (node.prefix > keys.maxPrefix) {
    throw bad(`${keys.subnet} ${pair.subnet} is too small: a /${node.prefix} has no room for a gateway and pods`);
  }
  const first = networkOf(node);
  const last = first + blockSize(family, node.prefix) - 1n;
  let gw = node.ip.value;
  if (gw === first) gw = first + 1n;
  if (family === 4 && gw === last) {
    throw bad(`${keys.subnet} ${pair.subnet} names the broadcast address; write the gateway, e.g. ${formatIp({ family, value: first + 1n })}/${node.prefix}`);
  }
  const gateway = formatIp({ family, value: gw });
  return { family, clusterNetwork: canonicalCidr(cluster), network: canonicalCidr(node), gateway, gatewayCidr: `${gateway}/${node.prefix}` };
}

/** The subnet file's families, checked; the file names at least one (parsePodSubnetEnv sees to that). */
export function nodeSubnet(env: PodSubnetEnv, file: string): NodeSubnet {
  const families: FamilySubnet[] = [];
  if (env.ipv4) families.push(familySubnet(env.ipv4, 4, file));
  if (env.ipv6) families.push(familySubnet(env.ipv6, 6, file));
  return { mtu: env.mtu, families };
}

/** The family of a range set, from its first range (the IPAM layer refuses mixed sets). */
function rangeFamily(set: IpamRange[]): Family | undefined {
  const first = set[0];
  return first ? parseCidr(first.subnet)?.ip.family : undefined;
}

/**
 * Explicit ranges must lie inside the node subnet of their family, or pods
 * get addresses no route leads to; a family the node has no subnet for has
 * no gateway on the bridge, so ranges of it are refused too.
 */
export function checkRangesInSubnet(ranges: IpamRange[][], subnet: NodeSubnet): void {
  ranges.forEach((set, i) =>
    set.forEach((r, j) => {
      const c = parseCidr(r.subnet);
      if (!c) return; // malformed: the IPAM layer names it
      const key = `ipam.ranges[${i}][${j}].subnet`;
      const block = specialBlock(c);
      if (block) throw new CniError(ErrorCode.InvalidNetworkConfig, `${key} ${clip(r.subnet)} overlaps the ${block} block`);
      const node = subnet.families.find((f) => f.family === c.ip.family);
      if (!node) {
        const keys = KEYS[c.ip.family];
        throw new CniError(
          ErrorCode.InvalidNetworkConfig,
          `${key} ${clip(r.subnet)} is ${familyName(c.ip.family)}, but the subnet file has no ${keys.subnet}: this node has no ${familyName(c.ip.family)} pod network`,
        );
      }
      if (!cidrContainsCidr(parseCidr(node.network, node.family)!, c)) {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `${key} ${clip(r.subnet)} is outside the node subnet ${node.network}`);
      }
    }),
  );
}

/**
 * The range sets to allocate from: per family of the node, the explicit
 * ipam.ranges of that family when there are any, else the node subnet with
 * its gateway. IPv4 first, so a pod's first address is its IPv4 one.
 */
export function rangeSetsFor(explicit: IpamRange[][] | undefined, subnet: NodeSubnet): IpamRange[][] {
  const out: IpamRange[][] = [];
  for (const f of subnet.families) {
    const own = (explicit ?? []).filter((set) => rangeFamily(set) === f.family);
    if (own.length > 0) out.push(...own);
    else out.push([{ subnet: f.network, gateway: f.gateway }]);
  }
  // Sets the family of which cannot be told are malformed: the IPAM layer names them.
  out.push(...(explicit ?? []).filter((set) => rangeFamily(set) === undefined));
  return out;
}
