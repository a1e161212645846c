// The agent's CNI socket: the second transport over the plugin handler (the
// first is the standalone executable). The forwarder /opt/cni/bin/tsflannel
// sends one frame per call (cni-frame.ts); this server checks the peer is
// root, bounds the frame and the time, serializes calls per attachment,
// runs the handler on a worker thread and answers one frame. No CNI logic
// lives here.
import { chmodSync, lstatSync, mkdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode } from '../cni/errors.js';
import type { CniResponse } from '../plugin/handler.js';
import { decodeRequest, encodeResponse, errorResponse, FrameError, FrameReader } from './cni-frame.js';
import type { WorkerPool } from './cni-pool.js';

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface CniServerMetrics {
  /** calls answered, per CNI_COMMAND and outcome (exit code 0 or not) */
  calls: Map<string, { ok: number; error: number }>;
  /** connections refused because the peer is not root */
  refused: number;
  /** frames that were oversize, malformed or incomplete in time */
  badFrames: number;
  /** calls that ran past the call deadline */
  timeouts: number;
  inFlight: number;
}

export function newCniServerMetrics(): CniServerMetrics {
  return { calls: new Map(), refused: 0, badFrames: 0, timeouts: 0, inFlight: 0 };
}

export interface CniServerOptions {
  path: string;
  pool: Pick<WorkerPool, 'run'>;
  peerCred: (fd: number) => PeerCred;
  logger: Logger;
  metrics: CniServerMetrics;
  /** called once per answered call (command as sent, or 'invalid') */
  onCall?: (command: string, ok: boolean, seconds: number) => void;
  /** the whole request frame must arrive within this; default 10 s */
  frameTimeoutMs?: number;
  /** a call's answer is sent within this (the forwarder waits 55 s; sooner when its TSFLANNEL_FORWARD_TIMEOUT_MS is lower); default 50 s */
  callTimeoutMs?: number;
  /** concurrent connections; more are closed at once and their forwarders run standalone */
  maxConnections?: number;
}

/** How long before the forwarder gives up the agent answers (its clock starts earlier, at connect). */
const FORWARDER_MARGIN_MS = 1000;

/**
 * A call's deadline: the agent's own, or sooner when the forwarder that sent
 * it falls back to the standalone plugin sooner (TSFLANNEL_FORWARD_TIMEOUT_MS,
 * which it sends with its other TSFLANNEL_* variables). Past the forwarder's
 * limit the call may already run there, so a queued call must not start;
 * the margin lets the agent's "try again" arrive first. The value is read as
 * the forwarder reads it (optional '+', decimal digits, above 0); anything it
 * ignores leaves its 55 s default, which is longer than the agent's 50 s.
 */
export function callDeadlineMs(env: Record<string, string>, agentMs: number): number {
  const text = env.TSFLANNEL_FORWARD_TIMEOUT_MS;
  if (text === undefined || !/^\+?[0-9]+$/.test(text)) return agentMs;
  const forwarderMs = Number(text);
  if (!(forwarderMs > 0) || !Number.isFinite(forwarderMs)) return agentMs;
  const margin = Math.min(FORWARDER_MARGIN_MS, Math.floor(forwarderMs / 2));
  return Math.min(agentMs, forwarderMs - margin);
}

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

/** The descriptor under a net.Socket: Node has no public accessor, nor SO_PEERCRED. */
function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  return typeof handle?.fd === 'number' && handle.fd >= 0 ? handle.fd : undefined;
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

/** Calls for one attachment run one after another; others run in parallel. */
class AttachmentQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string | undefined, fn: () => Promise<T>): Promise<T> {
    if (key === undefined) return fn();
    const prev = this.tails.get(key);
    // The usual case, no call in flight for this attachment: start at once
    // instead of a turn of the microtask queue later.
    const next = prev ? prev.then(fn, fn) : fn();
    const tail: Promise<unknown> = next.then(
      () => this.settled(key, tail),
      () => this.settled(key, tail),
    );
    this.tails.set(key, tail);
    return next;
  }

  private settled(key: string, tail: Promise<unknown>): void {
    if (this.tails.get(key) === tail) this.tails.delete(key);
  }
}

function attachmentKey(env: Record<string, string>): string | undefined {
  const id = env.CNI_CONTAINERID ?? '';
  if (id === '') return undefined;
  return `${id}\n${env.CNI_IFNAME ?? ''}`;
}

export class CniServer {
  private server?: Server;
  private ino?: number;
  private readonly queue = new AttachmentQueue();
  private readonly sockets = new Set<Socket>();
  private readonly startedAt = new Date().toISOString();
  private statsTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: CniServerOptions) {}

  async start(): Promise<void> {
    const { path, logger } = this.opts;
    await claimPath(path, logger);
    const server = createServer({ allowHalfOpen: true }, (s) => this.accept(s));
    server.maxConnections = this.opts.maxConnections ?? 128;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
    this.ino = statSync(path).ino;
    server.on('error', (err) => logger.error({ err }, 'CNI socket error'));
    this.server = server;
    this.writeStats();
    logger.info({ path }, 'serving CNI calls');
  }

  /** Stops accepting, lets answers in flight go out, removes our socket file. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    clearTimeout(this.statsTimer);
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    try {
      if (statSync(this.opts.path).ino === this.ino) unlinkSync(this.opts.path);
    } catch {
      // already gone
    }
  }

  private accept(socket: Socket): void {
    const { metrics } = this.opts;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy()); // the forwarder went away; nothing to answer
    const refusal = this.checkPeer(socket);
    if (refusal) {
      metrics.refused += 1;
      this.answer(socket, refusal);
      return;
    }
    const reader = new FrameReader();
    const timer = setTimeout(() => {
      stopReading();
      metrics.badFrames += 1;
      this.answer(socket, errorResponse(ErrorCode.InvalidEnvironment, 'tsflannel agent: the request frame did not arrive in time'));
    }, this.opts.frameTimeoutMs ?? 10_000);
    const onData = (chunk: Buffer) => {
      let body: Buffer | undefined;
      try {
        body = reader.push(chunk);
      } catch (err) {
        stopReading();
        metrics.badFrames += 1;
        this.answer(socket, errorResponse(ErrorCode.InvalidEnvironment, `tsflannel agent: bad request frame: ${(err as Error).message}`));
        return;
      }
      if (body === undefined) return;
      stopReading();
      void this.serve(socket, body);
    };
    const onEnd = () => {
      stopReading();
      metrics.badFrames += 1;
      this.answer(socket, errorResponse(ErrorCode.InvalidEnvironment, 'tsflannel agent: bad request frame: connection closed before a complete frame'));
    };
    const stopReading = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.resume(); // drain whatever else arrives; it is ignored
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
  }

  private checkPeer(socket: Socket): CniResponse | undefined {
    const fd = socketFd(socket);
    let uid: number;
    try {
      if (fd === undefined) throw new Error('no descriptor');
      uid = this.opts.peerCred(fd).uid;
    } catch (err) {
      this.opts.logger.warn({ err }, 'cannot read the CNI peer credentials; refusing');
      return errorResponse(ErrorCode.Internal, `tsflannel agent: cannot read peer credentials: ${(err as Error).message}`);
    }
    if (uid === 0) return undefined;
    this.opts.logger.warn({ uid }, 'refused a CNI call from a non-root peer');
    return errorResponse(ErrorCode.Internal, `tsflannel agent: peer uid ${uid} is not root`);
  }

  private async serve(socket: Socket, body: Buffer): Promise<void> {
    const { metrics, logger } = this.opts;
    let req;
    try {
      req = decodeRequest(body);
    } catch (err) {
      metrics.badFrames += 1;
      const msg = err instanceof FrameError ? err.message : String(err);
      this.answer(socket, errorResponse(ErrorCode.InvalidEnvironment, `tsflannel agent: bad request frame: ${msg}`));
      return;
    }
    const command = req.env.CNI_COMMAND ?? '';
    const started = Date.now();
    metrics.inFlight += 1;
    let res: CniResponse;
    try {
      // A call still queued behind its attachment's earlier one when its
      // deadline answers "try again" must not run later: by then the runtime
      // may have retried it elsewhere (the standalone plugin) or deleted the
      // pod, and a late ADD would make an attachment nobody deletes.
      let expired = false;
      const start = (): Promise<CniResponse> =>
        expired ? Promise.resolve(errorResponse(ErrorCode.TryAgainLater, 'expired before it started')) : this.opts.pool.run(req.env, req.stdin);
      const deadlineMs = callDeadlineMs(req.env, this.opts.callTimeoutMs ?? 50_000);
      res = await this.withDeadline(this.queue.run(attachmentKey(req.env), start), deadlineMs, () => (expired = true));
    } catch (err) {
      res = errorResponse(ErrorCode.Internal, `tsflannel agent: ${(err as Error).message}`);
    } finally {
      metrics.inFlight -= 1;
    }
    this.count(command, res.exitCode === 0);
    this.opts.onCall?.(/^[A-Z]{1,10}$/.test(command) ? command : 'invalid', res.exitCode === 0, (Date.now() - started) / 1000);
    const fields = { cmd: command, containerId: req.env.CNI_CONTAINERID, ifname: req.env.CNI_IFNAME, ms: Date.now() - started };
    if (res.exitCode === 0) logger.debug(fields, 'CNI call served');
    else logger.info({ ...fields, answer: res.stdout.toString('utf8').trim().slice(0, 500) }, 'CNI call failed');
    this.answer(socket, res);
  }

  private withDeadline(call: Promise<CniResponse>, ms: number, onExpired: () => void): Promise<CniResponse> {
    return new Promise<CniResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        onExpired();
        this.opts.metrics.timeouts += 1;
        resolve(errorResponse(ErrorCode.TryAgainLater, `tsflannel agent: the call did not finish within ${ms} ms; try again`));
      }, ms);
      call.then(
        (res) => {
          clearTimeout(timer);
          resolve(res);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /** At most once a second, by rename: a reader sees the old file or the new one. */
  private scheduleStats(): void {
    if (this.statsTimer || !this.server) return;
    this.statsTimer = setTimeout(() => {
      this.statsTimer = undefined;
      this.writeStats();
    }, 1000);
    this.statsTimer.unref();
  }

  private writeStats(): void {
    const m = this.opts.metrics;
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

  private count(command: string, ok: boolean): void {
    const name = /^[A-Z]{1,10}$/.test(command) ? command : 'invalid';
    const c = this.opts.metrics.calls.get(name) ?? { ok: 0, error: 0 };
    if (ok) c.ok += 1;
    else c.error += 1;
    this.opts.metrics.calls.set(name, c);
  }

  private answer(socket: Socket, res: CniResponse): void {
    this.scheduleStats();
    if (socket.destroyed) return;
    socket.end(encodeResponse(res));
    // A peer that never closes its side must not hold the connection open.
    // Cleared when the connection closes, as it does at once when the
    // forwarder has read the answer: a timer left to fire 5 s after every
    // call would wake the event loop once more per call.
    const linger = setTimeout(() => socket.destroy(), 5000).unref();
    socket.once('close', () => clearTimeout(linger));
  }
}
