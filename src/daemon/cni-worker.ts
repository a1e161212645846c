// A thread of the agent's CNI server, in one of two roles (cni-pool.ts):
//
//   accept  waits in accept(2) on the socket, refuses peers that are not
//           root, and hands each connection to the idle serving worker that
//           went idle last (cni-shared.ts);
//   serve   reads the request frame, runs the plugin handler and answers
//           (cni-call.ts). The synchronous netlink calls of a pod's ADD or
//           DEL (koffi blocks its thread) never stall the agent's event
//           loop (health, metrics, reconcile), and the event loop does no
//           work per call.
//
// Everything a call needs is loaded before the worker says it is ready.
import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import type { Logger } from 'pino';
import { ErrorCode } from '../cni/errors.js';
import { handleCni, preloadHandler } from '../plugin/handler.js';
import { peerCred, unixAccept } from '../netlink/index.js';
import { encodeResponse, errorResponse } from './cni-frame.js';
import { fdConnection, serveConnection, writeAnswer } from './cni-call.js';
import { CniShared, type CniSharedBuffers } from './cni-shared.js';
import { createAgentLogger } from './logging.js';
import type { LogFormat, LogLevel } from './options.js';
import type { WorkerReply } from './cni-pool.js';

/** What a thread is told at start (workerData). */
export interface WorkerStart {
  role: 'accept' | 'serve';
  /** the serving worker's index in the shared state (serve) */
  index: number;
  /** the thread's name in ps/top (`tsf-cni-<index>`, `tsf-cni-accept`), so its CPU can be told from the main thread's */
  threadName: string;
  shared: CniSharedBuffers;
  /** the listening socket (accept) */
  listenFd: number;
  frameTimeoutMs: number;
  callTimeoutMs: number;
  log: { level: LogLevel; format: LogFormat };
}

/** How long an idle thread blocks before it lets its event loop turn (timers, messages). */
const IDLE_TURN_MS = 1000;

const port = parentPort;
if (!port) throw new Error('cni-worker runs only as a worker thread');
const start = workerData as WorkerStart;
const shared = new CniShared(start.shared);
const logger = createAgentLogger({ level: start.log.level, format: start.log.format, base: { component: 'cni' } });
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

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

async function acceptLoop(): Promise<void> {
  let held: number | undefined;
  while (!shared.stopping) {
    // A connection is taken off the kernel's queue only once a worker can
    // serve it; until then it waits there (the socket's backlog).
    if (!shared.waitForIdle(IDLE_TURN_MS)) {
      await turn();
      continue;
    }
    const fd = held ?? unixAccept(start.listenFd);
    held = undefined;
    if (fd === undefined) return; // the socket was shut down: the server stops
    const refused = refusal(fd, logger);
    if (refused) {
      shared.add('refused');
      writeAnswer(fd, encodeResponse(errorResponse(ErrorCode.Internal, refused)), true);
      continue;
    }
    const worker = shared.popIdle();
    // The idle worker died meanwhile: keep the connection for the next one.
    if (worker === undefined) held = fd;
    else shared.give(worker, fd);
  }
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
  shared.pushIdle(start.index);
  for (;;) {
    const fd = shared.take(start.index, IDLE_TURN_MS);
    if (fd === 'stop') return;
    if (fd === undefined) {
      await turn();
      continue;
    }
    await serveConnection(ctx, fd, fdConnection(fd));
    if (shared.stopping) return;
    shared.pushIdle(start.index);
  }
}

async function main(): Promise<void> {
  let warning: string | undefined;
  if (start.role === 'serve') {
    // A node without the shim still serves: the first call reports the error.
    await preloadHandler().catch((err: unknown) => {
      warning = `preloading the handler failed: ${(err as Error)?.message ?? String(err)}`;
    });
  }
  nameThread();
  port!.postMessage({ ready: true, ...(warning ? { warning } : {}) } satisfies WorkerReply);
  await (start.role === 'accept' ? acceptLoop() : serveLoop());
}

void main().catch((err: unknown) => {
  logger.error({ err }, 'CNI thread failed');
  process.exit(1);
});
