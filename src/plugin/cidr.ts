import { canonicalCidr, formatIpv4, parseIpv4Cidr } from '../net/ipv4.js';

/** 10.244.1.1/24 -> { ip: 10.244.1.1, prefix: 24, network: 10.244.1.0/24 } */
export function splitCidr(cidr: string): { ip: string; prefix: number; network: string } {
  const c = parseIpv4Cidr(cidr);
  if (!c) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  return { ip: formatIpv4(c.ip), prefix: c.prefix, network: canonicalCidr(c) };
}
