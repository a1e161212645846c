// Kernel state for one pod attachment: the node bridge with its gateway
// address, the veth pair, and the pod side's address and routes.
import { statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { PluginLogger } from './log.js';
import * as nl from '../netlink/index.js';
import type { Link } from '../netlink/index.js';
import { cidrOverlaps, formatIp, parseCidr, parseIp, splitCidr } from '../net/ip.js';

/**
 * Ensures the bridge exists, is up and carries every gateway in
 * `gatewayCidrs` (one per family of the node). A different IPv4 address on
 * it, or a global IPv6 address overlapping an IPv6 gateway's subnet, means
 * the node's subnet changed under running pods: that is refused with the fix
 * spelled out, unless forceAddress is set (the reference bridge's rule).
 */
export function ensureBridge(name: string, mtu: number, gatewayCidrs: readonly string[], forceAddress: boolean, log: PluginLogger): Link {
  const found = nl.linkByName(name);
  if (found && found.type !== 'bridge') {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      `"bridge" names ${name}, which is a ${found.type} link, not a bridge`,
      `set "bridge" to another name, or remove the link ("ip link delete ${name}") if nothing uses it`,
    );
  }
  const existed = found !== null;
  let br = nl.ensureBridge({ name, mtu });
  if (!existed) {
    // Pin the bridge MAC to itself so it does not follow the lowest port MAC
    // as pods come and go, which would flush the neighbours' ARP caches.
    br = nl.linkSet(name, { mac: br.mac });
    log.info({ bridge: name, mtu }, 'created bridge');
  } else if (br.mtu !== mtu) {
    // FLANNEL_MTU changed (the underlay MTU was raised, or Backend.MTU):
    // new pods get the new MTU, and the bridge must carry it too. Set
    // explicitly, the bridge no longer shrinks to its smallest port, so
    // pods made before keep their own MTU and keep working.
    const was = br.mtu;
    br = nl.linkSet(name, { mtu });
    log.warn({ bridge: name, from: was, to: mtu }, 'bridge MTU follows the node MTU');
  }
  const withV6 = gatewayCidrs.some(isV6);
  const have = bridgeAddresses(name, withV6);
  const missing = gatewayCidrs.filter((g) => !have.includes(g));
  if (missing.length === 0) return br;
  // Once per bridge, not per ADD: a bridge carrying its IPv6 gateway has them.
  if (missing.some(isV6)) prepareV6(name, {});
  const others = have.filter((a) => !gatewayCidrs.includes(a) && clashes(a, gatewayCidrs));
  if (others.length > 0) {
    if (!forceAddress) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `failed to set bridge addr: "${name}" already has an IP address different from ${missing.join(', ')} (${others.join(', ')}); ` +
          `the node's subnet changed: once its old pods are gone run "ip link delete ${name}", or set "forceAddress": true`,
      );
    }
    for (const old of others) nl.addrDelete(name, old);
    log.warn({ bridge: name, removed: others }, 'replaced stale bridge address');
  }
  for (const gw of missing) nl.addrAdd(name, gw);
  return br;
}

function isV6(cidr: string): boolean {
  return cidr.includes(':');
}

/** The bridge's IPv4 addresses and, when asked, its global IPv6 ones (a link-local fe80:: is the kernel's own). */
function bridgeAddresses(name: string, withV6: boolean): string[] {
  const v4 = nl.addrList({ dev: name, family: 'inet' }).map((a) => a.cidr);
  if (!withV6) return v4;
  const v6 = nl.addrList({ dev: name, family: 'inet6' }).filter((a) => a.scope === nl.RouteScope.universe);
  return [...v4, ...v6.map((a) => a.cidr)];
}

/**
 * Whether an address already on the bridge stands in a gateway's way: any
 * other IPv4 address (one subnet per bridge, as the reference), or an IPv6
 * address overlapping an IPv6 gateway's subnet (IPv6 links carry many).
 */
function clashes(addr: string, gateways: readonly string[]): boolean {
  if (!isV6(addr)) return gateways.some((g) => !isV6(g));
  const a = parseCidr(addr);
  return gateways.some((g) => {
    const c = parseCidr(g);
    return a !== undefined && c !== undefined && cidrOverlaps(a, c);
  });
}

/**
 * IPv6 on a link before its first IPv6 address: enabled (a netns may start
 * with it disabled), kept across a link down/up, no router advertisements taken (the reference bridge
 * sets accept_ra=0: our routes are the plugin's), and no duplicate address
 * detection. DAD would keep each address "tentative", unusable, for a second
 * or more after link-up; the addresses come from this node's own subnet
 * lease and IPAM store, unique by construction, so DAD can find nothing and
 * only delays the pod (the reference bridge turns it off in the pod too,
 * unless "enabledad").
 */
function prepareV6(dev: string, opts: nl.InNetns): void {
  try {
    nl.sysctlSet(`net/ipv6/conf/${dev}/disable_ipv6`, '0', opts);
    nl.sysctlSet(`net/ipv6/conf/${dev}/accept_ra`, '0', opts);
    nl.sysctlSet(`net/ipv6/conf/${dev}/accept_dad`, '0', opts);
    // IPv6 addresses are flushed when a link goes down, IPv4 ones are not;
    // keep them, as the reference does, so a down/up leaves the link whole.
    nl.sysctlSet(`net/ipv6/conf/${dev}/keep_addr_on_down`, '1', opts);
  } catch (err) {
    if (nl.isNotFound(err) && nl.linkByName(dev, opts)) {
      throw new CniError(
        ErrorCode.InvalidEnvironment,
        `IPv6 is disabled in this kernel (no /proc/sys/net/ipv6/conf/${dev}), but the node has an IPv6 pod subnet`,
        'boot without ipv6.disable=1, or run the agent without EnableIPv6',
      );
    }
    throw err;
  }
}

/** Addresses on an existing bridge other than the gateways: a node subnet the node no longer has. */
export function staleBridgeAddresses(name: string, gatewayCidrs: readonly string[]): string[] {
  return bridgeAddresses(name, gatewayCidrs.some(isV6)).filter((a) => !gatewayCidrs.includes(a));
}

export interface VethResult {
  host: Link;
  pod: Link;
}

/**
 * Creates the pair for one attachment. The caller holds the attachment's
 * lock, so a host veth of this name is a leftover of an earlier, interrupted
 * ADD of the same attachment: it is removed (with its pod end) first, so a
 * retry never leaves a stray veth. An interface of this name in the pod that
 * is not that leftover's peer belongs to someone else: code 4, untouched.
 */
export function createPodVeth(
  hostName: string,
  netns: string,
  ifname: string,
  mtu: number,
  bridge: string,
  hairpin: boolean,
): VethResult {
  const leftover = nl.linkByName(hostName);
  const inPod = nl.linkByName(ifname, { netns });
  if (inPod && !(leftover && isPeerOf(inPod, leftover))) throw ifnameTaken(ifname);
  if (leftover) nl.linkDelete(hostName);
  let pair: nl.VethPair;
  try {
    pair = nl.createVeth({ name: hostName, peerName: ifname, peerNetns: netns, mtu });
  } catch (err) {
    if (nl.isExists(err) && nl.linkByName(ifname, { netns })) throw ifnameTaken(ifname);
    throw err;
  }
  let host: Link;
  try {
    host = nl.linkSet(hostName, { master: bridge, hairpin, up: true });
  } catch (err) {
    if (nl.isNotFound(err) && !nl.linkByName(bridge)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `bridge ${bridge} vanished while attaching ${hostName}`);
    }
    throw err;
  }
  return { host, pod: pair.peer };
}

function ifnameTaken(ifname: string): CniError {
  return new CniError(ErrorCode.InvalidEnvironment, `container already has an interface named ${ifname}`);
}

/** The two ends of one veth pair: each names the other as its peer (IFLA_LINK). */
export function isPeerOf(pod: Link, host: Link): boolean {
  return pod.type === 'veth' && host.type === 'veth' && pod.parentIndex === host.index && host.parentIndex === pod.index;
}

/** What the pod side gets: its addresses of either family, and its routes, each with its gateway. */
export interface PodAddressing {
  /** the pod addresses with the subnet prefix, e.g. 10.244.1.5/24 and fd00:10:244:1::5/64 */
  addresses: string[];
  routes: PodRoute[];
}

export interface PodRoute {
  dst: string;
  gw: string;
}

/**
 * Configures the pod interface inside the pod netns: arp_notify (as the
 * reference bridge plugin: a gratuitous ARP on link-up announces an address
 * that an earlier pod may have held), IPv6 made ready when the pod has an
 * IPv6 address (see prepareV6), the addresses, link up, routes.
 */
export function configurePod(netns: string, ifname: string, cfg: PodAddressing): Link {
  const opts = { netns };
  try {
    nl.sysctlSet(`net/ipv4/conf/${ifname}/arp_notify`, '1', opts);
    if (cfg.addresses.some(isV6)) {
      // The pod's own loopback answers ::1 only with IPv6 on (the reference enables it too).
      nl.sysctlSet('net/ipv6/conf/lo/disable_ipv6', '0', opts);
      prepareV6(ifname, opts);
    }
    for (const address of cfg.addresses) nl.addrAdd(ifname, address, opts);
    const link = nl.setUp(ifname, opts);
    applyPodRoutes(netns, ifname, cfg.routes);
    return link;
  } catch (err) {
    if (nl.isNotFound(err) && !nl.linkByName(ifname, opts)) {
      throw new CniError(ErrorCode.InvalidEnvironment, `interface ${ifname} vanished from ${netns} while it was configured`);
    }
    throw err;
  }
}

/** A default route of either family, in any of the ways it is written. */
export function isDefaultDst(dst: string): boolean {
  return dst === '0.0.0.0/0' || dst === '::/0' || dst === 'default';
}

/** The pod's routes; replace makes a repeat harmless. The gateway gives a default route its family. */
export function applyPodRoutes(netns: string, ifname: string, routes: readonly PodRoute[]): void {
  for (const route of routes) {
    const spec: nl.RouteSpec = { netns, dev: ifname, gw: route.gw };
    if (!isDefaultDst(route.dst)) spec.dst = route.dst;
    nl.routeReplace(spec);
  }
}

/**
 * Removes an attachment's veth; the pod end goes with it. Without the host
 * end (the name derived from this container ID), an interface in the pod is
 * removed only when it carries an address this container leases: DEL of an
 * unknown ID given another pod's netns must not take that pod's interface.
 */
export function deletePodVeth(hostName: string, netns: string, ifname: string, leased: readonly string[], log: PluginLogger): void {
  if (nl.linkDelete(hostName)) {
    log.info({ veth: hostName }, 'deleted host veth');
    return;
  }
  if (!netns || !safeIsNetns(netns)) return;
  const pod = nl.linkByName(ifname, { netns });
  if (!pod || pod.type !== 'veth') return;
  const addrs = nl.addrList({ dev: ifname, netns }).map((a) => a.cidr.split('/')[0]);
  if (leased.some((ip) => addrs.includes(ip))) {
    nl.linkDelete(ifname, { netns });
    log.info({ netns, ifname }, 'deleted pod interface');
    return;
  }
  log.info({ netns, ifname }, 'left the pod interface in place: nothing ties it to this container');
}

export function safeIsNetns(path: string): boolean {
  try {
    // A netns handle stats as a regular file; anything else is refused before
    // the open in isNetns, which would block forever on a FIFO.
    if (!statSync(path).isFile()) return false;
    return nl.isNetns(path);
  } catch {
    return false;
  }
}

/** One family's gateway and cluster network, as podRoutes needs them. */
export interface RouteFamily {
  family: 4 | 6;
  clusterNetwork: string;
  gateway: string;
}

/**
 * The route list a pod gets, per family of the node: the cluster network,
 * plus a default route (0.0.0.0/0, ::/0) when asked; then the extra routes,
 * each via the gateway of its own family unless it names one.
 */
export function podRoutes(families: readonly RouteFamily[], isDefaultGateway: boolean, extra: { dst: string; gw?: string }[]): PodRoute[] {
  const routes: PodRoute[] = [];
  for (const f of families) {
    routes.push({ dst: splitCidr(f.clusterNetwork).network, gw: f.gateway });
    if (isDefaultGateway) routes.push({ dst: f.family === 4 ? '0.0.0.0/0' : '::/0', gw: f.gateway });
  }
  extra.forEach((r, i) => {
    const family = isV6(r.dst) ? 6 : 4;
    const own = families.find((f) => f.family === family);
    if (!own) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `ipam.routes[${i}].dst ${r.dst} is ${family === 4 ? 'IPv4' : 'IPv6'}, but this node has no pod subnet of that family`,
      );
    }
    // Written as the kernel lists them, so CHECK compares like with like.
    const gw = r.gw ? parseIp(r.gw) : undefined;
    routes.push({ dst: splitCidr(r.dst).network, gw: gw ? formatIp(gw) : own.gateway });
  });
  return routes;
}
