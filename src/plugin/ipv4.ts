// The little IPv4 arithmetic the plugin needs for FLANNEL_SUBNET.

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** 10.244.1.1/24 -> { ip: 10.244.1.1, prefix: 24, network: 10.244.1.0/24 } */
export function splitCidr(cidr: string): { ip: string; prefix: number; network: string } {
  const [ip, len] = cidr.split('/');
  const prefix = Number(len);
  const size = 2 ** (32 - prefix);
  const base = Math.floor(ipToInt(ip) / size) * size;
  return { ip, prefix, network: `${intToIp(base)}/${prefix}` };
}

/** Whether `ip` lies inside `cidr`. */
export function contains(cidr: string, ip: string): boolean {
  const { network, prefix } = splitCidr(cidr);
  const size = 2 ** (32 - prefix);
  const start = ipToInt(network.split('/')[0]);
  const value = ipToInt(ip);
  return value >= start && value < start + size;
}
