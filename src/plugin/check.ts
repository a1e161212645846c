// CHECK: compare the pod's kernel state with what ADD returned, and name
// exactly what drifted.
import type { CniEnv } from '../cni/env.js';
import type { Result } from '../cni/result.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import * as nl from '../netlink/index.js';
import type { HostLocalIpam } from '../ipam/index.js';
import { isDefaultDst, isPeerOf } from './network.js';

export interface CheckInput {
  env: CniEnv;
  prev: Result;
  /** the MAC the runtime asks for (canonical); the pod interface must carry it, whatever prevResult says */
  mac?: string;
  bridge: string;
  /** one per family of the node */
  gatewayCidrs: string[];
  hostVeth: string;
  ipam: HostLocalIpam;
}

function drift(msg: string): CniError {
  return new CniError(ErrorCode.Internal, msg);
}

export async function checkAttachment(input: CheckInput): Promise<void> {
  const { env, prev } = input;
  const opts = { netns: env.netns };
  const ifaces = prev.interfaces ?? [];
  const podIndex = ifaces.findIndex((i) => i.name === env.ifname && i.sandbox !== undefined);
  if (podIndex < 0) throw drift(`prevResult has no interface ${env.ifname} in a sandbox`);
  const want = ifaces[podIndex];
  // Every address must belong to the container-side interface: an index
  // pointing at no interface, or at the host veth, is a broken prevResult.
  (prev.ips ?? []).forEach((ip, i) => {
    if (ip.interface === undefined) return;
    const named = ifaces[ip.interface];
    if (!named) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `prevResult.ips[${i}].interface ${ip.interface} points at no interface (${ifaces.length} listed)`);
    }
    if (ip.interface !== podIndex) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `prevResult.ips[${i}].interface ${ip.interface} is ${named.name}${named.sandbox ? '' : ' on the host'}, not the container's ${env.ifname}`,
      );
    }
  });

  const pod = nl.linkByName(env.ifname, opts);
  if (!pod) throw drift(`interface ${env.ifname} not found in ${env.netns}`);
  if (want.mac && pod.mac !== want.mac) throw drift(`interface ${env.ifname} has MAC ${pod.mac}, expected ${want.mac}`);
  // A chained plugin may pass the result on without the mac, so the request is checked on its own.
  if (input.mac && pod.mac !== input.mac) throw drift(`interface ${env.ifname} has MAC ${pod.mac}, but ${input.mac} was asked for`);
  if (!pod.up) throw drift(`interface ${env.ifname} is down`);

  const have = new Set(nl.addrList({ dev: env.ifname, ...opts }).map((a) => a.cidr));
  for (const ip of prev.ips ?? []) {
    if (!have.has(ip.address)) throw drift(`failed to match addr ${ip.address} on interface ${env.ifname}`);
  }

  const v6 = (prev.routes ?? []).some((r) => r.dst.includes(':'));
  const listed = (table?: number) => [
    ...nl.routeList({ dev: env.ifname, family: 'inet', table, ...opts }),
    ...(v6 ? nl.routeList({ dev: env.ifname, family: 'inet6', table, ...opts }) : []),
  ];
  const main = listed();
  // A later plugin in the chain may have moved the routes to a table of its
  // own (the reference sbr does, and passes the result on unchanged); the
  // spec has CHECK tolerate that, so the other tables are read when the main
  // one lacks a route.
  let everyTable: nl.Route[] | undefined;
  for (const r of prev.routes ?? []) {
    const family = r.dst.includes(':');
    // A default route lists as 'default' (or as 0.0.0.0/0, ::/0); the gateway tells the families apart.
    const matchesDst = (dst: string) =>
      isDefaultDst(r.dst) ? isDefaultDst(dst) && (r.gw === undefined || r.gw.includes(':') === family) : dst === r.dst;
    const matches = (k: nl.Route) => matchesDst(k.dst) && (r.gw === undefined || k.gw === r.gw);
    if (main.some(matches)) continue;
    everyTable ??= listed(-1);
    if (!everyTable.some(matches)) throw drift(`route ${r.dst}${r.gw ? ` via ${r.gw}` : ''} missing in ${env.ifname}'s netns`);
  }

  // The pod is reachable only through an up host end of its own veth, on an
  // up bridge: the spec asks CHECK to fail when the container is known to
  // be unreachable, and a link set down leaves every address in place.
  const host = nl.linkByName(input.hostVeth);
  if (!host) throw drift(`host veth ${input.hostVeth} not found`);
  if (!isPeerOf(pod, host)) throw drift(`interface ${env.ifname} in ${env.netns} is not the peer of host veth ${input.hostVeth}`);
  if (!host.up) throw drift(`host veth ${input.hostVeth} is down`);
  const br = nl.linkByName(input.bridge);
  if (!br) throw drift(`bridge ${input.bridge} not found`);
  if (br.type !== 'bridge') throw drift(`${input.bridge} is a ${br.type} link, not a bridge`);
  if (host.masterIndex !== br.index) throw drift(`host veth ${input.hostVeth} is not attached to ${input.bridge}`);
  if (!br.up) throw drift(`bridge ${input.bridge} is down`);
  const onBridge = new Set(nl.addrList({ dev: input.bridge }).map((a) => a.cidr));
  for (const gw of input.gatewayCidrs) {
    if (!onBridge.has(gw)) throw drift(`bridge ${input.bridge} does not carry the gateway ${gw}`);
  }

  const leases = await input.ipam.find(env.containerId, env.ifname);
  for (const ip of prev.ips ?? []) {
    const bare = ip.address.split('/')[0];
    if (!leases.some((l) => l.ip === bare)) throw drift(`IPAM holds no lease of ${bare} for ${env.containerId}/${env.ifname}`);
  }
}
