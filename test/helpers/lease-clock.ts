// Times single lease changes from the write (a Node update on the fake API
// server, a put into etcd) to the lease set the subnet manager hands to the
// backend: the manager's share of "one event to the kernel". Used by the
// scale storms (test/helpers/kube-scale.ts, etcd-scale.ts) and their benches.
import type { Lease } from '../../src/daemon/types.js';

interface Pending {
  probe: (leases: readonly Lease[]) => boolean;
  t0: number;
  resolve: (ms: number) => void;
}

export class LeaseClock {
  private pending: Pending | undefined;

  /** Call from the manager's onLeases callback. */
  delivered(leases: readonly Lease[]): void {
    const p = this.pending;
    if (p && p.probe(leases)) {
      this.pending = undefined;
      p.resolve(performance.now() - p.t0);
    }
  }

  /**
   * Makes one change; resolves with the ms until a delivered lease set shows
   * it, and until the write itself returned (an etcd put returns after its
   * commit, which on a slow disk is most of the wait).
   */
  async time(change: () => unknown, probe: (leases: readonly Lease[]) => boolean, timeoutMs: number): Promise<SingleChange> {
    let timer: NodeJS.Timeout | undefined;
    const t0 = performance.now();
    const seen = new Promise<number>((resolve, reject) => {
      this.pending = { probe, t0, resolve };
      timer = setTimeout(() => reject(new Error('timed out waiting for a single change to be delivered')), timeoutMs);
    });
    try {
      await change();
      const writtenMs = performance.now() - t0;
      return { deliveredMs: await seen, writtenMs };
    } finally {
      clearTimeout(timer);
      this.pending = undefined;
    }
  }
}

export interface SingleChange {
  /** from the write to the lease set in the backend's hands */
  deliveredMs: number;
  /** from the write to its return */
  writtenMs: number;
}

/**
 * `samples` single changes, each after the manager's coalescing window has
 * passed (a change after a quiet spell goes out at once).
 */
export async function timeSingleChanges(
  clock: LeaseClock,
  samples: number,
  quietMs: number,
  one: (k: number) => { change: () => unknown; probe: (leases: readonly Lease[]) => boolean },
  timeoutMs: number,
): Promise<SingleChange[]> {
  const out: SingleChange[] = [];
  for (let k = 0; k < samples; k++) {
    await new Promise((r) => setTimeout(r, quietMs));
    const { change, probe } = one(k);
    out.push(await clock.time(change, probe, timeoutMs));
  }
  return out;
}
