// Kernel state for one pod attachment: the node bridge with its gateway
// address, the veth pair, and the pod side's address and routes.
import { statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { PluginLogger } from './log.js';
import * as nl from '../netlink/index.js';
import type { Link } from '../netlink/index.js';
import { cidrOverlaps, formatIp, parseCidr, parseIp, splitCidr } from '../net/ip.js';
import { clip } from '../cni/validate.js';

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
  if (!withV6) return nl.addrList({ dev: name, family: 'inet' }).map((a) => a.cidr);
  // One listing for both families (one shim call per ADD, not two).
  return bridgeAddressesIn(nl.addrList({ dev: name }), true);
}

/** bridgeAddresses, from a listing of both families already made. */
export function bridgeAddressesIn(all: readonly nl.Address[], withV6: boolean): string[] {
  const v4 = all.filter((a) => !isV6(a.cidr));
  const v6 = withV6 ? all.filter((a) => isV6(a.cidr) && a.scope === nl.RouteScope.universe) : [];
  return [...v4, ...v6].map((a) => a.cidr);
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
 * with it disabled), kept across a link down/up, no router advertisements
 * taken (the reference bridge sets accept_ra=0: our routes are the
 * plugin's; in a pod, another pod could send them), and no duplicate address
 * detection. DAD would keep each address "tentative", unusable, for a second
 * or more after link-up; the addresses come from this node's own subnet
 * lease and IPAM store, unique by construction, so DAD can find nothing and
 * only delays the pod (the reference bridge turns it off in the pod too,
 * unless "enabledad").
 */
const V6_READY: readonly (readonly [string, string])[] = [
  ['disable_ipv6', '0'],
  ['accept_ra', '0'],
  ['accept_dad', '0'],
  // IPv6 addresses are flushed when a link goes down, IPv4 ones are not;
  // keep them, as the reference does, so a down/up leaves the link whole.
  ['keep_addr_on_down', '1'],
];

function prepareV6(dev: string, opts: nl.InNetns): void {
  try {
    for (const [name, value] of V6_READY) nl.sysctlSet(`net/ipv6/conf/${dev}/${name}`, value, opts);
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
 * Makes one attachment in a single shim call (one entry into the pod's
 * netns): the veth pair with its peer born in the pod, the host end on the
 * bridge (hairpin, up), the pod end born with the requested MAC if any,
 * then in the pod arp_notify (as the reference bridge plugin: a gratuitous
 * ARP on link-up announces an address that an earlier pod may have held),
 * the addresses, link up and the routes. The caller holds the attachment's
 * lock, so a host veth of this name is a leftover of an earlier, interrupted
 * ADD of the same attachment: it is replaced (with its pod end), so a retry
 * never leaves a stray veth. An interface of this name in the pod that is
 * not that leftover's peer belongs to someone else: code 4, untouched. On
 * failure nothing of the pair is left.
 */
export function attachPod(
  hostName: string,
  netns: string,
  ifname: string,
  mtu: number,
  bridge: string,
  hairpin: boolean,
  cfg: PodAddressing,
): VethResult {
  try {
    const { host, pod } = nl.setupPod({
      netns,
      hostName,
      ifname,
      mtu,
      bridge,
      hairpin,
      sysctls: podSysctls(ifname, cfg.addresses),
      addresses: [...cfg.addresses],
      routes: [...cfg.routes],
      ...(cfg.mac ? { mac: cfg.mac } : {}),
    });
    return { host, pod };
  } catch (err) {
    switch (nl.podFailure(err)) {
      case 'ifname-taken':
        throw ifnameTaken(ifname);
      case 'bridge-missing':
        throw new CniError(ErrorCode.InvalidNetworkConfig, `bridge ${bridge} vanished while attaching ${hostName}`);
      case 'pod-link-gone':
        throw new CniError(ErrorCode.InvalidEnvironment, `interface ${ifname} vanished from ${netns} while it was configured`);
      case 'not-netns':
        throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${clip(netns)} is not a network namespace`);
      default:
        throw err;
    }
  }
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
  /** the runtime's requested MAC for the pod interface (canonical, unicast); absent = the kernel's */
  mac?: string;
}

export interface PodRoute {
  dst: string;
  gw: string;
}

/**
 * The sysctls the pod side gets before its addresses: arp_notify (as the
 * reference bridge plugin: a gratuitous ARP on link-up announces an address
 * that an earlier pod may have held) and, when the pod has an IPv6 address,
 * IPv6 made ready on its loopback (the pod answers ::1 only then, as with the
 * reference) and on its interface (see V6_READY).
 */
function podSysctls(ifname: string, addresses: readonly string[]): { key: string; value: string }[] {
  const sysctls = [{ key: `net/ipv4/conf/${ifname}/arp_notify`, value: '1' }];
  if (addresses.some(isV6)) {
    sysctls.push({ key: 'net/ipv6/conf/lo/disable_ipv6', value: '0' });
    for (const [name, value] of V6_READY) sysctls.push({ key: `net/ipv6/conf/${ifname}/${name}`, value });
  }
  return sysctls;
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
 * Removes an attachment's veth (the pod end goes with it) and, in the same
 * shim call, the host routes `hostRoutes` (capOlderPods' MTU routes). Without the host
 * end (the name derived from this container ID), an interface in the pod is
 * removed only when it carries an address this container leases: DEL of an
 * unknown ID given another pod's netns must not take that pod's interface.
 */
export function deletePodVeth(
  hostName: string,
  netns: string,
  ifname: string,
  leased: readonly string[],
  log: PluginLogger,
  hostRoutes?: { dev: string; dsts: readonly string[] },
): void {
  // One shim call: the host end by name; without it, the pod interface
  // (one netns entry). It returns once the kernel has unlisted the pair,
  // then drops `hostRoutes` where they exist.
  const drop = hostRoutes && hostRoutes.dsts.length > 0 ? { dropRoutesDev: hostRoutes.dev, dropRoutes: [...hostRoutes.dsts] } : {};
  const removed = nl.teardownPod({ netns, hostName, ifname, leased: [...leased], ...drop });
  if (removed === 'host') log.info({ veth: hostName }, 'deleted host veth');
  else if (removed === 'pod') log.info({ netns, ifname }, 'deleted pod interface');
  else if (removed === 'kept') log.info({ netns, ifname }, 'left the pod interface in place: nothing ties it to this container');
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
