// /run/flannel/subnet.env: written by the agent, read by the plugin. The
// format is flannel's, so tsflannel and flannel can read each other's file.
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { nodeCrypto } from '../digest.js';
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
  if (net === undefined) throw new SubnetEnvError(`${netKey} is missing (${subKey} is set)`);
  if (sub === undefined) throw new SubnetEnvError(`${subKey} is missing (${netKey} is set)`);
  return [checkCidr(netKey, net, family), checkCidr(subKey, sub, family)];
}

/** The KEY=VALUE lines; unknown keys are ignored, as flannel does. */
function readVars(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const eq = trimmed.indexOf('=');
    if (eq > 0) vars.set(trimmed.slice(0, eq).trim(), trimmed.slice(eq + 1).trim());
  }
  return vars;
}

function readMtu(vars: Map<string, string>): number {
  const mtuText = vars.get('FLANNEL_MTU');
  const mtu = Number(mtuText);
  if (mtuText === undefined || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
    throw new SubnetEnvError(`FLANNEL_MTU is ${mtuText === undefined ? 'missing' : `not a valid MTU: "${mtuText}"`}`);
  }
  return mtu;
}

/**
 * Parses the file. Either family's pair (or both) must be there, each pair
 * complete and of its family.
 */
export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = readVars(text);
  const mtu = readMtu(vars);
  const v6 = familyPair(vars, 'FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET', 6);
  const v4 = familyPair(vars, 'FLANNEL_NETWORK', 'FLANNEL_SUBNET', 4);
  if (!v4 && !v6) {
    throw new SubnetEnvError('FLANNEL_NETWORK and FLANNEL_SUBNET are missing, and so are FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET: a node subnet of one family is needed');
  }
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

/** One family's pair of lines: the cluster network and the node's subnet (its gateway with the node prefix). */
export interface FamilySubnetEnv {
  network: string;
  subnet: string;
}

/** The file as the CNI plugin reads it: either family may be absent, not both. */
export interface PodSubnetEnv {
  mtu: number;
  ipMasq: boolean;
  ipv4?: FamilySubnetEnv;
  ipv6?: FamilySubnetEnv;
}

/**
 * The file per family, as flannel's CNI plugin reads it: either pair alone
 * is enough (an IPv6-only node writes no IPv4 lines). One parser serves the
 * agent and the plugin, so they never disagree on what a file says.
 */
export function parsePodSubnetEnv(text: string): PodSubnetEnv {
  const env = parseSubnetEnv(text);
  const pod: PodSubnetEnv = { mtu: env.mtu, ipMasq: env.ipMasq };
  if (env.subnet) pod.ipv4 = { network: env.network, subnet: env.subnet };
  if (env.ipv6Network && env.ipv6Subnet) pod.ipv6 = { network: env.ipv6Network, subnet: env.ipv6Subnet };
  return pod;
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
  // node:crypto only here: the plugin reads this file on every call and
  // must not load it (src/digest.ts).
  const tmp = `${path}.${nodeCrypto().randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, formatSubnetEnv(env), { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
