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

/** Parses the KEY=VALUE lines; unknown keys are ignored, as flannel does. */
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
