// Reading tsflannel's nexthop objects back from a node netns with iproute2,
// for tests that compare `ip route` text: each route's `nhid N` is checked
// against `ip -j nexthop show` (the nexthop exists, is tsflannel's, and has
// the gateway, device and onlink flag the route line shows) and then written
// as `nhid *`, so expectations do not depend on the ids the shim picked.
import { ipJson, inNs } from './netns.js';

/** nh_protocol of tsflannel's nexthops (native/tsfnl/nexthop.go). */
export const TSF_NEXTHOP_PROTOCOL = '157';

export interface IpNexthop {
  id: number;
  gateway?: string;
  dev?: string;
  protocol?: string;
  flags?: string[];
}

/** `ip -j nexthop show` of one family ('-4' or '-6'). */
export function nexthopsOf(ns: string, family: '-4' | '-6' = '-4'): IpNexthop[] {
  return ipJson<IpNexthop[]>(ns, [family, 'nexthop', 'show']);
}

/** tsflannel's nexthops as `via GW dev D [onlink]` lines, sorted. */
export function tsfNexthopLines(ns: string, family: '-4' | '-6' = '-4'): string[] {
  return nexthopsOf(ns, family)
    .filter((n) => n.protocol === TSF_NEXTHOP_PROTOCOL)
    .map((n) => `via ${n.gateway} dev ${n.dev}${n.flags?.includes('onlink') ? ' onlink' : ''}`)
    .sort();
}

/**
 * `ip route show` lines (args e.g. ['-4', 'route', 'show']), trimmed and
 * sorted, with every `nhid N` verified against the nexthop table and
 * replaced by `nhid *`. Throws when a route names a nexthop that is not
 * tsflannel's or says something else than the nexthop.
 */
export function routesResolved(ns: string, args: string[] = ['-4', 'route', 'show']): string[] {
  const family = args.includes('-6') ? '-6' : '-4';
  const text = inNs(ns, 'ip', args);
  const byId = new Map(nexthopsOf(ns, family).map((n) => [n.id, n]));
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const m = / nhid (\d+) via (\S+) dev (\S+)/.exec(line);
      if (!m) {
        if (/ nhid /.test(line)) throw new Error(`route without gateway through a nexthop: ${line}`);
        return line;
      }
      const nh = byId.get(Number(m[1]));
      if (!nh) throw new Error(`route ${line} names nexthop ${m[1]}, which does not exist`);
      if (nh.protocol !== TSF_NEXTHOP_PROTOCOL) throw new Error(`route ${line} goes through nexthop ${m[1]} of protocol ${nh.protocol ?? 'unspec'}`);
      const nhOnlink = nh.flags?.includes('onlink') === true;
      if (nh.gateway !== m[2] || nh.dev !== m[3] || nhOnlink !== / onlink\b/.test(line)) {
        throw new Error(`route ${line} disagrees with nexthop ${JSON.stringify(nh)}`);
      }
      return line.replace(/ nhid \d+ /, ' nhid * ');
    })
    .sort();
}

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * Matches, in `ip route` text, the line of a route to `dst` through a
 * nexthop object via `gw` on `dev` (onlink unless `onlink` is false):
 * `10.244.2.0/24 nhid 7 via 10.244.2.0 dev flannel.1 onlink`.
 */
export function nexthopRoute(dst: string, gw: string, dev: string, onlink = true): RegExp {
  return new RegExp(`^${esc(dst)} nhid \\d+ via ${esc(gw)} dev ${esc(dev)}${onlink ? ' onlink' : ''}\\s*$`, 'm');
}
