import { call } from './ffi.js';
import { applied, isErrno, isExists, isNotFound, NetlinkError } from './errors.js';
import type { InNetns, Link, VxlanInfo } from './types.js';

/** The link with this name, or null when there is none. */
export function linkByName(name: string, opts: InNetns = {}): Link | null {
  return findLink({ ...opts, name });
}

export function linkByIndex(index: number, opts: InNetns = {}): Link | null {
  return findLink({ ...opts, index });
}

function findLink(request: InNetns & { name?: string; index?: number }): Link | null {
  try {
    return call('link.get', request) as Link;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export function linkList(opts: InNetns = {}): Link[] {
  return call('link.list', { ...opts }) as Link[];
}

/** Deletes a link; false when it was already gone. */
export function linkDelete(name: string, opts: InNetns = {}): boolean {
  return applied(() => call('link.del', { ...opts, name }), isNotFound);
}

export interface LinkChanges {
  up?: boolean;
  mtu?: number;
  /** bridge to enslave to; '' releases the link from its master */
  master?: string;
  hairpin?: boolean;
  mac?: string;
  newName?: string;
}

/** Applies the given attributes and returns the link as it is afterwards. */
export function linkSet(name: string, changes: LinkChanges, opts: InNetns = {}): Link {
  return call('link.set', { ...opts, name, ...changes }) as Link;
}

export const setUp = (name: string, opts: InNetns = {}): Link => linkSet(name, { up: true }, opts);

export interface BridgeSpec extends InNetns {
  name: string;
  mtu?: number;
}

/**
 * Returns the bridge, creating it when missing, and brings it up. A link of
 * that name that is not a bridge is an error rather than something to reuse.
 */
export function ensureBridge(spec: BridgeSpec): Link {
  const opts: InNetns = spec.netns ? { netns: spec.netns } : {};
  let br = linkByName(spec.name, opts);
  if (!br) {
    try {
      br = call('bridge.add', { ...opts, name: spec.name, mtu: spec.mtu ?? 0 }) as Link;
    } catch (err) {
      // Another plugin process created it between our look and our add.
      if (!isExists(err)) throw err;
      br = linkByName(spec.name, opts);
      if (!br) throw err;
    }
  }
  if (br.type !== 'bridge') {
    throw new NetlinkError('bridge.ensure', `${spec.name} already exists and is a ${br.type}, not a bridge`, 'EEXIST', 17);
  }
  return br.up ? br : setUp(spec.name, opts);
}

export interface VethSpec extends InNetns {
  /** host-side name, created in `netns` (or this netns) */
  name: string;
  /** name of the end created inside `peerNetns` */
  peerName: string;
  peerNetns: string;
  mtu?: number;
  mac?: string;
  peerMac?: string;
}

export interface VethPair {
  host: Link;
  peer: Link;
}

/** Creates a veth pair whose peer is born inside `peerNetns`; both ends stay down. */
export function createVeth(spec: VethSpec): VethPair {
  return call('veth.add', { ...spec }) as VethPair;
}

export interface VxlanSpec extends InNetns {
  name: string;
  vni: number;
  /** local (source) IP: the node's public IP */
  local: string;
  /** underlay device name */
  dev?: string;
  port: number;
  learning: boolean;
  mtu?: number;
  mac?: string;
}

export function createVxlan(spec: VxlanSpec): Link {
  return call('vxlan.add', { ...spec }) as Link;
}

export interface WireguardSpec extends InNetns {
  name: string;
  mtu?: number;
}

/**
 * Creates a kernel WireGuard link (`ip link add NAME type wireguard`). A
 * kernel without WireGuard fails with EOPNOTSUPP: see isWireguardUnsupported.
 */
export function createWireguard(spec: WireguardSpec): Link {
  return call('wireguard.add', { ...spec }) as Link;
}

/** The kernel has no WireGuard (no module, none built in). */
export function isWireguardUnsupported(err: unknown): boolean {
  return isErrno(err, 'EOPNOTSUPP', 'EPROTONOSUPPORT');
}

/** Names the VXLAN attributes of `link` that differ from `spec`, empty when it matches. */
export function vxlanDifferences(link: Link, spec: VxlanSpec, devIndex: number): string[] {
  if (link.type !== 'vxlan' || !link.vxlan) return [`type ${link.type} is not vxlan`];
  const want: VxlanInfo = { vni: spec.vni, local: spec.local, devIndex, port: spec.port, learning: spec.learning };
  const diffs: string[] = [];
  for (const key of Object.keys(want) as (keyof VxlanInfo)[]) {
    if (link.vxlan[key] !== want[key]) diffs.push(`${key} ${String(link.vxlan[key])} != ${String(want[key])}`);
  }
  if (spec.mtu && link.mtu !== spec.mtu) diffs.push(`mtu ${link.mtu} != ${spec.mtu}`);
  return diffs;
}

/**
 * Returns a VXLAN device with exactly the requested attributes: an existing
 * one that matches is adopted (its MAC and neighbours survive), one that
 * differs is deleted and created again. The result is checked once more so
 * a kernel that silently ignored an attribute is reported, not trusted.
 */
export function ensureVxlan(spec: VxlanSpec): { link: Link; recreated: boolean } {
  const opts: InNetns = spec.netns ? { netns: spec.netns } : {};
  const devIndex = spec.dev ? requireLink(spec.dev, opts).index : 0;
  const existing = linkByName(spec.name, opts);
  let recreated = false;
  if (existing && vxlanDifferences(existing, spec, devIndex).length > 0) {
    linkDelete(spec.name, opts);
    recreated = true;
  }
  let link = existing && !recreated ? existing : createVxlan(spec);
  const diffs = vxlanDifferences(link, spec, devIndex);
  if (diffs.length > 0) {
    throw new NetlinkError('vxlan.ensure', `${spec.name} was created with other attributes: ${diffs.join(', ')}`);
  }
  if (!link.up) link = setUp(spec.name, opts);
  return { link, recreated };
}

export function requireLink(name: string, opts: InNetns = {}): Link {
  const link = linkByName(name, opts);
  if (!link) throw new NetlinkError('link.get', `link ${name} not found`, 'ENOENT', 2);
  return link;
}
