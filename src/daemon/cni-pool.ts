// The CNI server's worker threads (cni-worker.ts), started with the agent;
// each preloads the handler, so a call pays no module loading. A worker that
// dies is replaced, and the call it had in hand is answered with a CNI error.
// While every thread is busy and some are stalled (a call parked behind its
// attachment's earlier call, a slow sender), spare threads serve the other
// pods' calls, and end once idle.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '../cni/errors.js';
import { inSea, seaTextAsset } from '../sea/assets.js';
import { encodeResponse, errorResponse } from './cni-frame.js';
import { writeAnswer } from './cni-call.js';
import type { CniShared } from './cni-shared.js';
import type { WorkerStart } from './cni-worker.js';

export type WorkerReply = { ready: true; warning?: string } | { stalled: true };

/** The worker bundle embedded in the single-executable tsflanneld (scripts/package.sh). */
export const SEA_WORKER_ASSET = 'cni-worker.cjs';

/** A thread that dies this soon after its start is replaced only after a pause (no crash loop). */
const QUICK_DEATH_MS = 2000;

/**
 * Spare threads the pool may run beyond --cni-workers. A thread whose call
 * is parked behind its attachment's earlier call, or reading a slow
 * sender's frame, does no work but is held; with every thread busy and one
 * such, another pod's call would queue until that call ends (up to its 50 s
 * deadline). A spare serves meanwhile, one per stalled thread. Bounded:
 * each is a thread with its own heap (about 20 MB), and a node where this
 * many calls stall at once has a problem more threads do not fix; past it,
 * calls queue as before.
 */
export const SPARE_WORKERS = 4;

/** A spare that served no call for this long ends; the base threads never do. */
export const SPARE_IDLE_MS = 30_000;

/**
 * While a thread is stalled, how often the pool checks whether every thread
 * is busy (a stall is announced once; the others may become busy after).
 * Only then: no timer runs in the common case.
 */
const STALL_CHECK_MS = 50;

export interface PoolOptions {
  /** the base threads: started at once, replaced when they die, never idle out */
  size: number;
  /** at most this many spare threads besides (shared must have their slots); default 0 */
  spares?: number;
  /** tests: how long a spare stays idle before it ends; default SPARE_IDLE_MS */
  spareIdleMs?: number;
  shared: CniShared;
  /** what every worker is told, less its index and name */
  start: Omit<WorkerStart, 'index' | 'threadName' | 'idleExitMs'>;
  onWarning?: (msg: string) => void;
  /** tests: another worker script */
  script?: URL;
}

/** The name a worker's thread takes: at most 15 bytes (the kernel's TASK_COMM_LEN). */
export function workerThreadName(slot: number): string {
  return `tsf-cni-${slot}`.slice(0, 15);
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  /** resolves when the thread has ended, however */
  exited: Promise<void>;
  dead: boolean;
  /** it said it is ready (has loaded the handler) */
  up: boolean;
  spare: boolean;
}

export class WorkerPool {
  /** base threads first, then the spares' slots (undefined while none runs there) */
  private readonly slots: (Slot | undefined)[] = [];
  private closed = false;
  private stallTimer: NodeJS.Timeout | undefined;
  /** no spare starts before this (epoch ms): one died at once (no crash loop) */
  private sparesPausedUntil = 0;
  /** a spare could not be started during this stall: said once, until one starts or the stall ends */
  private spareStartFailed = false;

  constructor(private readonly opts: PoolOptions) {
    const spares = opts.spares ?? 0;
    if (opts.size + spares > opts.shared.workers) throw new Error(`the shared state has ${opts.shared.workers} slots, not ${opts.size} + ${spares}`);
    // The base threads first: EPOLLEXCLUSIVE wakes the first one made that
    // is idle, so they keep taking the calls, and spares only the rest.
    try {
      for (let i = 0; i < opts.size; i++) this.slots.push(this.start(i, false));
    } catch (err) {
      // A thread the kernel would not make (EAGAIN at the task limit): the
      // server fails to start, so the threads made already must end too.
      // Left running, they served the socket with nobody answering calls
      // past their deadline, and kept an agent in --cni-only from exiting.
      this.closed = true;
      for (const s of this.slots) void s?.worker.terminate();
      throw err;
    }
    for (let i = 0; i < spares; i++) this.slots.push(undefined);
  }

  /** Resolves once every base worker has loaded the handler. */
  async ready(): Promise<void> {
    await Promise.all(this.slots.slice(0, this.opts.size).map((s) => s?.ready));
  }

  private spawn(index: number, spare: boolean): Worker {
    const workerData: WorkerStart = {
      ...this.opts.start,
      index,
      threadName: workerThreadName(index),
      ...(spare ? { idleExitMs: this.opts.spareIdleMs ?? SPARE_IDLE_MS } : {}),
    };
    if (this.opts.script) return new Worker(this.opts.script, { workerData });
    if (inSea()) return new Worker(seaTextAsset(SEA_WORKER_ASSET), { eval: true, workerData });
    return new Worker(fileURLToPath(new URL('./cni-worker.js', import.meta.url)), { workerData });
  }

  private start(index: number, spare: boolean): Slot {
    const { shared } = this.opts;
    const worker = this.spawn(index, spare);
    shared.add('threads');
    if (spare) shared.add('spares');
    let markReady: () => void = () => undefined;
    let markFailed: (err: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      markFailed = reject;
    });
    const exited = new Promise<void>((resolve) =>
      worker.once('exit', () => {
        shared.add('threads', -1);
        resolve();
      }),
    );
    const slot: Slot = { worker, ready, exited, dead: false, up: false, spare };
    const started = Date.now();
    worker.on('message', (msg: WorkerReply) => {
      if ('stalled' in msg) {
        this.checkStalls();
        return;
      }
      if (msg.warning) this.opts.onWarning?.(msg.warning);
      slot.up = true;
      markReady();
      // A spare was started because calls were queueing: another may be due
      // already (this one took a call that stalls too).
      if (spare) this.checkStalls();
    });
    const fail = (err: Error, code?: number) => {
      if (slot.dead) return;
      slot.dead = true;
      markFailed(err);
      this.orphaned(index, err);
      if (spare) {
        // Not replaced: one is started again when a stall needs it. Code 0
        // is a spare that was idle long enough and ended by itself.
        if (this.slots[index] === slot) this.slots[index] = undefined;
        if (!this.closed && code !== 0) {
          this.opts.onWarning?.(`CNI spare worker died (${err.message})`);
          if (Date.now() - started < QUICK_DEATH_MS) this.sparesPausedUntil = Date.now() + 1000;
        }
        this.checkStalls();
        return;
      }
      if (this.closed) return;
      this.opts.onWarning?.(`CNI worker died (${err.message}); starting another`);
      let refused = false;
      const replace = () => {
        if (this.closed || this.slots[index] !== slot) return;
        try {
          this.slots[index] = this.start(index, false);
        } catch (startErr) {
          // The kernel made no thread (see startSpare): try again each
          // second, said once (the sweep keeps an agent in --cni-only alive).
          if (!refused) this.opts.onWarning?.(`cannot start a CNI worker thread (${(startErr as Error).message}); trying again each second`);
          refused = true;
          setTimeout(replace, 1000).unref();
        }
      };
      if (Date.now() - started < QUICK_DEATH_MS) setTimeout(replace, 1000).unref();
      else replace();
    };
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => fail(new Error(`CNI worker exited with code ${code}`), code));
    ready.catch(() => undefined);
    return slot;
  }

  /**
   * A thread said its call stalled (rare), or the check is still running
   * since one did: with every thread busy and fewer spares than stalled
   * threads, start a spare, unless one is starting (it will be free at
   * once) or all are running. So the threads at work are never fewer than
   * --cni-workers for long, and never more: beyond that, threads would only
   * share the CPU the calls need. Then check again shortly while any thread
   * is stalled: a call stalled while others were free, and they may all be
   * busy now.
   */
  private checkStalls(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    const { shared } = this.opts;
    if (this.closed || shared.stopping) return;
    let stalled = 0;
    let spares = 0;
    let free = false;
    let spareSlot = -1;
    this.slots.forEach((s, i) => {
      if (!s) {
        if (spareSlot < 0) spareSlot = i;
        return;
      }
      if (s.dead) return;
      if (s.spare) spares++;
      if (!s.up || !shared.isServing(i)) free = true;
      else if (shared.isStalled(i)) stalled++;
    });
    if (stalled === 0) {
      this.spareStartFailed = false; // the next stall's failure is news again
      return;
    }
    if (!free && spares < stalled && spareSlot >= 0 && Date.now() >= this.sparesPausedUntil) this.startSpare(spareSlot);
    this.stallTimer = setTimeout(() => this.checkStalls(), STALL_CHECK_MS);
    this.stallTimer.unref();
  }

  /**
   * A spare in slot `index`. `new Worker` throws at once when the kernel
   * makes no thread (ERR_WORKER_INIT_FAILED, EAGAIN: the pod's pids limit
   * or RLIMIT_NPROC), which is when spares are wanted: a node under strain.
   * Thrown from here, in a message handler or the check's timer, it ended
   * the agent. The calls queue as they would without spares, and the check
   * tries again in a second while the stall lasts; one warning per stall.
   */
  private startSpare(index: number): void {
    try {
      this.slots[index] = this.start(index, true);
      this.spareStartFailed = false;
    } catch (err) {
      if (!this.spareStartFailed) this.opts.onWarning?.(`cannot start a CNI spare thread (${(err as Error).message}); calls queue meanwhile, trying again each second while a thread is stalled`);
      this.spareStartFailed = true;
      this.sparesPausedUntil = Date.now() + 1000;
    }
  }

  /** A worker died: the call it served gets an answer, and its attachment is free. */
  private orphaned(index: number, err: Error): void {
    const { shared } = this.opts;
    const call = shared.claimCurrent(index);
    if (call) {
      writeAnswer(call.fd, encodeResponse(errorResponse(ErrorCode.Internal, `tsflannel agent: ${err.message}`)));
      // Counted as its worker would have (its ring is free: the thread is
      // gone and a replacement is not started yet).
      shared.record(index, call.command, false, call.seconds);
    }
    // Also when its call was answered already (at the deadline, by the
    // sweep): the thread that held it is gone.
    shared.served(index);
    shared.leave(index);
    shared.unstall(index);
  }

  /**
   * Ends the threads. With `graceMs`, after CniShared.stop(): each thread
   * ends by itself once the call it serves is answered, and is terminated
   * only if it has not within `graceMs`. Terminated at once, a thread drops
   * its call mid-way (an ADD half made, answered only "worker exited"),
   * which is what an agent being updated must not do to the pods starting
   * meanwhile.
   */
  async close(graceMs = 0): Promise<void> {
    this.closed = true;
    clearTimeout(this.stallTimer);
    await Promise.all(
      this.slots.map(async (s) => {
        if (!s) return;
        if (graceMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([s.exited, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
          clearTimeout(timer);
        }
        await s.worker.terminate();
      }),
    );
  }
}
