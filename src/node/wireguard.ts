// flannel-wg and its key file as `wg` and the file system show them, for
// status and doctor on the wireguard backend.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { parseDump, type DumpPeer } from '../daemon/backend/wireguard-peers.js';
import { keyFileFromEnv, publicKeyOf } from '../daemon/backend/wireguard-keys.js';
import { netnsCommand, run } from './exec.js';
import type { LinkInfo } from './links.js';

export const WIREGUARD_DEVICE = 'flannel-wg';

export interface WireguardDeviceState extends LinkInfo {
  /** kernel WireGuard, or a userspace tun device (wireguard-go) */
  impl: 'kernel' | 'wireguard-go' | 'other';
  /** from `wg show <dev> dump`; absent when wg could not reach the device (see error) */
  publicKey?: string;
  listenPort?: number;
  peers: DumpPeer[];
  /** why `wg show` failed: not installed, or wireguard-go's socket not in this mount namespace */
  error?: string;
}

export interface WireguardKeyFileState {
  path: string;
  exists: boolean;
  /** permission bits */
  mode?: number;
  /** derived from the private key in the file; the private key itself is never kept */
  publicKey?: string;
  error?: string;
}

export interface WireguardState {
  device: WireguardDeviceState | null;
  keyFile: WireguardKeyFileState;
}

function readKeyFile(path: string): WireguardKeyFileState {
  const out: WireguardKeyFileState = { path, exists: existsSync(path) };
  if (!out.exists) return out;
  try {
    out.mode = statSync(path).mode & 0o777;
    out.publicKey = publicKeyOf(readFileSync(path, 'utf8').trim());
  } catch (err) {
    out.error = (err as Error).message;
  }
  return out;
}

/**
 * flannel-wg as the kernel and `wg` see it. A userspace device is reached
 * through /var/run/wireguard/<dev>.sock, so this must run in the node's
 * mount namespace as well as its network namespace.
 */
export async function readWireguard(link: LinkInfo | null, netns?: string): Promise<WireguardState> {
  const keyFile = readKeyFile(keyFileFromEnv());
  if (!link) return { device: null, keyFile };
  const impl = link.type === 'wireguard' ? 'kernel' : link.type === 'tuntap' || link.type === 'tun' ? 'wireguard-go' : 'other';
  const device: WireguardDeviceState = { ...link, impl, peers: [] };
  const res = await run(netnsCommand(netns, ['wg', 'show', link.name, 'dump']));
  if (res.code !== 0) {
    device.error = (res.stderr || res.stdout).trim().split('\n')[0] || `wg exited ${res.code}`;
    return { device, keyFile };
  }
  try {
    const dump = parseDump(res.stdout);
    if (dump.publicKey) device.publicKey = dump.publicKey;
    device.listenPort = dump.listenPort;
    device.peers = dump.peers;
  } catch (err) {
    device.error = (err as Error).message;
  }
  return { device, keyFile };
}
