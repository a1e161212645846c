// Which host interface carries overlay traffic, chosen as flannel does:
// --iface entries (names or IPs) in order, then --iface-regex entries
// (addresses first, then names), else the interface owning --public-ip, else
// the default-route interface. The matching is pure; only `readInterfaces`
// asks the kernel.
import * as nl from '../netlink/index.js';
import type { ExternalInterface } from './types.js';
import { cidrContainsIp, parseCidr, parseIp } from '../net/ip.js';

export interface ExternalSelection {
  /** interface names or IPv4 addresses, tried in order */
  iface?: string[];
  /** regular expressions over addresses and names, tried in order */
  ifaceRegex?: string[];
  /** the address to advertise instead of the interface address */
  publicIP?: string;
  /** flannel's --iface-can-reach: the interface (and source) the kernel routes this IP through */
  ifaceCanReach?: string;
}

export interface IfaceAddress {
  /** e.g. 192.168.50.2/24 */
  cidr: string;
  /** rtnetlink scope: 0 global, 253 link, 254 host */
  scope: number;
}

/** One interface as the matcher sees it. */
export interface IfaceInfo {
  name: string;
  index: number;
  mtu: number;
  /** IPv4 addresses in kernel order */
  addrs: IfaceAddress[];
}

export interface KernelView {
  interfaces: IfaceInfo[];
  /** link index of the first IPv4 default route, if any */
  defaultRouteIndex?: number;
  /** IPv4 routes of the main table, for --iface-can-reach */
  routes?: { dst: string; linkIndex: number; src?: string; metric: number }[];
}

/**
 * The route the kernel would take to `ip` (longest prefix, then lowest
 * metric, in the main table; policy routing is not consulted), like
 * `ip route get` for the ordinary single-table host.
 */
export function routeTo(view: KernelView, ip: string): { linkIndex: number; src?: string } | undefined {
  const target = parseIp(ip, 4);
  if (target === undefined) return undefined;
  let best: { prefix: number; metric: number; linkIndex: number; src?: string } | undefined;
  for (const r of view.routes ?? []) {
    if (r.linkIndex <= 0) continue;
    const cidr = parseCidr(r.dst === 'default' ? '0.0.0.0/0' : r.dst, 4);
    if (!cidr || !cidrContainsIp(cidr, target)) continue;
    if (!best || cidr.prefix > best.prefix || (cidr.prefix === best.prefix && r.metric < best.metric)) {
      best = { prefix: cidr.prefix, metric: r.metric, linkIndex: r.linkIndex, ...(r.src ? { src: r.src } : {}) };
    }
  }
  return best && { linkIndex: best.linkIndex, ...(best.src ? { src: best.src } : {}) };
}

export class ExternalInterfaceError extends Error {
  override readonly name = 'ExternalInterfaceError';
}

const SCOPE_HOST = 254;
const SCOPE_LINK = 253;

const ipOf = (a: IfaceAddress): string => a.cidr.slice(0, a.cidr.indexOf('/'));

/** Global addresses first, then link-local; never host-scope (loopback) ones. */
function usableAddrs(iface: IfaceInfo): IfaceAddress[] {
  const ok = iface.addrs.filter((a) => a.scope !== SCOPE_HOST && parseCidr(a.cidr, 4) !== undefined);
  return [...ok.filter((a) => a.scope !== SCOPE_LINK), ...ok.filter((a) => a.scope === SCOPE_LINK)];
}

function result(iface: IfaceInfo, addr: IfaceAddress, publicIP: string | undefined): ExternalInterface {
  if (!(iface.mtu > 0)) throw new ExternalInterfaceError(`interface ${iface.name} reports MTU ${iface.mtu}`);
  const ip = ipOf(addr);
  return { name: iface.name, index: iface.index, mtu: iface.mtu, ip, cidr: addr.cidr, publicIP: publicIP ?? ip };
}

/** The interface carrying `ip`, with that address. */
function byAddress(view: KernelView, ip: string): { iface: IfaceInfo; addr: IfaceAddress } | undefined {
  for (const iface of view.interfaces) {
    const addr = iface.addrs.find((a) => ipOf(a) === ip && a.scope !== SCOPE_HOST);
    if (addr) return { iface, addr };
  }
  return undefined;
}

function describeView(view: KernelView): string {
  const parts = view.interfaces.map((i) => {
    const addrs = usableAddrs(i).map(ipOf);
    return addrs.length > 0 ? `${i.name} ${addrs.join(',')}` : `${i.name} (no IPv4)`;
  });
  return parts.length > 0 ? parts.join('; ') : 'none';
}

function compileRegex(text: string): RegExp {
  try {
    return new RegExp(text);
  } catch (err) {
    throw new ExternalInterfaceError(`--iface-regex ${JSON.stringify(text)} is not a valid regular expression: ${(err as Error).message}`);
  }
}

/** Picks the external interface from a snapshot of the kernel's interfaces. */
export function selectExternalInterface(view: KernelView, sel: ExternalSelection): ExternalInterface {
  const publicIP = sel.publicIP;
  if (publicIP !== undefined && parseIp(publicIP, 4) === undefined) {
    throw new ExternalInterfaceError(`--public-ip ${JSON.stringify(publicIP)} is not an IPv4 address`);
  }
  const ifaces = sel.iface ?? [];
  const regexes = sel.ifaceRegex ?? [];
  const tried: string[] = [];

  for (const entry of ifaces) {
    if (parseIp(entry, 4) !== undefined) {
      const hit = byAddress(view, entry);
      if (hit) return result(hit.iface, hit.addr, publicIP);
      tried.push(`--iface ${entry}: no interface has this address`);
      continue;
    }
    const iface = view.interfaces.find((i) => i.name === entry);
    const addr = iface ? usableAddrs(iface)[0] : undefined;
    if (iface && addr) return result(iface, addr, publicIP);
    tried.push(`--iface ${entry}: ${iface ? 'interface has no IPv4 address' : 'no such interface'}`);
  }

  for (const text of regexes) {
    const re = compileRegex(text);
    for (const iface of view.interfaces) {
      const addr = usableAddrs(iface).find((a) => re.test(ipOf(a)));
      if (addr) return result(iface, addr, publicIP);
    }
    for (const iface of view.interfaces) {
      const addr = usableAddrs(iface)[0];
      if (addr && re.test(iface.name)) return result(iface, addr, publicIP);
    }
    tried.push(`--iface-regex ${text}: no interface name or IPv4 address matched`);
  }

  const canReach = sel.ifaceCanReach;
  if (canReach !== undefined) {
    const route = routeTo(view, canReach);
    const iface = route && view.interfaces.find((i) => i.index === route.linkIndex);
    if (iface) {
      const addr = usableAddrs(iface).find((a) => ipOf(a) === route?.src) ?? usableAddrs(iface)[0];
      if (addr) return result(iface, addr, publicIP);
      tried.push(`--iface-can-reach ${canReach}: interface ${iface.name} has no IPv4 address`);
    } else {
      tried.push(`--iface-can-reach ${canReach}: no route to it`);
    }
  }

  if (ifaces.length > 0 || regexes.length > 0 || canReach !== undefined) {
    throw new ExternalInterfaceError(`no usable external interface: ${tried.join('; ')} (interfaces: ${describeView(view)})`);
  }

  if (publicIP !== undefined) {
    const hit = byAddress(view, publicIP);
    if (hit) return result(hit.iface, hit.addr, publicIP);
    throw new ExternalInterfaceError(
      `no interface has the --public-ip ${publicIP} (interfaces: ${describeView(view)}); behind NAT, also give --iface`,
    );
  }

  if (view.defaultRouteIndex === undefined) {
    throw new ExternalInterfaceError(`no IPv4 default route to pick an interface from; give --iface or --iface-regex (interfaces: ${describeView(view)})`);
  }
  const iface = view.interfaces.find((i) => i.index === view.defaultRouteIndex);
  if (!iface) throw new ExternalInterfaceError(`the default route uses link index ${view.defaultRouteIndex}, which was not found`);
  const addr = usableAddrs(iface)[0];
  if (!addr) throw new ExternalInterfaceError(`default-route interface ${iface.name} has no IPv4 address; give --iface`);
  return result(iface, addr, publicIP);
}

/** Reads links, IPv4 addresses and the default route of a netns. */
export function readInterfaces(opts: nl.InNetns = {}): KernelView {
  const links = nl.linkList(opts);
  const addrs = nl.addrList({ ...opts, family: 'inet' });
  const interfaces: IfaceInfo[] = links.map((l) => ({
    name: l.name,
    index: l.index,
    mtu: l.mtu,
    addrs: addrs.filter((a) => a.linkIndex === l.index).map((a) => ({ cidr: a.cidr, scope: a.scope })),
  }));
  const routes = nl.routeList({ ...opts, family: 'inet' });
  const def = routes.find((r) => (r.dst === 'default' || r.dst === '0.0.0.0/0') && r.linkIndex > 0);
  const view: KernelView = {
    interfaces,
    routes: routes
      .filter((r) => r.table === 254 || r.table === 0)
      .map((r) => ({ dst: r.dst, linkIndex: r.linkIndex, metric: r.metric, ...(r.src ? { src: r.src } : {}) })),
  };
  if (def) view.defaultRouteIndex = def.linkIndex;
  return view;
}

export function chooseExternalInterface(opts: ExternalSelection & { netns?: string }): ExternalInterface {
  const { netns, ...sel } = opts;
  return selectExternalInterface(readInterfaces(netns ? { netns } : {}), sel);
}
