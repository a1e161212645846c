// Many route/neighbour/FDB changes in one shim call, and the agent's three
// tables read with one dump each. One call pays the netns entry, the device
// lookups and the FFI crossing once, as `ip -batch` does.
import { call, callText } from './ffi.js';
import { NetlinkError, type Errno } from './errors.js';
import type { InNetns } from './types.js';

interface EntryBase {
  dev: string;
  /**
   * Entries sharing a group number (> 0) stand or fall together: after one
   * fails, the later ones of that group are not attempted (errno ECANCELED).
   */
  group?: number;
}

export interface RouteEntry extends EntryBase {
  kind: 'route.replace' | 'route.del';
  dst: string;
  gw?: string;
  onlink?: boolean;
  metric?: number;
  /**
   * route.replace: write `dst nhid I` through tsflannel's nexthop object for
   * (gw, dev, onlink), reused or created by the shim (a kernel without
   * nexthop objects gets a plain gateway route: BatchResult.nexthopsUnsupported).
   * route.del: find the route by that nexthop (else delete it as a plain route).
   */
  nexthop?: boolean;
  /** route.del: the nexthop id the route names (as dumped) */
  nhid?: number;
}

/**
 * Deletes one of tsflannel's nexthop objects (protocol NEXTHOP_PROTOCOL),
 * by id, or the one for (gw, dev, onlink). The kernel also deletes every
 * route that still uses it. A nexthop of another protocol is never deleted
 * (EPERM).
 */
export interface NexthopEntry extends EntryBase {
  kind: 'nexthop.del';
  /** the id; absent = ours for (gw, dev, onlink) */
  nhid?: number;
  gw?: string;
  onlink?: boolean;
}

export interface NeighEntry extends EntryBase {
  kind: 'neigh.set' | 'neigh.del';
  ip: string;
  mac?: string;
}

export interface FdbEntry extends EntryBase {
  kind: 'fdb.append' | 'fdb.del';
  mac: string;
  /** the remote VTEP */
  dst: string;
}

export type BatchEntry = RouteEntry | NeighEntry | FdbEntry | NexthopEntry;

/** nh_protocol of tsflannel's nexthop objects (native/tsfnl/nexthop.go), shown as `proto 157`. */
export const NEXTHOP_PROTOCOL = 157;

export interface BatchFailure {
  /** position of the entry in the request */
  index: number;
  error: NetlinkError;
}

export interface BatchResult {
  /** entries the kernel accepted */
  applied: number;
  /** every entry that failed or was skipped, in request order */
  failures: BatchFailure[];
  /** the kernel has no nexthop objects: nexthop routes went in as plain gateway routes */
  nexthopsUnsupported: boolean;
}

interface RawResult {
  applied: number;
  nexthopsUnsupported?: boolean;
  errors: { index: number; error: string; errno?: Errno; code?: number }[];
}

/**
 * Applies `entries` in order in one call. A failing entry does not stop the
 * others (except later entries of its group); each failure comes back with
 * its index and errno, so a delete of something already gone (ENOENT) can
 * be told from a real error.
 */
export function applyBatch(entries: readonly BatchEntry[], opts: InNetns = {}): BatchResult {
  if (entries.length === 0) return { applied: 0, failures: [], nexthopsUnsupported: false };
  const raw = callText('batch.apply', encodeBatch(entries, opts), Boolean(opts.netns)) as RawResult;
  // The shim accounts for every entry once, applied or failed: a request it
  // read short must not pass for a batch whose missing entries were written.
  if (raw.applied + raw.errors.length !== entries.length) {
    throw new NetlinkError('batch.apply', `the shim accounted for ${raw.applied + raw.errors.length} of ${entries.length} entries`, 'EIO', 5);
  }
  return {
    applied: raw.applied,
    failures: raw.errors.map((e) => ({ index: e.index, error: new NetlinkError('batch.apply', e.error, e.errno, e.code) })),
    nexthopsUnsupported: raw.nexthopsUnsupported === true,
  };
}

/**
 * batch.apply's request: a JSON header line with the netns, then one line
 * per entry of space-separated fields in this order (native/tsfnl/
 * batch_text.go reads the same):
 *
 *     kind dev group dst gw ip mac flags metric nhid
 *
 * "-" for an absent field; flags are o (onlink) and n (nexthop). At 15,000
 * entries a line each costs the shim a fraction of decoding a JSON object
 * each. A field holding a space, a control character, "%" or exactly "-"
 * is percent-encoded, so any value reaches the shim intact (and is refused
 * there, by entry).
 */
export function encodeBatch(entries: readonly BatchEntry[], opts: InNetns = {}): string {
  let text = JSON.stringify({ netns: opts.netns ?? '' });
  for (const e of entries) text += '\n' + encodeEntry(e);
  return text;
}

/** Every field any entry kind has, read without narrowing. */
type AnyEntry = Partial<Omit<RouteEntry, 'kind'> & Omit<NeighEntry, 'kind'> & Omit<FdbEntry, 'kind'> & Omit<NexthopEntry, 'kind'>> & { kind: string };

function encodeEntry(entry: BatchEntry): string {
  const e = entry as AnyEntry;
  const flags = e.onlink ? (e.nexthop ? 'on' : 'o') : e.nexthop ? 'n' : '-';
  return `${field(e.kind)} ${field(e.dev)} ${count(e.group)} ${field(e.dst)} ${field(e.gw)} ${field(e.ip)} ${field(e.mac)} ${flags} ${count(e.metric)} ${count(e.nhid)}`;
}

function field(v: string | undefined): string {
  if (v === undefined || v === '') return '-';
  if (v === '-') return '%2D';
  // What would split a field or a line, read as an escape, or end the
  // request early (the shim reads it as a C string, up to a NUL) is
  // encoded; other odd characters reach the shim as they are and fail
  // there, by entry.
  if (!/[\x00-\x20%\x7f]/.test(v)) return v;
  try {
    return encodeURIComponent(v);
  } catch {
    return '%'; // a lone surrogate: the shim refuses the request, naming the entry
  }
}

/** A count the shim parses as a non-negative integer; anything else is sent as it is and refused there. */
function count(v: number | undefined): string {
  return v === undefined ? '0' : String(v);
}

/**
 * Deletes every nexthop object of tsflannel's protocol (NEXTHOP_PROTOCOL) in
 * the netns, and with them every route through them; returns how many.
 * Nexthops of other protocols stay.
 */
export function flushOwnNexthops(opts: InNetns = {}): number {
  return (call('nexthop.flush', { ...opts }) as { deleted: number }).deleted;
}

export interface StateRoute {
  dev: string;
  /** destination CIDR or 'default' */
  dst: string;
  gw?: string;
  onlink?: boolean;
  metric?: number;
  protocol: number;
  /** the nexthop object the route goes through */
  nhid?: number;
}

/** A nexthop object on one of the requested devices. */
export interface StateNexthop {
  dev: string;
  id: number;
  gw?: string;
  onlink?: boolean;
  protocol: number;
}

export interface StateNeigh {
  /** IPv4 neighbour address, or for the FDB the remote VTEP ('' or absent for none) */
  ip?: string;
  mac: string;
  state: number;
}

export interface TableState {
  routes: StateRoute[];
  neighs: StateNeigh[];
  fdb: StateNeigh[];
  /** nexthop objects of the family on routeDevs (when asked for) */
  nexthops: StateNexthop[];
  /** the kernel has no nexthop objects */
  nexthopsUnsupported: boolean;
  /** requested devices that do not exist */
  missing: string[];
}

export interface TableStateRequest extends InNetns {
  /** devices whose IPv4 main-table routes to read */
  routeDevs: string[];
  /** device whose IPv4 neighbours to read */
  neighDev?: string;
  /** device whose FDB to read */
  fdbDev?: string;
  /** family of the routes and neighbours read; default IPv4 */
  family?: 'inet' | 'inet6';
  /** also read the nexthop objects on routeDevs */
  nexthops?: boolean;
}

/** The shim's reply: each table as lines of space-separated fields (native/tsfnl/state_dump.go). */
export interface TableText {
  routes: string;
  neighs: string;
  fdb: string;
  nexthops?: string;
  nexthopsUnsupported?: boolean;
  missing: string[];
}

/**
 * One route dump, one neighbour dump and one FDB dump, trimmed to what a
 * reconcile compares. The shim sends each table as text, one entry a line:
 * at 50,000 peers (150,000 entries) that costs a fraction of a JSON object
 * per entry on both sides.
 */
export function dumpTables(req: TableStateRequest): TableState {
  return decodeTables(dumpTableText(req), req);
}

/**
 * The same dump, undecoded: a caller that diffed an earlier dump can tell
 * with one compare of the text (sameTableText) whether the kernel still
 * holds exactly that, entry by entry, before paying for decoding.
 */
export function dumpTableText(req: TableStateRequest): TableText {
  return call('state.dump', { ...req }) as TableText;
}

/** A dump the shim is taking on a thread of its own (startTableDump). */
export interface PendingTableDump {
  /** The dump, once it is done (waits for it); callable once. */
  wait(): TableText;
}

/**
 * Starts dumpTableText's dump on a shim thread and returns at once, so the
 * caller can compute meanwhile (the kernel's dump and Go's formatting run
 * on the other core). The dump reads the kernel as it is when the thread
 * runs: write nothing before wait(). Every started dump must be waited for
 * (the shim keeps it until then).
 */
export function startTableDump(req: TableStateRequest): PendingTableDump {
  const { id } = call('state.dump.start', { ...req }) as { id: number };
  let read = false;
  return {
    wait: () => {
      if (read) throw new Error('startTableDump: the dump was already read');
      read = true;
      return call('state.dump.wait', { id }) as TableText;
    },
  };
}

/** Decodes a dumpTableText reply of the same request. */
export function decodeTables(raw: TableText, req: TableStateRequest): TableState {
  return {
    routes: decodeRoutes(raw.routes, req.routeDevs),
    neighs: decodeNeighs(raw.neighs, false),
    fdb: decodeNeighs(raw.fdb, true),
    nexthops: decodeNexthops(raw.nexthops ?? '', req.routeDevs),
    nexthopsUnsupported: raw.nexthopsUnsupported === true,
    missing: raw.missing,
  };
}

/**
 * Whether two dumps of the same request read the same kernel state: every
 * table's text byte for byte (so any entry added, removed or changed, or
 * the same entries in another order, counts as different).
 */
export function sameTableText(a: TableText, b: TableText): boolean {
  return (
    a.routes === b.routes &&
    a.neighs === b.neighs &&
    a.fdb === b.fdb &&
    (a.nexthops ?? '') === (b.nexthops ?? '') &&
    (a.nexthopsUnsupported === true) === (b.nexthopsUnsupported === true) &&
    a.missing.length === b.missing.length &&
    a.missing.every((m, i) => m === b.missing[i])
  );
}

/** A table's text as its lines (the shim ends each line with "\n"). */
export function dumpLines(text: string): string[] {
  if (text === '') return [];
  const parts = text.split('\n');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** `<index into devs> <dst> <gw|-> <o|-> <metric> <protocol> <nhid|->` per line. */
export function decodeRoutes(text: string, devs: readonly string[]): StateRoute[] {
  return decodeRouteLines(dumpLines(text), devs);
}

export function decodeRouteLines(lines: readonly string[], devs: readonly string[]): StateRoute[] {
  const out: StateRoute[] = [];
  for (const line of lines) {
    const [dev, dst, gw, onlink, metric, protocol, nhid] = line.split(' ');
    const r: StateRoute = { dev: devs[Number(dev)] ?? '', dst: dst!, protocol: Number(protocol) };
    if (gw !== '-') r.gw = gw;
    if (onlink === 'o') r.onlink = true;
    if (metric !== '0') r.metric = Number(metric);
    if (nhid !== undefined && nhid !== '-') r.nhid = Number(nhid);
    out.push(r);
  }
  return out;
}

/** `<index into devs> <id> <gw|-> <o|-> <protocol>` per line. */
export function decodeNexthops(text: string, devs: readonly string[]): StateNexthop[] {
  return decodeNexthopLines(dumpLines(text), devs);
}

export function decodeNexthopLines(lines: readonly string[], devs: readonly string[]): StateNexthop[] {
  const out: StateNexthop[] = [];
  for (const line of lines) {
    const [dev, id, gw, onlink, protocol] = line.split(' ');
    const n: StateNexthop = { dev: devs[Number(dev)] ?? '', id: Number(id), protocol: Number(protocol) };
    if (gw !== '-') n.gw = gw;
    if (onlink === 'o') n.onlink = true;
    out.push(n);
  }
  return out;
}

/** Neighbours: `<ip> <mac|-> <state>`; FDB: `<mac> <remote|-> <state>` per line. */
export function decodeNeighs(text: string, fdb: boolean): StateNeigh[] {
  return decodeNeighLines(dumpLines(text), fdb);
}

export function decodeNeighLines(lines: readonly string[], fdb: boolean): StateNeigh[] {
  const out: StateNeigh[] = [];
  for (const line of lines) {
    const [a, b, state] = line.split(' ');
    const ip = fdb ? b! : a!;
    const mac = fdb ? a! : b!;
    const n: StateNeigh = { mac: mac === '-' ? '' : mac, state: Number(state) };
    if (ip !== '-') n.ip = ip;
    out.push(n);
  }
  return out;
}

// ---- the lines state.dump prints for an entry, rendered from what was
// written: an exact pass compares these with the dump's text and decodes
// only the lines that differ (src/daemon/backend/exact.ts). Each must be
// byte for byte what native/tsfnl/state_dump.go prints for the entry as the
// shim writes it (tested against real dumps).

/** rtm_protocol of the routes the shim writes (RTPROT_BOOT, as `ip route` and vishvananda's netlink write them). */
export const ROUTE_PROTOCOL = 3;

/** A route's dump line; `pos` is its device's index into the request's routeDevs. */
export function routeLine(pos: number, dst: string, gw: string | undefined, onlink: boolean, metric: number, protocol: number, nhid: number | undefined): string {
  return `${pos} ${dst} ${gw ?? '-'} ${onlink ? 'o' : '-'} ${metric} ${protocol} ${nhid ?? '-'}`;
}

/** A nexthop object's dump line. */
export function nexthopLine(pos: number, id: number, gw: string | undefined, onlink: boolean, protocol: number): string {
  return `${pos} ${id} ${gw ?? '-'} ${onlink ? 'o' : '-'} ${protocol}`;
}

/** A neighbour's dump line (`state`: NudState bits, 128 for a permanent entry). */
export function neighLine(ip: string, mac: string, state: number): string {
  return `${ip} ${mac} ${state}`;
}

/**
 * An FDB entry's dump line without its state (`<mac> <remote>`): the state
 * the kernel reports depends on who wrote the entry (128 for the shim,
 * 192 for `bridge fdb append ... permanent`), and nothing the agent decides
 * reads it. fdbLineEntry cuts a dump line to the same.
 */
export function fdbEntryText(mac: string, dst: string): string {
  return `${mac} ${dst}`;
}

/** An FDB dump line without its state field. */
export function fdbLineEntry(line: string): string {
  const end = line.lastIndexOf(' ');
  return end < 0 ? line : line.slice(0, end);
}
