// What the VXLAN backend believes the kernel holds, peer by peer, so that a
// lease event is applied as the few writes it stands for instead of a full
// read-and-diff of the kernel. Pure: no I/O. The exact reconcile rebuilds it
// and stays the safety net for drift (entries changed by hand).
import type { Lease } from '../types.js';
import { perNexthop, type LeasePlan, type PerNexthop, type Skipped } from './plan.js';

interface Peer {
  lease: Lease;
  /** the generation of the last update that listed this lease */
  gen: number;
  /** what is in the kernel for it; undefined = nothing (skipped or failed) */
  plan?: LeasePlan;
}

/** One peer's change: the plan it had (if any) and the one it gets (undefined = removed). */
export interface PeerChange {
  key: string;
  before?: LeasePlan;
  after?: LeasePlan;
}

/** Why an update cannot be applied peer by peer: the exact pass must run. */
export type NeedsExact = { exact: string };

/** The kernel-relevant part of a lease: two equal leases program the same entries. */
export function sameLease(a: Lease, b: Lease): boolean {
  return (
    a.subnet === b.subnet &&
    a.publicIP === b.publicIP &&
    a.backendType === b.backendType &&
    a.backendData?.VtepMAC === b.backendData?.VtepMAC
  );
}

/** Leases that changed or joined, and peers that left. */
interface Found {
  touched: Lease[];
  out: PeerChange[];
}

export class PeerModel {
  private gen = 0;
  /** the list the model last matched (a copy: callers may reuse their arrays) */
  private last?: Lease[];
  private readonly peers = new Map<string, Peer>();
  private readonly dstOwner = new Map<string, string>();
  private readonly macOwner = new Map<string, string>();
  /** programmed peers per gateway's nexthop */
  private readonly nexthopUsers = perNexthop<number>();
  /**
   * Peers that wait on another lease (a subnet or VTEP MAC claimed twice) or
   * whose writes failed: only an exact pass knows when they can be programmed.
   */
  private readonly waiting: number;
  private programmedCount = 0;

  /**
   * Rebuilt from an exact pass: every remote lease, which got their entries
   * in place, and which wait. The others were refused for their own content
   * (a bad MAC, another backend type): they need nothing until they change.
   */
  constructor(remote: readonly Lease[], programmed: readonly LeasePlan[], waiting: ReadonlySet<Lease>) {
    for (const lease of remote) this.peers.set(lease.subnet, { lease, gen: 0 });
    for (const p of programmed) {
      const peer = this.peers.get(p.lease.subnet);
      if (peer && peer.lease === p.lease) this.setPlan(p.lease.subnet, peer, p);
    }
    this.waiting = waiting.size;
    this.last = remote.slice();
  }

  /** Peers whose entries are in place. */
  get programmed(): number {
    return this.programmedCount;
  }

  /**
   * The changes between the model and a new complete lease list, planned
   * with `planOne`; or why they cannot be applied one by one (a conflict
   * between leases, a lease refused or waiting): then the caller runs the
   * exact pass. `limit` bounds how many changes are worth doing one by one.
   */
  changes(remote: readonly Lease[], planOne: (lease: Lease) => LeasePlan | Skipped, limit: number): PeerChange[] | NeedsExact {
    const found = this.byPosition(remote, limit) ?? this.byScan(remote, limit);
    if ('exact' in found) return found;
    const { touched, out } = found;
    this.last = remote.slice();
    if (touched.length + out.length > limit) return { exact: 'many changes' };
    if (touched.length + out.length > 0 && this.waiting > 0) return { exact: 'some leases wait on others' };
    // Two new leases for one subnet (the scan finds duplicates among known
    // subnets only): the exact pass decides which one wins.
    const keys = new Set<string>();
    for (const lease of touched) {
      if (keys.has(lease.subnet)) return { exact: `two leases for ${lease.subnet}` };
      keys.add(lease.subnet);
      const after = planOne(lease);
      if ('reason' in after) return { exact: `lease ${lease.subnet}: ${after.reason}` };
      const before = this.peers.get(lease.subnet)?.plan;
      const dstOwner = this.dstOwner.get(after.route.dst);
      if (dstOwner !== undefined && dstOwner !== lease.subnet) return { exact: `${after.route.dst} claimed twice` };
      const macOwner = after.fdb ? this.macOwner.get(after.fdb.mac) : undefined;
      if (macOwner !== undefined && macOwner !== lease.subnet) return { exact: `VtepMAC ${after.fdb!.mac} claimed twice` };
      const change: PeerChange = { key: lease.subnet, after };
      if (before) change.before = before;
      out.push(change);
    }
    return out;
  }

  /**
   * The cheap way: a subnet manager that keeps its lease objects and their
   * order hands over a list that differs from the last one in a few
   * positions only. One identity compare per lease finds them; anything
   * else (another length, a lease in another position) takes the scan.
   */
  private byPosition(remote: readonly Lease[], limit: number): Found | NeedsExact | undefined {
    const last = this.last;
    if (!last) return undefined;
    if (last.length !== remote.length) return Math.abs(last.length - remote.length) <= limit ? this.byMerge(last, remote, limit) : undefined;
    const touched: Lease[] = [];
    for (let i = 0; i < remote.length; i++) {
      const lease = remote[i]!;
      const before = last[i]!;
      if (lease === before) continue;
      if (lease.subnet !== before.subnet) return undefined;
      const peer = this.peers.get(lease.subnet);
      if (!peer) return undefined;
      if (sameLease(peer.lease, lease)) peer.lease = lease;
      else touched.push(lease);
      if (touched.length > limit) return { exact: 'many changes' };
    }
    return { touched, out: [] };
  }

  /**
   * A node joining or leaving changes the list's length: walk the old and
   * the new list side by side, one identity compare per lease, taking a
   * lease found only in the new list as joined and one found only in the
   * old as gone. Anything less plain (a lease that moved, a subnet both gone
   * and joined, a joined subnet we still hold) takes the scan.
   */
  private byMerge(last: readonly Lease[], remote: readonly Lease[], limit: number): Found | NeedsExact | undefined {
    const touched: Lease[] = [];
    const joined = new Set<string>();
    const gone: Lease[] = [];
    let i = 0;
    let j = 0;
    while (i < remote.length || j < last.length) {
      const now = remote[i];
      const before = last[j];
      if (now !== undefined && now === before) {
        i++;
        j++;
        continue;
      }
      if (now !== undefined && before !== undefined && now.subnet === before.subnet) {
        const peer = this.peers.get(now.subnet);
        if (!peer) return undefined;
        if (sameLease(peer.lease, now)) peer.lease = now;
        else touched.push(now);
        i++;
        j++;
      } else if (before !== undefined && (now === undefined || last[j + 1] === now)) {
        gone.push(before);
        j++;
      } else if (now !== undefined && (before === undefined || remote[i + 1] === before)) {
        if (this.peers.has(now.subnet) || joined.has(now.subnet)) return undefined;
        joined.add(now.subnet);
        touched.push(now);
        i++;
      } else {
        return undefined;
      }
      if (touched.length + gone.length > limit) return { exact: 'many changes' };
    }
    const out: PeerChange[] = [];
    for (const lease of gone) {
      const peer = this.peers.get(lease.subnet);
      if (!peer || peer.lease !== lease || joined.has(lease.subnet)) return undefined;
      out.push(peer.plan ? { key: lease.subnet, before: peer.plan } : { key: lease.subnet });
    }
    return { touched, out };
  }

  /** The general way: every lease looked up by subnet, and every peer not listed any more removed. */
  private byScan(remote: readonly Lease[], limit: number): Found | NeedsExact {
    const gen = ++this.gen;
    const touched: Lease[] = [];
    let known = 0;
    for (const lease of remote) {
      const peer = this.peers.get(lease.subnet);
      if (!peer) {
        touched.push(lease);
        continue;
      }
      if (peer.gen === gen) return { exact: `two leases for ${lease.subnet}` };
      peer.gen = gen;
      known++;
      if (peer.lease !== lease) {
        if (!sameLease(peer.lease, lease)) touched.push(lease);
        // An equal lease in a new object (a re-list, a renewal): adopt it, so
        // the next event finds it by identity and skips the comparison.
        else peer.lease = lease;
      }
      if (touched.length > limit) return { exact: 'many changes' };
    }
    const out: PeerChange[] = [];
    if (known < this.peers.size) {
      for (const [key, peer] of this.peers) {
        if (peer.gen === gen) continue;
        if (peer.plan) out.push({ key, before: peer.plan });
        else out.push({ key }); // refused before: leaving writes nothing
      }
    }
    return { touched, out };
  }

  /**
   * How many peers use each gateway's nexthop once `changes` are
   * committed, for the gateways the changes touch.
   */
  nexthopUsersAfter(changes: readonly PeerChange[]): PerNexthop<number> {
    const out = perNexthop<number>();
    const bump = (route: LeasePlan['route'], by: number): void => {
      const now = out[route.via];
      now.set(route.gw, (now.get(route.gw) ?? this.nexthopUsers[route.via].get(route.gw) ?? 0) + by);
    };
    for (const c of changes) {
      if (c.before) bump(c.before.route, -1);
      if (c.after) bump(c.after.route, 1);
    }
    return out;
  }

  /** Records a change the kernel accepted. */
  commit(change: PeerChange): void {
    const peer = this.peers.get(change.key);
    if (peer) this.clearPlan(change.key, peer);
    if (!change.after) {
      if (peer) this.peers.delete(change.key);
      return;
    }
    this.setPlan(change.key, peer ?? { lease: change.after.lease, gen: this.gen }, change.after);
  }

  private setPlan(key: string, peer: Peer, plan: LeasePlan): void {
    if (!peer.plan) this.programmedCount++;
    peer.lease = plan.lease;
    peer.plan = plan;
    peer.gen = this.gen;
    this.peers.set(key, peer);
    this.dstOwner.set(plan.route.dst, key);
    if (plan.fdb) this.macOwner.set(plan.fdb.mac, key);
    const users = this.nexthopUsers[plan.route.via];
    users.set(plan.route.gw, (users.get(plan.route.gw) ?? 0) + 1);
  }

  private clearPlan(key: string, peer: Peer): void {
    const plan = peer.plan;
    if (!plan) return;
    delete peer.plan;
    this.programmedCount--;
    if (this.dstOwner.get(plan.route.dst) === key) this.dstOwner.delete(plan.route.dst);
    if (plan.fdb && this.macOwner.get(plan.fdb.mac) === key) this.macOwner.delete(plan.fdb.mac);
    const users = this.nexthopUsers[plan.route.via];
    const n = (users.get(plan.route.gw) ?? 0) - 1;
    if (n > 0) users.set(plan.route.gw, n);
    else users.delete(plan.route.gw);
  }
}
