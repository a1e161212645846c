// /run/flannel/subnet.env: written by the agent, read by the plugin. The
// format is flannel's, so tsflannel and flannel can read each other's file.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { gatewayCidr, parseCidr, type Family } from '../net/ip.js';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

/**
 * The file's values. An IPv6-only node has no IPv4 lines: `network` and
 * `subnet` are '' then (the same convention as Lease.subnet), so IPv4-only
 * readers keep their types; the IPv6 pair is present exactly when the file
 * has it.
 */
export interface SubnetEnv {
  /** FLANNEL_NETWORK: the cluster network, e.g. 10.244.0.0/16; '' when the file has no IPv4 lines */
  network: string;
  /** FLANNEL_SUBNET: the gateway with the node prefix, e.g. 10.244.1.1/24; '' when the file has no IPv4 lines */
  subnet: string;
  /** FLANNEL_MTU */
  mtu: number;
  /** FLANNEL_IPMASQ */
  ipMasq: boolean;
  /** FLANNEL_IPV6_NETWORK: the IPv6 cluster network, e.g. fd00:10:244::/56 */
  ipv6Network?: string;
  /** FLANNEL_IPV6_SUBNET: the IPv6 gateway with the node prefix, e.g. fd00:10:244:1::1/64 */
  ipv6Subnet?: string;
}

export class SubnetEnvError extends Error {
  override readonly name = 'SubnetEnvError';
}

function checkCidr(key: string, value: string | undefined, family: Family): string {
  if (value === undefined || parseCidr(value, family) === undefined) {
    throw new SubnetEnvError(`${key} is ${value === undefined ? 'missing' : `not an IPv${family} CIDR: "${value}"`}`);
  }
  return value;
}

/** Checks one family's pair: both or neither; returns undefined for neither. */
function familyPair(vars: Map<string, string>, netKey: string, subKey: string, family: Family): [string, string] | undefined {
  const net = vars.get(netKey);
  const sub = vars.get(subKey);
  if (net === undefined && sub === undefined) return undefined;
  return [checkCidr(netKey, net, family), checkCidr(subKey, sub, family)];
}

/**
 * Parses the KEY=VALUE lines; unknown keys are ignored, as flannel does.
 * Either family's pair (or both) must be there, each pair complete.
 */
export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const eq = trimmed.indexOf('=');
    if (eq > 0) vars.set(trimmed.slice(0, eq).trim(), trimmed.slice(eq + 1).trim());
  }
  const mtuText = vars.get('FLANNEL_MTU');
  const mtu = Number(mtuText);
  if (mtuText === undefined || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new SubnetEnvError(`FLANNEL_MTU is ${mtuText === undefined ? 'missing' : `not a valid MTU: "${mtuText}"`}`);
  }
  const v6 = familyPair(vars, 'FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET', 6);
  // Without an IPv6 pair the IPv4 one is required, and named when missing.
  const v4 = v6 ? familyPair(vars, 'FLANNEL_NETWORK', 'FLANNEL_SUBNET', 4) : [checkCidr('FLANNEL_NETWORK', vars.get('FLANNEL_NETWORK'), 4), checkCidr('FLANNEL_SUBNET', vars.get('FLANNEL_SUBNET'), 4)];
  const env: SubnetEnv = {
    network: v4?.[0] ?? '',
    subnet: v4?.[1] ?? '',
    mtu,
    ipMasq: vars.get('FLANNEL_IPMASQ') === 'true',
  };
  if (v6) {
    env.ipv6Network = v6[0];
    env.ipv6Subnet = v6[1];
  }
  return env;
}

export function readSubnetEnv(path: string = DEFAULT_SUBNET_FILE): SubnetEnv {
  return parseSubnetEnv(readFileSync(path, 'utf8'));
}

/** flanneld's layout (WriteSubnetFile): IPv4 lines, IPv6 lines, then MTU and IPMASQ; a family without a subnet is left out. */
export function formatSubnetEnv(env: SubnetEnv): string {
  const lines: string[] = [];
  if (env.subnet) lines.push(`FLANNEL_NETWORK=${env.network}`, `FLANNEL_SUBNET=${env.subnet}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_NETWORK=${env.ipv6Network ?? ''}`, `FLANNEL_IPV6_SUBNET=${env.ipv6Subnet}`);
  lines.push(`FLANNEL_MTU=${env.mtu}`, `FLANNEL_IPMASQ=${env.ipMasq}`);
  return lines.join('\n') + '\n';
}

/**
 * subnet.env as flanneld writes it for a lease (WriteSubnetFile):
 * FLANNEL_NETWORK and FLANNEL_SUBNET (the gateway, subnet + 1) when the
 * lease has an IPv4 subnet, FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET
 * when it has an IPv6 one. Throws when a subnet is not of its family.
 */
export function subnetEnvFor(
  config: { network: string; ipv6Network?: string },
  lease: { subnet: string; ipv6Subnet?: string },
  mtu: number,
  ipMasq: boolean,
): SubnetEnv {
  const env: SubnetEnv = { network: '', subnet: '', mtu, ipMasq };
  if (lease.subnet !== '' || !lease.ipv6Subnet) {
    const subnet = parseCidr(lease.subnet, 4) && gatewayCidr(lease.subnet);
    if (!subnet) throw new Error(`lease subnet ${JSON.stringify(lease.subnet)} is not an IPv4 CIDR`);
    env.network = config.network;
    env.subnet = subnet;
  }
  if (lease.ipv6Subnet) {
    const subnet = parseCidr(lease.ipv6Subnet, 6) && gatewayCidr(lease.ipv6Subnet);
    if (!subnet) throw new Error(`lease IPv6 subnet ${JSON.stringify(lease.ipv6Subnet)} is not an IPv6 CIDR`);
    if (!config.ipv6Network) throw new Error(`the lease has the IPv6 subnet ${lease.ipv6Subnet} but the network config has no IPv6Network`);
    env.ipv6Network = config.ipv6Network;
    env.ipv6Subnet = subnet;
  }
  return env;
}

/** Writes through a temp file and rename, so a reader never sees half a file. */
export function writeSubnetEnv(path: string, env: SubnetEnv): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, formatSubnetEnv(env), { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
