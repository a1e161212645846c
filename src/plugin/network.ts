// Kernel state for one pod attachment: the node bridge with its gateway
// address, the veth pair, and the pod side's address and routes.
import { statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { PluginLogger } from './log.js';
import * as nl from '../netlink/index.js';
import type { Link } from '../netlink/index.js';
import { splitCidr } from './cidr.js';

/**
 * Ensures the bridge exists, is up and carries `gatewayCidr`. A different
 * IPv4 address on it means the node's subnet changed under running pods:
 * that is refused with the fix spelled out, unless forceAddress is set.
 */
export function ensureBridge(name: string, mtu: number, gatewayCidr: string, forceAddress: boolean, log: PluginLogger): Link {
  const existed = nl.linkByName(name) !== null;
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
        ErrorCode.Internal,
        `failed to set bridge addr: "${name}" already has an IP address different from ${gatewayCidr} (${others.join(', ')})`,
        `the node's subnet changed; once its old pods are gone run "ip link delete ${name}", or set "forceAddress": true`,
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
 * Creates the pair for one attachment. A leftover pair of an earlier,
 * interrupted ADD for the same container and ifname is removed first, so a
 * retry never leaves a stray veth.
 */
export function createPodVeth(
  hostName: string,
  netns: string,
  ifname: string,
  mtu: number,
  bridge: string,
  hairpin: boolean,
): VethResult {
  nl.linkDelete(hostName);
  let pair: nl.VethPair;
  try {
    pair = nl.createVeth({ name: hostName, peerName: ifname, peerNetns: netns, mtu });
  } catch (err) {
    if (nl.isExists(err) && nl.linkByName(ifname, { netns })) {
      throw new CniError(ErrorCode.Internal, `container already has an interface named ${ifname}`);
    }
    throw err;
  }
  const host = nl.linkSet(hostName, { master: bridge, hairpin, up: true });
  return { host, pod: pair.peer };
}

export interface PodAddressing {
  /** the pod address with the subnet prefix, e.g. 10.244.1.5/24 */
  address: string;
  gateway: string;
  routes: { dst: string; gw?: string }[];
}

/** Brings the pod interface up with its address and routes, inside the pod netns. */
export function configurePod(netns: string, ifname: string, cfg: PodAddressing): Link {
  const opts = { netns };
  const link = nl.setUp(ifname, opts);
  nl.addrAdd(ifname, cfg.address, opts);
  for (const route of cfg.routes) {
    const spec: nl.RouteSpec = { ...opts, dev: ifname, gw: route.gw ?? cfg.gateway };
    if (route.dst !== '0.0.0.0/0') spec.dst = route.dst;
    nl.routeReplace(spec);
  }
  return link;
}

/** Removes an attachment's veth; the pod end goes with it. */
export function deletePodVeth(hostName: string, netns: string, ifname: string, log: PluginLogger): void {
  if (nl.linkDelete(hostName)) {
    log.info({ veth: hostName }, 'deleted host veth');
    return;
  }
  // The host end may be unknown (created under another name); remove the
  // pod end directly when the namespace still exists.
  if (netns && safeIsNetns(netns)) {
    const pod = nl.linkByName(ifname, { netns });
    if (pod && pod.type === 'veth') nl.linkDelete(ifname, { netns });
  }
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
