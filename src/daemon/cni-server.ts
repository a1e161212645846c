// The agent's CNI socket: the second transport over the plugin handler (the
// first is the standalone executable). The forwarder /opt/cni/bin/tsflannel
// sends one frame per call (cni-frame.ts). This module claims the socket
// path, listens, and starts the worker threads that serve it (cni-pool.ts):
// each accepts connections itself, checks the peer is root, bounds the
// frame and the time, serializes calls per attachment and runs the handler
// (cni-worker.ts, cni-call.ts). The event loop does no work per call; it
// reads the workers' counters for metrics and the stats file, answers
// calls stuck past their deadline, and (in the pool) starts a spare thread
// when a worker says it stalled. No CNI logic lives here.
import { chmodSync, lstatSync, mkdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { closeSocket, shutdownSocket, unixListen } from '../netlink/index.js';
import { encodeResponse } from './cni-frame.js';
import { lateAnswer, writeAnswer } from './cni-call.js';
import { SPARE_WORKERS, WorkerPool } from './cni-pool.js';
import { CniShared, type CountedCommand } from './cni-shared.js';
import type { LogFormat, LogLevel } from './options.js';

/** Since the agent started (cni-shared.ts keeps them for every thread). */
export interface CniServerMetrics {
  /** calls answered, per CNI_COMMAND and outcome (exit code 0 or not) */
  readonly calls: Map<string, { ok: number; error: number }>;
  /** connections refused because the peer is not root */
  readonly refused: number;
  /** frames that were oversize, malformed or incomplete in time */
  readonly badFrames: number;
  /** calls that ran past the call deadline */
  readonly timeouts: number;
  readonly inFlight: number;
  /** CNI worker threads running now: the base ones and any spare (cni-pool.ts) */
  readonly threads: number;
  /** spare threads started because every thread was busy and one was stalled */
  readonly sparesStarted: number;
}

export interface CniServerOptions {
  path: string;
  /** worker threads */
  workers: number;
  logger: Logger;
  /** the workers' own loggers (they write to stderr like the agent's) */
  log: { level: LogLevel; format: LogFormat };
  /** called for every answered call (at most a second late) */
  onCall?: (command: CountedCommand, ok: boolean, seconds: number) => void;
  /** the whole request frame must arrive within this; default 10 s */
  frameTimeoutMs?: number;
  /** a call's answer is sent within this (the forwarder waits 55 s; sooner when its TSFLANNEL_FORWARD_TIMEOUT_MS is lower); default 50 s */
  callTimeoutMs?: number;
  /** connections waiting for a worker in the kernel's queue; more are refused and their forwarders run standalone */
  backlog?: number;
  onWarning?: (msg: string) => void;
  /** tests: another worker script */
  workerScript?: URL;
  /** tests: how long a spare thread stays idle before it ends (cni-pool.ts SPARE_IDLE_MS) */
  spareIdleMs?: number;
}

const DEFAULT_FRAME_TIMEOUT_MS = 10_000;
const DEFAULT_CALL_TIMEOUT_MS = 50_000;

/** How often the event loop reads the threads' counters and checks deadlines. */
const SWEEP_MS = 1000;

/** Beside the socket: what `tsflannel status` and doctor read about the calls served. */
export const STATS_FILE = 'cni-stats.json';

export interface CniStatsFile {
  pid: number;
  socket: string;
  startedAt: string;
  updatedAt: string;
  calls: Record<string, { ok: number; error: number }>;
  refused: number;
  badFrames: number;
  timeouts: number;
}

export function statsFilePath(socket: string): string {
  return join(dirname(socket), STATS_FILE);
}

export class CniServerError extends Error {
  override readonly name = 'CniServerError';
}

/** True when something accepts connections on `path` (another agent). */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      c.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(true), timeoutMs); // a hung listener is still someone's
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
  });
}

/**
 * Makes `path` free for our socket: creates its directory 0700, removes a
 * stale socket left by a killed agent, and refuses when another agent
 * still answers there or the path is not a socket.
 */
async function claimPath(path: string, log: Logger): Promise<void> {
  const dir = dirname(path);
  let created = false;
  try {
    statSync(dir);
  } catch {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    created = true;
  }
  if (created) chmodSync(dir, 0o700); // mkdir's mode passes through the umask
  const dirMode = statSync(dir).mode & 0o777;
  if (dirMode & 0o077) {
    log.warn({ dir, mode: dirMode.toString(8) }, 'CNI socket directory is open to other users; the socket itself is 0600 and peers must be root');
  }
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new CniServerError(`${path} exists and is not a socket; remove it or pick another --cni-socket`);
  if (await answers(path)) {
    throw new CniServerError(`another agent answers on ${path}; stop it first, or give this one another --cni-socket`);
  }
  log.info({ path }, 'removing stale CNI socket');
  unlinkSync(path);
}

export class CniServer {
  private listenFd?: number;
  private ino?: number;
  private pool?: WorkerPool;
  private readonly shared: CniShared;
  /** the counters, for metrics: read from the threads' shared state */
  readonly metrics: CniServerMetrics;
  private readonly startedAt = new Date().toISOString();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** set by a sweep that saw a call due before the next one */
  private deadlineTimer: NodeJS.Timeout | undefined;
  private statsWritten = -1;

  constructor(private readonly opts: CniServerOptions) {
    // Slots for the spare threads too: the shared memory is sized once.
    this.shared = new CniShared(opts.workers + SPARE_WORKERS);
    this.metrics = this.shared.metrics();
  }

  async start(): Promise<void> {
    const { path, logger } = this.opts;
    await claimPath(path, logger);
    const fd = unixListen(path, this.opts.backlog ?? 128);
    try {
      chmodSync(path, 0o600);
      this.ino = statSync(path).ino;
    } catch (err) {
      closeSocket(fd);
      throw err;
    }
    try {
      this.pool = this.startPool(fd);
    } catch (err) {
      // No thread runs (the pool ended those it made): neither may the
      // socket, or forwarders would queue on it instead of falling back.
      closeSocket(fd);
      this.removeSocketFile();
      throw err;
    }
    this.listenFd = fd;
    // Not unref'd: the listening socket is no event-loop handle (the old
    // node:net server was), so while the server runs this timer is what
    // keeps the process alive when no worker thread is (one that died at
    // start waits a second to be replaced); stop() clears it.
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS);
    this.writeStats();
    logger.info({ path, workers: this.opts.workers }, 'serving CNI calls');
  }

  private startPool(fd: number): WorkerPool {
    return new WorkerPool({
      size: this.opts.workers,
      spares: SPARE_WORKERS,
      ...(this.opts.spareIdleMs !== undefined ? { spareIdleMs: this.opts.spareIdleMs } : {}),
      shared: this.shared,
      start: {
        shared: this.shared.buffers,
        listenFd: fd,
        frameTimeoutMs: this.opts.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS,
        callTimeoutMs: this.opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS,
        log: this.opts.log,
      },
      ...(this.opts.onWarning ? { onWarning: this.opts.onWarning } : {}),
      ...(this.opts.workerScript ? { script: this.opts.workerScript } : {}),
    });
  }

  /** Our socket file, unless another agent's has replaced it since. */
  private removeSocketFile(): void {
    try {
      if (statSync(this.opts.path).ino === this.ino) unlinkSync(this.opts.path);
    } catch {
      // already gone
    }
  }

  /** Resolves once every worker has loaded the handler. */
  ready(): Promise<void> {
    return this.pool?.ready() ?? Promise.resolve();
  }

  /**
   * Stops accepting (a new connection is refused and its forwarder runs the
   * standalone plugin); calls in progress finish and are answered, within
   * their deadline (the sweep keeps answering a stuck one); connections
   * still in the socket's queue are closed unanswered (their forwarders run
   * the standalone plugin); removes our socket file.
   */
  async stop(): Promise<void> {
    const fd = this.listenFd;
    if (fd === undefined) return;
    this.listenFd = undefined;
    this.shared.stop();
    shutdownSocket(fd);
    // Every call is answered by its deadline (its worker, or the sweep);
    // a thread still busy a moment after that is stuck and is terminated.
    await this.pool?.close((this.opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS) + SWEEP_MS);
    clearInterval(this.sweepTimer);
    clearTimeout(this.deadlineTimer);
    closeSocket(fd);
    this.removeSocketFile();
    this.drain();
    this.writeStats();
  }

  /** Durations of the calls answered since the last drain, to onCall. */
  drain(): void {
    const onCall = this.opts.onCall;
    this.shared.drain((command, ok, seconds) => onCall?.(command, ok, seconds));
  }

  /**
   * Once a second: durations to the metrics, the stats file when calls
   * were answered, and "try again" for a call past its deadline whose
   * worker is stuck in a synchronous call (its own timer answers it
   * otherwise).
   */
  private sweep(): void {
    this.answerExpired();
    this.drain();
    if (this.shared.changes !== this.statsWritten) this.writeStats();
  }

  /**
   * "Try again" for the calls past their deadline. A call due before the
   * next sweep gets a timer at its deadline, so a stuck worker's caller is
   * answered on time, not up to a second late; a call is seen by a sweep
   * only once it has run that long (most never are), so this is no work
   * per call. (A call whose whole limit is under a second may still
   * start and end between two sweeps: its answer can be that late.)
   */
  private answerExpired(): void {
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    const now = Date.now();
    for (const [, fd, limitMs] of this.shared.claimExpired(now)) {
      this.shared.add('timeouts');
      writeAnswer(fd, encodeResponse(lateAnswer(limitMs)));
    }
    const next = this.shared.nextDeadline();
    if (next < now + SWEEP_MS) {
      // claimExpired takes deadlines to the whole millisecond: one more.
      this.deadlineTimer = setTimeout(() => this.answerExpired(), Math.max(0, next - Date.now()) + 1);
      this.deadlineTimer.unref();
    }
  }

  /** By rename: a reader sees the old file or the new one. */
  private writeStats(): void {
    const m = this.metrics;
    this.statsWritten = this.shared.changes;
    const body: CniStatsFile = {
      pid: process.pid,
      socket: this.opts.path,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      calls: Object.fromEntries(m.calls),
      refused: m.refused,
      badFrames: m.badFrames,
      timeouts: m.timeouts,
    };
    const file = statsFilePath(this.opts.path);
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      writeFileSync(tmp, `${JSON.stringify(body)}\n`, { mode: 0o644 });
      renameSync(tmp, file);
    } catch (err) {
      this.opts.logger.debug({ err }, 'cannot write the CNI stats file');
    }
  }
}
