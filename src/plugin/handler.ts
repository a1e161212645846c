// The whole behaviour of the tsflannel CNI plugin as one function: the CNI
// environment and the stdin bytes in; the stdout bytes, the exit code and
// the stderr text out. Two thin transports call it: the standalone
// executable (src/plugin/main.ts, one process per call) and the agent's
// socket server (src/daemon/cni-server.ts, many calls per process). Neither
// holds any CNI logic, so both answer every call byte for byte alike.
import type { PluginContext, PluginHandlers } from '../cni/skel.js';
import { runPlugin } from '../cni/skel.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { CURRENT_VERSION } from '../cni/versions.js';
import { preloadLogger, withCallStderr } from './log.js';

/** The largest network config accepted on stdin, on both transports. */
export const MAX_STDIN = 1 << 20;

export interface CniRequest {
  /** the CNI_* (and TSFLANNEL_*) variables of the call; nothing else is read */
  env: Readonly<Record<string, string | undefined>>;
  stdin: Uint8Array;
}

export interface CniResponse {
  /** one JSON document and a newline, or empty (DEL, CHECK, GC, STATUS success) */
  stdout: Buffer;
  /** 0 or 1, as the process would exit */
  exitCode: number;
  /** log lines for the caller's stderr; may be empty */
  stderr: string;
}

// commands.js pulls in netlink, IPAM and the logger: the standalone loads it
// only for a command that needs it, the agent's workers once at start.
const commands = () => import('./commands.js');

const handlers: PluginHandlers = {
  add: async (ctx: PluginContext) => (await commands()).add(ctx),
  del: async (ctx: PluginContext) => (await commands()).del(ctx),
  check: async (ctx: PluginContext) => (await commands()).check(ctx),
  gc: async (ctx: PluginContext) => (await commands()).gc(ctx),
  status: async (ctx: PluginContext) => (await commands()).status(ctx),
};

/** One line per error; stacks go to the plugin's log at level debug. */
export function stderrLine(msg: string, err?: unknown): string {
  const reason = err instanceof Error ? err.message : err === undefined ? '' : String(err);
  const line = reason && !msg.includes(reason) ? `${msg}: ${reason}` : msg;
  return `tsflannel: ${line.replace(/\s*\n\s*/g, ' ').slice(0, 2048)}\n`;
}

/** The answer to a network config larger than MAX_STDIN (the same as readStdin's, src/cni/stdin.ts). */
export function oversizeStdin(): CniResponse {
  const err = new CniError(ErrorCode.DecodingFailure, `stdin is larger than ${MAX_STDIN} bytes`);
  return {
    stdout: Buffer.from(`${JSON.stringify(err.toJSON(CURRENT_VERSION))}\n`),
    exitCode: 1,
    stderr: stderrLine('reading stdin failed', err),
  };
}

/**
 * Runs one CNI call. Never throws: every failure is a CNI error on stdout.
 * Log lines (the skeleton's and the plugin logger's) are collected into the
 * answer's stderr, or, when `liveStderr` is given, written to it as they come.
 */
export async function handleCni(req: CniRequest, liveStderr?: (text: string) => void): Promise<CniResponse> {
  if (req.stdin.length > MAX_STDIN) return oversizeStdin();
  const out: string[] = [];
  let stderr = '';
  const sink = liveStderr ?? ((text: string) => void (stderr += text));
  const exitCode = await withCallStderr(sink, () =>
    runPlugin(handlers, {
      env: req.env,
      stdin: Buffer.from(req.stdin.buffer, req.stdin.byteOffset, req.stdin.byteLength),
      stdout: (text) => out.push(text),
      log: (msg, err) => sink(stderrLine(msg, err)),
    }),
  );
  return { stdout: Buffer.from(out.join(''), 'utf8'), exitCode, stderr };
}

/**
 * Loads everything a call needs (the command modules, koffi and the netlink
 * shim), so a resident server's first request pays no module loading.
 */
export async function preloadHandler(): Promise<void> {
  await Promise.all([commands(), preloadLogger()]);
  const nl = await import('../netlink/index.js');
  nl.sysctlGet('net.ipv4.ip_forward');
}
