// One node's tsflannel state as the kernel and the files hold it right now:
// the subnet file, cni0 and its ports, the VXLAN device with its routes,
// neighbours and FDB, the IPAM leases, the sysctls and the iptables chains.
// Everything is read, nothing is changed. `netns` points the whole read at
// another network namespace, so a test (or an operator on the host) can
// inspect a node namespace from outside. Each concern has its module
// (links, routes, sysctl, iptables, ipam); this one puts them together and
// keeps the names status, doctor and the demo import.
import { closeSync, constants as fsc, existsSync, readFileSync } from 'node:fs';
import { openRegularSync } from '../fs/guard.js';
import * as nl from '../netlink/index.js';
import { DEFAULT_SUBNET_FILE, parseSubnetEnv, type SubnetEnv } from '../flannel/subnet-env.js';
import { DEFAULT_DATA_DIR } from '../ipam/index.js';
import { canonicalCidr, compareAddresses, parseCidr } from '../net/ip.js';
import { readIpam, type IpamState } from './ipam.js';
import { readIptables, type IptablesSnapshot } from './iptables.js';
import { bridgeState, linkInfo, readLinks, readVxlan, type BridgeState, type KernelFdb, type KernelNeigh, type LinkInfo, type VxlanDeviceState } from './links.js';
import { readMainRoutes, type KernelRoute } from './routes.js';
import { readSysctls, type SysctlState } from './sysctl.js';

export { netnsCommand, run, type RunResult } from './exec.js';
export { readIptables, type IptablesSnapshot } from './iptables.js';
export { type IpamState, type PodAttachment } from './ipam.js';
export { linkByName, type BridgePort, type BridgeState, type KernelFdb, type KernelNeigh, type LinkInfo, type VxlanDeviceState } from './links.js';
export { defaultRoute, routeFor, type KernelRoute } from './routes.js';
export { type SysctlState } from './sysctl.js';

import { readWireguard, WIREGUARD_DEVICE, type WireguardState } from './wireguard.js';
export { WIREGUARD_DEVICE, type WireguardDeviceState, type WireguardKeyFileState, type WireguardState } from './wireguard.js';

export interface ReadStateOptions {
  /** a netns path (/var/run/netns/X or /proc/PID/ns/net); absent = this process's netns */
  netns?: string;
  subnetFile?: string;
  /** the IPAM data dir; leases live in <dataDir>/<network> */
  dataDir?: string;
  /** the CNI network name (the conflist's "name"), flannel's cbr0 */
  network?: string;
  bridge?: string;
  /** default: flannel.1 if present, else the first flannel.<N> VXLAN device */
  vxlanDevice?: string;
  /** read iptables too (spawns iptables; default true) */
  iptables?: boolean;
  /** read the WireGuard device and key file even when flannel-wg is absent (wireguard backend) */
  wireguard?: boolean;
}

export const DEFAULT_NETWORK_NAME = 'cbr0';
export const DEFAULT_BRIDGE = 'cni0';

export interface SubnetFileState {
  path: string;
  exists: boolean;
  env?: SubnetEnv;
  error?: string;
}

export interface NodeState {
  netns: string | null;
  readAt: string;
  subnetFile: SubnetFileState;
  /** every link with its IPv4 addresses */
  links: LinkInfo[];
  /** IPv4 routes of the main table */
  routes: KernelRoute[];
  bridge: BridgeState | null;
  vxlan: VxlanDeviceState | null;
  /** on the VXLAN device */
  neighbours: KernelNeigh[];
  fdb: KernelFdb[];
  ipam: IpamState;
  sysctl: SysctlState;
  iptables?: IptablesSnapshot;
  /** read when flannel-wg exists or ReadStateOptions.wireguard asks for it */
  wireguard?: WireguardState;
  /** the IPv6 overlay: read when the subnet file has an IPv6 subnet or a flannel-v6 device exists */
  ipv6?: Ipv6State;
}

/** The IPv6 half of a dual-stack or IPv6-only node. */
export interface Ipv6State {
  /** flannel-v6.<VNI>, with its IPv6 addresses */
  vxlan: VxlanDeviceState | null;
  /** IPv6 routes of the main table */
  routes: KernelRoute[];
  /** on flannel-v6, without the kernel's multicast and link-local entries */
  neighbours: KernelNeigh[];
  fdb: KernelFdb[];
  /** `ip6tables -S` of flannel's chains (when iptables is read) */
  ip6tables?: IptablesSnapshot;
}

function isNetnsPath(path: string): boolean {
  try {
    return nl.isNetns(path);
  } catch {
    return false;
  }
}

function readSubnetFile(path: string): SubnetFileState {
  if (!existsSync(path)) return { path, exists: false };
  try {
    // The plugin's guard: a FIFO given as --subnet-file must not block the tool.
    const fd = openRegularSync(path, fsc.O_RDONLY);
    try {
      return { path, exists: true, env: parseSubnetEnv(readFileSync(fd, 'utf8')) };
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    return { path, exists: true, error: (err as Error).message };
  }
}

/** 10.244.1.1/24 → 10.244.1.0/24; what is not an IPv4 CIDR comes back as given, so comparisons with it fail. */
export function subnetOf(cidr: string): string {
  const c = parseCidr(cidr, 4);
  return c ? canonicalCidr(c) : cidr;
}

/** Reads everything; parts that cannot be read are reported inside, not thrown. */
export async function readNodeState(opts: ReadStateOptions = {}): Promise<NodeState> {
  const netns = opts.netns;
  if (netns !== undefined && !isNetnsPath(netns)) {
    throw new Error(`${netns} is not a network namespace (ip netns list shows the names under /var/run/netns)`);
  }
  const ns: nl.InNetns = netns ? { netns } : {};
  const subnetFile = readSubnetFile(opts.subnetFile ?? DEFAULT_SUBNET_FILE);
  const snap = readLinks(ns);
  const bridge = bridgeState(snap, opts.bridge ?? DEFAULT_BRIDGE);
  const { vxlan, neighbours, fdb } = readVxlan(snap, opts.vxlanDevice, ns);
  const ipam = await readIpam(opts.dataDir ?? DEFAULT_DATA_DIR, opts.network ?? DEFAULT_NETWORK_NAME, subnetFile.env, snap.links);
  const rpNames = ['all', 'default', ...(vxlan ? [vxlan.name] : []), ...(bridge ? [bridge.name] : [])];
  const state: NodeState = {
    netns: netns ?? null,
    readAt: new Date().toISOString(),
    subnetFile,
    links: snap.links.map((l) => linkInfo(l, snap.addrs)),
    routes: readMainRoutes(ns, snap.links),
    bridge,
    vxlan,
    neighbours,
    fdb,
    ipam,
    sysctl: readSysctls(ns, rpNames),
  };
  if (opts.iptables !== false) state.iptables = await readIptables(netns);
  if (subnetFile.env?.ipv6Subnet || snap.links.some((l) => /^flannel-v6\.\d+$/.test(l.name))) {
    const snap6 = { links: snap.links, addrs: nl.addrList({ ...ns, family: 'inet6' }).filter((a) => !/^fe[89ab]/i.test(a.cidr)) };
    const v6 = readVxlan(snap6, undefined, ns, 'inet6');
    state.ipv6 = { vxlan: v6.vxlan, routes: readMainRoutes(ns, snap.links, 'inet6'), neighbours: v6.neighbours, fdb: v6.fdb };
    if (opts.iptables !== false) state.ipv6.ip6tables = await readIptables(netns, 'ip6tables');
  }
  const wgLink = snap.links.find((l) => l.name === WIREGUARD_DEVICE);
  if (wgLink || opts.wireguard) state.wireguard = await readWireguard(wgLink ? linkInfo(wgLink, snap.addrs) : null, netns);
  return state;
}

// ---------- views derived from the state (pure) ----------

/** A remote node as flannel.1's own entries describe it. */
export interface KernelPeer {
  subnet: string;
  gateway: string;
  /** MAC of the gateway's neighbour entry */
  mac?: string;
  /** the FDB entry's remote for that MAC */
  publicIP?: string;
  route: boolean;
  neigh: boolean;
  fdb: boolean;
}

/**
 * Joins route → neighbour → FDB on the VXLAN device: one peer per overlay
 * route. Neighbours and FDB entries no route leads to are not peers; the
 * stale-entry check reports them.
 */
export function kernelPeers(state: Pick<NodeState, 'vxlan' | 'routes' | 'neighbours' | 'fdb'>): KernelPeer[] {
  const vx = state.vxlan;
  if (!vx) return [];
  const neighByIp = new Map(state.neighbours.map((n) => [n.ip, n]));
  const fdbByMac = new Map(state.fdb.map((e) => [e.mac, e]));
  const peers: KernelPeer[] = [];
  for (const r of state.routes) {
    if (r.dev !== vx.name || !r.gw || r.dst === 'default') continue;
    const peer: KernelPeer = { subnet: r.dst, gateway: r.gw, route: true, neigh: false, fdb: false };
    const n = neighByIp.get(r.gw);
    if (n) {
      peer.mac = n.mac;
      peer.neigh = n.permanent;
      const f = fdbByMac.get(n.mac);
      if (f) {
        peer.fdb = true;
        peer.publicIP = f.dst;
      }
    }
    peers.push(peer);
  }
  return peers.sort((a, b) => compareAddresses(a.subnet, b.subnet));
}
