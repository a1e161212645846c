// Kernel reads and writes both backends share: owned routes, the report,
// and a log of skipped leases that only speaks when something changes.
import pino, { type Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { ExternalInterface, Lease, ReconcileReport } from '../types.js';
import { cidrContainsCidr, cidrOverlaps, parseCidr, parseIp, sameNetwork, type Cidr, type Family } from '../../net/ip.js';
import {
  describeLease,
  ownedRoute,
  type CurrentNexthop,
  type CurrentRoute,
  type DesiredRoute,
  type PlanContext,
  type Skipped,
} from './plan.js';

/** Used when no logger is given; bound to stderr anyway, since stdout belongs to CNI results. */
export const silentLogger: Logger = pino({ level: 'silent' }, pino.destination({ fd: 2, sync: true }));

/**
 * Leaves `cidr` as the only address of its family on an overlay device
 * (flannel puts `<subnet network>/32`, or `/128` on flannel-v6, there as the
 * source for host → remote pod traffic). IPv6 link-local addresses stay:
 * the kernel owns them.
 */
export function ensureOnlyAddress(dev: string, cidr: string, opts: nl.InNetns, log: Logger): void {
  const v6 = cidr.includes(':');
  const addrs = nl.addrList({ ...opts, dev, family: v6 ? 'inet6' : 'inet' });
  for (const a of addrs) {
    if (a.cidr === cidr || (v6 && /^fe[89ab][0-9a-f]:/i.test(a.cidr))) continue;
    log.info({ address: a.cidr }, 'removing foreign address from the device');
    nl.addrDelete(dev, a.cidr, opts);
  }
  if (!addrs.some((a) => a.cidr === cidr)) nl.addrAdd(dev, cidr, opts);
}

export function emptyReport(): ReconcileReport {
  return { added: 0, updated: 0, removed: 0, programmed: 0, errors: [] };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function netnsOpts(netns: string | undefined): nl.InNetns {
  return netns ? { netns } : {};
}

export function requireCidr(text: string, what: string, family: Family = 4): Cidr {
  const c = parseCidr(text, family);
  if (!c) throw new Error(`${what} ${JSON.stringify(text)} is not an IPv${family} CIDR`);
  return c;
}

/** Checks the parts of `ext` (a family's view of it) a backend relies on, once, at prepare time. */
export function checkExternal(ext: ExternalInterface, family: Family = 4): Cidr {
  const cidr = requireCidr(ext.cidr, 'external interface address', family);
  if (parseIp(ext.ip, family) === undefined) throw new Error(`external interface IP ${JSON.stringify(ext.ip)} is not IPv${family}`);
  if (parseIp(ext.publicIP, family) === undefined) throw new Error(`public IP ${JSON.stringify(ext.publicIP)} is not IPv${family}`);
  if (!(ext.mtu > 0)) throw new Error(`external interface ${ext.name} has MTU ${ext.mtu}`);
  return cidr;
}

export function planContext(network: Cidr, own: Cidr, ext: ExternalInterface, extCidr: Cidr): PlanContext {
  return { network, ownSubnet: own, extCidr, ownIPs: [...new Set([ext.ip, ext.publicIP])] };
}

/** Owned routes leaving through `dev`, tagged with which side they are on, and the nexthop objects there. */
export function readOwnedRoutes(
  dev: string,
  via: CurrentRoute['via'],
  network: Cidr,
  opts: nl.InNetns,
): OwnedRoutes {
  const devs: RouteDevices = via === 'overlay' ? { overlay: dev, underlay: '' } : { underlay: dev };
  const family = network.ip.family === 6 ? 'inet6' : 'inet';
  const state = nl.dumpTables({ ...opts, routeDevs: [dev], family, nexthops: true });
  const nexthops = sideNexthops(state.nexthops, devs);
  return { routes: ownedRoutes(state.routes, devs, network, nexthops), nexthops, nexthopsUnsupported: state.nexthopsUnsupported };
}

export interface OwnedRoutes {
  routes: CurrentRoute[];
  /** every nexthop object on our devices (ours and others': the diff tells them apart) */
  nexthops: CurrentNexthop[];
  nexthopsUnsupported: boolean;
}

function sideOf(dev: string, devs: RouteDevices): CurrentRoute['via'] | undefined {
  return dev === devs.overlay ? 'overlay' : dev === devs.underlay ? 'underlay' : undefined;
}

/** The nexthop objects one state dump returned, tagged with their side. */
export function sideNexthops(nexthops: readonly nl.StateNexthop[], devs: RouteDevices): CurrentNexthop[] {
  const out: CurrentNexthop[] = [];
  for (const n of nexthops) {
    const via = sideOf(n.dev, devs);
    if (!via) continue;
    const cur: CurrentNexthop = { id: n.id, via, onlink: n.onlink ?? false, protocol: n.protocol };
    if (n.gw) cur.gw = n.gw;
    out.push(cur);
  }
  return out;
}

/**
 * The owned routes among those one state dump returned for our devices. A
 * route through a nexthop object takes its gateway and onlink flag from the
 * nexthop when the kernel leaves them out (nexthop_compat_mode=0).
 */
export function ownedRoutes(routes: readonly nl.StateRoute[], devs: RouteDevices, network: Cidr, nexthops: readonly CurrentNexthop[] = []): CurrentRoute[] {
  // Built only if the kernel leaves a route's gateway out (nexthop_compat_mode=0).
  let byId: Map<number, CurrentNexthop> | undefined;
  const out: CurrentRoute[] = [];
  for (const r of routes) {
    const via = sideOf(r.dev, devs);
    if (!via) continue;
    const cur: CurrentRoute = { dst: r.dst, via, onlink: r.onlink ?? false, metric: r.metric ?? 0, protocol: r.protocol };
    if (r.gw) cur.gw = r.gw;
    if (r.nhid !== undefined) {
      cur.nhid = r.nhid;
      const nh = r.gw ? undefined : (byId ??= new Map(nexthops.map((n) => [n.id, n]))).get(r.nhid);
      if (nh) {
        if (nh.gw) cur.gw = nh.gw;
        cur.onlink = nh.onlink;
      }
    }
    if (ownedRoute(cur, network)) out.push(cur);
  }
  return out;
}

export interface RouteDevices {
  overlay?: string;
  underlay: string;
}

function devFor(via: CurrentRoute['via'], devs: RouteDevices): string {
  if (via === 'overlay') {
    if (!devs.overlay) throw new Error('no overlay device');
    return devs.overlay;
  }
  return devs.underlay;
}

/**
 * The batch entry deleting a route read from the kernel (exactly that one:
 * gateway and metric included; a route through a nexthop object by its id,
 * since the kernel matches those by id only).
 */
export function routeDelEntry(r: CurrentRoute, devs: RouteDevices): nl.RouteEntry {
  const e: nl.RouteEntry = { kind: 'route.del', dst: r.dst, dev: devFor(r.via, devs) };
  if (r.metric) e.metric = r.metric;
  if (r.nhid !== undefined) e.nhid = r.nhid;
  else if (r.gw) e.gw = r.gw;
  return e;
}

/**
 * The batch entry deleting the route we wrote for `route` (edge path: the
 * id is not known here; the shim finds it by our nexthop for the gateway,
 * or deletes a plain route when there is none).
 */
export function plannedRouteDelEntry(route: DesiredRoute, devs: RouteDevices, nexthop: boolean): nl.RouteEntry {
  const e: nl.RouteEntry = { kind: 'route.del', dst: route.dst, gw: route.gw, dev: devFor(route.via, devs) };
  if (route.via === 'overlay') e.onlink = true;
  if (nexthop) e.nexthop = true;
  return e;
}

/**
 * `ip route replace`: overlay routes are onlink because the gateway is a /32
 * on a remote VTEP. With `nexthop`, through our nexthop object for the
 * gateway (`ip nexthop add id I via GW dev D onlink; ip route replace DST nhid I`).
 */
export function routeReplaceEntry(route: DesiredRoute, devs: RouteDevices, group?: number, nexthop = false): nl.RouteEntry {
  const e: nl.RouteEntry = { kind: 'route.replace', dst: route.dst, gw: route.gw, dev: devFor(route.via, devs) };
  if (route.via === 'overlay') e.onlink = true;
  if (nexthop) e.nexthop = true;
  if (group) e.group = group;
  return e;
}

/** The batch entry deleting our nexthop object for a route's gateway (the kernel takes its routes along). */
export function nexthopDelEntry(n: CurrentNexthop | DesiredRoute, devs: RouteDevices): nl.NexthopEntry {
  const onlink = 'id' in n ? n.onlink : n.via === 'overlay';
  const e: nl.NexthopEntry = { kind: 'nexthop.del', dev: devFor(n.via, devs) };
  if ('id' in n) e.nhid = n.id;
  else {
    e.gw = n.gw;
    if (onlink) e.onlink = true;
  }
  return e;
}

/**
 * What happens to a report when a batch entry finishes: `ok` on success,
 * `fail` with the error (a delete that found nothing is neither).
 */
export interface BatchOutcome {
  ok(report: ReconcileReport): void;
  fail(report: ReconcileReport, err: nl.NetlinkError): void;
}

/**
 * Applies entries in one shim call and hands every outcome to its owner.
 * A call that fails as a whole (netns gone, shim error) fails every entry.
 */
export function applyEntries(
  entries: readonly nl.BatchEntry[],
  outcomes: readonly BatchOutcome[],
  opts: nl.InNetns,
  report: ReconcileReport,
): { nexthopsUnsupported: boolean } {
  if (entries.length === 0) return { nexthopsUnsupported: false };
  let failures: nl.BatchFailure[];
  let nexthopsUnsupported = false;
  try {
    const res = nl.applyBatch(entries, opts);
    failures = res.failures;
    nexthopsUnsupported = res.nexthopsUnsupported;
  } catch (err) {
    const e = err instanceof nl.NetlinkError ? err : new nl.NetlinkError('batch.apply', errorText(err));
    failures = entries.map((_, index) => ({ index, error: e }));
  }
  const failed = new Map(failures.map((f) => [f.index, f.error]));
  outcomes.forEach((o, i) => {
    const err = failed.get(i);
    if (err === undefined) o.ok(report);
    else o.fail(report, err);
  });
  return { nexthopsUnsupported };
}

/**
 * Whether a backend writes its routes through nexthop objects: yes until
 * the kernel says it has none, which is logged once.
 */
export class NexthopSupport {
  private on = true;

  constructor(private readonly log: Logger) {}

  get enabled(): boolean {
    return this.on;
  }

  /** Records what a dump or a batch found out about the kernel. */
  note(unsupported: boolean): void {
    if (!unsupported || !this.on) return;
    this.on = false;
    this.log.warn('the kernel has no nexthop objects (Linux < 5.3?): writing plain gateway routes, slow to program at thousands of peers');
  }
}

/** The outcome of deleting something read from the kernel: gone already is fine. */
export function removal(what: string, counts = true): BatchOutcome {
  return {
    ok: (report) => {
      if (counts) report.removed++;
    },
    fail: (report, err) => {
      if (!nl.isNotFound(err)) report.errors.push(`remove ${what}: ${errorText(err)}`);
    },
  };
}

/**
 * Logs a skipped lease once per distinct reason rather than on every
 * periodic reconcile, and adds error skips to the report every time.
 */
export class SkipLog {
  private seen = new Set<string>();

  constructor(private readonly log: Logger) {}

  record(skipped: readonly Skipped[], report: ReconcileReport): void {
    const now = new Set<string>();
    for (const s of skipped) {
      const who = describeLease(s.lease);
      const key = `${who}|${s.reason}`;
      now.add(key);
      if (s.error) report.errors.push(`lease ${who}: ${s.reason}`);
      if (this.seen.has(key)) continue;
      const fields = { subnet: s.lease.subnet, node: s.lease.nodeName, publicIP: s.lease.publicIP };
      if (s.error) this.log.warn(fields, `refusing lease ${who}: ${s.reason}`);
      else this.log.info(fields, `skipping lease ${who}: ${s.reason}`);
    }
    this.seen = now;
  }
}

/** What withoutServedSubnets needs of a backend. */
export interface ServedSubnetCheck {
  family: Family;
  /** the cluster network: only addresses inside it can collide with a lease */
  network: Cidr;
  /** our own subnet: a lease overlapping it is the planner's to refuse */
  own: Cidr;
  nsOpts: nl.InNetns;
  log: Logger;
}

/**
 * Holds back the leases on a subnet an interface of this node still serves.
 * A route to such a subnet, through the underlay (host-gw) or flannel.1
 * (VXLAN, `via <subnet>.0 onlink`), has the kernel's key of the connected
 * route of that address (same prefix, table, metric 0), so writing it
 * replaces that route, and removing it later does not bring it back: cni0
 * keeps the old gateway while pods of the old subnet live, and the node
 * would lose them. The lease is this node's own from before an address
 * change (host-gw leases carry nothing but the address, so nothing else
 * tells it apart), or another node's on the subnet this node is moving off.
 * It is routed once the address is gone. Only an address of the SAME
 * network counts: a wider one (docker0's 172.17.0.1/16 in a 172.16.0.0/12
 * cluster, an underlay address inside the cluster network) keeps its route
 * while the /24 wins for the lease's pods, and an overlay device's own
 * /32 (or /128) makes no subnet route at all. Returns `remote` itself when
 * nothing is held back.
 */
export function withoutServedSubnets(remote: Lease[], c: ServedSubnetCheck): { usable: Lease[]; skipped: Skipped[] } {
  let served: { cidr: string; net: Cidr; linkIndex: number }[];
  try {
    served = nl
      .addrList({ ...c.nsOpts, family: c.family === 6 ? 'inet6' : 'inet' })
      .flatMap((a) => {
        const net = parseCidr(a.cidr, c.family);
        // Our own subnet's addresses (cni0's gateway, flannel.1's .0/32) can
        // only match leases that overlap it, which the planner refuses anyway:
        // left out here, the usual node has none left, and an event at
        // 50,000 leases is not held up by a look at every lease.
        return net && cidrContainsCidr(c.network, net) && !cidrOverlaps(c.own, net) ? [{ cidr: a.cidr, net, linkIndex: a.linkIndex }] : [];
      });
  } catch (err) {
    c.log.warn({ err: errorText(err) }, 'could not list the node\'s addresses');
    return { usable: remote, skipped: [] };
  }
  if (served.length === 0) return { usable: remote, skipped: [] };
  const usable: Lease[] = [];
  const held: { lease: Lease; on: (typeof served)[number] }[] = [];
  for (const lease of remote) {
    // remote leases are this family's views already
    const net = parseCidr(lease.subnet, c.family);
    const on = net && served.find((s) => sameNetwork(s.net, net));
    if (!on || cidrOverlaps(c.own, net)) usable.push(lease);
    else held.push({ lease, on });
  }
  if (held.length === 0) return { usable: remote, skipped: [] };
  // Device names for the message, read only when a lease is held back (rare): no link dump on other passes.
  let names: Map<number, string>;
  try {
    names = new Map(nl.linkList(c.nsOpts).map((l) => [l.index, l.name]));
  } catch (err) {
    c.log.warn({ err: errorText(err) }, 'could not list the node\'s addresses');
    return { usable: remote, skipped: [] };
  }
  const skipped: Skipped[] = held.map(({ lease, on }) => ({
    lease,
    reason: `subnet is still served on this node by ${names.get(on.linkIndex) ?? `link ${on.linkIndex}`} (${on.cidr}); routed once that address is gone (this node's own subnet before an address or subnet change?)`,
    error: true,
  }));
  return { usable, skipped };
}

export function leaseError(report: ReconcileReport, lease: Lease, what: string, err: unknown): void {
  report.errors.push(`lease ${describeLease(lease)}: ${what}: ${errorText(err)}`);
}
