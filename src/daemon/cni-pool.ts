// A small pool of worker threads running the CNI handler (cni-worker.ts).
// Workers start with the agent and preload the handler, so a request pays
// no module loading; a call goes to the worker with the fewest calls in
// flight; a worker that dies fails its calls with a CNI error and is
// replaced.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { CniResponse } from '../plugin/handler.js';
import { inSea, seaTextAsset } from '../sea/assets.js';

export interface WorkerRequest {
  id: number;
  env: Record<string, string>;
  stdin: Uint8Array;
}

export type WorkerReply =
  | { id: number; stdout: Uint8Array; exitCode: number; stderr: string }
  | { id: number; error: string }
  | { ready: true; warning?: string };

/** The worker bundle embedded in the single-executable tsflanneld (scripts/package.sh). */
export const SEA_WORKER_ASSET = 'cni-worker.cjs';

interface Pending {
  resolve: (res: CniResponse) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  pending: Map<number, Pending>;
  dead: boolean;
}

/** A worker that dies this soon after its start is replaced only after a pause (no crash loop). */
const QUICK_DEATH_MS = 2000;

export interface PoolOptions {
  size: number;
  onWarning?: (msg: string) => void;
  /** tests: another worker script */
  script?: URL;
}

/** What a worker is told at start (workerData). */
export interface WorkerStart {
  /** the thread's name in ps/top (`tsf-cni-<slot>`), so its CPU can be told from the main thread's */
  threadName: string;
}

/** The name a worker's thread takes: at most 15 bytes (the kernel's TASK_COMM_LEN). */
export function workerThreadName(slot: number): string {
  return `tsf-cni-${slot}`.slice(0, 15);
}

function spawnWorker(script: URL | undefined, slot: number): Worker {
  const workerData: WorkerStart = { threadName: workerThreadName(slot) };
  if (script) return new Worker(script, { workerData });
  if (inSea()) return new Worker(seaTextAsset(SEA_WORKER_ASSET), { eval: true, workerData });
  return new Worker(fileURLToPath(new URL('./cni-worker.js', import.meta.url)), { workerData });
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(private readonly opts: PoolOptions) {
    for (let i = 0; i < opts.size; i++) this.slots.push(this.start(i));
  }

  /** Resolves once every worker has loaded the handler. */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.ready));
  }

  private start(index: number): Slot {
    const worker = spawnWorker(this.opts.script, index);
    const pending = new Map<number, Pending>();
    let markReady: () => void = () => undefined;
    let markFailed: (err: Error) => void = () => undefined;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      markFailed = reject;
    });
    const slot: Slot = { worker, ready, pending, dead: false };
    const started = Date.now();
    worker.on('message', (msg: WorkerReply) => {
      if ('ready' in msg) {
        if (msg.warning) this.opts.onWarning?.(msg.warning);
        markReady();
        return;
      }
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if ('error' in msg) p.reject(new Error(msg.error));
      else p.resolve({ stdout: Buffer.from(msg.stdout), exitCode: msg.exitCode, stderr: msg.stderr });
    });
    const fail = (err: Error) => {
      if (slot.dead) return;
      slot.dead = true;
      markFailed(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      if (this.closed) return;
      this.opts.onWarning?.(`CNI worker died (${err.message}); starting another`);
      const replace = () => {
        const at = this.slots.indexOf(slot);
        if (!this.closed && at >= 0) this.slots[at] = this.start(at);
      };
      if (Date.now() - started < QUICK_DEATH_MS) setTimeout(replace, 1000).unref();
      else replace();
    };
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => fail(new Error(`CNI worker exited with code ${code}`)));
    ready.catch(() => undefined);
    return slot;
  }

  /** Runs one call on the least busy worker. Rejects only when the worker dies. */
  run(env: Record<string, string>, stdin: Buffer): Promise<CniResponse> {
    if (this.closed) return Promise.reject(new Error('the CNI worker pool is closed'));
    const live = this.slots.filter((s) => !s.dead);
    if (live.length === 0) return Promise.reject(new Error('no CNI worker is running'));
    const slot = live.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    return new Promise<CniResponse>((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, env, stdin } satisfies WorkerRequest);
    });
  }

  /** Calls in flight, across all workers. */
  get busy(): number {
    return this.slots.reduce((n, s) => n + s.pending.size, 0);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
