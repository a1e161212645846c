// Which path this node's CNI calls take: the agent's socket (the forwarder
// hands calls to tsflanneld) or the standalone plugin (the forwarder's
// fallback). Read by `tsflannel status` and checked by doctor.
import { lstatSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createConnection } from 'node:net';
import { decodeResponse, encodeRequest, FrameReader } from '../../daemon/cni-frame.js';
import { statsFilePath, type CniStatsFile } from '../../daemon/cni-server.js';
import { skip, type CheckResult } from './types.js';

export interface CniSocketState {
  path: string;
  /** 'socket' when a socket file is there; 'off' for --cni-socket '' (the agent serves no socket, on purpose) */
  kind: 'missing' | 'socket' | 'other' | 'off';
  mode?: number;
  uid?: number;
  /** the agent answered a VERSION call on it */
  answering: boolean;
  /** why it did not answer */
  error?: string;
  /** the agent's counters (cni-stats.json beside the socket) */
  stats?: CniStatsFile;
  /** calls the forwarder ran standalone (fallbacks.log beside the socket, current file) */
  fallbacks: { count: number; last?: { time: string; command: string; reason: string } };
}

/** Written by the forwarder (native/forward) for each call that bypassed the agent. */
export const FALLBACK_LOG = 'fallbacks.log';

function readFallbacks(socket: string): CniSocketState['fallbacks'] {
  let text: string;
  try {
    text = readFileSync(join(dirname(socket), FALLBACK_LOG), 'utf8');
  } catch {
    return { count: 0 };
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const out: CniSocketState['fallbacks'] = { count: lines.length };
  try {
    const last = JSON.parse(lines[lines.length - 1] ?? '') as Record<string, unknown>;
    out.last = { time: String(last.time ?? ''), command: String(last.command ?? ''), reason: String(last.reason ?? '') };
  } catch {
    // a torn or foreign last line: the count still stands
  }
  return out;
}

/** One VERSION call over the socket, as the forwarder would make it. */
function probe(path: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    const reader = new FrameReader();
    let settled = false;
    const done = (err: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      c.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    c.on('connect', () => c.end(encodeRequest({ CNI_COMMAND: 'VERSION' }, Buffer.from('{"cniVersion":"1.0.0"}'))));
    c.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
    c.on('data', (d: Buffer) => {
      try {
        const body = reader.push(d);
        if (!body) return;
        done(decodeResponse(body).exitCode === 0 ? undefined : 'VERSION failed');
      } catch (err) {
        done((err as Error).message);
      }
    });
    c.on('end', () => done('closed before a complete answer'));
  });
}

function readStats(path: string): CniStatsFile | undefined {
  try {
    const raw = JSON.parse(readFileSync(statsFilePath(path), 'utf8')) as CniStatsFile;
    return typeof raw.pid === 'number' && typeof raw.calls === 'object' ? raw : undefined;
  } catch {
    return undefined;
  }
}

export async function readCniSocket(path: string, timeoutMs = 1000): Promise<CniSocketState> {
  // '' is the agent's "no socket" (and the conflist's agentSocket ""): there
  // is nothing to probe, and no directory to find a fallback log in.
  if (path === '') return { path, kind: 'off', answering: false, fallbacks: { count: 0 } };
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return { path, kind: 'missing', answering: false, error: 'no socket file', fallbacks: readFallbacks(path) };
  }
  const state: CniSocketState = {
    path, kind: st.isSocket() ? 'socket' : 'other', mode: st.mode & 0o7777, uid: st.uid, answering: false, fallbacks: readFallbacks(path),
  };
  if (state.kind !== 'socket') return { ...state, error: 'not a socket' };
  const err = await probe(path, timeoutMs);
  if (err) state.error = err;
  else state.answering = true;
  const stats = readStats(path);
  if (stats) state.stats = stats;
  return state;
}

export function callsServed(stats: CniStatsFile | undefined): { ok: number; error: number } {
  const total = { ok: 0, error: 0 };
  for (const c of Object.values(stats?.calls ?? {})) {
    total.ok += c.ok;
    total.error += c.error;
  }
  return total;
}

function fallbackText(s: CniSocketState): string {
  const f = s.fallbacks;
  if (f.count === 0) return 'no fallbacks logged';
  const last = f.last ? `, last ${f.last.time} ${f.last.command}: ${f.last.reason}` : '';
  return `${f.count} fallback(s) to the standalone logged${last}`;
}

/** One line for status: which path pod calls take, and why. */
export function cniPathLine(s: CniSocketState): string {
  if (s.kind === 'off') return 'standalone plugin on purpose (--cni-socket \'\': no agent socket, as with the conflist\'s "agentSocket": "")';
  if (s.answering) {
    const n = callsServed(s.stats);
    const by = Object.entries(s.stats?.calls ?? {}).map(([cmd, c]) => `${cmd} ${c.ok + c.error}`).join(', ');
    return `agent at ${s.path} (answering; ${n.ok + n.error} calls served${by ? `: ${by}` : ''}, ${n.error} failed; ${fallbackText(s)})`;
  }
  return `standalone plugin (the forwarder falls back: agent socket ${s.path}: ${s.error ?? 'not answering'}; ${fallbackText(s)})`;
}

export function checkCniSocket(s: CniSocketState | undefined): CheckResult | undefined {
  if (!s) return undefined;
  const id = 'cni-socket' as const;
  const restart = 'restart tsflanneld (it recreates its socket root-only); its --cni-socket must equal the conflist\'s agentSocket';
  if (s.kind === 'off') return skip(id, 'no agent socket to check (--cni-socket \'\'): pod calls run the standalone plugin on purpose');
  if (s.kind === 'missing') {
    return {
      id,
      status: 'warn',
      message: `no agent socket at ${s.path}: pod calls run the standalone plugin (slower)`,
      fix: `${restart}; or set "agentSocket": "" in the conflist to run standalone on purpose`,
    };
  }
  if (s.kind === 'other') return { id, status: 'fail', message: `${s.path} is not a socket`, fix: `remove ${s.path}, then ${restart}` };
  if (s.uid !== 0 || (s.mode ?? 0) & 0o077) {
    return {
      id,
      status: 'fail',
      message: `agent socket ${s.path} is not root-only (mode ${(s.mode ?? 0).toString(8).padStart(4, '0')}, owner uid ${s.uid})`,
      fix: `${restart}, and find what changed its mode or owner`,
    };
  }
  if (!s.answering) {
    return {
      id,
      status: 'warn',
      message: `nothing answers on ${s.path} (${s.error ?? 'no answer'}): pod calls run the standalone plugin`,
      fix: restart,
    };
  }
  const n = callsServed(s.stats);
  return {
    id,
    status: 'pass',
    message: `agent answers on ${s.path} (0600, root); ${n.ok + n.error} calls served, ${n.error} failed; ${fallbackText(s)}`,
  };
}
