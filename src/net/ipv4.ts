// IPv4 arithmetic on plain numbers, shared by the plugin, the subnet
// managers and the backends: cheap enough for thousands of leases.

export interface Ipv4Cidr {
  /** address as an unsigned 32-bit number, host bits kept as written */
  ip: number;
  prefix: number;
}

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!OCTET.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value;
}

/** Parses `a.b.c.d/len`, keeping host bits (10.244.1.1/24 is a gateway, not a network). */
export function parseIpv4Cidr(text: string): Ipv4Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIpv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (ip === undefined || !/^(0|[1-9][0-9]?)$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  return prefix > 32 ? undefined : { ip, prefix };
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => String(Math.floor(value / 2 ** shift) % 256)).join('.');
}

/** `{ip, prefix}` as written, host bits included. */
export function formatCidr(c: Ipv4Cidr): string {
  return `${formatIpv4(c.ip)}/${c.prefix}`;
}

/** Number of addresses in a block of this prefix length. */
export function blockSize(prefix: number): number {
  return 2 ** (32 - prefix);
}

export function networkOf(c: Ipv4Cidr): number {
  return c.ip - (c.ip % blockSize(c.prefix));
}

/** True when `ip` lies inside `net`. */
export function cidrContainsIp(net: Ipv4Cidr, ip: number): boolean {
  const start = networkOf(net);
  return ip >= start && ip < start + blockSize(net.prefix);
}

/** True when all of `inner` lies inside `outer`. */
export function cidrContainsCidr(outer: Ipv4Cidr, inner: Ipv4Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContainsIp(outer, inner.ip);
}

export function cidrOverlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  return cidrContainsCidr(a, b) || cidrContainsCidr(b, a);
}

/**
 * `10.244.1.0/24` → `10.244.1.1/24`: a node subnet's first address with its
 * prefix, the bridge's gateway as flannel writes it into FLANNEL_SUBNET.
 * Undefined when `subnet` is not an IPv4 CIDR.
 */
export function gatewayCidr(subnet: string): string | undefined {
  const c = parseIpv4Cidr(subnet);
  return c && formatCidr({ ip: networkOf(c) + 1, prefix: c.prefix });
}

/** `10.244.1.7/24` → `10.244.1.0/24`: the form routes are listed in. */
export function canonicalCidr(c: Ipv4Cidr): string {
  return `${formatIpv4(networkOf(c))}/${c.prefix}`;
}
