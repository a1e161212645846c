// Pure decisions shared by the backends: which kernel entries the leases
// call for, and the difference between that and what the kernel holds. No
// I/O here, so every rule about ownership and replacement is unit-tested.
import type { Lease } from '../types.js';

import { canonicalCidr, cidrContainsCidr, cidrContainsIp, cidrOverlaps, formatIp, isAligned, networkAddress, parseCidr, parseIp, sameNetwork, type Cidr, type Ip } from '../../net/ip.js';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Lower-case unicast MAC, or undefined when `text` is not one. */
export function normalizeMac(text: string): string | undefined {
  // Leases normally carry the canonical form already: then no copies.
  let mac = text;
  if (!MAC.test(mac)) {
    mac = text.trim().toLowerCase();
    if (!MAC.test(mac)) return undefined;
  }
  if (parseInt(mac[1]!, 16) & 1) return undefined; // multicast bit
  if (mac === '00:00:00:00:00:00') return undefined;
  return mac;
}

// ---- desired state

/** A route the backend wants; `via` says which device it leaves through. */
export interface DesiredRoute {
  dst: string;
  gw: string;
  via: 'overlay' | 'underlay';
}

export interface DesiredNeigh {
  ip: string;
  mac: string;
}

export interface DesiredFdb {
  mac: string;
  dst: string;
}

/** Everything one remote lease asks of the kernel. */
export interface LeasePlan {
  lease: Lease;
  route: DesiredRoute;
  neigh?: DesiredNeigh;
  fdb?: DesiredFdb;
}

/** A lease that gets nothing; `error` leases also land in the report. */
export interface Skipped {
  lease: Lease;
  reason: string;
  error: boolean;
}

export interface PlanContext {
  network: Cidr;
  ownSubnet: Cidr;
  /** our underlay address with prefix: who shares our L2 */
  extCidr: Cidr;
  /** our own public IP(s): a remote lease claiming one is refused */
  ownIPs: string[];
}

export interface Plan {
  plans: LeasePlan[];
  skipped: Skipped[];
}

export function describeLease(lease: Lease): string {
  return lease.nodeName ? `${lease.subnet} (${lease.nodeName})` : lease.subnet;
}

interface Checked {
  subnet: Cidr;
  publicIP: Ip;
  /** publicIP as the kernel prints it (FDB dst, underlay gateway) */
  publicText: string;
}

/**
 * The checks every backend applies before programming a remote lease. The
 * family is the cluster network's: an IPv6 backend plans the IPv6 view of
 * each lease (see family.ts), whose subnet and public IP are IPv6.
 */
function checkCommon(lease: Lease, type: Lease['backendType'], ctx: PlanContext): Checked | Skipped {
  const skip = (reason: string, error = true): Skipped => ({ lease, reason, error });
  const family = ctx.network.ip.family;
  const subnet = parseCidr(lease.subnet, family);
  if (!subnet) return skip(`subnet ${JSON.stringify(lease.subnet)} is not an IPv${family} CIDR`);
  if (sameNetwork(subnet, ctx.ownSubnet)) {
    return skip('is our own subnet', false);
  }
  if (lease.backendType !== type) return skip(`backend type ${lease.backendType} is not ${type}`, false);
  if (!cidrContainsCidr(ctx.network, subnet)) return skip(`subnet lies outside the cluster network ${canonicalCidr(ctx.network)}`);
  if (cidrOverlaps(subnet, ctx.ownSubnet)) return skip(`subnet overlaps our own subnet ${canonicalCidr(ctx.ownSubnet)}`);
  const publicIP = parseIp(lease.publicIP, family);
  if (publicIP === undefined) return skip(`public IP ${JSON.stringify(lease.publicIP)} is not an IPv${family} address`);
  // An IPv6 address has many spellings; the kernel prints one. Planning the
  // lease's own (FD00:88:0:0::2) would rewrite a right FDB entry or route on
  // every pass. An accepted IPv4 text is already canonical (no leading zeros).
  const publicText = family === 4 ? lease.publicIP : formatIp(publicIP);
  if (ctx.ownIPs.includes(publicText)) return skip(`public IP ${lease.publicIP} is our own`);
  return { subnet, publicIP, publicText };
}

/** Drops later leases for a subnet an earlier lease already claimed. */
function firstPerSubnet(checked: Map<string, true>, subnet: Cidr | string, lease: Lease): Skipped | undefined {
  const key = typeof subnet === 'string' ? subnet : canonicalCidr(subnet);
  if (checked.has(key)) return { lease, reason: `another lease already claims ${key}`, error: true };
  checked.set(key, true);
  return undefined;
}

export interface VxlanPlanOptions {
  directRouting: boolean;
}

/**
 * VXLAN, one lease on its own: a same-L2 peer gets a plain route when
 * DirectRouting is on; every other peer gets route + permanent ARP + FDB
 * towards its VTEP. Checks across leases (one lease per subnet, one per
 * MAC) are planVxlan's.
 */
export function planVxlanLease(lease: Lease, ctx: PlanContext, opts: VxlanPlanOptions): LeasePlan | Skipped {
  const c = checkCommon(lease, 'vxlan', ctx);
  if ('reason' in c) return c;
  const dst = canonicalText(lease.subnet, c.subnet);
  if (opts.directRouting && cidrContainsIp(ctx.extCidr, c.publicIP)) {
    return { lease, route: { dst, gw: c.publicText, via: 'underlay' } };
  }
  const rawMac = lease.backendData?.VtepMAC;
  const mac = typeof rawMac === 'string' ? normalizeMac(rawMac) : undefined;
  if (!mac) {
    return { lease, reason: rawMac ? `VtepMAC ${JSON.stringify(rawMac)} is not a unicast MAC` : 'has no VtepMAC', error: Boolean(rawMac) };
  }
  const gw = dst === lease.subnet ? dst.slice(0, dst.indexOf('/')) : networkAddress(c.subnet);
  return { lease, route: { dst, gw, via: 'overlay' }, neigh: { ip: gw, mac }, fdb: { mac, dst: c.publicText } };
}

/**
 * canonicalCidr, reusing the lease's own text when that is already it: an
 * IPv4 subnet without host bits has one spelling (the parser refuses
 * leading zeros), so nothing is formatted for the common lease.
 */
function canonicalText(text: string, c: Cidr): string {
  return c.ip.family === 4 && isAligned(4, c.ip.value, c.prefix) ? text : canonicalCidr(c);
}

/**
 * Plans every lease; `planOne` (given each lease and its position) lets a
 * caller reuse the per-lease plans it already has (the result depends on
 * the lease and `ctx` only).
 */
export function planVxlan(
  leases: readonly Lease[],
  ctx: PlanContext,
  opts: VxlanPlanOptions,
  planOne: (lease: Lease, index: number) => LeasePlan | Skipped = (lease) => planVxlanLease(lease, ctx, opts),
): Plan {
  const out: Plan = { plans: [], skipped: [] };
  const subnets = new Map<string, true>();
  const macs = new Map<string, Lease>();
  for (let i = 0; i < leases.length; i++) {
    const lease = leases[i]!;
    const p = planOne(lease, i);
    if ('reason' in p) {
      out.skipped.push(p);
      continue;
    }
    const dup = firstPerSubnet(subnets, p.route.dst, lease);
    if (dup) {
      out.skipped.push(dup);
      continue;
    }
    if (p.fdb) {
      // The kernel keeps one remote per unicast MAC: a second lease with the
      // same MAC would silently lose its FDB entry, so it is refused instead.
      const owner = macs.get(p.fdb.mac);
      if (owner) {
        out.skipped.push({ lease, reason: `VtepMAC ${p.fdb.mac} is already used by ${describeLease(owner)}`, error: true });
        continue;
      }
      macs.set(p.fdb.mac, lease);
    }
    out.plans.push(p);
  }
  return out;
}

/** host-gw: a route via the peer's address, which must be on our L2 subnet. */
export function planHostGw(leases: readonly Lease[], ctx: PlanContext): Plan {
  const out: Plan = { plans: [], skipped: [] };
  const subnets = new Map<string, true>();
  for (const lease of leases) {
    const c = checkCommon(lease, 'host-gw', ctx);
    if ('reason' in c) {
      out.skipped.push(c);
      continue;
    }
    if (!cidrContainsIp(ctx.extCidr, c.publicIP)) {
      out.skipped.push({
        lease,
        reason: `public IP ${lease.publicIP} is not on our L2 subnet ${canonicalCidr(ctx.extCidr)}; host-gw needs every node on one segment`,
        error: true,
      });
      continue;
    }
    const dup = firstPerSubnet(subnets, c.subnet, lease);
    if (dup) {
      out.skipped.push(dup);
      continue;
    }
    out.plans.push({ lease, route: { dst: canonicalCidr(c.subnet), gw: c.publicText, via: 'underlay' } });
  }
  return out;
}

// ---- differences against the kernel

/** A route as read from the kernel, reduced to what ownership needs. */
export interface CurrentRoute {
  dst: string;
  gw?: string;
  via: 'overlay' | 'underlay';
  onlink: boolean;
  metric: number;
  protocol: number;
  /** the nexthop object the route goes through (its gw/onlink are the nexthop's) */
  nhid?: number;
}

export interface RouteDiff {
  /** desired routes to write with replace; `existed` = a route for dst was replaced */
  write: { route: DesiredRoute; existed: boolean }[];
  remove: CurrentRoute[];
}

const RTPROT_KERNEL = 2;

/**
 * The metric a route written without one gets: 0 for IPv4, 1024 for IPv6
 * (the kernel's IP6_RT_PRIO_USER), so an IPv6 route we wrote reads back
 * with 1024 and must count as ours, unchanged.
 */
export function baseMetric(family: 4 | 6): number {
  return family === 6 ? 1024 : 0;
}

/**
 * Which routes the backend owns: everything it can find on the overlay
 * device, and routes via a gateway on the underlay to a subnet inside the
 * cluster network. Routes the kernel made for an address are never owned.
 */
export function ownedRoute(r: CurrentRoute, network: Cidr): boolean {
  if (r.protocol === RTPROT_KERNEL || r.dst === 'default' || r.dst === '0.0.0.0/0' || r.dst === '::/0') return false;
  if (r.via === 'overlay') return true;
  const dst = parseCidr(r.dst, network.ip.family);
  return r.gw !== undefined && dst !== undefined && cidrContainsCidr(network, dst);
}

/**
 * How the desired routes are written: `plain` gateway routes, or through
 * nexthop objects (`nexthops`: the id of our nexthop for each gateway, from
 * diffNexthops). A route in the other form does not match, so the
 * replace converts it (a plain route left by flannel or an older tsflannel
 * becomes `nhid N`).
 */
export type RouteForm = { kind: 'plain' } | { kind: 'nexthop'; nexthops: PerNexthop<number> };

const PLAIN: RouteForm = { kind: 'plain' };

function routeMatches(cur: CurrentRoute, want: DesiredRoute, metric: number, form: RouteForm): boolean {
  if (form.kind === 'plain' ? cur.nhid !== undefined : cur.nhid === undefined || form.nexthops[want.via].get(want.gw) !== cur.nhid) return false;
  return (
    cur.dst === want.dst &&
    cur.via === want.via &&
    cur.gw === want.gw &&
    cur.metric === metric &&
    (want.via === 'underlay' || cur.onlink)
  );
}

/**
 * Diffs owned routes against the desired ones. A route with the desired
 * destination and the base metric (`baseMetric`: 0, or 1024 for IPv6) is
 * overwritten in place by a replace (no gap), so only routes for other
 * destinations or other metrics are deleted.
 */
export function diffRoutes(desired: readonly DesiredRoute[], current: readonly CurrentRoute[], metric = 0, form: RouteForm = PLAIN): RouteDiff {
  // One route per destination is the rule: keep it unwrapped, so a no-op
  // pass over 50,000 routes does not allocate 50,000 one-element arrays.
  const byDst = new Map<string, CurrentRoute | CurrentRoute[]>();
  for (const r of current) {
    const prev = byDst.get(r.dst);
    if (prev === undefined) byDst.set(r.dst, r);
    else if (Array.isArray(prev)) prev.push(r);
    else byDst.set(r.dst, [prev, r]);
  }
  const listAt = (dst: string): readonly CurrentRoute[] => {
    const v = byDst.get(dst);
    return v === undefined ? [] : Array.isArray(v) ? v : [v];
  };
  const diff: RouteDiff = { write: [], remove: [] };
  const wanted = new Set<string>();
  for (const want of desired) {
    wanted.add(want.dst);
    const one = byDst.get(want.dst);
    if (one !== undefined && !Array.isArray(one) && routeMatches(one, want, metric, form)) continue;
    const existing = listAt(want.dst);
    const exact = existing.find((r) => routeMatches(r, want, metric, form));
    if (exact) {
      for (const r of existing) if (r !== exact) diff.remove.push(r);
      continue;
    }
    const slot = existing.find((r) => r.metric === metric);
    diff.write.push({ route: want, existed: slot !== undefined });
    // Replace takes over the metric-0 slot, whatever device it was on.
    for (const r of existing) if (r !== slot) diff.remove.push(r);
  }
  for (const dst of byDst.keys()) if (!wanted.has(dst)) diff.remove.push(...listAt(dst));
  return diff;
}

// ---- nexthop objects

/** nh_protocol of tsflannel's nexthop objects (native/tsfnl/nexthop.go). */
export const NEXTHOP_PROTOCOL = 157;

/** A nexthop object as read from the kernel, on one of our devices. */
export interface CurrentNexthop {
  id: number;
  via: 'overlay' | 'underlay';
  gw?: string;
  onlink: boolean;
  protocol: number;
}

/**
 * Something per nexthop: a nexthop stands for one gateway on one side, onlink
 * on the overlay and not on the underlay, so it is found by (side, gateway).
 * Keyed by the gateway strings themselves, which the plans and the dump
 * already hold: at 50,000 peers an exact pass builds no key strings.
 */
export interface PerNexthop<T> {
  overlay: Map<string, T>;
  underlay: Map<string, T>;
}

export function perNexthop<T>(): PerNexthop<T> {
  return { overlay: new Map(), underlay: new Map() };
}

export interface NexthopDiff {
  /** for each gateway the desired routes need, the id of our nexthop the shim will reuse */
  use: PerNexthop<number>;
  /** our nexthops no desired route uses (delete after the routes are written) */
  remove: CurrentNexthop[];
}

/**
 * Our nexthops (protocol NEXTHOP_PROTOCOL; others are never touched) against
 * the gateways the desired routes need. The shim reuses the lowest id of
 * ours per (gateway, device, onlink), so that one is kept; duplicates, ones
 * with the other onlink flag, and ones for gateways no route needs are
 * removed (the kernel takes any route still on them along).
 */
export function diffNexthops(desired: readonly DesiredRoute[], current: readonly CurrentNexthop[]): NexthopDiff {
  const wanted = { overlay: new Set<string>(), underlay: new Set<string>() };
  for (const r of desired) wanted[r.via].add(r.gw);
  const diff: NexthopDiff = { use: perNexthop(), remove: [] };
  // The kernel dumps nexthops by id: sort only if it did not.
  let sorted = true;
  for (let i = 1; i < current.length && sorted; i++) sorted = current[i - 1]!.id < current[i]!.id;
  const all = sorted ? current : [...current].sort((a, b) => a.id - b.id);
  for (const n of all) {
    if (n.protocol !== NEXTHOP_PROTOCOL) continue;
    const use = diff.use[n.via];
    if (n.gw === undefined || n.onlink !== (n.via === 'overlay') || !wanted[n.via].has(n.gw) || use.has(n.gw)) diff.remove.push(n);
    else use.set(n.gw, n.id);
  }
  return diff;
}

export interface CurrentNeigh {
  ip: string;
  mac: string;
  permanent: boolean;
}

export interface NeighDiff {
  write: { neigh: DesiredNeigh; existed: boolean }[];
  remove: CurrentNeigh[];
}

export function diffNeighs(desired: readonly DesiredNeigh[], current: readonly CurrentNeigh[]): NeighDiff {
  const byIp = new Map<string, CurrentNeigh>();
  for (const n of current) byIp.set(n.ip, n);
  const wanted = new Set<string>();
  const diff: NeighDiff = { write: [], remove: [] };
  for (const want of desired) {
    wanted.add(want.ip);
    const cur = byIp.get(want.ip);
    if (cur && cur.permanent && cur.mac.toLowerCase() === want.mac) continue;
    diff.write.push({ neigh: want, existed: cur !== undefined });
  }
  for (const n of current) if (!wanted.has(n.ip)) diff.remove.push(n);
  return diff;
}

export interface CurrentFdb {
  mac: string;
  /** remote VTEP; '' for an entry without one */
  dst: string;
}

export interface FdbDiff {
  add: DesiredFdb[];
  remove: CurrentFdb[];
  /** MACs whose remote changes: counted as updates rather than add + remove */
  moved: Set<string>;
}

/**
 * Remotes per MAC. One remote per unicast MAC is the rule: kept unwrapped,
 * so a pass over 50,000 entries builds no key strings and no arrays.
 */
class FdbIndex {
  private readonly byMac = new Map<string, string | string[]>();

  add(mac: string, dst: string): void {
    const prev = this.byMac.get(mac);
    if (prev === undefined) this.byMac.set(mac, dst);
    else if (Array.isArray(prev)) prev.push(dst);
    else this.byMac.set(mac, [prev, dst]);
  }

  has(mac: string, dst: string): boolean {
    const v = this.byMac.get(mac);
    return v === dst || (Array.isArray(v) && v.includes(dst));
  }
}

/**
 * FDB entries are keyed by (MAC, remote). The kernel ignores an append of a
 * new remote to an existing unicast MAC, so a moved MAC must be removed
 * before it is added again: callers apply `remove` first.
 */
export function diffFdb(desired: readonly DesiredFdb[], current: readonly CurrentFdb[]): FdbDiff {
  const have = new FdbIndex();
  const currentMacs = current.map((e) => e.mac.toLowerCase());
  current.forEach((e, i) => have.add(currentMacs[i]!, e.dst));
  const want = new FdbIndex();
  const diff: FdbDiff = { add: [], remove: [], moved: new Set() };
  for (const e of desired) {
    const mac = e.mac.toLowerCase();
    want.add(mac, e.dst);
    if (!have.has(mac, e.dst)) diff.add.push(e);
  }
  current.forEach((e, i) => {
    if (!want.has(currentMacs[i]!, e.dst)) diff.remove.push(e);
  });
  if (diff.remove.length > 0 && diff.add.length > 0) {
    const removedMacs = new Set(diff.remove.map((e) => e.mac.toLowerCase()));
    for (const e of diff.add) if (removedMacs.has(e.mac)) diff.moved.add(e.mac);
  }
  return diff;
}
