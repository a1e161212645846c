// Pure subnet math for the etcd subnet manager, for either family: which
// node subnets a network offers, which of them are free, and the etcd key
// names for them. BigInt throughout, so an IPv6 network's 2^64 candidate
// subnets cost no more than the few that are produced.
import { blockSize, formatCidr, formatIp, isAligned, networkOf, parseCidr, parseIp, type Cidr, type Family } from '../../net/ip.js';

/** What allocation needs from the network configuration. */
export interface SubnetRange {
  network: string;
  subnetLen: number;
  subnetMin: string;
  subnetMax: string;
}

export function maskNet(net: Cidr): Cidr {
  return { ip: { family: net.ip.family, value: networkOf(net) }, prefix: net.prefix };
}

interface Bounds {
  family: Family;
  first: bigint;
  last: bigint;
  size: bigint;
}

function boundsOf(range: SubnetRange): Bounds {
  const first = parseIp(range.subnetMin);
  const last = first && parseIp(range.subnetMax, first.family);
  if (!first || !last || !Number.isInteger(range.subnetLen) || range.subnetLen < 0 || range.subnetLen > (first.family === 4 ? 32 : 128)) {
    throw new RangeError(`invalid subnet range ${JSON.stringify(range)}`);
  }
  return { family: first.family, first: first.value, last: last.value, size: blockSize(first.family, range.subnetLen) };
}

interface Interval {
  start: bigint;
  end: bigint;
}

function takenIntervals(family: Family, taken: Iterable<string>): Interval[] {
  const intervals: Interval[] = [];
  for (const cidr of taken) {
    const net = parseCidr(cidr, family);
    if (!net) continue;
    const start = networkOf(net);
    intervals.push({ start, end: start + blockSize(family, net.prefix) - 1n });
  }
  intervals.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  // Merged into disjoint runs, so the walk below only ever looks at one.
  const merged: Interval[] = [];
  for (const iv of intervals) {
    const prev = merged[merged.length - 1];
    if (prev && iv.start <= prev.end + 1n) prev.end = prev.end > iv.end ? prev.end : iv.end;
    else merged.push({ ...iv });
  }
  return merged;
}

/**
 * The candidates that overlap none of `taken` (CIDRs of any length: a
 * reservation or a subnet from an older SubnetLen blocks all it covers;
 * CIDRs of the other family are ignored). Overlapped stretches are jumped
 * over, so a huge range with a few big reservations costs no more than the
 * subnets actually produced.
 */
export function* freeSubnets(range: SubnetRange, taken: Iterable<string>): Generator<string> {
  const { family, first, last, size } = boundsOf(range);
  const space = 1n << BigInt(family === 4 ? 32 : 128);
  const intervals = takenIntervals(family, taken);
  let i = 0;
  let candidate = first;
  while (candidate <= last && candidate < space) {
    const end = candidate + size - 1n;
    while (i < intervals.length && intervals[i]!.end < candidate) i++;
    const blocking = intervals[i];
    if (blocking && blocking.start <= end) {
      // Resume at the first aligned subnet after the blocking block.
      candidate = ((blocking.end + size) / size) * size;
      continue;
    }
    yield formatCidr({ ip: { family, value: candidate }, prefix: range.subnetLen });
    candidate += size;
  }
}

/** How many free subnets are gathered before one is drawn (flannel uses 100). */
export const CANDIDATE_SAMPLE = 100;

/**
 * Picks a free subnet at random among the first `sample` free ones: agents
 * that start together then rarely race for the same key, while the lowest
 * addresses still fill first.
 */
export function pickFreeSubnet(
  range: SubnetRange,
  taken: Iterable<string>,
  random: () => number = Math.random,
  sample = CANDIDATE_SAMPLE,
): string | undefined {
  const pool: string[] = [];
  for (const subnet of freeSubnets(range, taken)) {
    pool.push(subnet);
    if (pool.length >= sample) break;
  }
  if (pool.length === 0) return undefined;
  const index = Math.min(pool.length - 1, Math.floor(random() * pool.length));
  return pool[index];
}

/** True if `cidr` is a subnet this range could have handed out. */
export function inRange(range: SubnetRange, cidr: string): boolean {
  const { family, first, last } = boundsOf(range);
  const net = parseCidr(cidr, family);
  if (!net || net.prefix !== range.subnetLen || !isAligned(family, net.ip.value, net.prefix)) return false;
  return net.ip.value >= first && net.ip.value <= last;
}

/** `10.244.1.0/24` → `10.244.1.0-24`, `fd00:1::/64` → `fd00:1::-64`: flannel's key name for a subnet. */
export function subnetKey(cidr: string): string {
  const net = parseCidr(cidr);
  if (!net || !isAligned(net.ip.family, net.ip.value, net.prefix)) throw new RangeError(`not a subnet: ${cidr}`);
  return `${formatIp(net.ip)}-${net.prefix}`;
}

/** A node's subnets as a lease key names them; '' for a family the node has no subnet in. */
export interface LeaseSubnets {
  /** IPv4 subnet, network form; '' in an IPv6-only cluster */
  subnet: string;
  /** IPv6 subnet, network form */
  ipv6Subnet?: string;
}

/**
 * flannel's MakeSubnetKey: `10.244.1.0-24`, dual-stack
 * `10.244.1.0-24&fd00:10:244:1::-64`. IPv6-only is what flannel's key gives
 * for an empty IPv4 subnet, `0.0.0.0-0&fd00:10:244:1::-64`, so a key always
 * starts with the IPv4 part that flannel's parser requires.
 */
export function leaseKey(subnets: LeaseSubnets): string {
  const v4 = subnets.subnet === '' ? '0.0.0.0-0' : subnetKey(subnets.subnet);
  if (subnets.ipv6Subnet === undefined) {
    if (subnets.subnet === '') throw new RangeError('a lease key needs an IPv4 or an IPv6 subnet');
    return v4;
  }
  const v6 = parseCidr(subnets.ipv6Subnet, 6);
  if (!v6) throw new RangeError(`not an IPv6 subnet: ${subnets.ipv6Subnet}`);
  return `${v4}&${subnetKey(subnets.ipv6Subnet)}`;
}

// flannel's key pattern: an IPv4 part, then optionally `&<ipv6>-<len>`.
const KEY_RE = /^(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2})(?:&([0-9a-fA-F:]+)-(\d{1,3}))?$/;

/** The subnets a flannel key names (see leaseKey); undefined if `key` is not a subnet key. */
export function parseLeaseKey(key: string): LeaseSubnets | undefined {
  const m = KEY_RE.exec(key);
  if (!m) return undefined;
  const net = parseCidr(`${m[1]}/${m[2]}`, 4);
  if (!net || !isAligned(4, net.ip.value, net.prefix)) return undefined;
  // 0.0.0.0/0 is flannel's empty IPv4 subnet: only meaningful next to an IPv6 one.
  const subnet = net.prefix === 0 ? '' : formatCidr(net);
  if (m[3] === undefined) return subnet === '' ? undefined : { subnet };
  const v6 = parseCidr(`${m[3]}/${m[4]}`, 6);
  if (!v6 || v6.prefix === 0 || !isAligned(6, v6.ip.value, v6.prefix)) return undefined;
  return { subnet, ipv6Subnet: formatCidr(v6) };
}

/** The IPv6 node-subnet range of a config, or undefined when IPv6 is off. */
export function ipv6RangeOf(config: {
  enableIPv6: boolean;
  ipv6Network?: string;
  ipv6SubnetLen?: number;
  ipv6SubnetMin?: string;
  ipv6SubnetMax?: string;
}): SubnetRange | undefined {
  const { enableIPv6, ipv6Network, ipv6SubnetLen, ipv6SubnetMin, ipv6SubnetMax } = config;
  if (!enableIPv6 || !ipv6Network || ipv6SubnetLen === undefined || !ipv6SubnetMin || !ipv6SubnetMax) return undefined;
  return { network: ipv6Network, subnetLen: ipv6SubnetLen, subnetMin: ipv6SubnetMin, subnetMax: ipv6SubnetMax };
}
