// Bursts of lease changes (a rollout re-annotating every Node, etcd restoring
// thousands of keys) must reach the backend as a few complete lease sets, not
// one set per change: each delivery costs the agent a pass over every lease.

/** How long changes after a delivery wait to be delivered together, by default. */
export const DEFAULT_COALESCE_MS = 200;

/**
 * Coalesces change notifications into few calls of `deliver`. The first
 * change after a quiet spell is delivered on the next turn of the event
 * loop, so one Node or key changing reaches the backend at once (with every
 * change parsed from the same read of the stream). Changes arriving less
 * than `windowMs` after the previous delivery ended wait until then and go
 * out together. The window counts from the end of a delivery: while a slow
 * pass blocks the event loop, the stream buffers, and the next delivery
 * takes all of it.
 */
export class Coalescer {
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private lastEnd = Number.NEGATIVE_INFINITY;
  private pending = 0;
  /** deliveries made, and the changes they carried */
  readonly stats = { deliveries: 0, changes: 0 };

  constructor(
    private readonly deliver: () => void,
    private readonly windowMs = DEFAULT_COALESCE_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** One change happened; `deliver` runs soon. */
  changed(): void {
    this.pending++;
    if (this.timer !== undefined) return;
    const wait = this.lastEnd + this.windowMs - this.now();
    this.timer = wait <= 0 ? setImmediate(() => this.run()) : setTimeout(() => this.run(), wait);
  }

  /** Delivers now whatever is pending (or nothing), cancelling the scheduled delivery. */
  flush(): void {
    this.cancel();
    if (this.pending > 0) this.run();
  }

  /** A full set was just delivered by other means (a re-list): what was pending is in it. */
  reset(): void {
    this.cancel();
    this.pending = 0;
  }

  /** Forgets the scheduled delivery; pending changes stay pending. */
  cancel(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer as NodeJS.Timeout);
    clearImmediate(this.timer as NodeJS.Immediate);
    this.timer = undefined;
  }

  private run(): void {
    this.timer = undefined;
    this.stats.deliveries++;
    this.stats.changes += this.pending;
    this.pending = 0;
    try {
      this.deliver();
    } finally {
      this.lastEnd = this.now();
    }
  }
}
