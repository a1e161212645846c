// The lease list a subnet manager hands to the backend on every change, kept
// between changes. At 50,000 nodes, rebuilding it per event (a new object per
// lease, a sort that parses every address again, a JSON fingerprint of the
// whole list to tell whether anything changed) cost 40–120 ms of CPU before
// the backend saw the one lease that changed. Here a change costs a binary
// search and a splice, an unchanged lease keeps its object (the backend's
// edge path finds the changed ones by identity), and a change that changes
// nothing is known as such without looking at the rest.
import type { Lease } from '../types.js';

/** Orders the list: keys compare as strings, with `<`. */
export type LeaseOrder = (lease: Lease) => string;

interface Held {
  lease: Lease;
  /** the lease as JSON: two leases with the same text are the same lease */
  text: string;
  order: string;
}

export class LeaseList {
  private readonly held = new Map<string, Held>();
  /** every held lease, sorted by `order`, then by key */
  private sorted: { key: string; order: string }[] = [];
  private leases: Lease[] = [];
  private changed = false;

  constructor(private readonly orderOf: LeaseOrder) {}

  get size(): number {
    return this.held.size;
  }

  /** Holds `lease` under `key`; false when it equals what was held (the old object stays). */
  set(key: string, lease: Lease): boolean {
    const text = JSON.stringify(lease);
    const before = this.held.get(key);
    if (before && before.text === text) return false;
    const order = this.orderOf(lease);
    if (before && before.order === order) {
      this.leases[this.position(key, order)] = lease;
      this.held.set(key, { lease, text, order });
    } else {
      if (before) this.remove(key, before);
      this.held.set(key, { lease, text, order });
      const at = this.insertionPoint(key, order);
      this.sorted.splice(at, 0, { key, order });
      this.leases.splice(at, 0, lease);
    }
    this.changed = true;
    return true;
  }

  /** Drops `key`; false when it was not held. */
  delete(key: string): boolean {
    const before = this.held.get(key);
    if (!before) return false;
    this.remove(key, before);
    this.changed = true;
    return true;
  }

  /**
   * Replaces the whole content (a fresh listing): leases equal to the held
   * ones keep their objects, keys not listed any more are dropped.
   */
  replaceAll(entries: Iterable<readonly [string, Lease]>): void {
    if (this.held.size === 0) return this.fill(entries);
    const listed = new Set<string>();
    for (const [key, lease] of entries) {
      listed.add(key);
      this.set(key, lease);
    }
    this.keepOnly(listed);
  }

  /** Drops every key not in `listed` (what a fresh listing no longer has). */
  keepOnly(listed: ReadonlySet<string | undefined>): void {
    for (const key of [...this.held.keys()]) if (!listed.has(key)) this.delete(key);
  }

  /**
   * The list in order as a new array (the backend keeps the last one it got
   * to compare the next with), or undefined when nothing changed since the
   * last call; `always` returns it anyway.
   */
  take(always = false): Lease[] | undefined {
    if (!this.changed && !always) return undefined;
    this.changed = false;
    return this.leases.slice();
  }

  /** An empty list filled with one sort rather than one splice per lease. */
  private fill(entries: Iterable<readonly [string, Lease]>): void {
    for (const [key, lease] of entries) this.held.set(key, { lease, text: JSON.stringify(lease), order: this.orderOf(lease) });
    this.sorted = [...this.held].map(([key, held]) => ({ key, order: held.order }));
    this.sorted.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    this.leases = this.sorted.map(({ key }) => this.held.get(key)!.lease);
    if (this.held.size > 0) this.changed = true;
  }

  private remove(key: string, held: Held): void {
    const at = this.position(key, held.order);
    this.sorted.splice(at, 1);
    this.leases.splice(at, 1);
    this.held.delete(key);
  }

  /** Index of the held `key` whose order is `order`. */
  private position(key: string, order: string): number {
    const at = this.insertionPoint(key, order);
    const found = this.sorted[at];
    if (!found || found.key !== key) throw new Error(`lease list out of order at ${key}`);
    return at;
  }

  /** First index whose (order, key) is not below (order, key). */
  private insertionPoint(key: string, order: string): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.sorted[mid]!;
      if (at.order < order || (at.order === order && at.key < key)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
