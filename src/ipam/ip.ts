// IP address arithmetic on BigInt, with text forms identical to Go's
// net.IP.String(): host-local names its lease files that way, so our file
// names must match byte for byte.

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

const V4_PART = /^(0|[1-9][0-9]{0,2})$/;

function parseV4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are refused, as Go 1.17+ does, so one address has one name.
    if (!V4_PART.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseGroups(text: string): number[] | undefined {
  if (text === '') return [];
  const groups: number[] = [];
  const parts = text.split(':');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (i === parts.length - 1 && part.includes('.')) {
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
    const head = parseGroups(halves[0]!);
    const tail = parseGroups(halves[1]!);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** Parses a plain IPv4 or IPv6 address (no zone, no prefix); undefined if invalid. */
export function parseIp(text: string): Ip | undefined {
  if (text.includes(':')) {
    const value = parseV6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(text);
  return value === undefined ? undefined : { family: 4, value };
}

/** Parses `addr/prefix`; undefined if either half is invalid. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(ip.family)) return undefined;
  return { ip, prefix };
}

function formatV4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
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

// ---- generic CIDR helpers (both families) ----
// Same names and signatures as the coming src/net/ip.ts, so callers only
// change their import when that module lands.

function hostMask(family: Family, prefix: number): bigint {
  return (1n << BigInt(bitsOf(family) - prefix)) - 1n;
}

/** The address `value` of `family`. */
export function ipOf(family: Family, value: bigint): Ip {
  return { family, value };
}

/** `{ip, prefix}` as written, host bits included. */
export function formatCidr(c: Cidr): string {
  return `${formatIp(c.ip)}/${c.prefix}`;
}

/** Number of addresses in a block of this prefix length. */
export function blockSize(family: Family, prefix: number): bigint {
  return 1n << BigInt(bitsOf(family) - prefix);
}

/** The network address's value: host bits cleared. */
export function networkOf(c: Cidr): bigint {
  return c.ip.value & ~hostMask(c.ip.family, c.prefix);
}

/** True when `ip` lies inside `net` (never across families). */
export function cidrContainsIp(net: Cidr, ip: Ip): boolean {
  return net.ip.family === ip.family && (ip.value & ~hostMask(ip.family, net.prefix)) === networkOf(net);
}

/** True when all of `inner` lies inside `outer` (never across families). */
export function cidrContainsCidr(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContainsIp(outer, inner.ip);
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrContainsCidr(a, b) || cidrContainsCidr(b, a);
}

/** `10.244.1.7/24` → `10.244.1.0/24`, `fd00::7/64` → `fd00::/64`: the form routes are listed in. */
export function canonicalCidr(c: Cidr): string {
  return `${formatIp({ family: c.ip.family, value: networkOf(c) })}/${c.prefix}`;
}

/** `10.244.1.1/24` → { ip: 10.244.1.1, prefix: 24, network: 10.244.1.0/24 }; throws if not a CIDR. */
export function splitCidr(text: string): { ip: string; prefix: number; network: string } {
  const c = parseCidr(text);
  if (!c) throw new Error(`not a CIDR: ${text}`);
  return { ip: formatIp(c.ip), prefix: c.prefix, network: canonicalCidr(c) };
}
