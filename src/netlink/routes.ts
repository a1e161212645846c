import { call } from './ffi.js';
import { applied, isNotFound } from './errors.js';
import type { InNetns, Route, RouteSpec } from './types.js';

export function routeReplace(spec: RouteSpec): void {
  call('route.replace', { ...spec });
}

/** Deletes a route; false when no such route existed. */
export function routeDelete(spec: RouteSpec): boolean {
  return applied(() => call('route.del', { ...spec }), isNotFound);
}

export interface RouteFilter extends InNetns {
  dev?: string;
  family?: 'inet' | 'inet6';
  /** defaults to the main table; -1 lists every table */
  table?: number;
}

export function routeList(filter: RouteFilter = {}): Route[] {
  return call('route.list', { ...filter }) as Route[];
}
