// Guards for paths a user puts in a config or on a command line. A path is
// data from outside: it may name a FIFO (open() blocks until a writer comes),
// a device (/dev/full fails every write), a directory, or a place inside
// /proc or /sys (where Node's recursive mkdir spins forever). Every opener
// here checks the file type before trusting the descriptor, never blocks in
// open(). A lock held by another process is the only wait, bounded by lockTimeoutMs.
import { constants as fsc, fstatSync, lstatSync, mkdirSync, closeSync, openSync, statfsSync, type Stats } from 'node:fs';
import path from 'node:path';

/** statfs(2) f_type of the kernel's pseudo file systems. */
const KERNEL_FS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x64626720, 'debugfs'],
  [0x74726163, 'tracefs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x73636673, 'securityfs'],
]);

/** A refused path; `reason` says why in words a user can act on. */
export class PathGuardError extends Error {
  override readonly name = 'PathGuardError';
  constructor(
    readonly path: string,
    readonly reason: 'kernel-fs' | 'not-regular' | 'not-directory' | 'timeout' | 'io',
    message: string,
    readonly errno?: string,
  ) {
    super(message);
  }
}

/** True when `p`, taken literally, lies in /proc or /sys. */
export function lexicallyInKernelFs(p: string): boolean {
  const abs = path.resolve('/', p);
  return ['/proc', '/sys'].some((root) => abs === root || abs.startsWith(`${root}/`));
}

/**
 * The pseudo file system `p` would land on ('proc', 'sysfs', ...), following
 * symlinks and mounts: the statfs of its deepest existing ancestor. Undefined
 * for an ordinary file system.
 */
export function kernelFsOf(p: string): string | undefined {
  let cur = path.resolve('/', p);
  if (cur === '/proc' || cur.startsWith('/proc/')) return 'proc';
  if (cur === '/sys' || cur.startsWith('/sys/')) return 'sysfs';
  for (;;) {
    try {
      return KERNEL_FS.get(Number(statfsSync(cur).type));
    } catch {
      const up = path.dirname(cur);
      if (up === cur) return undefined;
      cur = up;
    }
  }
}

/** "a FIFO", "a directory", ... for messages. */
export function describeType(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Creates `dir` and its missing parents one level at a time. Unlike Node's
 * recursive mkdir it fails at the first level that cannot be made (Node's
 * loops forever under /proc), and it refuses pseudo file systems outright.
 */
export function ensureDirSync(dir: string, mode = 0o755): void {
  const abs = path.resolve('/', dir);
  const fsType = kernelFsOf(abs);
  if (fsType) throw new PathGuardError(abs, 'kernel-fs', `${abs} is on the kernel's ${fsType} file system, not a place for files`);
  const missing: string[] = [];
  for (let cur = abs; ; cur = path.dirname(cur)) {
    let st: Stats | undefined;
    try {
      st = lstatSync(cur);
    } catch (err) {
      // ENOTDIR: a file further up; the walk reaches it and names it.
      if (errnoOf(err) !== 'ENOENT' && errnoOf(err) !== 'ENOTDIR') throw new PathGuardError(cur, 'io', `cannot stat ${cur}: ${(err as Error).message}`, errnoOf(err));
    }
    if (st) {
      // A symlink to a directory is fine; stat follows it.
      const target = st.isSymbolicLink() ? safeStat(cur) : st;
      if (!target?.isDirectory()) {
        throw new PathGuardError(cur, 'not-directory', `${cur} is ${target ? describeType(target) : 'a dangling symbolic link'}, not a directory`);
      }
      break;
    }
    missing.unshift(cur);
    if (path.dirname(cur) === cur) break;
  }
  for (const level of missing) {
    try {
      mkdirSync(level, { mode });
    } catch (err) {
      if (errnoOf(err) === 'EEXIST' && safeStat(level)?.isDirectory()) continue;
      throw new PathGuardError(level, 'io', `cannot create directory ${level}: ${(err as Error).message}`, errnoOf(err));
    }
  }
}

function safeStat(p: string): Stats | undefined {
  try {
    return fstatOfPath(p);
  } catch {
    return undefined;
  }
}

function fstatOfPath(p: string): Stats {
  const fd = openSync(p, fsc.O_RDONLY | fsc.O_NONBLOCK);
  try {
    return fstatSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens a regular file without ever blocking in open(): O_NONBLOCK makes a
 * FIFO open at once (and a FIFO opened for writing without a reader fails
 * with ENXIO), then fstat refuses anything that is not a regular file. The
 * flag is cleared again on a regular file, where it has no effect anyway.
 */
export function openRegularSync(p: string, flags: number, mode = 0o644): number {
  let fd: number;
  try {
    fd = openSync(p, flags | fsc.O_NONBLOCK, mode);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENXIO') throw new PathGuardError(p, 'not-regular', `${p} is a FIFO or socket, not a regular file`, code);
    if (code === 'EISDIR') throw new PathGuardError(p, 'not-regular', `${p} is a directory, not a regular file`, code);
    throw new PathGuardError(p, 'io', `cannot open ${p}: ${(err as Error).message}`, code);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new PathGuardError(p, 'not-regular', `${p} is ${describeType(st)}, not a regular file`);
  }
  return fd;
}
