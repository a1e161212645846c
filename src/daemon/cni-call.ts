// One CNI connection as a serving worker handles it, from the request frame
// to the answer: bound the frame's size and time, decode it, hold the
// attachment (one call per container ID + ifname at a time, across
// workers), run the handler under the call's deadline, answer once. The
// descriptor I/O is behind CallConnection so the logic can be tested
// without a socket.
import { readSync, writeSync } from 'node:fs';
import type { Logger } from 'pino';
import { ErrorCode } from '../cni/errors.js';
import type { CniResponse } from '../plugin/handler.js';
import { closeSocket, peerClosed, pollIn, shutdownSocket } from '../netlink/index.js';
import { decodeRequest, encodeResponse, errorResponse, FrameError, MAX_FRAME } from './cni-frame.js';
import { countedCommand, type CniShared } from './cni-shared.js';

export interface CallConnection {
  /**
   * The request frame's body; throws a FrameError when it is bad, cut short
   * or late. `slow` is called once when the frame is not whole after
   * SLOW_FRAME_MS (the thread then waits on its sender, not on work).
   */
  readFrame(deadline: number, slow?: () => void): Buffer;
  /** writes the answer frame and closes the connection; called once, by whoever claimed the call; `unread`: the request was not read whole */
  answer(bytes: Buffer, unread?: boolean): void;
  /** the caller has closed the connection: nobody waits for this call any more */
  peerGone(): boolean;
}

export interface CallContext {
  /** this worker's index in the shared state */
  worker: number;
  shared: CniShared;
  run: (env: Record<string, string>, stdin: Buffer) => Promise<CniResponse>;
  logger: Logger;
  /** the whole request frame must arrive within this */
  frameTimeoutMs: number;
  /** the agent's own call deadline (callDeadlineMs may shorten it per call) */
  callTimeoutMs: number;
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
  const forwarderMs = forwarderTimeoutMs(env);
  if (forwarderMs === undefined) return agentMs;
  return Math.min(agentMs, forwarderMs - forwarderMarginMs(env));
}

/** TSFLANNEL_FORWARD_TIMEOUT_MS as the forwarder reads it; undefined when it keeps its default. */
function forwarderTimeoutMs(env: Record<string, string>): number | undefined {
  const text = env.TSFLANNEL_FORWARD_TIMEOUT_MS;
  if (text === undefined || !/^\+?[0-9]+$/.test(text)) return undefined;
  const ms = Number(text);
  return ms > 0 && Number.isFinite(ms) ? ms : undefined;
}

/** How long before the forwarder's deadline the agent answers: 1 s, half the forwarder's limit below 2 s. */
export function forwarderMarginMs(env: Record<string, string>): number {
  return Math.min(FORWARDER_MARGIN_MS, Math.floor((forwarderTimeoutMs(env) ?? FORWARDER_DEFAULT_MS) / 2));
}

/** The forwarder's own wait when TSFLANNEL_FORWARD_TIMEOUT_MS does not set it. */
const FORWARDER_DEFAULT_MS = 55_000;

export function attachmentKey(env: Record<string, string>): string | undefined {
  const id = env.CNI_CONTAINERID ?? '';
  if (id === '') return undefined;
  return `${id}\n${env.CNI_IFNAME ?? ''}`;
}

/** The "try again" answer of a call that did not finish (or start) within its deadline. */
export function lateAnswer(limitMs: number): CniResponse {
  return errorResponse(ErrorCode.TryAgainLater, `tsflannel agent: the call did not finish within ${limitMs} ms; try again`);
}

/**
 * A frame not whole after this is a slow sender's: its worker counts as
 * stalled. A forwarder writes its frame at once, so a frame takes well
 * under a millisecond; this is long enough that a busy machine does not
 * make spare threads, and short against the 10 s the read may take.
 */
export const SLOW_FRAME_MS = 100;

/** A connection a worker accepted: blocking reads bounded by poll(2). */
export function fdConnection(fd: number): CallConnection {
  const readExact = (buf: Buffer, deadline: number, slow: { at: number; fn?: (() => void) | undefined }): void => {
    for (let at = 0; at < buf.length; ) {
      // Until the frame is slow, poll only until then (the same one poll
      // when the bytes are there, as they nearly always are).
      let ready = false;
      if (slow.fn && slow.at < deadline) {
        ready = pollIn(fd, Math.max(0, slow.at - Date.now()));
        if (!ready) {
          slow.fn();
          slow.fn = undefined;
        }
      }
      if (!ready && !pollIn(fd, Math.max(0, deadline - Date.now()))) throw new FrameError('late');
      const n = readSync(fd, buf, at, buf.length - at, null);
      if (n === 0) throw new FrameError('connection closed before a complete frame');
      at += n;
    }
  };
  return {
    readFrame(deadline, onSlow) {
      const slow = { at: Date.now() + SLOW_FRAME_MS, fn: onSlow };
      const head = Buffer.alloc(4);
      readExact(head, deadline, slow);
      const n = head.readUInt32BE(0);
      if (n > MAX_FRAME) throw new FrameError(`frame of ${n} bytes is over the ${MAX_FRAME}-byte limit`);
      const body = Buffer.alloc(n);
      readExact(body, deadline, slow);
      return body;
    },
    answer(bytes, unread) {
      writeAnswer(fd, bytes, unread);
    },
    peerGone() {
      return peerClosed(fd);
    },
  };
}

/** How long a peer answered before its request was read may go on sending. */
const DRAIN_MS = 250;

/**
 * Writes an answer frame to a connection and closes it; a peer that left
 * gets nothing. `unread`: the peer may still be sending (a refused peer, a
 * bad frame): its bytes are read and dropped for a moment first, since
 * closing a Unix socket with unread data fails the peer's write (EPIPE)
 * before it reads the answer.
 */
export function writeAnswer(fd: number, bytes: Buffer, unread = false): void {
  try {
    for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at, bytes.length - at);
    if (unread) {
      shutdownSocket(fd, 'write');
      const scratch = Buffer.alloc(64 * 1024);
      const until = Date.now() + DRAIN_MS;
      while (pollIn(fd, Math.max(0, until - Date.now())) && readSync(fd, scratch, 0, scratch.length, null) > 0);
    }
  } catch {
    // the forwarder went away (EPIPE); nothing to answer
  } finally {
    closeSocket(fd);
  }
}

function badFrame(ctx: CallContext, call: number, conn: CallConnection, err: unknown): void {
  ctx.shared.add('badFrames');
  const msg = err instanceof FrameError ? err.message : String(err);
  const text = msg === 'late' ? 'tsflannel agent: the request frame did not arrive in time' : `tsflannel agent: bad request frame: ${msg}`;
  if (ctx.shared.claimCall(ctx.worker, call)) conn.answer(encodeResponse(errorResponse(ErrorCode.InvalidEnvironment, text)), true);
}

/** Serves connection `fd` to its end. Never throws. */
export async function serveConnection(ctx: CallContext, fd: number, conn: CallConnection): Promise<void> {
  const { shared } = ctx;
  const call = shared.accepted(ctx.worker, fd);
  let slow = false;
  try {
    let req;
    try {
      req = decodeRequest(
        conn.readFrame(Date.now() + ctx.frameTimeoutMs, () => {
          slow = true;
          shared.stall(ctx.worker);
        }),
      );
    } catch (err) {
      badFrame(ctx, call, conn, err);
      return;
    } finally {
      if (slow) shared.unstall(ctx.worker);
    }
    await serveRequest(ctx, call, conn, req.env, req.stdin, req.deadline);
  } finally {
    shared.served(ctx.worker);
  }
}

/**
 * `call`: the call's token in the shared state (CniShared.accepted);
 * `forwarderDeadline`: when the forwarder gives up (epoch ms), if it said.
 */
async function serveRequest(
  ctx: CallContext,
  call: number,
  conn: CallConnection,
  env: Record<string, string>,
  stdin: Buffer,
  forwarderDeadline?: number,
): Promise<void> {
  const { shared, worker, logger } = ctx;
  const command = env.CNI_COMMAND ?? '';
  const counted = countedCommand(command);
  const started = Date.now();
  let deadline = started + callDeadlineMs(env, ctx.callTimeoutMs);
  // The forwarder's clock started at connect, and the connection may have
  // waited in the listen queue since, while every worker was busy: its own
  // deadline, less the margin, bounds this one too.
  if (forwarderDeadline !== undefined) deadline = Math.min(deadline, forwarderDeadline - forwarderMarginMs(env));
  const limitMs = Math.max(0, deadline - started);
  shared.beginCall(worker, call, deadline, limitMs, counted);
  const answerLate = () => {
    if (!shared.claimCall(worker, call)) return;
    shared.add('timeouts');
    conn.answer(encodeResponse(lateAnswer(limitMs)));
  };
  const key = attachmentKey(env);
  let res: CniResponse;
  // A call still waiting for its attachment's earlier call at its deadline
  // is answered "try again" and never starts: by then the runtime may have
  // retried it elsewhere (the standalone plugin) or deleted the pod, and a
  // late ADD would make an attachment nobody deletes.
  if (limitMs === 0 || (key !== undefined && !(await shared.enter(worker, key, deadline)))) {
    // (limitMs 0: the forwarder is about to give up; the call must not start.)
    res = lateAnswer(limitMs);
    answerLate();
  } else if (conn.peerGone()) {
    // The caller left before the call started: a connection waits in the
    // listening socket's queue while every worker is busy, with no clock
    // running here (the agent's deadline starts once the frame is read,
    // the forwarder's at connect). A forwarder that gave up has run the
    // standalone plugin, or the runtime killed it and moved on (DEL,
    // retry); running the call now would make an attachment nobody owns.
    if (key !== undefined) shared.leave(worker);
    res = errorResponse(ErrorCode.TryAgainLater, 'tsflannel agent: the caller left before the call started');
    if (shared.claimCall(worker, call)) conn.answer(encodeResponse(res));
  } else {
    const timer = setTimeout(answerLate, Math.max(0, deadline - Date.now()));
    try {
      res = await ctx.run(env, stdin);
    } catch (err) {
      res = errorResponse(ErrorCode.Internal, `tsflannel agent: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
      if (key !== undefined) shared.leave(worker);
    }
    if (shared.claimCall(worker, call)) conn.answer(encodeResponse(res));
    else res = lateAnswer(limitMs); // answered at the deadline; this result reached nobody
  }
  const ok = res.exitCode === 0;
  const ms = Date.now() - started;
  shared.record(worker, counted, ok, ms / 1000);
  const fields = { cmd: command, containerId: env.CNI_CONTAINERID, ifname: env.CNI_IFNAME, ms };
  if (ok) logger.debug(fields, 'CNI call served');
  else logger.info({ ...fields, answer: res.stdout.toString('utf8').trim().slice(0, 500) }, 'CNI call failed');
}
