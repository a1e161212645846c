import { call } from './ffi.js';
import { applied, isExists, isNotFound } from './errors.js';
import type { Address, InNetns } from './types.js';

export interface AddrFilter extends InNetns {
  dev?: string;
  family?: 'inet' | 'inet6';
}

export function addrList(filter: AddrFilter = {}): Address[] {
  return call('addr.list', { ...filter }) as Address[];
}

/** Adds `cidr` (e.g. 10.244.1.1/24) to `dev`; false when it was already there. */
export function addrAdd(dev: string, cidr: string, opts: InNetns = {}): boolean {
  return applied(() => call('addr.add', { ...opts, dev, cidr }), isExists);
}

/** Removes `cidr` from `dev`; false when it was not there. */
export function addrDelete(dev: string, cidr: string, opts: InNetns = {}): boolean {
  return applied(() => call('addr.del', { ...opts, dev, cidr }), isNotFound);
}
