// Watching a subnet manager in a test: every lease set it delivers is kept,
// and the watch is stopped (and awaited) by the suite's clean-up.
import type { Lease, SubnetManager } from '../../src/daemon/types.js';

export function collectLeases(m: Pick<SubnetManager, 'watchLeases'>, onCleanup: (fn: () => Promise<void>) => void): Lease[][] {
  const calls: Lease[][] = [];
  const ac = new AbortController();
  const done = m.watchLeases((l) => calls.push(l), ac.signal);
  onCleanup(async () => {
    ac.abort();
    await done;
  });
  return calls;
}
