// Process, mount and machine-state helpers shared by the runtime tests:
// running tools with captured output, finding and ending the processes a
// runtime left behind, unmounting what it mounted under a test dir, and
// removing the few machine-wide dirs (/var/lib/cni, /run/containers, ...)
// that buildah, podman and containerd create on first use.
import { execFileSync, spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ETCD_BIN, haveEtcd } from '../../helpers/etcd.js';
import { requireOrSkip, type Needs } from '../../helpers/require.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /** resolve instead of reject on a non-zero exit */
  allowFail?: boolean;
}

/** Runs a command to completion, capturing its output; rejects on non-zero exit unless allowFail. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] };
    const child = spawn(cmd, args, spawnOpts);
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = { code: code ?? (signal ? 128 : -1), stdout, stderr };
      if (result.code !== 0 && !opts.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}: ${stderr.trim() || stdout.trim()}`));
      } else {
        resolve(result);
      }
    });
    // a command that exits without reading its input (mount, a quick failure)
    // closes the pipe first: EPIPE here is not the command's failure
    child.stdin?.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin?.end(opts.input ?? '');
  });
}

/** Absolute path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const out = r.stdout.trim();
  return r.status === 0 && out.startsWith('/') ? out : undefined;
}

/** Names of the executables that are missing from PATH. */
export function missingTools(names: string[]): string[] {
  return names.filter((n) => which(n) === undefined);
}

/**
 * Whether a runtime suite must skip (requireOrSkip: it says why, and under
 * CI a missing requirement fails the file instead): root, the tools, etcd
 * for the cluster, and `extra` needs of the suite.
 */
export function mustSkip(suite: string, tools: string[], extra: Needs = {}): boolean {
  const needs: Needs = { root: process.getuid?.() === 0 };
  for (const t of tools) needs[t] = which(t) !== undefined;
  needs[`etcd (${ETCD_BIN})`] = haveEtcd;
  return requireOrSkip(suite, { ...needs, ...extra });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export { eventually } from '../../helpers/eventually.js';

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** PIDs of live processes whose command line contains `needle` (not this process). */
export function pidsWithArg(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    if (cmdline(pid).some((arg) => arg.includes(needle))) pids.push(pid);
  }
  return pids;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after `graceMs`, for each pid; waits until all are gone. */
export async function terminate(pids: number[], graceMs = 3000): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
  for (const pid of pids.filter(alive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const killDeadline = Date.now() + 10_000;
  while (pids.some((p) => alive(p) && !isZombie(p)) && Date.now() < killDeadline) await sleep(20);
}

function isZombie(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Mount points at or below `prefix`, deepest first. */
export function mountsUnder(path: string): string[] {
  // mountinfo names the real path (/run/netns/x for /var/run/netns/x)
  const prefix = existsSync(path) ? realpathSync(path) : path;
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p === prefix || p.startsWith(`${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or below `prefix` (lazily when busy); returns what it unmounted. */
export function unmountUnder(prefix: string): string[] {
  const done: string[] = [];
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(prefix);
    if (!points.length) break;
    for (const p of points) {
      if (spawnSync('umount', [p]).status !== 0) spawnSync('umount', ['-l', p]);
      done.push(p);
    }
  }
  return done;
}

/** Unmounts and deletes a netns file that a runtime pinned under /run/netns. */
export function removeNetnsFile(path: string): void {
  if (!path.startsWith('/var/run/netns/') && !path.startsWith('/run/netns/')) return;
  unmountUnder(path);
  try {
    rmSync(path, { force: true });
  } catch {
    // still pinned by a process: the netns goes when that ends
  }
}

/** Host-side pod veths in a node netns: every veth but the node's own underlay link(s). */
export function vethsIn(ns: string, underlay: string[] = ['eth0']): string[] {
  const out = execFileSync('ip', ['-n', ns, '-j', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' });
  return (JSON.parse(out || '[]') as { ifname: string }[]).map((l) => l.ifname).filter((n) => !underlay.includes(n));
}

/** The nat table of a netns as iptables-save prints it. */
export function natRules(ns: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' });
}

/** The lease files (one per IP) of a host-local store directory. */
export function leaseFiles(networkDir: string): string[] {
  if (!existsSync(networkDir)) return [];
  return readdirSync(networkDir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
}

export const CNI_CACHE = '/var/lib/cni/results';

/** libcni result-cache entries (one per network and interface) that name `id`. */
export function cniCacheEntries(id: string): string[] {
  return existsSync(CNI_CACHE) ? readdirSync(CNI_CACHE).filter((f) => f.includes(id)) : [];
}

/** Deletes libcni result-cache entries that name one of `ids` (left when a runtime died mid-teardown). */
export function removeCniCache(ids: string[]): string[] {
  if (!existsSync(CNI_CACHE) || !ids.length) return [];
  const gone = readdirSync(CNI_CACHE).filter((f) => ids.some((id) => f.includes(id)));
  for (const f of gone) rmSync(join(CNI_CACHE, f), { force: true });
  return gone;
}

// Machine-wide dirs that the tools create on first use even when every
// configurable path points into the test dir: containers/image's blob-info
// cache and network run dir (buildah, podman), containerd's shim socket and
// FIFO dirs, libcni's result cache (containerd's CRI has no option for it).
const MACHINE_DIRS = ['/var/lib/containers', '/run/containers', '/run/containerd', '/var/lib/cni', '/run/libpod', '/run/runc'];
const GUARD = join(tmpdir(), 'tsf-runtime-tests');

function liveRegistrations(): number[] {
  const dir = join(GUARD, 'active');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map(Number).filter((pid) => Number.isInteger(pid) && pid !== process.pid && alive(pid));
}

/**
 * Records which machine dirs exist before this suite starts, so `releaseMachineDirs`
 * can remove the ones the runtimes created. Suites running in parallel share one
 * snapshot: the first live one writes it, the last one to finish cleans.
 */
export function registerMachineDirs(): void {
  mkdirSync(join(GUARD, 'active'), { recursive: true });
  writeFileSync(join(GUARD, 'active', String(process.pid)), '');
  const snapshot = join(GUARD, 'snapshot.json');
  if (liveRegistrations().length === 0 || !existsSync(snapshot)) {
    writeFileSync(snapshot, JSON.stringify(MACHINE_DIRS.filter((d) => existsSync(d))));
  }
}

/** Only files a runtime leaves as a cache or an empty marker may go; anything else stays. */
function onlyRuntimeLeftovers(path: string): boolean {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return true;
  if (!st.isDirectory()) return /blob-info-cache-v1\.boltdb$|\.lock$|^lock$/.test(path.split('/').pop() ?? '');
  return readdirSync(path).every((e) => onlyRuntimeLeftovers(join(path, e)));
}

/** Removes the machine dirs this and parallel suites created, once the last of them is done. */
export function releaseMachineDirs(): string[] {
  rmSync(join(GUARD, 'active', String(process.pid)), { force: true });
  if (liveRegistrations().length) return [];
  const snapshotFile = join(GUARD, 'snapshot.json');
  const before = existsSync(snapshotFile) ? (JSON.parse(readFileSync(snapshotFile, 'utf8')) as string[]) : MACHINE_DIRS;
  const removed: string[] = [];
  for (const dir of MACHINE_DIRS) {
    if (before.includes(dir) || !existsSync(dir)) continue;
    if (mountsUnder(dir).length || !onlyRuntimeLeftovers(dir)) continue;
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  rmSync(GUARD, { recursive: true, force: true });
  return removed;
}

/** Paths of a cgroup (and its children, deepest first) in every v1 hierarchy and the unified one. */
function cgroupDirs(relPath: string): string[] {
  const rel = relPath.replace(/^\/+/, '');
  if (!rel || rel.includes('..')) return [];
  const dirs: string[] = [];
  const walk = (d: string) => {
    dirs.push(d);
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
    const root = join('/sys/fs/cgroup', hierarchy, rel);
    if (existsSync(root)) walk(root);
  }
  return dirs.sort((a, b) => b.length - a.length);
}

/** PIDs of the processes in a cgroup tree. */
export function cgroupPids(relPath: string): number[] {
  const pids = new Set<number>();
  for (const d of cgroupDirs(relPath)) {
    const procs = join(d, 'cgroup.procs');
    if (!existsSync(procs)) continue;
    for (const line of readFileSync(procs, 'utf8').split('\n')) if (line.trim()) pids.add(Number(line));
  }
  return [...pids];
}

/**
 * Removes a cgroup tree the test gave its containers as parent. Container
 * processes outlive a killed shim or conmon, so whatever is still inside is
 * ended first (everything there was started by the test).
 */
export async function removeCgroup(relPath: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const pids = cgroupPids(relPath);
    if (!pids.length) break;
    await terminate(pids, 1000);
  }
  for (const d of cgroupDirs(relPath)) spawnSync('rmdir', [d]);
}
