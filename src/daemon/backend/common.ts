// Kernel reads and writes both backends share: owned routes, the report,
// and a log of skipped leases that only speaks when something changes.
import pino, { type Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { ExternalInterface, Lease, ReconcileReport } from '../types.js';
import { parseCidr, parseIp, type Cidr } from '../../net/ip.js';
import {
  describeLease,
  ownedRoute,
  type CurrentRoute,
  type DesiredRoute,
  type PlanContext,
  type Skipped,
} from './plan.js';

/** Used when no logger is given; bound to stderr anyway, since stdout belongs to CNI results. */
export const silentLogger: Logger = pino({ level: 'silent' }, pino.destination({ fd: 2, sync: true }));

/**
 * Leaves `cidr` as the only IPv4 address of an overlay device (flannel puts
 * `<subnet network>/32` there as the source for host → remote pod traffic).
 */
export function ensureOnlyAddress(dev: string, cidr: string, opts: nl.InNetns, log: Logger): void {
  const addrs = nl.addrList({ ...opts, dev, family: 'inet' });
  for (const a of addrs) {
    if (a.cidr === cidr) continue;
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

export function requireCidr(text: string, what: string): Cidr {
  const c = parseCidr(text, 4);
  if (!c) throw new Error(`${what} ${JSON.stringify(text)} is not an IPv4 CIDR`);
  return c;
}

/** Checks the parts of `ext` a backend relies on, once, at prepare time. */
export function checkExternal(ext: ExternalInterface): Cidr {
  const cidr = requireCidr(ext.cidr, 'external interface address');
  if (parseIp(ext.ip, 4) === undefined) throw new Error(`external interface IP ${JSON.stringify(ext.ip)} is not IPv4`);
  if (parseIp(ext.publicIP, 4) === undefined) throw new Error(`public IP ${JSON.stringify(ext.publicIP)} is not IPv4`);
  if (!(ext.mtu > 0)) throw new Error(`external interface ${ext.name} has MTU ${ext.mtu}`);
  return cidr;
}

export function planContext(network: Cidr, own: Cidr, ext: ExternalInterface, extCidr: Cidr): PlanContext {
  return { network, ownSubnet: own, extCidr, ownIPs: [...new Set([ext.ip, ext.publicIP])] };
}

/** Owned routes leaving through `dev`, tagged with which side they are on. */
export function readOwnedRoutes(
  dev: string,
  via: CurrentRoute['via'],
  network: Cidr,
  opts: nl.InNetns,
): CurrentRoute[] {
  const devs: RouteDevices = via === 'overlay' ? { overlay: dev, underlay: '' } : { underlay: dev };
  return ownedRoutes(nl.dumpTables({ ...opts, routeDevs: [dev] }).routes, devs, network);
}

/** The owned routes among those one state dump returned for our devices. */
export function ownedRoutes(routes: readonly nl.StateRoute[], devs: RouteDevices, network: Cidr): CurrentRoute[] {
  const out: CurrentRoute[] = [];
  for (const r of routes) {
    const via: CurrentRoute['via'] | undefined = r.dev === devs.overlay ? 'overlay' : r.dev === devs.underlay ? 'underlay' : undefined;
    if (!via) continue;
    const cur: CurrentRoute = { dst: r.dst, via, onlink: r.onlink ?? false, metric: r.metric ?? 0, protocol: r.protocol };
    if (r.gw) cur.gw = r.gw;
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

/** The batch entry deleting a route read from the kernel (exactly that one: gateway and metric included). */
export function routeDelEntry(r: CurrentRoute, devs: RouteDevices): nl.RouteEntry {
  const e: nl.RouteEntry = { kind: 'route.del', dst: r.dst, dev: devFor(r.via, devs) };
  if (r.metric) e.metric = r.metric;
  if (r.gw) e.gw = r.gw;
  return e;
}

/** `ip route replace`: overlay routes are onlink because the gateway is a /32 on a remote VTEP. */
export function routeReplaceEntry(route: DesiredRoute, devs: RouteDevices, group?: number): nl.RouteEntry {
  const e: nl.RouteEntry = { kind: 'route.replace', dst: route.dst, gw: route.gw, dev: devFor(route.via, devs) };
  if (route.via === 'overlay') e.onlink = true;
  if (group) e.group = group;
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
): void {
  if (entries.length === 0) return;
  let failures: nl.BatchFailure[];
  try {
    failures = nl.applyBatch(entries, opts).failures;
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

export function leaseError(report: ReconcileReport, lease: Lease, what: string, err: unknown): void {
  report.errors.push(`lease ${describeLease(lease)}: ${what}: ${errorText(err)}`);
}
