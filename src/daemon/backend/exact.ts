// The exact pass's diff, text first. Every line the kernel dumped is
// compared, every pass, with the line its desired entry prints when it is
// right in the kernel (rendered from the plans: src/netlink/batch.ts).
// Equal lines need nothing and are never decoded. What is left (the dump
// lines no desired entry printed, the desired entries the dump lacks, and
// every entry sharing a key with one of those) is decoded and goes through
// the diffs of plan.ts, which keep every rule: ownership, plain routes
// converted to nexthop routes, duplicates, orphaned nexthops, foreign
// entries. Each of those diffs decides per key (a route's destination, a
// neighbour's address, an FDB entry's MAC, a nexthop's side and gateway),
// so the diff of the left-over keys is the whole diff's, minus keys whose
// entries are all equal, which diff to nothing. At 50,000 peers this
// replaces decoding and hashing 200,000 entries by one string compare each.
import * as nl from '../../netlink/index.js';
import type { Cidr } from '../../net/ip.js';
import {
  diffFdb,
  diffNeighs,
  diffNexthops,
  diffRoutes,
  NEXTHOP_PROTOCOL,
  perNexthop,
  type CurrentNeigh,
  type CurrentNexthop,
  type DesiredFdb,
  type DesiredNeigh,
  type DesiredRoute,
  type FdbDiff,
  type NeighDiff,
  type NexthopDiff,
  type PerNexthop,
  type RouteDiff,
  type RouteForm,
} from './plan.js';
import { ownedRoutes, sideNexthops, type RouteDevices } from './common.js';

/** What text matching left for the diff. */
export interface LineMatch {
  /** desired entries (indices, ascending) without an equal dump line, or sharing a key with an unmatched entry */
  desired: number[];
  /** dump lines equal to no desired entry's, or sharing a key with an unmatched entry */
  lines: string[];
}

/**
 * Pairs each dump line with the desired entry of the same key whose
 * rendered line (`render(i)`) it equals, each used once. Then every key of a
 * left-over entry or line takes the entries of both sides with that key
 * along, so a key is either all matched or all left. Lookups go by key: the
 * desired keys are the plans' own strings (their hashes cached across
 * passes), and a line is rendered only for the entry its key names.
 */
export function matchLines(
  count: number,
  wantKey: (i: number) => string,
  render: (i: number) => string | undefined,
  dump: readonly string[],
  lineKey: (line: string) => string,
  comparable: (line: string) => string = (line) => line,
): LineMatch {
  const index = new Map<string, number>();
  const dirty = new Set<string>();
  for (let i = 0; i < count; i++) {
    const k = wantKey(i);
    // two desired entries of one key: neither is matched here
    if (index.has(k)) dirty.add(k);
    else index.set(k, i);
  }
  // where in the dump each desired entry's equal line is (-1: none)
  const at = new Int32Array(count).fill(-1);
  const left: number[] = [];
  for (let n = 0; n < dump.length; n++) {
    const line = dump[n]!;
    const k = lineKey(line);
    const i = index.get(k);
    if (i !== undefined && at[i] === -1 && comparable(line) === render(i)) {
      at[i] = n;
    } else {
      left.push(n);
      dirty.add(k);
    }
  }
  const desired: number[] = [];
  for (let i = 0; i < count; i++) if (at[i] === -1) dirty.add(wantKey(i));
  if (dirty.size > 0) {
    let taken = false;
    for (let i = 0; i < count; i++) {
      if (at[i] === -1) desired.push(i);
      else if (dirty.has(wantKey(i))) {
        desired.push(i);
        left.push(at[i]!);
        taken = true;
      }
    }
    // The diffs read duplicates in dump order (the first exact route of a
    // destination is the one kept): lines taken back go to their places.
    if (taken) left.sort((x, y) => x - y);
  }
  const lines = left.map((n) => dump[n]!);
  return { desired, lines };
}

/** A line's first space-separated field. */
function firstField(line: string): string {
  const end = line.indexOf(' ');
  return end < 0 ? line : line.slice(0, end);
}

/** A line's second space-separated field. */
function secondField(line: string): string {
  const start = line.indexOf(' ') + 1;
  if (start === 0) return '';
  const end = line.indexOf(' ', start);
  return end < 0 ? line.slice(start) : line.slice(start, end);
}

export interface ExactInput {
  /** desired routes (plan order), and the neighbours and FDB entries the plans have */
  routes: readonly DesiredRoute[];
  neighs: readonly DesiredNeigh[];
  fdb: readonly DesiredFdb[];
  text: nl.TableText;
  /** the dump request's routeDevs (positions in the route and nexthop lines) */
  routeDevs: readonly string[];
  devs: RouteDevices;
  network: Cidr;
  /** metric of the desired routes (baseMetric) */
  metric: number;
  /** routes go through nexthop objects */
  nexthop: boolean;
  /** tables whose diff is already known to be empty: not read */
  known: { routes: boolean; neighs: boolean; fdb: boolean };
  /** neighbours the kernel keeps on the device by itself (never ours) */
  kernelNeigh?: (ip: string) => boolean;
}

export interface ExactDiff {
  routes: RouteDiff;
  /** with nexthop routes: our nexthops to reuse and to delete */
  nexthops?: NexthopDiff;
  neighs: NeighDiff;
  fdb: FdbDiff;
}

/** The exact pass's diff of every table, the same as decoding the dump and diffing it all. */
export function exactDiff(x: ExactInput): ExactDiff {
  let routes: RouteDiff = { write: [], remove: [] };
  let nexthops: NexthopDiff | undefined;
  if (!x.known.routes) ({ routes, nexthops } = routeTables(x));
  const neighs = x.known.neighs ? { write: [], remove: [] } : neighTable(x);
  const fdb = x.known.fdb ? { add: [], remove: [], moved: new Set<string>() } : fdbTable(x);
  return { routes, ...(nexthops ? { nexthops } : {}), neighs, fdb };
}

function positions(x: ExactInput): { overlay: number; underlay: number } {
  return { overlay: x.devs.overlay === undefined ? -1 : x.routeDevs.indexOf(x.devs.overlay), underlay: x.routeDevs.indexOf(x.devs.underlay) };
}

function routeTables(x: ExactInput): { routes: RouteDiff; nexthops?: NexthopDiff } {
  const pos = positions(x);
  let nexthops: NexthopDiff | undefined;
  if (x.nexthop) {
    nexthops = nexthopTable(x, pos) ?? diffNexthops(x.routes, sideNexthops(nl.decodeNexthops(x.text.nexthops ?? '', x.routeDevs), x.devs));
  }
  const use = nexthops?.use;
  const render = (i: number): string | undefined => {
    const r = x.routes[i]!;
    const nhid = use ? use[r.via].get(r.gw) : undefined;
    // a nexthop route without our nexthop for its gateway is never right
    return use && nhid === undefined ? undefined : nl.routeLine(pos[r.via], r.dst, r.gw, r.via === 'overlay', x.metric, nl.ROUTE_PROTOCOL, nhid);
  };
  const m = matchLines(x.routes.length, (i) => x.routes[i]!.dst, render, nl.dumpLines(x.text.routes), secondField);
  const decoded = nl.decodeRouteLines(m.lines, x.routeDevs);
  // With nexthop_compat_mode=0 a route names no gateway: ownedRoutes takes
  // it from the route's nexthop, which may be among the matched ones.
  const lookup = decoded.some((r) => r.nhid !== undefined && !r.gw) ? sideNexthops(nl.decodeNexthops(x.text.nexthops ?? '', x.routeDevs), x.devs) : [];
  const current = ownedRoutes(decoded, x.devs, x.network, lookup);
  const form: RouteForm = nexthops ? { kind: 'nexthop', nexthops: nexthops.use } : { kind: 'plain' };
  return { routes: diffRoutes(m.desired.map((i) => x.routes[i]!), current, x.metric, form), ...(nexthops ? { nexthops } : {}) };
}

/**
 * Our nexthops: the dump lists them by id, so the first line printed for a
 * (side, gateway) the routes want, onlink on the overlay and not on the
 * underlay, is the one diffNexthops keeps (the lowest id). Every other
 * line, and every line sharing a (side, gateway) with one of those, goes to
 * diffNexthops. Undefined when the dump is not in id order (then the whole
 * table is diffed).
 */
function nexthopTable(x: ExactInput, pos: { overlay: number; underlay: number }): NexthopDiff | undefined {
  const wanted = { overlay: new Set<string>(), underlay: new Set<string>() };
  for (const r of x.routes) wanted[r.via].add(r.gw);
  const taken = perNexthop<number>();
  const ov = String(pos.overlay);
  const un = String(pos.underlay);
  const ovTail = ` o ${NEXTHOP_PROTOCOL}`;
  const unTail = ` - ${NEXTHOP_PROTOCOL}`;
  const left: string[] = [];
  let lastId = -1;
  for (const line of nl.dumpLines(x.text.nexthops ?? '')) {
    const s1 = line.indexOf(' ');
    const s2 = line.indexOf(' ', s1 + 1);
    const s3 = line.indexOf(' ', s2 + 1);
    if (s1 < 0 || s2 < 0 || s3 < 0) {
      left.push(line);
      continue;
    }
    const id = Number(line.slice(s1 + 1, s2));
    if (!(id > lastId)) return undefined;
    lastId = id;
    const p = line.slice(0, s1);
    const via = p === ov ? 'overlay' : p === un ? 'underlay' : undefined;
    const tail = via === 'overlay' ? ovTail : unTail;
    const gw = line.slice(s2 + 1, s3);
    if (via !== undefined && line.length - s3 === tail.length && line.endsWith(tail) && wanted[via].has(gw) && !taken[via].has(gw)) {
      taken[via].set(gw, id);
    } else left.push(line);
  }
  // Left-over lines of a (side, gateway) whose nexthop was matched take it along.
  const leftCurrent = sideNexthops(nl.decodeNexthopLines(left, x.routeDevs), x.devs);
  const extra: CurrentNexthop[] = [];
  for (const n of leftCurrent) {
    const id = n.gw === undefined ? undefined : taken[n.via].get(n.gw);
    if (id === undefined) continue;
    extra.push({ id, via: n.via, gw: n.gw, onlink: n.via === 'overlay', protocol: NEXTHOP_PROTOCOL });
    taken[n.via].delete(n.gw!);
  }
  const desired = x.routes.filter((r) => !taken[r.via].has(r.gw));
  const rest = diffNexthops(desired, extra.length ? [...leftCurrent, ...extra] : leftCurrent);
  return { use: merge(taken, rest.use), remove: rest.remove };
}

function merge(into: PerNexthop<number>, from: PerNexthop<number>): PerNexthop<number> {
  for (const [gw, id] of from.overlay) into.overlay.set(gw, id);
  for (const [gw, id] of from.underlay) into.underlay.set(gw, id);
  return into;
}

function neighTable(x: ExactInput): NeighDiff {
  const render = (i: number): string => nl.neighLine(x.neighs[i]!.ip, x.neighs[i]!.mac, nl.NudState.permanent);
  const m = matchLines(x.neighs.length, (i) => x.neighs[i]!.ip, render, nl.dumpLines(x.text.neighs), firstField);
  const current: CurrentNeigh[] = [];
  for (const n of nl.decodeNeighLines(m.lines, false)) {
    if (!n.ip || x.kernelNeigh?.(n.ip)) continue;
    current.push({ ip: n.ip, mac: n.mac, permanent: (n.state & nl.NudState.permanent) !== 0 });
  }
  return diffNeighs(m.desired.map((i) => x.neighs[i]!), current);
}

function fdbTable(x: ExactInput): FdbDiff {
  const render = (i: number): string => nl.fdbEntryText(x.fdb[i]!.mac, x.fdb[i]!.dst);
  // diffFdb compares MACs in lower case: so do the keys
  const m = matchLines(x.fdb.length, (i) => x.fdb[i]!.mac.toLowerCase(), render, nl.dumpLines(x.text.fdb), (line) => firstField(line).toLowerCase(), nl.fdbLineEntry);
  const current = nl.decodeNeighLines(m.lines, true).map((e) => ({ mac: e.mac.toLowerCase(), dst: e.ip ?? '' }));
  return diffFdb(m.desired.map((i) => x.fdb[i]!), current);
}
