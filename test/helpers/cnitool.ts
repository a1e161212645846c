// Drives CNI plugins through tsf-cnitool (test/cnitool), a cnitool equivalent
// built against Debian's libcni, so a test sees the plugin exactly as podman 4
// or CRI-O would call it: conflist loading, capability filtering, prevResult
// from libcni's result cache.
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CNITOOL_BIN = fileURLToPath(new URL('../../native/build/tsf-cnitool', import.meta.url));
const BUILD_SCRIPT = fileURLToPath(new URL('../../scripts/build-cnitool.sh', import.meta.url));

export type CnitoolCommand = 'add' | 'check' | 'del';

export interface CnitoolOptions {
  /** NETCONFPATH: directory of .conflist / .conf files */
  netconfDir: string;
  netName: string;
  netnsPath: string;
  /** CNI_PATH entries, searched in order */
  cniPath: string[];
  /** libcni cache dir (results land in <cacheDir>/results); never the machine's /var/lib/cni in tests */
  cacheDir: string;
  ifname?: string;
  /** overrides the id cnitool derives from the netns path */
  containerId?: string;
  /** CAP_ARGS, e.g. { portMappings: [...] } */
  capArgs?: object;
  /** CNI_ARGS, `K=V;K2=V2` */
  cniArgs?: string;
  /** run the driver inside this node netns via `ip netns exec` */
  nsExec?: string;
  /** kill the driver (and fail) after this long; default 30 s */
  timeoutMs?: number;
}

export interface CnitoolOutcome {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON: the result after add, the plugin's CNI error on failure */
  json?: unknown;
}

/** Builds the driver if its source changed (cheap when it is up to date). */
export function buildCnitool(): string {
  execFileSync('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'ignore', 'inherit'] });
  return CNITOOL_BIN;
}

function driverEnv(opts: CnitoolOptions): Record<string, string> {
  // A clean environment: stray CNI_* variables of the test process must not
  // leak into the plugins. PATH stays so plugins find iptables and friends.
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    NETCONFPATH: opts.netconfDir,
    CNI_PATH: opts.cniPath.join(':'),
    CNI_CACHE_DIR: opts.cacheDir,
  };
  if (opts.ifname !== undefined) env.CNI_IFNAME = opts.ifname;
  if (opts.containerId !== undefined) env.CNI_CONTAINERID = opts.containerId;
  if (opts.capArgs !== undefined) env.CAP_ARGS = JSON.stringify(opts.capArgs);
  if (opts.cniArgs !== undefined) env.CNI_ARGS = opts.cniArgs;
  return env;
}

function parseJson(text: string): unknown {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export function runCnitool(cmd: CnitoolCommand, opts: CnitoolOptions): Promise<CnitoolOutcome> {
  const driverArgs = [cmd, opts.netName, opts.netnsPath];
  const [file, argv] = opts.nsExec
    ? ['ip', ['netns', 'exec', opts.nsExec, CNITOOL_BIN, ...driverArgs]]
    : [CNITOOL_BIN, driverArgs];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { env: driverEnv(opts), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tsf-cnitool ${cmd} timed out after ${opts.timeoutMs ?? 30_000} ms; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr, json: parseJson(stdout) });
    });
  });
}
