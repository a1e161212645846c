// One node's tsflannel state as the kernel and the files hold it right now:
// the subnet file, cni0 and its ports, the VXLAN device with its routes,
// neighbours and FDB, the IPAM leases, the sysctls and the iptables chains.
// Everything is read, nothing is changed. `netns` points the whole read at
// another network namespace, so a test (or an operator on the host) can
// inspect a node namespace from outside.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as nl from '../netlink/index.js';
import { DEFAULT_SUBNET_FILE, parseSubnetEnv, type SubnetEnv } from '../flannel/subnet-env.js';
import { DEFAULT_DATA_DIR, HostLocalIpam } from '../ipam/index.js';
import { hostVethName } from '../plugin/names.js';
import { parseDump, type DumpPeer } from '../daemon/backend/wireguard-peers.js';
import { keyFileFromEnv, publicKeyOf } from '../daemon/backend/wireguard-keys.js';

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

export const DEFAULT_NETWORK_NAME = 'cbr0';
export const DEFAULT_BRIDGE = 'cni0';

export interface LinkInfo {
  name: string;
  index: number;
  type: string;
  mtu: number;
  mac: string;
  up: boolean;
  masterIndex: number;
  /** IPv4 addresses with prefix */
  addresses: string[];
}

export interface BridgePort {
  name: string;
  mtu: number;
  up: boolean;
  hairpin?: boolean;
}

export interface BridgeState extends LinkInfo {
  ports: BridgePort[];
}

export interface VxlanDeviceState extends LinkInfo {
  vni: number;
  /** source address of the tunnels, '' when unset */
  local: string;
  port: number;
  learning: boolean;
  devIndex: number;
  /** name of the underlay device, null when unset or not found */
  dev: string | null;
}

export interface KernelRoute {
  /** CIDR or 'default' */
  dst: string;
  gw?: string;
  dev: string;
  linkIndex: number;
  onlink: boolean;
  metric: number;
  protocol: number;
  scope: number;
}

export interface KernelNeigh {
  ip: string;
  mac: string;
  permanent: boolean;
  state: number;
}

export interface KernelFdb {
  mac: string;
  /** remote VTEP, '' when the entry has none */
  dst: string;
  permanent: boolean;
}

export interface PodAttachment {
  ip: string;
  containerId: string;
  /** absent for legacy id-only lease files */
  ifname?: string;
  /** the host end of the pod's veth as the plugin names it */
  hostVeth?: string;
  vethPresent: boolean;
  /** MTU of the host end; the plugin gives both ends the same MTU */
  vethMtu?: number;
  /** the bridge the host end is a port of */
  vethMaster?: string;
}

export interface IpamState {
  dir: string;
  exists: boolean;
  pods: PodAttachment[];
  /** addresses the node subnet offers in total and still free (needs FLANNEL_SUBNET) */
  total?: number;
  free?: number;
  error?: string;
}

export interface SysctlState {
  /** net.ipv4.ip_forward, null when unreadable */
  ipForward: string | null;
  /** net.ipv4.conf.<name>.rp_filter for all, default, the VXLAN device and the bridge */
  rpFilter: Record<string, number | null>;
}

export interface IptablesSnapshot {
  /** false when iptables could not be run at all */
  ok: boolean;
  error?: string;
  forwardPolicy?: string;
  /** `iptables -S FORWARD` lines */
  forward: string[];
  /** `iptables -S FLANNEL-FWD` lines, null when the chain does not exist */
  flannelFwd: string[] | null;
  /** `iptables -t nat -S FLANNEL-POSTRTG` lines, null when the chain does not exist */
  flannelMasq: string[] | null;
}

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
}

const MAIN_TABLE = 254;

/** The argv prefix that runs a program inside `netns` (nothing when absent). */
export function netnsCommand(netns: string | undefined, argv: string[]): string[] {
  if (!netns) return argv;
  const named = /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(netns);
  if (named) return ['ip', 'netns', 'exec', named[1], ...argv];
  return ['nsenter', `--net=${netns}`, ...argv];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv (no shell), never rejects: a missing binary is code -1. */
export function run(argv: string[], timeoutMs = 10_000): Promise<RunResult> {
  const [file, ...args] = argv;
  return new Promise((resolve) => {
    execFile(file ?? '', args, { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && typeof err.code !== 'number' ? err.message : '') });
    });
  });
}

/**
 * A sysctl under /proc/sys. Read as a path, not through the netlink
 * layer's dotted keys, because interface names such as flannel.1 contain
 * dots. /proc/sys/net shows the reader's netns, hence `cat` inside it.
 */
export async function readSysctl(path: string, netns?: string): Promise<string | null> {
  const file = `/proc/sys/${path}`;
  if (!netns) {
    try {
      return readFileSync(file, 'utf8').trim();
    } catch {
      return null;
    }
  }
  const res = await run(netnsCommand(netns, ['cat', file]));
  return res.code === 0 ? res.stdout.trim() : null;
}

function isNetnsPath(path: string): boolean {
  try {
    return nl.isNetns(path);
  } catch {
    return false;
  }
}

function nsOpts(netns: string | undefined): nl.InNetns {
  return netns ? { netns } : {};
}

function readSubnetFile(path: string): SubnetFileState {
  if (!existsSync(path)) return { path, exists: false };
  try {
    return { path, exists: true, env: parseSubnetEnv(readFileSync(path, 'utf8')) };
  } catch (err) {
    return { path, exists: true, error: (err as Error).message };
  }
}

function linkInfo(l: nl.Link, addrs: nl.Address[]): LinkInfo {
  return {
    name: l.name,
    index: l.index,
    type: l.type,
    mtu: l.mtu,
    mac: l.mac.toLowerCase(),
    up: l.up,
    masterIndex: l.masterIndex,
    addresses: addrs.filter((a) => a.linkIndex === l.index).map((a) => a.cidr),
  };
}

function pickVxlan(links: nl.Link[], wanted: string | undefined): nl.Link | undefined {
  if (wanted) return links.find((l) => l.name === wanted);
  return (
    links.find((l) => l.name === 'flannel.1' && l.type === 'vxlan') ??
    links.find((l) => /^flannel\.\d+$/.test(l.name) && l.type === 'vxlan')
  );
}

async function readIpam(
  dataDir: string,
  network: string,
  env: SubnetEnv | undefined,
  links: nl.Link[],
): Promise<IpamState> {
  const base: IpamState = { dir: `${dataDir.replace(/\/+$/, '')}/${network}`, exists: false, pods: [] };
  if (!existsSync(base.dir)) return base;
  base.exists = true;
  try {
    const rangeSets = env ? [[{ subnet: subnetOf(env.subnet), gateway: env.subnet.split('/')[0] }]] : undefined;
    const ipam = new HostLocalIpam({ dataDir, network, rangeSets, lockTimeoutMs: 5000 });
    const byName = new Map(links.map((l) => [l.name, l]));
    const byIndex = new Map(links.map((l) => [l.index, l]));
    for (const rec of await ipam.list()) {
      const pod: PodAttachment = { ip: rec.ip, containerId: rec.containerId, vethPresent: false };
      if (rec.ifname !== undefined) {
        pod.ifname = rec.ifname;
        pod.hostVeth = hostVethName(rec.containerId, rec.ifname);
        const veth = byName.get(pod.hostVeth);
        if (veth) {
          pod.vethPresent = true;
          pod.vethMtu = veth.mtu;
          const master = byIndex.get(veth.masterIndex);
          if (master) pod.vethMaster = master.name;
        }
      }
      base.pods.push(pod);
    }
    base.pods.sort((a, b) => ipSortKey(a.ip) - ipSortKey(b.ip));
    if (rangeSets) {
      const [stats] = await ipam.stats();
      if (stats) {
        base.total = stats.total;
        base.free = stats.free;
      }
    }
  } catch (err) {
    base.error = (err as Error).message;
  }
  return base;
}

function ipSortKey(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** 10.244.1.1/24 → 10.244.1.0/24 */
export function subnetOf(cidr: string): string {
  const [ip, len] = cidr.split('/');
  const prefix = Number(len);
  const value = ipSortKey(ip ?? '');
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net = (value & mask) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${prefix}`;
}

function chainLines(res: RunResult): string[] | null {
  if (res.code !== 0) return null;
  return res.stdout.split('\n').filter((l) => l.startsWith('-'));
}

/** `iptables -S` for the chains the checks look at. */
export async function readIptables(netns?: string): Promise<IptablesSnapshot> {
  const ipt = (args: string[]) => run(netnsCommand(netns, ['iptables', '-w', '5', ...args]));
  const [forward, fwd, masq] = await Promise.all([
    ipt(['-S', 'FORWARD']),
    ipt(['-S', 'FLANNEL-FWD']),
    ipt(['-t', 'nat', '-S', 'FLANNEL-POSTRTG']),
  ]);
  if (forward.code !== 0) {
    return { ok: false, error: forward.stderr.trim() || `iptables exited ${forward.code}`, forward: [], flannelFwd: null, flannelMasq: null };
  }
  const lines = chainLines(forward) ?? [];
  const policy = /^-P FORWARD (\S+)/m.exec(forward.stdout);
  const snap: IptablesSnapshot = { ok: true, forward: lines.filter((l) => l.startsWith('-A ')), flannelFwd: chainLines(fwd), flannelMasq: chainLines(masq) };
  if (policy?.[1]) snap.forwardPolicy = policy[1];
  if (snap.flannelFwd) snap.flannelFwd = snap.flannelFwd.filter((l) => l.startsWith('-A '));
  if (snap.flannelMasq) snap.flannelMasq = snap.flannelMasq.filter((l) => l.startsWith('-A '));
  return snap;
}

async function readSysctls(netns: string | undefined, names: string[]): Promise<SysctlState> {
  const ipForward = await readSysctl('net/ipv4/ip_forward', netns);
  const rpFilter: Record<string, number | null> = {};
  await Promise.all(
    names.map(async (name) => {
      const v = await readSysctl(`net/ipv4/conf/${name}/rp_filter`, netns);
      rpFilter[name] = v === null || !/^\d+$/.test(v) ? null : Number(v);
    }),
  );
  return { ipForward, rpFilter };
}

/** Reads everything; parts that cannot be read are reported inside, not thrown. */
export async function readNodeState(opts: ReadStateOptions = {}): Promise<NodeState> {
  const netns = opts.netns;
  if (netns !== undefined && !isNetnsPath(netns)) {
    throw new Error(`${netns} is not a network namespace (ip netns list shows the names under /var/run/netns)`);
  }
  const ns = nsOpts(netns);
  const subnetFile = readSubnetFile(opts.subnetFile ?? DEFAULT_SUBNET_FILE);
  const rawLinks = nl.linkList(ns);
  const addrs = nl.addrList({ ...ns, family: 'inet' });
  const links = rawLinks.map((l) => linkInfo(l, addrs));
  const nameOf = new Map(rawLinks.map((l) => [l.index, l.name]));

  const routes: KernelRoute[] = nl
    .routeList({ ...ns, family: 'inet' })
    .filter((r) => r.table === MAIN_TABLE)
    .map((r) => {
      const route: KernelRoute = {
        dst: r.dst,
        dev: nameOf.get(r.linkIndex) ?? '',
        linkIndex: r.linkIndex,
        onlink: r.onlink,
        metric: r.metric,
        protocol: r.protocol,
        scope: r.scope,
      };
      if (r.gw) route.gw = r.gw;
      return route;
    });

  const bridgeName = opts.bridge ?? DEFAULT_BRIDGE;
  const br = rawLinks.find((l) => l.name === bridgeName);
  const bridge: BridgeState | null = br
    ? {
        ...linkInfo(br, addrs),
        ports: rawLinks
          .filter((l) => l.masterIndex === br.index)
          .map((l) => {
            const port: BridgePort = { name: l.name, mtu: l.mtu, up: l.up };
            if (l.hairpin !== undefined) port.hairpin = l.hairpin;
            return port;
          }),
      }
    : null;

  const vx = pickVxlan(rawLinks, opts.vxlanDevice);
  let vxlan: VxlanDeviceState | null = null;
  let neighbours: KernelNeigh[] = [];
  let fdb: KernelFdb[] = [];
  if (vx) {
    const info = vx.vxlan;
    vxlan = {
      ...linkInfo(vx, addrs),
      vni: info?.vni ?? -1,
      local: info?.local ?? '',
      port: info?.port ?? 0,
      learning: info?.learning ?? false,
      devIndex: info?.devIndex ?? 0,
      dev: info && info.devIndex > 0 ? (nameOf.get(info.devIndex) ?? null) : null,
    };
    if (vx.type === 'vxlan') {
      neighbours = nl
        .neighList({ ...ns, dev: vx.name, family: 'inet' })
        .filter((n) => n.ip)
        .map((n) => ({ ip: n.ip as string, mac: n.mac.toLowerCase(), permanent: (n.state & nl.NudState.permanent) !== 0, state: n.state }));
      fdb = nl.fdbList(vx.name, ns).map((e) => ({ mac: e.mac.toLowerCase(), dst: e.ip ?? '', permanent: (e.state & nl.NudState.permanent) !== 0 }));
    }
  }

  const ipam = await readIpam(opts.dataDir ?? DEFAULT_DATA_DIR, opts.network ?? DEFAULT_NETWORK_NAME, subnetFile.env, rawLinks);
  const rpNames = ['all', 'default', ...(vxlan ? [vxlan.name] : []), ...(bridge ? [bridge.name] : [])];
  const sysctl = await readSysctls(netns, rpNames);
  const state: NodeState = {
    netns: netns ?? null,
    readAt: new Date().toISOString(),
    subnetFile,
    links,
    routes,
    bridge,
    vxlan,
    neighbours,
    fdb,
    ipam,
    sysctl,
  };
  if (opts.iptables !== false) state.iptables = await readIptables(netns);
  const wgLink = rawLinks.find((l) => l.name === WIREGUARD_DEVICE);
  if (wgLink || opts.wireguard) state.wireguard = await readWireguard(wgLink ? linkInfo(wgLink, addrs) : null, netns);
  return state;
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
async function readWireguard(link: LinkInfo | null, netns?: string): Promise<WireguardState> {
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
export function kernelPeers(state: NodeState): KernelPeer[] {
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
  return peers.sort((a, b) => ipSortKey(a.subnet.split('/')[0]) - ipSortKey(b.subnet.split('/')[0]));
}

export function linkByName(state: NodeState, name: string | null | undefined): LinkInfo | undefined {
  return name ? state.links.find((l) => l.name === name) : undefined;
}

/** The main table's first IPv4 default route. */
export function defaultRoute(state: NodeState): KernelRoute | undefined {
  return state.routes.find((r) => r.dst === 'default' || r.dst === '0.0.0.0/0');
}

function prefixOf(dst: string): { net: number; prefix: number } | undefined {
  if (dst === 'default') return { net: 0, prefix: 0 };
  const [ip, len] = dst.split('/');
  if (!ip || len === undefined) return undefined;
  return { net: ipSortKey(ip), prefix: Number(len) };
}

/** The route the kernel's main table picks for `ip` (longest prefix, then lowest metric). */
export function routeFor(state: NodeState, ip: string): KernelRoute | undefined {
  const value = ipSortKey(ip);
  let best: { route: KernelRoute; prefix: number } | undefined;
  for (const r of state.routes) {
    const p = prefixOf(r.dst);
    if (!p) continue;
    const mask = p.prefix === 0 ? 0 : (0xffffffff << (32 - p.prefix)) >>> 0;
    if (((value & mask) >>> 0) !== ((p.net & mask) >>> 0)) continue;
    if (!best || p.prefix > best.prefix || (p.prefix === best.prefix && r.metric < best.route.metric)) {
      best = { route: r, prefix: p.prefix };
    }
  }
  return best?.route;
}
