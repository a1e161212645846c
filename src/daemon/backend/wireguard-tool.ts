// The two programs the wireguard backend drives: `wg` (wireguard-tools),
// which configures kernel and userspace devices alike (netlink for the
// first, the UAPI socket /var/run/wireguard/<dev>.sock for the second),
// and `wireguard-go`, the userspace device for kernels without WireGuard.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where wg and wireguard-go keep the UAPI sockets (compiled into both). */
export const UAPI_DIR = '/var/run/wireguard';

export class WgToolError extends Error {
  override readonly name = 'WgToolError';
  constructor(
    message: string,
    /** the program itself is missing */
    readonly notInstalled = false,
  ) {
    super(message);
  }
}

export interface ToolOptions {
  /** node netns path; the tool runs inside it through nsenter */
  netns?: string;
  input?: string;
  env?: NodeJS.ProcessEnv;
}

function run(cmd: string, args: string[], opts: ToolOptions): string {
  const [file, argv] = opts.netns ? ['nsenter', [`--net=${opts.netns}`, cmd, ...args]] : [cmd, args];
  const res = spawnSync(file, argv, {
    encoding: 'utf8',
    input: opts.input ?? '',
    env: opts.env ?? process.env,
    timeout: 15_000,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const hint = cmd === 'wg' ? 'Debian: apt install wireguard-tools' : cmd === 'wireguard-go' ? 'Debian: apt install wireguard-go' : 'check WG_QUICK_USERSPACE_IMPLEMENTATION';
  const missing = () => new WgToolError(`${cmd} is not installed (${hint})`, true);
  // Through nsenter a missing program is nsenter's exit status 127.
  if (opts.netns && res.status === 127) throw missing();
  if (res.error) {
    const code = (res.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw missing();
    throw new WgToolError(`${cmd}: ${res.error.message}`);
  }
  if (res.status !== 0) {
    const msg = (res.stderr || res.stdout || '').trim().split('\n').filter((l) => !/^[│┌└]/.test(l)).join('; ');
    throw new WgToolError(`${cmd} ${args.slice(0, 2).join(' ')}: exit ${res.status ?? res.signal}: ${msg}`);
  }
  return res.stdout;
}

/** Runs `wg` with these arguments. */
export function wg(args: string[], opts: ToolOptions = {}): string {
  return run('wg', args, opts);
}

/** `wg show <dev> dump`, raw. */
export function wgDump(dev: string, opts: ToolOptions = {}): string {
  return wg(['show', dev, 'dump'], opts);
}

/**
 * Runs `fn` with the PSK in a private file (0600 in a 0700 dir), removed
 * afterwards: `wg set` takes keys only from files, and a command line is
 * visible to every user.
 */
export function withSecretFile<T>(secret: string | undefined, fn: (path: string) => T): T {
  if (!secret) return fn('/dev/null');
  const dir = mkdtempSync(join(tmpdir(), 'tsflannel-wg-'));
  try {
    const file = join(dir, 'psk');
    writeFileSync(file, secret, { mode: 0o600 });
    return fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** wg-quick's override of the userspace implementation, else wireguard-go from PATH. */
export function userspaceCommand(env: NodeJS.ProcessEnv = process.env): string {
  return env.WG_QUICK_USERSPACE_IMPLEMENTATION || 'wireguard-go';
}

/**
 * Starts wireguard-go for `dev`, as wg-quick does: it daemonizes, so it
 * outlives this agent exactly like a kernel device would, and pods keep
 * talking while the agent restarts. It exits by itself when the device is
 * deleted. On Linux it refuses to run unless told that the user knows the
 * kernel module is better, hence the variable.
 */
export function startUserspace(dev: string, opts: ToolOptions = {}): void {
  const env: NodeJS.ProcessEnv = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };
  // With LOG_LEVEL set the daemon keeps our stderr pipe open and we would wait on it.
  delete env.LOG_LEVEL;
  delete env.WG_PROCESS_FOREGROUND;
  run(userspaceCommand(), [dev], { ...opts, env });
}
