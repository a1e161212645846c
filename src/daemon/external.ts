// Which host interface carries overlay traffic, chosen as flannel does:
// --iface entries (names or IPs) in order, then --iface-regex entries
// (addresses first, then names), then --iface-can-reach, else the interface
// owning --public-ip (--public-ipv6), else the default-route interface. The
// primary family (IPv4, or IPv6 in an IPv6-only cluster) picks the
// interface; a dual-stack node then takes that interface's IPv6 address too.
// The matching is pure; only `readInterfaces` asks the kernel.
import * as nl from '../netlink/index.js';
import type { ExternalInterface } from './types.js';
import { cidrContainsIp, parseCidr, parseIp, type Family } from '../net/ip.js';

/** Which families the node needs an address of (net-conf.json's EnableIPv4 / EnableIPv6). */
export interface AddressFamilies {
  ipv4: boolean;
  ipv6: boolean;
}

export interface ExternalSelection {
  /** interface names or IPv4/IPv6 addresses, tried in order */
  iface?: string[];
  /** regular expressions over addresses and names, tried in order */
  ifaceRegex?: string[];
  /** the IPv4 address to advertise instead of the interface address */
  publicIP?: string;
  /** the IPv6 address to advertise instead of the interface's IPv6 address (--public-ipv6) */
  publicIPv6?: string;
  /** flannel's --iface-can-reach: the interface (and source) the kernel routes this IP (v4 or v6) through */
  ifaceCanReach?: string;
  /** default IPv4 only */
  families?: AddressFamilies;
}

export interface IfaceAddress {
  /** e.g. 192.168.50.2/24 or fd00:50::2/64 */
  cidr: string;
  /** rtnetlink scope: 0 global, 253 link, 254 host */
  scope: number;
}

/** One interface as the matcher sees it. */
export interface IfaceInfo {
  name: string;
  index: number;
  mtu: number;
  /** IPv4 and IPv6 addresses in kernel order */
  addrs: IfaceAddress[];
}

export interface KernelView {
  interfaces: IfaceInfo[];
  /** link index of the first IPv4 default route, if any */
  defaultRouteIndex?: number;
  /** link index of the first IPv6 default route, if any */
  defaultV6RouteIndex?: number;
  /** routes of the main table (both families), for --iface-can-reach */
  routes?: { dst: string; linkIndex: number; src?: string; metric: number }[];
}

/**
 * The route the kernel would take to `ip` (longest prefix, then lowest
 * metric, in the main table; policy routing is not consulted), like
 * `ip route get` for the ordinary single-table host. Either family.
 */
export function routeTo(view: KernelView, ip: string): { linkIndex: number; src?: string } | undefined {
  const target = parseIp(ip);
  if (target === undefined) return undefined;
  let best: { prefix: number; metric: number; linkIndex: number; src?: string } | undefined;
  for (const r of view.routes ?? []) {
    if (r.linkIndex <= 0) continue;
    // 'default' is IPv4's (readInterfaces writes ::/0 for IPv6's).
    const cidr = parseCidr(r.dst === 'default' ? '0.0.0.0/0' : r.dst, target.family);
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

/**
 * Global addresses first, then (IPv4 only) link-local; never host-scope
 * (loopback) ones. An IPv6 VTEP needs a global address: a link-local one
 * is only meaningful with a zone, which VXLAN and routes do not carry.
 */
function usableAddrs(iface: IfaceInfo, family: Family = 4): IfaceAddress[] {
  const ok = iface.addrs.filter((a) => a.scope !== SCOPE_HOST && parseCidr(a.cidr, family) !== undefined);
  const global = ok.filter((a) => a.scope !== SCOPE_LINK);
  return family === 4 ? [...global, ...ok.filter((a) => a.scope === SCOPE_LINK)] : global;
}

/** What selection settled on: the interface, and its address of the primary family. */
interface Choice {
  iface: IfaceInfo;
  addr: IfaceAddress;
}

/**
 * The ExternalInterface for a choice. `ipv6Hint` is an IPv6 address the
 * selection named on this interface (--iface <v6>, --iface-can-reach's
 * source), used before the interface's first global one.
 */
function result(choice: Choice, sel: ExternalSelection, families: AddressFamilies, ipv6Hint?: string): ExternalInterface {
  const { iface, addr } = choice;
  if (!(iface.mtu > 0)) throw new ExternalInterfaceError(`interface ${iface.name} reports MTU ${iface.mtu}`);
  const out: ExternalInterface = { name: iface.name, index: iface.index, mtu: iface.mtu, ip: '', cidr: '', publicIP: '' };
  if (families.ipv4) {
    const ip = ipOf(addr);
    out.ip = ip;
    out.cidr = addr.cidr;
    out.publicIP = sel.publicIP ?? ip;
  }
  if (families.ipv6) {
    const v6 = usableAddrs(iface, 6);
    const hinted = [ipv6Hint, sel.publicIPv6].flatMap((h) => (h === undefined ? [] : v6.filter((a) => ipOf(a) === h)));
    const chosen = families.ipv4 ? (hinted[0] ?? v6[0]) : addr;
    if (!chosen) {
      throw new ExternalInterfaceError(
        `interface ${iface.name} has no global IPv6 address, which EnableIPv6 needs for the IPv6 overlay (give --iface naming an interface that has one)`,
      );
    }
    out.ipv6 = ipOf(chosen);
    out.ipv6Cidr = chosen.cidr;
    out.publicIPv6 = sel.publicIPv6 ?? out.ipv6;
  }
  return out;
}

/** The interface carrying `ip` (either family), with that address. */
function byAddress(view: KernelView, ip: string): { iface: IfaceInfo; addr: IfaceAddress } | undefined {
  for (const iface of view.interfaces) {
    const addr = iface.addrs.find((a) => ipOf(a) === ip && a.scope !== SCOPE_HOST);
    if (addr) return { iface, addr };
  }
  return undefined;
}

function describeView(view: KernelView, family: Family): string {
  const parts = view.interfaces.map((i) => {
    const addrs = usableAddrs(i, family).map(ipOf);
    return addrs.length > 0 ? `${i.name} ${addrs.join(',')}` : `${i.name} (no IPv${family})`;
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

const IPV4_ONLY: AddressFamilies = { ipv4: true, ipv6: false };

/** Picks the external interface from a snapshot of the kernel's interfaces. */
export function selectExternalInterface(view: KernelView, sel: ExternalSelection): ExternalInterface {
  const families = sel.families ?? IPV4_ONLY;
  if (!families.ipv4 && !families.ipv6) throw new ExternalInterfaceError('neither IPv4 nor IPv6 is enabled');
  // The primary family picks the interface: IPv4, unless the cluster is IPv6-only.
  const primary: Family = families.ipv4 ? 4 : 6;
  const { publicIP, publicIPv6 } = sel;
  if (publicIP !== undefined && parseIp(publicIP, 4) === undefined) {
    throw new ExternalInterfaceError(`--public-ip ${JSON.stringify(publicIP)} is not an IPv4 address`);
  }
  if (publicIPv6 !== undefined && parseIp(publicIPv6, 6) === undefined) {
    throw new ExternalInterfaceError(`--public-ipv6 ${JSON.stringify(publicIPv6)} is not an IPv6 address`);
  }
  const v = `IPv${primary}`;
  const ifaces = sel.iface ?? [];
  const regexes = sel.ifaceRegex ?? [];
  const tried: string[] = [];
  const done = (choice: Choice, ipv6Hint?: string) => result(choice, sel, families, ipv6Hint);
  /** `iface` with an address of the primary family: `preferred` if it is one of them, else its first. */
  const withPrimary = (iface: IfaceInfo, preferred?: string): Choice | undefined => {
    const addrs = usableAddrs(iface, primary);
    const addr = addrs.find((a) => ipOf(a) === preferred) ?? addrs[0];
    return addr && { iface, addr };
  };

  for (const entry of ifaces) {
    const asIp = parseIp(entry);
    if (asIp !== undefined) {
      const hit = byAddress(view, entry);
      const choice = hit && withPrimary(hit.iface, entry);
      if (choice) return done(choice, asIp.family === 6 ? entry : undefined);
      tried.push(`--iface ${entry}: ${hit ? `interface ${hit.iface.name} has no ${v} address` : 'no interface has this address'}`);
      continue;
    }
    const iface = view.interfaces.find((i) => i.name === entry);
    const choice = iface && withPrimary(iface);
    if (choice) return done(choice);
    tried.push(`--iface ${entry}: ${iface ? `interface has no ${v} address` : 'no such interface'}`);
  }

  const matchFamilies: Family[] = primary === 4 ? (families.ipv6 ? [4, 6] : [4]) : [6];
  for (const text of regexes) {
    const re = compileRegex(text);
    for (const family of matchFamilies) {
      for (const iface of view.interfaces) {
        const addr = usableAddrs(iface, family).find((a) => re.test(ipOf(a)));
        const choice = addr && withPrimary(iface, ipOf(addr));
        if (choice) return done(choice, family === 6 ? ipOf(addr) : undefined);
      }
    }
    for (const iface of view.interfaces) {
      const choice = withPrimary(iface);
      if (choice && re.test(iface.name)) return done(choice);
    }
    tried.push(`--iface-regex ${text}: no interface name or ${matchFamilies.map((f) => `IPv${f}`).join('/')} address matched`);
  }

  const canReach = sel.ifaceCanReach;
  if (canReach !== undefined) {
    const route = routeTo(view, canReach);
    const iface = route && view.interfaces.find((i) => i.index === route.linkIndex);
    if (iface) {
      const choice = withPrimary(iface, route?.src);
      if (choice) return done(choice, route?.src !== undefined && parseIp(route.src, 6) ? route.src : undefined);
      tried.push(`--iface-can-reach ${canReach}: interface ${iface.name} has no ${v} address`);
    } else {
      tried.push(`--iface-can-reach ${canReach}: no route to it`);
    }
  }

  if (ifaces.length > 0 || regexes.length > 0 || canReach !== undefined) {
    throw new ExternalInterfaceError(`no usable external interface: ${tried.join('; ')} (interfaces: ${describeView(view, primary)})`);
  }

  const publicOfPrimary = primary === 4 ? publicIP : publicIPv6;
  if (publicOfPrimary !== undefined) {
    const hit = byAddress(view, publicOfPrimary);
    if (hit) return done(hit);
    const flag = primary === 4 ? '--public-ip' : '--public-ipv6';
    throw new ExternalInterfaceError(
      `no interface has the ${flag} ${publicOfPrimary} (interfaces: ${describeView(view, primary)}); behind NAT, also give --iface`,
    );
  }

  const defaultIndex = primary === 4 ? view.defaultRouteIndex : view.defaultV6RouteIndex;
  if (defaultIndex === undefined) {
    throw new ExternalInterfaceError(`no ${v} default route to pick an interface from; give --iface or --iface-regex (interfaces: ${describeView(view, primary)})`);
  }
  const iface = view.interfaces.find((i) => i.index === defaultIndex);
  if (!iface) throw new ExternalInterfaceError(`the default route uses link index ${defaultIndex}, which was not found`);
  const choice = withPrimary(iface);
  if (!choice) throw new ExternalInterfaceError(`default-route interface ${iface.name} has no ${v} address; give --iface`);
  return done(choice);
}

/** Reads links, IPv4 and IPv6 addresses, main-table routes and the default routes of a netns. */
export function readInterfaces(opts: nl.InNetns = {}): KernelView {
  const links = nl.linkList(opts);
  const addrs = [...nl.addrList({ ...opts, family: 'inet' }), ...nl.addrList({ ...opts, family: 'inet6' })];
  const interfaces: IfaceInfo[] = links.map((l) => ({
    name: l.name,
    index: l.index,
    mtu: l.mtu,
    addrs: addrs.filter((a) => a.linkIndex === l.index).map((a) => ({ cidr: a.cidr, scope: a.scope })),
  }));
  const v4 = nl.routeList({ ...opts, family: 'inet' });
  const v6 = nl.routeList({ ...opts, family: 'inet6' });
  const def = v4.find((r) => (r.dst === 'default' || r.dst === '0.0.0.0/0') && r.linkIndex > 0);
  const def6 = v6.find((r) => (r.dst === 'default' || r.dst === '::/0') && r.linkIndex > 0);
  const main = (r: nl.Route) => r.table === 254 || r.table === 0;
  const entry = (r: nl.Route, dst: string) => ({ dst, linkIndex: r.linkIndex, metric: r.metric, ...(r.src ? { src: r.src } : {}) });
  const view: KernelView = {
    interfaces,
    routes: [...v4.filter(main).map((r) => entry(r, r.dst)), ...v6.filter(main).map((r) => entry(r, r.dst === 'default' ? '::/0' : r.dst))],
  };
  if (def) view.defaultRouteIndex = def.linkIndex;
  if (def6) view.defaultV6RouteIndex = def6.linkIndex;
  return view;
}

export function chooseExternalInterface(opts: ExternalSelection & { netns?: string }): ExternalInterface {
  const { netns, ...sel } = opts;
  return selectExternalInterface(readInterfaces(netns ? { netns } : {}), sel);
}
