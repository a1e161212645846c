// Kernel state for one pod attachment: the node bridge with its gateway
// address, the veth pair, and the pod side's address and routes.
import { statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { PluginLogger } from './log.js';
import * as nl from '../netlink/index.js';
import type { Link } from '../netlink/index.js';
import { splitCidr } from './cidr.js';
import { clip } from '../cni/validate.js';

/**
 * Ensures the bridge exists, is up and carries `gatewayCidr`. A different
 * IPv4 address on it means the node's subnet changed under running pods:
 * that is refused with the fix spelled out, unless forceAddress is set.
 */
export function ensureBridge(name: string, mtu: number, gatewayCidr: string, forceAddress: boolean, log: PluginLogger): Link {
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
  const addrs = nl.addrList({ dev: name, family: 'inet' }).map((a) => a.cidr);
  if (addrs.includes(gatewayCidr)) return br;
  const others = addrs.filter((a) => a !== gatewayCidr);
  if (others.length > 0) {
    if (!forceAddress) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `failed to set bridge addr: "${name}" already has an IP address different from ${gatewayCidr} (${others.join(', ')}); ` +
          `the node's subnet changed: once its old pods are gone run "ip link delete ${name}", or set "forceAddress": true`,
      );
    }
    for (const old of others) nl.addrDelete(name, old);
    log.warn({ bridge: name, removed: others }, 'replaced stale bridge address');
  }
  nl.addrAdd(name, gatewayCidr);
  return br;
}

/** IPv4 addresses on an existing bridge other than the gateway: a node subnet the node no longer has. */
export function staleBridgeAddresses(name: string, gatewayCidr: string): string[] {
  return nl
    .addrList({ dev: name, family: 'inet' })
    .map((a) => a.cidr)
    .filter((a) => a !== gatewayCidr);
}

export interface VethResult {
  host: Link;
  pod: Link;
}

/**
 * Makes one attachment in a single shim call (one entry into the pod's
 * netns): the veth pair with its peer born in the pod, the host end on the
 * bridge (hairpin, up), then in the pod arp_notify (as the reference bridge
 * plugin: a gratuitous ARP on link-up announces an address that an earlier
 * pod may have held), the addresses, link up and the routes. The caller
 * holds the attachment's lock, so a host veth of this name is a leftover of
 * an earlier, interrupted ADD of the same attachment: it is replaced (with
 * its pod end), so a retry never leaves a stray veth. An interface of this
 * name in the pod that is not that leftover's peer belongs to someone else:
 * code 4, untouched. On failure nothing of the pair is left.
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
      sysctls: [{ key: `net/ipv4/conf/${ifname}/arp_notify`, value: '1' }],
      addresses: [cfg.address],
      routes: podRouteSpecs(cfg),
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

export interface PodAddressing {
  /** the pod address with the subnet prefix, e.g. 10.244.1.5/24 */
  address: string;
  gateway: string;
  routes: { dst: string; gw?: string }[];
}

/** The pod's routes as the shim takes them: a route without a gateway goes via the pod's gateway. */
function podRouteSpecs(cfg: PodAddressing): nl.PodRoute[] {
  return cfg.routes.map((r) => ({ dst: r.dst, gw: r.gw ?? cfg.gateway }));
}

/** The pod's routes; replace makes a repeat harmless. */
export function applyPodRoutes(netns: string, ifname: string, cfg: PodAddressing): void {
  for (const route of cfg.routes) {
    const spec: nl.RouteSpec = { netns, dev: ifname, gw: route.gw ?? cfg.gateway };
    if (route.dst !== '0.0.0.0/0') spec.dst = route.dst;
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
  // One shim call: the host end by name; without it, the pod interface
  // (one netns entry). It returns once the kernel has unlisted the pair.
  const removed = nl.teardownPod({ netns, hostName, ifname, leased: [...leased] });
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

/** The route list a pod gets: the cluster network, plus a default route when asked. */
export function podRoutes(
  clusterNetwork: string,
  gateway: string,
  isDefaultGateway: boolean,
  extra: { dst: string; gw?: string }[],
): { dst: string; gw: string }[] {
  const routes = [{ dst: splitCidr(clusterNetwork).network, gw: gateway }];
  if (isDefaultGateway) routes.push({ dst: '0.0.0.0/0', gw: gateway });
  for (const r of extra) routes.push({ dst: r.dst, gw: r.gw ?? gateway });
  return routes;
}
