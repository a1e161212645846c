// Many route/neighbour/FDB changes in one shim call, and the agent's three
// tables read with one dump each. One call pays the netns entry, the device
// lookups and the FFI crossing once, as `ip -batch` does.
import { call } from './ffi.js';
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

export type BatchEntry = RouteEntry | NeighEntry | FdbEntry;

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
}

interface RawResult {
  applied: number;
  errors: { index: number; error: string; errno?: Errno; code?: number }[];
}

/**
 * Applies `entries` in order in one call. A failing entry does not stop the
 * others (except later entries of its group); each failure comes back with
 * its index and errno, so a delete of something already gone (ENOENT) can
 * be told from a real error.
 */
export function applyBatch(entries: readonly BatchEntry[], opts: InNetns = {}): BatchResult {
  if (entries.length === 0) return { applied: 0, failures: [] };
  const raw = call('batch.apply', { ...opts, entries }) as RawResult;
  return {
    applied: raw.applied,
    failures: raw.errors.map((e) => ({ index: e.index, error: new NetlinkError('batch.apply', e.error, e.errno, e.code) })),
  };
}

export interface StateRoute {
  dev: string;
  /** destination CIDR or 'default' */
  dst: string;
  gw?: string;
  onlink?: boolean;
  metric?: number;
  protocol: number;
}

export interface StateNeigh {
  /** neighbour address, or for the FDB the remote VTEP ('' or absent for none) */
  ip?: string;
  mac: string;
  state: number;
}

export interface TableState {
  routes: StateRoute[];
  neighs: StateNeigh[];
  fdb: StateNeigh[];
  /** requested devices that do not exist */
  missing: string[];
}

export interface TableStateRequest extends InNetns {
  /** devices whose main-table routes to read */
  routeDevs: string[];
  /** device whose neighbours to read */
  neighDev?: string;
  /** device whose FDB to read */
  fdbDev?: string;
  /** family of the routes and neighbours read; default 'inet' (IPv4) */
  family?: 'inet' | 'inet6';
}

/** One route dump, one neighbour dump and one FDB dump, trimmed to what a reconcile compares. */
export function dumpTables(req: TableStateRequest): TableState {
  return call('state.dump', { ...req }) as TableState;
}
