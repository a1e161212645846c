// A worker thread of the agent's CNI server (cni-pool.ts): it waits for a
// connection on the shared listening socket (listenWaiter: the kernel wakes
// one waiting worker per connection, the first one made that is idle),
// accepts it, refuses a peer that is not root, and serves the call
// (cni-call.ts). The synchronous netlink calls of a pod's ADD or DEL (koffi
// blocks its thread) never stall the agent's event loop (health, metrics,
// reconcile), and the event loop does no work per call.
//
// Everything a call needs is loaded before the worker says it is ready.
import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { Logger } from 'pino';
import { ErrorCode } from '../cni/errors.js';
import { handleCni, preloadHandler } from '../plugin/handler.js';
import { listenWaiter, peerCred, unixAccept, type ListenWaiter } from '../netlink/index.js';
import { encodeResponse, errorResponse } from './cni-frame.js';
import { fdConnection, serveConnection, writeAnswer } from './cni-call.js';
import { CniShared, type CniSharedBuffers } from './cni-shared.js';
import { createAgentLogger } from './logging.js';
import type { LogFormat, LogLevel } from './options.js';
import type { WorkerReply } from './cni-pool.js';

/** What a thread is told at start (workerData). */
export interface WorkerStart {
  /** this worker's index in the shared state */
  index: number;
  /** the thread's name in ps/top (`tsf-cni-<index>`), so its CPU can be told from the main thread's */
  threadName: string;
  shared: CniSharedBuffers;
  /** the listening socket, non-blocking */
  listenFd: number;
  frameTimeoutMs: number;
  callTimeoutMs: number;
  log: { level: LogLevel; format: LogFormat };
  /** a spare thread (cni-pool.ts): it ends by itself once it has served no call for this long */
  idleExitMs?: number;
}

/** How long an idle thread blocks before it lets its event loop turn (timers, messages). */
const IDLE_TURN_MS = 1000;
/** The pause before accept(2) is tried again after it failed (EMFILE, ENFILE, ENOBUFS, ENOMEM). */
const ACCEPT_RETRY_MS = 100;
/** At most one log line per this while accept(2) keeps failing. */
const ACCEPT_WARN_MS = 10_000;

const port = parentPort;
if (!port) throw new Error('cni-worker runs only as a worker thread');
const start = workerData as WorkerStart;
const shared = new CniShared(start.shared);
// A stall is rare (a call parked behind its attachment's earlier call, a
// slow sender): the pool hears of it at once and may start a spare thread.
shared.onStall = () => port!.postMessage({ stalled: true } satisfies WorkerReply);
const logger = createAgentLogger({ level: start.log.level, format: start.log.format, base: { component: 'cni' } });
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Names this thread (`ps -T`, `top -H`, /proc/<pid>/task/<tid>/comm), so an
 * operator or the benchmark can tell the CNI workers' CPU from the event
 * loop's. After the preload: the Go runtime's own threads, started when the
 * shim loads, inherit the name of the thread that loaded it, and they are
 * not CNI workers. Best effort: a kernel that refuses leaves the old name.
 */
function nameThread(): void {
  try {
    writeFileSync('/proc/thread-self/comm', start.threadName);
  } catch {
    // no /proc, or an older kernel: the name is only for people and benchmarks
  }
}

/** The peer's refusal, or undefined when it is root. */
function refusal(fd: number, log: Logger): string | undefined {
  let uid: number;
  try {
    uid = peerCred(fd).uid;
  } catch (err) {
    log.warn({ err }, 'cannot read the CNI peer credentials; refusing');
    return `tsflannel agent: cannot read peer credentials: ${(err as Error).message}`;
  }
  if (uid === 0) return undefined;
  log.warn({ uid }, 'refused a CNI call from a non-root peer');
  return `tsflannel agent: peer uid ${uid} is not root`;
}

/**
 * A spare's place on the listening socket, taken again at the back. The
 * kernel wakes the first idle waiter in the order they were added
 * (EPOLLEXCLUSIVE), and spares must come after the base threads, so they
 * take calls only while those are busy. A base thread that was replaced
 * while a spare ran waits behind it: the spare took every call while idle,
 * never idled out, and the replacement served nothing. After each call,
 * a spare moves behind whoever came since. The new place is taken before
 * the old one is left, so no connection is missed; on failure (no
 * descriptor for the epoll) the spare keeps its place.
 */
function requeue(waiter: ListenWaiter): ListenWaiter {
  let next: ListenWaiter;
  try {
    next = listenWaiter(start.listenFd);
  } catch {
    return waiter;
  }
  waiter.close();
  return next;
}

async function serveLoop(): Promise<void> {
  const ctx = {
    worker: start.index,
    shared,
    run: async (env: Record<string, string>, stdin: Buffer) => handleCni({ env, stdin }),
    logger,
    frameTimeoutMs: start.frameTimeoutMs,
    callTimeoutMs: start.callTimeoutMs,
  };
  let waiter = listenWaiter(start.listenFd);
  let warnedAt = -Infinity;
  let idleSince = Date.now();
  try {
    while (!shared.stopping) {
      if (!waiter.wait(IDLE_TURN_MS)) {
        // A spare that has not been needed for a while ends (the pool
        // starts another when a stall needs one). A connection that came
        // meanwhile stays queued for the other threads: their epolls are
        // ahead of a spare's on the socket (EPOLLEXCLUSIVE), so it was
        // offered to them first, and level-triggered, they take it.
        if (start.idleExitMs !== undefined && Date.now() - idleSince >= start.idleExitMs) return;
        await turn();
        continue;
      }
      let fd: ReturnType<typeof unixAccept>;
      try {
        fd = unixAccept(start.listenFd);
      } catch (err) {
        // Out of descriptors or memory: the connection stays in the queue
        // until accept(2) succeeds. A thread that died here was replaced by
        // one that could not even open its modules, and the agent in
        // --cni-only mode exited once no thread was left; the old node:net
        // server kept going. Wait, and try again.
        if (Date.now() - warnedAt >= ACCEPT_WARN_MS) {
          warnedAt = Date.now();
          logger.warn({ err }, 'cannot accept a CNI connection; trying again');
        }
        await pause(ACCEPT_RETRY_MS);
        continue;
      }
      if (fd === 'closed') return; // the socket was shut down: the server stops
      if (fd === 'again') continue; // another worker took it
      const call = shared.accepted(start.index, fd);
      const refused = refusal(fd, logger);
      if (refused) {
        shared.add('refused');
        if (shared.claimCall(start.index, call)) writeAnswer(fd, encodeResponse(errorResponse(ErrorCode.Internal, refused)), true);
        shared.served(start.index);
        continue;
      }
      await serveConnection(ctx, fd, fdConnection(fd));
      idleSince = Date.now();
      if (start.idleExitMs !== undefined) waiter = requeue(waiter);
    }
  } finally {
    waiter.close();
  }
}

async function main(): Promise<void> {
  let warning: string | undefined;
  // A node without the shim still serves: the first call reports the error.
  await preloadHandler().catch((err: unknown) => {
    warning = `preloading the handler failed: ${(err as Error)?.message ?? String(err)}`;
  });
  nameThread();
  port!.postMessage({ ready: true, ...(warning ? { warning } : {}) } satisfies WorkerReply);
  await serveLoop();
  // The server is stopping and this thread's last call was answered: end
  // now (the pool waits for it), whatever handles the handler left open.
  process.exit(0);
}

void main().catch((err: unknown) => {
  logger.error({ err }, 'CNI thread failed');
  process.exit(1);
});
