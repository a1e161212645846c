// Pure IPv4 subnet math for the etcd subnet manager: which node subnets a
// network offers, which of them are free, and the etcd key names for them.
import { blockSize, formatCidr, formatIpv4, networkOf, parseIpv4, parseIpv4Cidr, type Ipv4Cidr } from '../../net/ipv4.js';

/** What allocation needs from the network configuration. */
export interface SubnetRange {
  network: string;
  subnetLen: number;
  subnetMin: string;
  subnetMax: string;
}

const ADDRESS_SPACE = 2 ** 32;

export function maskNet(net: Ipv4Cidr): Ipv4Cidr {
  return { ip: networkOf(net), prefix: net.prefix };
}

export function isAligned(ip: number, prefix: number): boolean {
  return ip % blockSize(prefix) === 0;
}

interface Bounds {
  first: number;
  last: number;
  size: number;
}

function boundsOf(range: SubnetRange): Bounds {
  const first = parseIpv4(range.subnetMin);
  const last = parseIpv4(range.subnetMax);
  if (first === undefined || last === undefined || !Number.isInteger(range.subnetLen)) {
    throw new RangeError(`invalid subnet range ${JSON.stringify(range)}`);
  }
  return { first, last, size: blockSize(range.subnetLen) };
}

/** Every node subnet between SubnetMin and SubnetMax, in address order. */
export function* candidateSubnets(range: SubnetRange): Generator<string> {
  yield* freeSubnets(range, []);
}

interface Interval {
  start: number;
  end: number;
}

function takenIntervals(taken: Iterable<string>): Interval[] {
  const intervals: Interval[] = [];
  for (const cidr of taken) {
    const net = parseIpv4Cidr(cidr);
    if (!net) continue;
    const start = maskNet(net).ip;
    intervals.push({ start, end: start + blockSize(net.prefix) - 1 });
  }
  intervals.sort((a, b) => a.start - b.start);
  // Merged into disjoint runs, so the walk below only ever looks at one.
  const merged: Interval[] = [];
  for (const iv of intervals) {
    const prev = merged[merged.length - 1];
    if (prev && iv.start <= prev.end + 1) prev.end = Math.max(prev.end, iv.end);
    else merged.push({ ...iv });
  }
  return merged;
}

/**
 * The candidates that overlap none of `taken` (CIDRs of any length: a
 * reservation or a subnet from an older SubnetLen blocks all it covers).
 * Overlapped stretches are jumped over, so a huge range with a few big
 * reservations costs no more than the subnets actually produced.
 */
export function* freeSubnets(range: SubnetRange, taken: Iterable<string>): Generator<string> {
  const { first, last, size } = boundsOf(range);
  const intervals = takenIntervals(taken);
  let i = 0;
  let candidate = first;
  while (candidate <= last && candidate < ADDRESS_SPACE) {
    const end = candidate + size - 1;
    while (i < intervals.length && intervals[i]!.end < candidate) i++;
    const blocking = intervals[i];
    if (blocking && blocking.start <= end) {
      // Resume at the first aligned subnet after the blocking block.
      candidate = Math.ceil((blocking.end + 1) / size) * size;
      continue;
    }
    yield formatCidr({ ip: candidate, prefix: range.subnetLen });
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
  const net = parseIpv4Cidr(cidr);
  if (!net || net.prefix !== range.subnetLen || !isAligned(net.ip, net.prefix)) return false;
  const { first, last } = boundsOf(range);
  return net.ip >= first && net.ip <= last;
}

/** `10.244.1.0/24` → `10.244.1.0-24`, flannel's key name for a subnet. */
export function subnetKey(cidr: string): string {
  const net = parseIpv4Cidr(cidr);
  if (!net || !isAligned(net.ip, net.prefix)) throw new RangeError(`not a subnet: ${cidr}`);
  return `${formatIpv4(net.ip)}-${net.prefix}`;
}

// flannel's dual-stack keys append `&<ipv6>-<len>`; the IPv4 part is all we use.
const KEY_RE = /^(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2})(?:&([0-9a-fA-F:]+)-(\d{1,3}))?$/;

/** `10.244.1.0-24` (or a dual-stack key) → `10.244.1.0/24`; undefined if not a subnet key. */
export function parseSubnetKey(key: string): string | undefined {
  const m = KEY_RE.exec(key);
  if (!m) return undefined;
  const net = parseIpv4Cidr(`${m[1]}/${m[2]}`);
  if (!net || !isAligned(net.ip, net.prefix)) return undefined;
  return formatCidr(net);
}
