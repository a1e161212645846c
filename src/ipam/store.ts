// The on-disk store shared with the reference host-local plugin:
// <dataDir>/<network>/ holds one file per leased IP (named by the IP, content
// `<id>\r\n<ifname>`), `last_reserved_ip.<set>` and an empty `lock` file that
// both implementations flock(2) exclusively.
import { constants as fsc, promises as fs, type Dirent } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import { flock, funlock, isErrno } from '../netlink/index.js';
import { formatIp, parseIp, type Ip } from './ip.js';

export const LINE_BREAK = '\r\n';
const LOCK_FILE = 'lock';
const LAST_RESERVED_PREFIX = 'last_reserved_ip.';
/**
 * Callers in this process (the agent serves many pods at once) queue here
 * for a store's lock instead of all polling its flock: only the head of the
 * queue polls, and the next one starts the moment the previous lets go.
 */
const localQueues = new Map<string, Promise<unknown>>();

function inLocalQueue<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = localQueues.get(key) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  const tail = next.catch(() => undefined);
  localQueues.set(key, tail);
  void tail.then(() => {
    if (localQueues.get(key) === tail) localQueues.delete(key);
  });
  return next;
}

/** Temp files are made only under the lock, so one seen by a lock holder was left by a killed process. */
const STALE_TEMP = /^\.(?:lease|last_reserved_ip\.\d+)\.\d+\.[0-9a-f]+\.tmp$/;

/** Not an IP and not last_reserved_ip.*, so no reader (ours or the reference) mistakes it for state. */
function tempName(kind: string): string {
  return `.${kind}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
}

/** One lease file: its IP and its content with surrounding whitespace trimmed. */
export interface StoreEntry {
  readonly ip: Ip;
  readonly name: string;
  readonly content: string;
}

/** The key a lease file holds for (id, ifname); the legacy form is the bare id. */
export function leaseKey(containerId: string, ifname: string): string {
  return `${containerId.trim()}${LINE_BREAK}${ifname}`;
}

function ioError(what: string, file: string, err: unknown): CniError {
  const reason = err instanceof Error ? err.message : String(err);
  return new CniError(ErrorCode.IOFailure, `host-local store: failed to ${what} ${file}: ${reason}`);
}

function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

export class DiskStore {
  readonly dir: string;

  constructor(
    dataDir: string,
    network: string,
    private readonly lockTimeoutMs: number,
  ) {
    const root = path.resolve(dataDir);
    this.dir = path.resolve(root, network);
    if (path.dirname(this.dir) !== root) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `network name ${JSON.stringify(network)} escapes ${root}`);
    }
  }

  /** Resolves a file of this store, refusing anything that would land outside the network directory. */
  pathFor(name: string): string {
    const full = path.resolve(this.dir, name);
    if (path.dirname(full) !== this.dir || name.includes('/')) {
      throw new CniError(ErrorCode.InvalidEnvironment, `refusing path ${JSON.stringify(name)} outside ${this.dir}`);
    }
    return full;
  }

  /**
   * Runs `fn` holding the store's exclusive flock. A holder that does not let
   * go within the timeout turns into "try again later" rather than a hang.
   */
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return inLocalQueue(this.dir, () => this.withFlock(fn));
  }

  private async withFlock<T>(fn: () => Promise<T>): Promise<T> {
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw ioError('create directory', this.dir, err);
    }
    const lockPath = this.pathFor(LOCK_FILE);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(lockPath, fsc.O_CREAT | fsc.O_RDONLY, 0o750);
    } catch (err) {
      throw ioError('open lock', lockPath, err);
    }
    try {
      try {
        await flock(handle.fd, 'ex', this.lockTimeoutMs);
      } catch (err) {
        if (isErrno(err, 'EAGAIN')) {
          throw new CniError(
            ErrorCode.TryAgainLater,
            `host-local store: timed out after ${this.lockTimeoutMs} ms waiting for lock ${lockPath}`,
          );
        }
        throw ioError('lock', lockPath, err);
      }
      try {
        return await fn();
      } finally {
        try {
          funlock(handle.fd);
        } catch {
          // Closing the descriptor below drops the lock anyway.
        }
      }
    } finally {
      await handle.close();
    }
  }

  /** Every lease file: regular files whose name is an IP address in canonical form. */
  async entries(): Promise<StoreEntry[]> {
    let dirents: Dirent[];
    try {
      dirents = await fs.readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return [];
      throw ioError('read directory', this.dir, err);
    }
    const out: StoreEntry[] = [];
    for (const d of dirents) {
      if (!d.isFile()) continue;
      if (STALE_TEMP.test(d.name)) {
        await fs.rm(this.pathFor(d.name), { force: true }).catch(() => undefined);
        continue;
      }
      const ip = parseIp(d.name);
      if (!ip || formatIp(ip) !== d.name) continue;
      const file = this.pathFor(d.name);
      try {
        out.push({ ip, name: d.name, content: (await fs.readFile(file, 'utf8')).trim() });
      } catch (err) {
        // Removed between readdir and read by a writer that does not lock.
        if (hasCode(err, 'ENOENT')) continue;
        throw ioError('read lease', file, err);
      }
    }
    return out;
  }

  /**
   * Creates the lease file; false when the IP is already taken. The key is
   * written to a temp file first and hard-linked into place: link(2) refuses
   * an existing name just as O_EXCL does (the reference still sees one file
   * per IP), and a process killed half way never leaves an empty lease that
   * no DEL could match.
   */
  async reserve(ip: Ip, key: string): Promise<boolean> {
    const file = this.pathFor(formatIp(ip));
    const tmp = this.pathFor(tempName('lease'));
    try {
      await fs.writeFile(tmp, key, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw ioError('write lease', tmp, err);
    }
    try {
      await fs.link(tmp, file);
    } catch (err) {
      if (hasCode(err, 'EEXIST')) return false;
      throw ioError('create lease', file, err);
    } finally {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
    }
    return true;
  }

  /** Deletes a lease file; a file that is already gone counts as removed. */
  async remove(name: string): Promise<void> {
    const file = this.pathFor(name);
    try {
      await fs.unlink(file);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw ioError('remove lease', file, err);
    }
  }

  /** The last IP handed out from range set `set`; unreadable or garbage means "none" (round-robin just restarts). */
  async lastReserved(set: number): Promise<Ip | undefined> {
    try {
      return parseIp((await fs.readFile(this.pathFor(`${LAST_RESERVED_PREFIX}${set}`), 'utf8')).trim());
    } catch {
      return undefined;
    }
  }

  /** Replaces last_reserved_ip.<set> atomically so no reader sees half an address. */
  async setLastReserved(set: number, ip: Ip): Promise<void> {
    const file = this.pathFor(`${LAST_RESERVED_PREFIX}${set}`);
    const tmp = this.pathFor(tempName(`${LAST_RESERVED_PREFIX}${set}`));
    try {
      await fs.writeFile(tmp, formatIp(ip), { mode: 0o600, flag: 'wx' });
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw ioError('write', file, err);
    }
  }
}
