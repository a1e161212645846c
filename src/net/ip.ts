// Addresses and prefixes of both families, for every layer: the plugin, IPAM,
// the subnet managers, the backends and the cli. Values are BigInt so IPv4
// and IPv6 share one code path; the text forms are identical to Go's
// net.IP.String() and net.IPNet.String(): host-local names its lease files
// that way and flannel writes its etcd keys and subnet.env that way, so ours
// must match byte for byte.
//
// Cost: thousands of leases go through parse/contains/format on every
// resync, so masks are precomputed per prefix and IPv4 text is parsed and
// printed on plain numbers, with one BigInt conversion per address.
export type Family = 4 | 6;

export interface Ip {
  readonly family: Family;
  readonly value: bigint;
}

export interface Cidr {
  /** The address as written; may have host bits set (the caller checks). */
  readonly ip: Ip;
  readonly prefix: number;
}

export function bitsOf(family: Family): number {
  return family === 4 ? 32 : 128;
}

/**
 * Dotted-quad IPv4 as a number, read character by character: it runs for
 * every lease on every plan (tens of thousands at cluster scale), where a
 * split and a regex per part cost more than the rest of the plan.
 */
function parseV4Number(text: string): number | undefined {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      // Leading zeros are refused, as Go 1.17+ does, so one address has one name.
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (c - 48);
      digits++;
      if (part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return value * 256 + part;
}

function parseV4(text: string): bigint | undefined {
  const n = parseV4Number(text);
  return n === undefined ? undefined : BigInt(n);
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Colon-separated hex groups; a dotted IPv4 tail only where `dottedTail` (the address's last part, as Go allows). */
function parseGroups(text: string, dottedTail: boolean): number[] | undefined {
  if (text === '') return [];
  const groups: number[] = [];
  const parts = text.split(':');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (dottedTail && i === parts.length - 1 && part.includes('.')) {
      const v4 = parseV4(part);
      if (v4 === undefined) return undefined;
      groups.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
    } else if (HEX_GROUP.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

function parseV6(text: string): bigint | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0]!, false);
    const tail = parseGroups(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text, true);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/**
 * Parses a plain IPv4 or IPv6 address (no zone, no prefix); undefined if
 * invalid, or if `family` is given and the address is of the other family.
 */
export function parseIp(text: string, family?: Family): Ip | undefined {
  if (text.includes(':')) {
    if (family === 4) return undefined;
    const value = parseV6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  if (family === 6) return undefined;
  const value = parseV4(text);
  return value === undefined ? undefined : { family: 4, value };
}

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses `addr/prefix`, host bits kept as written (10.244.1.1/24 is a
 * gateway, not a network); undefined if either half is invalid, or if
 * `family` is given and the address is of the other family.
 */
export function parseCidr(text: string, family?: Family): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash), family);
  const prefixText = text.slice(slash + 1);
  if (!ip || !PREFIX.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(ip.family)) return undefined;
  return { ip, prefix };
}

function formatV4(value: bigint): string {
  const n = Number(value);
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** RFC 5952 text, as Go prints it: the longest run (>= 2) of zero groups, leftmost on a tie, becomes `::`. */
function formatV6(value: bigint): string {
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

export function formatIp(ip: Ip): string {
  return ip.family === 4 ? formatV4(ip.value) : formatV6(ip.value);
}

/** True for ::ffff:a.b.c.d, which Go would silently treat (and print) as IPv4. */
export function isV4Mapped(ip: Ip): boolean {
  return ip.family === 6 && ip.value >> 32n === 0xffffn;
}

/** The address `value` of `family`. */
export function ipOf(family: Family, value: bigint): Ip {
  return { family, value };
}

/** `{ip, prefix}` as written, host bits included. */
export function formatCidr(c: Cidr): string {
  return `${formatIp(c.ip)}/${c.prefix}`;
}

function maskTable(bits: number): bigint[] {
  const all = (1n << BigInt(bits)) - 1n;
  return Array.from({ length: bits + 1 }, (_, prefix) => all ^ ((1n << BigInt(bits - prefix)) - 1n));
}

/** Network masks by prefix length, per family: one lookup instead of shifts per lease. */
const MASKS: Record<Family, bigint[]> = { 4: maskTable(32), 6: maskTable(128) };

/** Number of addresses in a block of this prefix length. */
export function blockSize(family: Family, prefix: number): bigint {
  return 1n << BigInt(bitsOf(family) - prefix);
}

/** The size of the whole address space of `family` (2^32 or 2^128). */
export function addressSpace(family: Family): bigint {
  return 1n << BigInt(bitsOf(family));
}

/** The network address's value: host bits cleared. */
export function networkOf(c: Cidr): bigint {
  return c.ip.value & MASKS[c.ip.family][c.prefix]!;
}

/** The network address as text: `10.244.1.7/24` → `10.244.1.0`. */
export function networkAddress(c: Cidr): string {
  return formatIp({ family: c.ip.family, value: networkOf(c) });
}

/** True when `value` is the first address of a block of `prefix` (no host bits). */
export function isAligned(family: Family, value: bigint, prefix: number): boolean {
  return (value & MASKS[family][prefix]!) === value;
}

/** True when `ip` lies inside `net` (never across families). */
export function cidrContainsIp(net: Cidr, ip: Ip): boolean {
  return net.ip.family === ip.family && (ip.value & MASKS[ip.family][net.prefix]!) === networkOf(net);
}

/** True when all of `inner` lies inside `outer` (never across families). */
export function cidrContainsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContainsIp(outer, inner.ip);
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContainsCidr(a, b) || cidrContainsCidr(b, a);
}

/** True when `a` and `b` name the same network (host bits ignored). */
export function sameNetwork(a: Cidr, b: Cidr): boolean {
  return a.ip.family === b.ip.family && a.prefix === b.prefix && networkOf(a) === networkOf(b);
}

/** `10.244.1.7/24` → `10.244.1.0/24`, `fd00::7/64` → `fd00::/64`: the form routes are listed in. */
export function canonicalCidr(c: Cidr): string {
  return `${networkAddress(c)}/${c.prefix}`;
}

/**
 * `10.244.1.0/24` → `10.244.1.1/24`, `fd00:1::/64` → `fd00:1::1/64`: a node
 * subnet's first address with its prefix, the bridge's gateway as flannel
 * writes it into FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET. Undefined when
 * `subnet` is not a CIDR.
 */
export function gatewayCidr(subnet: string): string | undefined {
  const c = parseCidr(subnet);
  return c && formatCidr({ ip: { family: c.ip.family, value: networkOf(c) + 1n }, prefix: c.prefix });
}

/** `10.244.1.1/24` → { ip: 10.244.1.1, prefix: 24, network: 10.244.1.0/24 }; throws if not a CIDR. */
export function splitCidr(text: string): { ip: string; prefix: number; network: string } {
  const c = parseCidr(text);
  if (!c) throw new Error(`not a CIDR: ${text}`);
  return { ip: formatIp(c.ip), prefix: c.prefix, network: canonicalCidr(c) };
}

/** Sort key of an address, or of a CIDR's address: IPv4 before IPv6, text that is neither first. */
function sortKey(text: string): bigint {
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!ip) return -1n;
  return ip.family === 4 ? ip.value : addressSpace(4) + ip.value;
}

/**
 * A string that sorts (with `<`) as the address or CIDR `text` does in
 * address order, IPv4 before IPv6: parse once, compare many times.
 */
export function addressOrderKey(text: string): string {
  const key = sortKey(text);
  return key < 0n ? '' : key.toString(16).padStart(33, '0');
}

/** Comparator for addresses or CIDRs written as text, in address order. */
export function compareAddresses(a: string, b: string): number {
  const x = sortKey(a);
  const y = sortKey(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
