// The main table's IPv4 routes, and the lookups the checks make on them.
import * as nl from '../netlink/index.js';
import { cidrContainsIp, parseCidr, parseIp } from '../net/ip.js';

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

const MAIN_TABLE = 254;

/** Routes of the main table (IPv4 unless `family` says inet6), each with its device's name ('' when the link is unknown). */
export function readMainRoutes(ns: nl.InNetns, links: readonly nl.Link[], family: 'inet' | 'inet6' = 'inet'): KernelRoute[] {
  const nameOf = new Map(links.map((l) => [l.index, l.name]));
  return nl
    .routeList({ ...ns, family })
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
}

/** The main table's first IPv4 default route. */
export function defaultRoute({ routes }: { routes: readonly KernelRoute[] }): KernelRoute | undefined {
  return routes.find((r) => r.dst === 'default' || r.dst === '0.0.0.0/0');
}

/** The route the kernel's main table picks for `ip` (longest prefix, then lowest metric). */
export function routeFor({ routes }: { routes: readonly KernelRoute[] }, ip: string): KernelRoute | undefined {
  const value = parseIp(ip, 4);
  if (value === undefined) return undefined;
  let best: { route: KernelRoute; prefix: number } | undefined;
  for (const r of routes) {
    const dst = parseCidr(r.dst === 'default' ? '0.0.0.0/0' : r.dst, 4);
    if (!dst || !cidrContainsIp(dst, value)) continue;
    if (!best || dst.prefix > best.prefix || (dst.prefix === best.prefix && r.metric < best.route.metric)) {
      best = { route: r, prefix: dst.prefix };
    }
  }
  return best?.route;
}
