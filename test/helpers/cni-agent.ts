// The agent-served CNI path in tests: a real tsflanneld serving the CNI
// socket inside a node netns (--cni-only: no subnet manager; the suites write
// the subnet file themselves), the forwarder that calls it, and a raw socket
// client for the protocol's own tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PLUGIN_BIN } from './plugin.js';

export const AGENT_BIN = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
export const FORWARDER_BIN = fileURLToPath(new URL('../../native/build/tsflannel-forward', import.meta.url));
export const forwarderBuilt = existsSync(FORWARDER_BIN);

/**
 * Lays out `binDir` as `tsflannel install` does: the forwarder (a copy) as
 * `tsflannel`, the standalone plugin beside it as `tsflannel-standalone` (a
 * symlink; the forwarder finds it beside its own real path). Returns binDir.
 */
export function installForwarder(binDir: string, standalone: string = PLUGIN_BIN): string {
  mkdirSync(binDir, { recursive: true });
  copyFileSync(FORWARDER_BIN, join(binDir, 'tsflannel'));
  symlinkSync(standalone, join(binDir, 'tsflannel-standalone'));
  return binDir;
}

/** How a suite reaches the plugin: the standalone executable, or the forwarder with or without an agent. */
export interface CniPath {
  name: string;
  bin: string;
  /** extra env for every call (the forwarder finds the standalone through it) */
  env: Record<string, string>;
  /** start an agent on the node before the suite */
  agent: boolean;
}

export const STANDALONE: CniPath = { name: 'standalone plugin', bin: PLUGIN_BIN, env: {}, agent: false };
export const VIA_AGENT: CniPath = {
  name: 'forwarder, agent serving',
  bin: FORWARDER_BIN,
  env: { TSFLANNEL_STANDALONE: PLUGIN_BIN },
  agent: true,
};
export const VIA_FALLBACK: CniPath = {
  name: 'forwarder, agent stopped (fallback)',
  bin: FORWARDER_BIN,
  env: { TSFLANNEL_STANDALONE: PLUGIN_BIN },
  agent: false,
};

export interface RunningAgent {
  child: ChildProcess;
  pid: number;
  socket: string;
  healthzPort: number;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `tsflanneld --cni-only` (in `nodeNs` when given) and waits until its socket answers. */
export async function startCniAgent(opts: { socket: string; nodeNs?: string; healthzPort?: number; workers?: number }): Promise<RunningAgent> {
  const port = opts.healthzPort ?? 0;
  const args = [AGENT_BIN, '--cni-only', '--cni-socket', opts.socket, '--log-level', 'warn', '--healthz-port', String(port)];
  if (opts.workers) args.push('--cni-workers', String(opts.workers));
  const [cmd, argv] = opts.nodeNs ? ['ip', ['netns', 'exec', opts.nodeNs, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`tsflanneld --cni-only exited: ${err}`);
    if (await answersVersion(opts.socket)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tsflanneld --cni-only did not answer on ${opts.socket} within 30 s: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    pid: child.pid!,
    socket: opts.socket,
    healthzPort: port,
    stderr: () => err,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

async function answersVersion(socket: string): Promise<boolean> {
  try {
    const res = await socketCall(socket, { CNI_COMMAND: 'VERSION' }, Buffer.from('{"cniVersion":"1.0.0"}'));
    return res.exitCode === 0;
  } catch {
    return false;
  }
}

export interface SocketAnswer {
  stdout: string;
  exitCode: number;
  stderr: string;
  json: Record<string, unknown> | undefined;
}

/** Sends raw bytes on the socket and decodes the one answer frame. */
export function socketExchange(socket: string, bytes: Buffer, timeoutMs = 60_000): Promise<SocketAnswer> {
  return new Promise((resolve, reject) => {
    const c = createConnection(socket);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no answer on ${socket} within ${timeoutMs} ms`));
    }, timeoutMs);
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('end', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      if (all.length < 4 || all.length !== 4 + all.readUInt32BE(0)) {
        reject(new Error(`incomplete answer frame (${all.length} bytes)`));
        return;
      }
      const body = JSON.parse(all.subarray(4).toString('utf8')) as { stdout: string; exitCode: number; stderr: string };
      const stdout = Buffer.from(body.stdout, 'base64').toString('utf8');
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ stdout, exitCode: body.exitCode, stderr: body.stderr, json });
    });
    c.on('connect', () => c.end(bytes));
  });
}

export function frame(body: object | string): Buffer {
  const json = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length, 0);
  return Buffer.concat([head, json]);
}

export function socketCall(socket: string, env: Record<string, string>, stdin: Buffer | string): Promise<SocketAnswer> {
  return socketExchange(socket, frame({ v: 1, env, stdin: Buffer.from(stdin).toString('base64') }));
}
