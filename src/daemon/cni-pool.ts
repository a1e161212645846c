// The CNI server's worker threads (cni-worker.ts), started with the agent;
// each preloads the handler, so a call pays no module loading. A worker that
// dies is replaced, and the call it had in hand is answered with a CNI error.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '../cni/errors.js';
import { inSea, seaTextAsset } from '../sea/assets.js';
import { encodeResponse, errorResponse } from './cni-frame.js';
import { writeAnswer } from './cni-call.js';
import type { CniShared } from './cni-shared.js';
import type { WorkerStart } from './cni-worker.js';

export type WorkerReply = { ready: true; warning?: string };

/** The worker bundle embedded in the single-executable tsflanneld (scripts/package.sh). */
export const SEA_WORKER_ASSET = 'cni-worker.cjs';

/** A thread that dies this soon after its start is replaced only after a pause (no crash loop). */
const QUICK_DEATH_MS = 2000;

export interface PoolOptions {
  size: number;
  shared: CniShared;
  /** what every worker is told, less its index and name */
  start: Omit<WorkerStart, 'index' | 'threadName'>;
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
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private closed = false;

  constructor(private readonly opts: PoolOptions) {
    for (let i = 0; i < opts.size; i++) this.slots.push(this.start(i));
  }

  /** Resolves once every worker has loaded the handler. */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.ready));
  }

  private spawn(index: number): Worker {
    const workerData: WorkerStart = { ...this.opts.start, index, threadName: workerThreadName(index) };
    if (this.opts.script) return new Worker(this.opts.script, { workerData });
    if (inSea()) return new Worker(seaTextAsset(SEA_WORKER_ASSET), { eval: true, workerData });
    return new Worker(fileURLToPath(new URL('./cni-worker.js', import.meta.url)), { workerData });
  }

  private start(index: number): Slot {
    const worker = this.spawn(index);
    let markReady: () => void = () => undefined;
    let markFailed: (err: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      markFailed = reject;
    });
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const slot: Slot = { worker, ready, exited, dead: false };
    const started = Date.now();
    worker.on('message', (msg: WorkerReply) => {
      if (msg.warning) this.opts.onWarning?.(msg.warning);
      markReady();
    });
    const fail = (err: Error) => {
      if (slot.dead) return;
      slot.dead = true;
      markFailed(err);
      this.orphaned(index, err);
      if (this.closed) return;
      this.opts.onWarning?.(`CNI worker died (${err.message}); starting another`);
      const replace = () => {
        if (!this.closed && this.slots[index] === slot) this.slots[index] = this.start(index);
      };
      if (Date.now() - started < QUICK_DEATH_MS) setTimeout(replace, 1000).unref();
      else replace();
    };
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => fail(new Error(`CNI worker exited with code ${code}`)));
    ready.catch(() => undefined);
    return slot;
  }

  /** A worker died: the call it served gets an answer, and its attachment is free. */
  private orphaned(index: number, err: Error): void {
    const { shared } = this.opts;
    const fd = shared.claimCurrent(index);
    if (fd !== undefined) writeAnswer(fd, encodeResponse(errorResponse(ErrorCode.Internal, `tsflannel agent: ${err.message}`)));
    // Also when its call was answered already (at the deadline, by the
    // sweep): the thread that held it is gone.
    shared.served(index);
    shared.leave(index);
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
    await Promise.all(
      this.slots.map(async (s) => {
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
