// Links as the checks see them: every link with its IPv4 addresses, the pod
// bridge with its ports, and the VXLAN device with its neighbours and FDB.
import * as nl from '../netlink/index.js';

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

/** The raw links and IPv4 addresses of a netns, read once and shared by the views below. */
export interface LinkSnapshot {
  links: nl.Link[];
  addrs: nl.Address[];
}

export function readLinks(ns: nl.InNetns): LinkSnapshot {
  return { links: nl.linkList(ns), addrs: nl.addrList({ ...ns, family: 'inet' }) };
}

export function linkInfo(l: nl.Link, addrs: nl.Address[]): LinkInfo {
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

export function bridgeState({ links, addrs }: LinkSnapshot, name: string): BridgeState | null {
  const br = links.find((l) => l.name === name);
  if (!br) return null;
  const ports = links
    .filter((l) => l.masterIndex === br.index)
    .map((l) => {
      const port: BridgePort = { name: l.name, mtu: l.mtu, up: l.up };
      if (l.hairpin !== undefined) port.hairpin = l.hairpin;
      return port;
    });
  return { ...linkInfo(br, addrs), ports };
}

export function linkByName({ links }: { links: readonly LinkInfo[] }, name: string | null | undefined): LinkInfo | undefined {
  return name ? links.find((l) => l.name === name) : undefined;
}

/** `wanted`, else flannel.1 if it is a VXLAN device, else the first flannel.<N> VXLAN device. */
function pickVxlan(links: nl.Link[], wanted: string | undefined): nl.Link | undefined {
  if (wanted) return links.find((l) => l.name === wanted);
  return (
    links.find((l) => l.name === 'flannel.1' && l.type === 'vxlan') ??
    links.find((l) => /^flannel\.\d+$/.test(l.name) && l.type === 'vxlan')
  );
}

/** `wanted`, else flannel-v6.1, else the first flannel-v6.<N> VXLAN device (the IPv6 VTEP). */
function pickVxlan6(links: nl.Link[], wanted: string | undefined): nl.Link | undefined {
  if (wanted) return links.find((l) => l.name === wanted);
  return (
    links.find((l) => l.name === 'flannel-v6.1' && l.type === 'vxlan') ??
    links.find((l) => /^flannel-v6\.\d+$/.test(l.name) && l.type === 'vxlan')
  );
}

export interface VxlanRead {
  vxlan: VxlanDeviceState | null;
  /** on the VXLAN device */
  neighbours: KernelNeigh[];
  fdb: KernelFdb[];
}

/** The VXLAN device and the entries that point traffic at remote VTEPs. */
export function readVxlan(snap: LinkSnapshot, wanted: string | undefined, ns: nl.InNetns, family: 'inet' | 'inet6' = 'inet'): VxlanRead {
  const vx = family === 'inet6' ? pickVxlan6(snap.links, wanted) : pickVxlan(snap.links, wanted);
  if (!vx) return { vxlan: null, neighbours: [], fdb: [] };
  const info = vx.vxlan;
  const nameOf = (index: number) => snap.links.find((l) => l.index === index)?.name ?? null;
  const vxlan: VxlanDeviceState = {
    ...linkInfo(vx, snap.addrs),
    vni: info?.vni ?? -1,
    local: info?.local ?? '',
    port: info?.port ?? 0,
    learning: info?.learning ?? false,
    devIndex: info?.devIndex ?? 0,
    dev: info && info.devIndex > 0 ? nameOf(info.devIndex) : null,
  };
  // A device named with --vxlan-device may be of another type: no entries to read then.
  if (vx.type !== 'vxlan') return { vxlan, neighbours: [], fdb: [] };
  const permanent = (state: number) => (state & nl.NudState.permanent) !== 0;
  const neighbours = nl
    .neighList({ ...ns, dev: vx.name, family })
    // the kernel's own IPv6 neighbours (multicast, link-local) are not flannel's
    .filter((n) => n.ip && !(family === 'inet6' && /^(ff|fe[89ab])/i.test(n.ip)))
    .map((n) => ({ ip: n.ip as string, mac: n.mac.toLowerCase(), permanent: permanent(n.state), state: n.state }));
  const fdb = nl.fdbList(vx.name, ns).map((e) => ({ mac: e.mac.toLowerCase(), dst: e.ip ?? '', permanent: permanent(e.state) }));
  return { vxlan, neighbours, fdb };
}
