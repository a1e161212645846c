// /run/flannel/subnet.env: written by the agent, read by the plugin. The
// format is flannel's, so tsflannel and flannel can read each other's file.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetEnv {
  /** FLANNEL_NETWORK: the cluster network, e.g. 10.244.0.0/16 */
  network: string;
  /** FLANNEL_SUBNET: the gateway with the node prefix, e.g. 10.244.1.1/24 */
  subnet: string;
  /** FLANNEL_MTU */
  mtu: number;
  /** FLANNEL_IPMASQ */
  ipMasq: boolean;
  /** FLANNEL_IPV6_NETWORK / FLANNEL_IPV6_SUBNET when dual-stack */
  ipv6Network?: string;
  ipv6Subnet?: string;
}

export class SubnetEnvError extends Error {
  override readonly name = 'SubnetEnvError';
}

const IPV4_CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

function checkCidr(key: string, value: string | undefined): string {
  const m = value === undefined ? null : IPV4_CIDR.exec(value);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) {
    throw new SubnetEnvError(`${key} is ${value === undefined ? 'missing' : `not an IPv4 CIDR: "${value}"`}`);
  }
  return value as string;
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

export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = readVars(text);
  const mtu = readMtu(vars);
  const env: SubnetEnv = {
    network: checkCidr('FLANNEL_NETWORK', vars.get('FLANNEL_NETWORK')),
    subnet: checkCidr('FLANNEL_SUBNET', vars.get('FLANNEL_SUBNET')),
    mtu,
    ipMasq: vars.get('FLANNEL_IPMASQ') === 'true',
  };
  const v6net = vars.get('FLANNEL_IPV6_NETWORK');
  const v6sub = vars.get('FLANNEL_IPV6_SUBNET');
  if (v6net) env.ipv6Network = v6net;
  if (v6sub) env.ipv6Subnet = v6sub;
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

function readPair(vars: Map<string, string>, networkKey: string, subnetKey: string): FamilySubnetEnv | undefined {
  const network = vars.get(networkKey) || undefined;
  const subnet = vars.get(subnetKey) || undefined;
  if (network === undefined && subnet === undefined) return undefined;
  if (network === undefined) throw new SubnetEnvError(`${networkKey} is missing (${subnetKey} is set)`);
  if (subnet === undefined) throw new SubnetEnvError(`${subnetKey} is missing (${networkKey} is set)`);
  return { network, subnet };
}

/**
 * As flannel's CNI plugin reads the file: FLANNEL_NETWORK/FLANNEL_SUBNET
 * and FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET, either pair alone enough
 * (an IPv6-only node writes no IPv4 lines); FLANNEL_MTU is required. The
 * values are checked as CIDRs of their family by the plugin, which names
 * the file in its errors.
 */
export function parsePodSubnetEnv(text: string): PodSubnetEnv {
  const vars = readVars(text);
  const env: PodSubnetEnv = { mtu: readMtu(vars), ipMasq: vars.get('FLANNEL_IPMASQ') === 'true' };
  const ipv4 = readPair(vars, 'FLANNEL_NETWORK', 'FLANNEL_SUBNET');
  const ipv6 = readPair(vars, 'FLANNEL_IPV6_NETWORK', 'FLANNEL_IPV6_SUBNET');
  if (!ipv4 && !ipv6) {
    throw new SubnetEnvError('FLANNEL_NETWORK and FLANNEL_SUBNET are missing, and so are FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET: a node subnet of one family is needed');
  }
  if (ipv4) env.ipv4 = ipv4;
  if (ipv6) env.ipv6 = ipv6;
  return env;
}

export function readSubnetEnv(path: string = DEFAULT_SUBNET_FILE): SubnetEnv {
  return parseSubnetEnv(readFileSync(path, 'utf8'));
}

export function formatSubnetEnv(env: SubnetEnv): string {
  const lines = [
    `FLANNEL_NETWORK=${env.network}`,
    `FLANNEL_SUBNET=${env.subnet}`,
    `FLANNEL_MTU=${env.mtu}`,
    `FLANNEL_IPMASQ=${env.ipMasq}`,
  ];
  if (env.ipv6Network) lines.push(`FLANNEL_IPV6_NETWORK=${env.ipv6Network}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_SUBNET=${env.ipv6Subnet}`);
  return lines.join('\n') + '\n';
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
