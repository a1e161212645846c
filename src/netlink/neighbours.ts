import { call } from './ffi.js';
import { applied, isNotFound } from './errors.js';
import type { InNetns, Neighbour } from './types.js';

export interface NeighSpec extends InNetns {
  dev: string;
  ip: string;
  mac: string;
}

/** Sets a permanent ARP/ND entry (`ip neigh replace ... nud permanent`). */
export function neighSet(spec: NeighSpec): void {
  call('neigh.set', { ...spec });
}

export function neighDelete(spec: Omit<NeighSpec, 'mac'> & { mac?: string }): boolean {
  return applied(() => call('neigh.del', { ...spec }), isNotFound);
}

export function neighList(filter: InNetns & { dev?: string; family?: 'inet' | 'inet6' } = {}): Neighbour[] {
  return call('neigh.list', { ...filter }) as Neighbour[];
}

export interface FdbSpec extends InNetns {
  dev: string;
  mac: string;
  /** remote VTEP address the MAC lives behind */
  dst: string;
}

/**
 * `bridge fdb append <mac> dev <dev> dst <dst> self permanent`. The kernel
 * accepts an identical entry again without error, so this is idempotent.
 */
export function fdbAppend(spec: FdbSpec): void {
  call('fdb.append', { ...spec });
}

export function fdbDelete(spec: FdbSpec): boolean {
  return applied(() => call('fdb.del', { ...spec }), isNotFound);
}

/** FDB entries of one device; for a VXLAN device `ip` is the remote VTEP. */
export function fdbList(dev: string, opts: InNetns = {}): Neighbour[] {
  return call('fdb.list', { ...opts, dev }) as Neighbour[];
}
