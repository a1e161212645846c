import { call } from './ffi.js';
import { isExists, isNotFound } from './errors.js';
import type { InNetns, Route, RouteSpec } from './types.js';

/** Adds a route; false when an identical one already existed. */
export function routeAdd(spec: RouteSpec): boolean {
  try {
    call('route.add', { ...spec });
    return true;
  } catch (err) {
    if (isExists(err)) return false;
    throw err;
  }
}

export function routeReplace(spec: RouteSpec): void {
  call('route.replace', { ...spec });
}

/** Deletes a route; false when no such route existed. */
export function routeDelete(spec: RouteSpec): boolean {
  try {
    call('route.del', { ...spec });
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

export interface RouteFilter extends InNetns {
  dev?: string;
  family?: 'inet' | 'inet6';
  /** defaults to the main table */
  table?: number;
}

export function routeList(filter: RouteFilter = {}): Route[] {
  return call('route.list', { ...filter }) as Route[];
}
