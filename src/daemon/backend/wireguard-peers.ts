// Pure decisions of the wireguard backend: which peer each remote lease
// calls for, what `wg show <dev> dump` says the device holds, and the
// difference between the two. No I/O, so every rule is unit-tested.
import { isWireguardKey } from '../config.js';
import type { Lease } from '../types.js';
import { canonicalCidr, cidrContainsCidr, cidrContainsIp, cidrOverlaps, parseCidr, parseIp, type Cidr } from '../../net/ip.js';
import { describeLease, type Skipped } from './plan.js';

/** One peer as we want it on flannel-wg. */
export interface DesiredPeer {
  lease: Lease;
  publicKey: string;
  /** ip:port */
  endpoint: string;
  allowedIPs: string[];
}

export interface PeerPlan {
  peers: DesiredPeer[];
  skipped: Skipped[];
}

export interface PeerPlanContext {
  network: Cidr;
  ownSubnet: Cidr;
  ownPublicKey: string;
  ownIPs: string[];
  /** the port every node listens on (flannel: the same ListenPort cluster-wide) */
  port: number;
}

/**
 * One peer per remote wireguard lease: its public key, endpoint = public IP
 * and our ListenPort (flannel assumes one port cluster-wide), allowed IPs =
 * its pod subnet. WireGuard routes by allowed IPs and keys peers by public
 * key, so two leases with one key, or overlapping subnets, are refused.
 */
export function planPeers(leases: readonly Lease[], ctx: PeerPlanContext): PeerPlan {
  const out: PeerPlan = { peers: [], skipped: [] };
  const keys = new Map<string, string>();
  const claimed: { subnet: Cidr; who: string }[] = [];
  for (const lease of leases) {
    const skip = (reason: string, error = true): void => void out.skipped.push({ lease, reason, error });
    const subnet = parseCidr(lease.subnet, 4);
    if (!subnet) {
      skip(`subnet ${JSON.stringify(lease.subnet)} is not an IPv4 CIDR`);
      continue;
    }
    if (canonicalCidr(subnet) === canonicalCidr(ctx.ownSubnet)) {
      skip('is our own subnet', false);
      continue;
    }
    if (lease.backendType !== 'wireguard') {
      skip(`backend type ${lease.backendType} is not wireguard`, false);
      continue;
    }
    if (!cidrContainsCidr(ctx.network, subnet)) {
      skip(`subnet lies outside the cluster network ${canonicalCidr(ctx.network)}`);
      continue;
    }
    if (cidrOverlaps(subnet, ctx.ownSubnet)) {
      skip(`subnet overlaps our own subnet ${canonicalCidr(ctx.ownSubnet)}`);
      continue;
    }
    const publicIP = parseIp(lease.publicIP, 4);
    if (publicIP === undefined) {
      skip(`public IP ${JSON.stringify(lease.publicIP)} is not an IPv4 address`);
      continue;
    }
    // The cluster network is routed into flannel-wg: an endpoint inside it
    // would send the encrypted packets back into the tunnel.
    if (cidrContainsIp(ctx.network, publicIP)) {
      skip(`public IP ${lease.publicIP} lies inside the cluster network ${canonicalCidr(ctx.network)}, which is routed into the tunnel`);
      continue;
    }
    if (ctx.ownIPs.includes(lease.publicIP)) {
      skip(`public IP ${lease.publicIP} is our own`);
      continue;
    }
    const key = lease.backendData.PublicKey;
    if (!key) {
      skip('has no PublicKey in its backend data');
      continue;
    }
    if (!isWireguardKey(key)) {
      skip(`PublicKey ${JSON.stringify(key)} is not a WireGuard key`);
      continue;
    }
    if (key === ctx.ownPublicKey) {
      skip('publishes our own public key (a copied key file?)');
      continue;
    }
    const keyOwner = keys.get(key);
    if (keyOwner) {
      skip(`PublicKey is already used by ${keyOwner}`);
      continue;
    }
    const clash = claimed.find((c) => cidrOverlaps(c.subnet, subnet));
    if (clash) {
      skip(`subnet overlaps ${clash.who}`);
      continue;
    }
    const who = describeLease(lease);
    keys.set(key, who);
    claimed.push({ subnet, who });
    out.peers.push({ lease, publicKey: key, endpoint: `${lease.publicIP}:${ctx.port}`, allowedIPs: [canonicalCidr(subnet)] });
  }
  return out;
}

// ---- `wg show <dev> dump`

export interface DumpPeer {
  publicKey: string;
  /** undefined when the peer has none */
  presharedKey?: string;
  endpoint?: string;
  allowedIPs: string[];
  /** unix seconds of the last handshake, 0 = never */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  /** seconds, 0 = off */
  persistentKeepalive: number;
}

export interface DeviceDump {
  privateKey?: string;
  publicKey?: string;
  listenPort: number;
  fwmark: number;
  peers: DumpPeer[];
}

const none = (v: string | undefined): string | undefined => (v === undefined || v === '(none)' ? undefined : v);

/**
 * Parses `wg show <dev> dump`: a tab-separated line for the interface
 * (private key, public key, port, fwmark), then one per peer (public key,
 * preshared key, endpoint, allowed ips, latest handshake, rx, tx, keepalive).
 */
export function parseDump(text: string): DeviceDump {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new Error('wg dump is empty');
  const head = lines[0].split('\t');
  if (head.length !== 4) throw new Error(`wg dump: unexpected interface line ${JSON.stringify(lines[0])}`);
  const dump: DeviceDump = {
    listenPort: Number(head[2]) || 0,
    fwmark: head[3] === 'off' ? 0 : Number(head[3]) || 0,
    peers: [],
  };
  const priv = none(head[0]);
  const pub = none(head[1]);
  if (priv) dump.privateKey = priv;
  if (pub) dump.publicKey = pub;
  for (const line of lines.slice(1)) {
    const f = line.split('\t');
    if (f.length !== 8) throw new Error(`wg dump: unexpected peer line ${JSON.stringify(line)}`);
    const peer: DumpPeer = {
      publicKey: f[0],
      allowedIPs: none(f[3]) ? f[3].split(',').filter(Boolean).sort() : [],
      latestHandshake: Number(f[4]) || 0,
      rxBytes: Number(f[5]) || 0,
      txBytes: Number(f[6]) || 0,
      persistentKeepalive: f[7] === 'off' ? 0 : Number(f[7]) || 0,
    };
    const psk = none(f[1]);
    const endpoint = none(f[2]);
    if (psk) peer.presharedKey = psk;
    if (endpoint) peer.endpoint = endpoint;
    dump.peers.push(peer);
  }
  return dump;
}

// ---- differences

export interface PeerSettings {
  /** base64 PSK for every peer, or undefined */
  psk?: string;
  persistentKeepalive: number;
}

export interface PeerDiff {
  add: DesiredPeer[];
  /** present but with another endpoint, allowed IPs, PSK or keepalive */
  update: { peer: DesiredPeer; why: string[] }[];
  /** public keys no lease asks for */
  remove: string[];
}

function differences(have: DumpPeer, want: DesiredPeer, s: PeerSettings): string[] {
  const why: string[] = [];
  if (have.endpoint !== want.endpoint) why.push(`endpoint ${have.endpoint ?? 'none'} != ${want.endpoint}`);
  const wantIPs = [...want.allowedIPs].sort();
  if (have.allowedIPs.join(',') !== wantIPs.join(',')) why.push(`allowed IPs ${have.allowedIPs.join(',') || 'none'} != ${wantIPs.join(',')}`);
  if (have.presharedKey !== s.psk) why.push('preshared key differs');
  if (have.persistentKeepalive !== s.persistentKeepalive) why.push(`keepalive ${have.persistentKeepalive} != ${s.persistentKeepalive}`);
  return why;
}

/** What turns the device's peers into exactly the desired ones. */
export function diffPeers(desired: readonly DesiredPeer[], current: readonly DumpPeer[], s: PeerSettings): PeerDiff {
  const byKey = new Map(current.map((p) => [p.publicKey, p]));
  const wanted = new Set(desired.map((p) => p.publicKey));
  const diff: PeerDiff = { add: [], update: [], remove: [] };
  for (const want of desired) {
    const have = byKey.get(want.publicKey);
    if (!have) {
      diff.add.push(want);
      continue;
    }
    const why = differences(have, want, s);
    if (why.length > 0) diff.update.push({ peer: want, why });
  }
  for (const p of current) if (!wanted.has(p.publicKey)) diff.remove.push(p.publicKey);
  return diff;
}

export function isEmptyDiff(d: PeerDiff): boolean {
  return d.add.length + d.update.length + d.remove.length === 0;
}

/**
 * `wg set` arguments that apply a diff in one call: removals, then every
 * added or changed peer with all its attributes, allowed IPs replaced. The
 * PSK is read from `pskFile` so it never appears on a command line.
 */
export function wgSetArgs(dev: string, diff: PeerDiff, s: PeerSettings, pskFile: string): string[] {
  const args = ['set', dev];
  for (const key of diff.remove) args.push('peer', key, 'remove');
  for (const p of [...diff.add, ...diff.update.map((u) => u.peer)]) {
    args.push('peer', p.publicKey, 'endpoint', p.endpoint, 'allowed-ips', p.allowedIPs.join(','));
    args.push('persistent-keepalive', s.persistentKeepalive > 0 ? String(s.persistentKeepalive) : 'off');
    args.push('preshared-key', s.psk ? pskFile : '/dev/null');
  }
  return args;
}
