// The on-disk store shared with the reference host-local plugin:
// <dataDir>/<network>/ holds one file per leased IP (named by the IP, content
// `<id>\r\n<ifname>`), `last_reserved_ip.<set>` and an empty `lock` file that
// both implementations flock(2) exclusively.
import { closeSync, constants as fsc, fstatSync, ftruncateSync, linkSync, lstatSync, openSync, promises as fs, readdirSync, readSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync, type Dirent } from 'node:fs';
import path from 'node:path';
import { AsyncLocalStorage } from 'node:async_hooks';
import { CniError, ErrorCode } from '../cni/errors.js';
import { clip, describeValue } from '../cni/validate.js';
import { flock, isErrno, tryFlock } from '../netlink/index.js';
import { ensureDirSync, openRegularSync, PathGuardError } from '../fs/guard.js';
import { formatIp, parseIp, type Ip } from '../net/ip.js';
import { sha256Hex } from '../digest.js';

export const LINE_BREAK = '\r\n';
const LOCK_FILE = 'lock';
const LAST_RESERVED_PREFIX = 'last_reserved_ip.';
/** Per-attachment lock files live here, apart from the leases. */
const ATTACHMENT_DIR = 'attachments';
const ATTACHMENT_LOCK = /^[0-9a-f]{32}\.lock$/;
/** The digest part of an attachment's lock file name. */
const ATTACHMENT_DIGEST_CHARS = 32;

/**
 * The lock file of one attachment. A digest, because a container ID may be
 * 1024 characters (a file name at most 255), and so no name from the
 * environment ever becomes a path.
 */
export function attachmentLockName(containerId: string, ifname: string): string {
  return `${sha256Hex(`${containerId}\n${ifname}`).slice(0, 32)}.lock`;
}

/**
 * When the locked section this code runs in must be done (epoch ms): reads
 * a stuck file system never answers fail then instead of hanging the call.
 */
const sectionDeadline = new AsyncLocalStorage<number>();

function currentDeadline(): number {
  return sectionDeadline.getStore() ?? Infinity;
}

/**
 * An attachment's lock file doubles as the list of the lease files it made,
 * so an ADD need not read every lease on the node to find its own (the
 * reference host-local does: a cost that grows with the pods on the node).
 * The record is this header, then one lease name a line, each written
 * before its lease is linked, so a crash leaves a name too many, never one
 * missing; a listed name counts only while its file holds the
 * attachment's key. An empty lock file (made by an older tsflannel, or by
 * a racing first call that has not taken the lock yet) says nothing: the
 * holder then reads every lease, as before, and writes the record.
 */
const RECORD_HEADER = 'tsflannel-attachment 1\n';

/** The attachment lock the running section holds, with its lease record. */
interface HeldAttachment {
  fd: number;
  /** lease names recorded; undefined when the lock file holds no record */
  names: string[] | undefined;
  /** bytes in the file: where the next name goes */
  size: number;
  /** this call made the lock file */
  fresh: boolean;
  /** the network directory whose attachment lock this is */
  dir: string;
  /** the attachment's digest (its lock file's name): names its lease temp file */
  digest: string;
}

const heldAttachment = new AsyncLocalStorage<HeldAttachment>();

/** The lock file's record, read through the held descriptor (created: this call made the file, empty). */
function readRecord(fd: number, created: boolean, dir: string, digest: string): HeldAttachment {
  const size = fstatSync(fd).size;
  if (size === 0) return { fd, names: created ? [] : undefined, size, fresh: created, dir, digest };
  const buf = Buffer.alloc(Math.min(size, 1 << 16));
  const n = readSync(fd, buf, 0, buf.length, 0);
  const text = buf.subarray(0, n).toString('utf8');
  if (!text.startsWith(RECORD_HEADER)) return { fd, names: undefined, size, fresh: false, dir, digest };
  return { fd, names: text.slice(RECORD_HEADER.length).split('\n').filter((l) => l !== ''), size, fresh: false, dir, digest };
}

/** One queue per lock path in this process. */
const queues = new Map<string, Promise<unknown>>();

async function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const before = queues.get(key) ?? Promise.resolve();
  const run = before.then(fn, fn);
  const tail = run.catch(() => undefined);
  queues.set(key, tail);
  try {
    return await run;
  } finally {
    if (queues.get(key) === tail) queues.delete(key);
  }
}

/** Whether the open handle is still the file at `file` (not unlinked or replaced). */
function sameFile(fd: number, file: string): boolean {
  try {
    const [a, b] = [fstatSync(fd), statSync(file)];
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}
/**
 * Temp files are made only under the lock, so one seen by a lock holder was
 * left by a killed process: `.<kind>.<pid>.<tag>.tmp`, or an attachment's
 * own lease temp file, `.lease.<digest>.tmp` (see attachmentTempName).
 */
const STALE_TEMP = /^\.(?:lease\.[0-9a-f]{32}|(?:lease|last_reserved_ip\.\d+)\.\d+\.[0-9a-f]+)\.tmp$/;

/**
 * This process's (or worker thread's) temp-name tag: random once, then a
 * counter, so each temp file costs no random draw yet no two writers, in
 * this process or another, pick one name. It only has to be unique, not
 * secret (the store's directory is root's, and a temp file is created with
 * O_EXCL, so a clash fails rather than shares a file): Math.random, which
 * V8 seeds from the system's entropy in every isolate, spares the
 * standalone plugin loading node:crypto (see src/digest.ts).
 */
const TEMP_TAG = Math.floor(Math.random() * 0x100000000)
  .toString(16)
  .padStart(8, '0');
let tempSeq = 0;

/** Not an IP and not last_reserved_ip.*, so no reader (ours or the reference) mistakes it for state. */
function tempName(kind: string): string {
  tempSeq = (tempSeq + 1) % 0x100000000;
  return `.${kind}.${process.pid}.${TEMP_TAG}${tempSeq.toString(16).padStart(8, '0')}.tmp`;
}

/**
 * The lease temp file of a call that holds an attachment's lock: named
 * after the attachment, not the process, because only one call per
 * attachment runs at a time on the node (any process), so the name is its
 * own; and its DEL then removes what a killed ADD of it left with one
 * unlink, instead of listing the directory for every stale temp file on
 * every DEL. Calls without an attachment lock (GC, tests, tools) keep
 * tempName's per-process names.
 */
function attachmentTempName(digest: string): string {
  return `.lease.${digest}.tmp`;
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
  return new CniError(ErrorCode.IOFailure, `host-local store: failed to ${what} ${clip(file)}: ${clip(reason)}`);
}

function rmQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // a temp file left behind is removed by the attachment's next call
    // (attachmentTempName), or else by the next listing under the lock (STALE_TEMP)
  }
}

/**
 * Overwrites a small file in place when it is a regular 0600 file of ours
 * with one link (not following a symlink, never blocking on a FIFO); false when it is not
 * one, or the write fails, and the caller replaces it instead.
 */
function rewriteInPlace(file: string, text: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_WRONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return false;
  }
  try {
    const st = fstatSync(fd);
    // Ours alone: a hard link would carry the write into another file.
    if (!st.isFile() || (st.mode & 0o777) !== 0o600 || st.nlink !== 1 || st.uid !== process.getuid?.()) return false;
    const bytes = Buffer.from(text);
    if (writeSync(fd, bytes, 0, bytes.length, 0) !== bytes.length) return false;
    ftruncateSync(fd, bytes.length);
    return true;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/**
 * A small file's content, trimmed, when it is a regular file; undefined
 * when there is none or something else is there (a directory, a symlink, a
 * FIFO): opened without following a symlink and without blocking (a FIFO
 * would wait in open(2) for a writer for ever), then checked. Same calls as
 * readFileSync (open, fstat, read, close). Other errors throw.
 */
function readRegular(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    // ELOOP: a symlink (O_NOFOLLOW).
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ELOOP')) return undefined;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    const buf = Buffer.allocUnsafe(st.size);
    let n = 0;
    for (let got = 1; n < buf.length && got > 0; n += got) got = readSync(fd, buf, n, buf.length - n, n);
    return buf.toString('utf8', 0, n).trim();
  } finally {
    closeSync(fd);
  }
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
      throw new CniError(ErrorCode.InvalidNetworkConfig, `network name ${describeValue(network)} escapes ${clip(root)}`);
    }
  }

  /** Resolves a file of this store, refusing anything that would land outside the network directory. */
  pathFor(name: string): string {
    const full = path.resolve(this.dir, name);
    if (path.dirname(full) !== this.dir || name.includes('/')) {
      throw new CniError(ErrorCode.InvalidEnvironment, `refusing path ${describeValue(name)} outside ${clip(this.dir)}`);
    }
    return full;
  }

  /**
   * Runs `fn` holding the store's exclusive flock. A holder that does not let
   * go within the timeout turns into "try again later" rather than a hang.
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    this.ensureDir(this.dir);
    return this.holdLock(this.pathFor(LOCK_FILE), 0o750, false, fn);
  }

  /**
   * Runs `fn` holding the lock of one attachment (container ID + ifname), so
   * that every call for it, in any process, runs one after the other: two
   * ADDs of one pod never both create its veth, and an ADD racing a DEL ends
   * either attached or gone. `forget` removes the lock file under the lock
   * once `fn` succeeded (DEL: the attachment is gone); a waiter that then
   * gets the removed file opens the new one instead.
   */
  async withAttachmentLock<T>(containerId: string, ifname: string, forget: boolean, fn: () => Promise<T>): Promise<T> {
    const dir = this.pathFor(ATTACHMENT_DIR);
    this.ensureDir(dir);
    const name = attachmentLockName(containerId, ifname);
    return this.holdLock(path.join(dir, name), 0o600, forget, fn, name.slice(0, ATTACHMENT_DIGEST_CHARS));
  }

  /**
   * Under an attachment's lock (withAttachmentLock): the lease names its
   * record lists, or undefined when there is no record (read every lease).
   * A lock file this call made lists none, which an ADD may take as "no
   * leases yet" (`fresh: 'none'`); a DEL must not (`fresh: 'unknown'`):
   * leases can outlive a lock file someone removed, and a DEL that missed
   * them would leak them.
   */
  recordedLeases(fresh: 'none' | 'unknown'): readonly string[] | undefined {
    const held = heldAttachment.getStore();
    if (held?.fresh && fresh === 'unknown' && held.names?.length === 0) return undefined;
    return held?.names;
  }

  /**
   * Under an attachment's lock: adds lease names to its record, before the
   * leases are made. `complete`: the caller read every lease and these are
   * all of the attachment's, so a file without a record gets one.
   */
  recordLeases(names: readonly string[], complete = false): void {
    const held = heldAttachment.getStore();
    if (!held) return;
    let text = names.map((n) => `${n}\n`).join('');
    if (held.names === undefined) {
      if (!complete) return;
      // Start the record; anything in the file (an older version's) is replaced.
      ftruncateSync(held.fd, 0);
      held.size = 0;
      held.names = [];
    }
    if (text === '') return;
    // A file this call made is empty until its first name.
    if (held.size === 0) text = RECORD_HEADER + text;
    const bytes = Buffer.from(text);
    writeSync(held.fd, bytes, 0, bytes.length, held.size);
    held.size += bytes.length;
    held.names.push(...names);
  }

  /**
   * Removes attachment lock files whose attachment is not in `keep` (names
   * from attachmentLockName) and that no call holds right now.
   */
  async forgetAttachmentLocks(keep: ReadonlySet<string>): Promise<void> {
    const dir = path.join(this.dir, ATTACHMENT_DIR);
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (keep.has(name) || !ATTACHMENT_LOCK.test(name)) continue;
      const file = path.join(dir, name);
      let fd: number;
      try {
        fd = openRegularSync(file, fsc.O_RDONLY);
      } catch {
        continue;
      }
      try {
        // Held by a running ADD or DEL: in use, left alone.
        if (tryFlock(fd, 'ex')) await fs.unlink(file).catch(() => undefined);
      } catch {
        // Cannot tell: leave it.
      } finally {
        closeSync(fd);
      }
    }
  }

  private ensureDir(dir: string): void {
    try {
      ensureDirSync(dir);
    } catch (err) {
      if (err instanceof PathGuardError && err.reason === 'kernel-fs') {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `host-local store: ${err.message}; set "dataDir" to a directory on a disk`);
      }
      throw ioError('create directory', dir, err);
    }
  }

  // The store's file I/O is synchronous: a lease, the lock file and the
  // directory are a few bytes each, and in the agent the store runs on a
  // CNI worker thread, not the event loop. Through Node's promise API each
  // file cost up to four thread-pool hops (open, fstat, read, close), each a
  // wake-up of another thread: under load those waits, inside the locked
  // section, were most of an ADD's time, and every other caller waited for
  // the lock meanwhile. What can wait long (a lock another process holds)
  // is bounded by lockTimeoutMs in the kernel's flock queue.
  private async holdLock<T>(file: string, mode: number, forget: boolean, fn: () => Promise<T>, attachment?: string): Promise<T> {
    // flock waits block this thread, so calls in one process queue here
    // first and never wait in the kernel on a lock their own process holds.
    return serialized(file, async () => {
      const deadline = Math.min(currentDeadline(), Date.now() + this.lockTimeoutMs);
      for (;;) {
        const { fd, created } = attachment !== undefined ? this.openAttachmentLock(file, mode) : { fd: this.openLock(file, mode), created: false };
        try {
          await this.lock(fd, file, deadline);
          // Removed (by a DEL) while we waited: the lock is on an orphan.
          if (!sameFile(fd, file)) continue;
          // The work under the lock gets the lock's own budget once more,
          // within any outer section's.
          const budget = Math.min(currentDeadline(), Date.now() + this.lockTimeoutMs);
          const run = () => sectionDeadline.run(budget, fn);
          const out = await (attachment !== undefined ? heldAttachment.run(readRecord(fd, created, this.dir, attachment), run) : run());
          // Only a call that succeeded forgets the attachment: a DEL that
          // failed (a veth it could not delete, the store lock timing out)
          // may leave its leases, and its lock file is their record. Removed,
          // the next call would make a fresh one, and a fresh lock file tells
          // an ADD "no leases yet": an ADD of the same attachment (podman
          // restarting a container whose teardown failed) would then lease a
          // second address and leak the first, which no DEL reading the new
          // record would find. A DEL retried finds the record as it was.
          if (forget) rmQuietly(file);
          // Closing the descriptor (below) drops the flock: it is the only
          // descriptor of this open file (opened O_CLOEXEC, never shared),
          // so no LOCK_UN call is needed first.
          return out;
        } finally {
          closeSync(fd);
        }
      }
    });
  }

  /**
   * An attachment's lock file, writable (it holds the lease record);
   * `created` when this call made it, so it cannot be an older version's.
   */
  private openAttachmentLock(file: string, mode: number): { fd: number; created: boolean } {
    try {
      return { fd: openRegularSync(file, fsc.O_CREAT | fsc.O_EXCL | fsc.O_RDWR, mode), created: true };
    } catch {
      // There already (EEXIST), or not openable: openLock opens it or says why.
      return { fd: this.openLock(file, mode, fsc.O_RDWR), created: false };
    }
  }

  private openLock(file: string, mode: number, access: number = fsc.O_RDONLY): number {
    try {
      return openRegularSync(file, fsc.O_CREAT | access, mode);
    } catch (err) {
      if (err instanceof PathGuardError && err.reason === 'not-regular') {
        const how = err.errno === 'EISDIR' || err.message.includes('a directory') ? `rmdir ${file}` : `rm ${file}`;
        throw new CniError(
          ErrorCode.IOFailure,
          `host-local store: ${err.message}; remove it ("${how}") and the plugin creates a plain lock file again`,
        );
      }
      throw ioError('open lock', file, err);
    }
  }

  private async lock(fd: number, file: string, deadline: number): Promise<void> {
    try {
      await flock(fd, 'ex', Math.max(1, deadline - Date.now()));
    } catch (err) {
      if (isErrno(err, 'EAGAIN')) {
        throw new CniError(ErrorCode.TryAgainLater, `host-local store: timed out after ${this.lockTimeoutMs} ms waiting for lock ${file}`);
      }
      throw ioError('lock', file, err);
    }
  }

  /**
   * Every lease file: regular files whose name is an IP address in canonical
   * form. `contents: false` reads names only (content ''). `locked: false`
   * is a read without the store lock, which must leave temp files alone: a
   * lock holder may be writing one.
   */
  async entries(opts: { contents?: boolean; locked?: boolean } = {}): Promise<StoreEntry[]> {
    const { contents = true, locked = true } = opts;
    let dirents: Dirent[];
    try {
      dirents = readdirSync(this.dir, { withFileTypes: true });
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return [];
      throw ioError('read directory', this.dir, err);
    }
    const out: StoreEntry[] = [];
    for (const d of dirents) {
      if (!d.isFile()) continue;
      if (STALE_TEMP.test(d.name)) {
        if (locked) rmQuietly(this.pathFor(d.name));
        continue;
      }
      const ip = parseIp(d.name);
      if (!ip || formatIp(ip) !== d.name) continue;
      if (!contents) {
        out.push({ ip, name: d.name, content: '' });
        continue;
      }
      const entry = this.readEntry(d.name, ip);
      if (entry) out.push(entry);
    }
    return out;
  }

  /** The lease files of these names that exist, with their contents; names that are not leases are skipped. */
  entriesNamed(names: readonly string[]): StoreEntry[] {
    const out: StoreEntry[] = [];
    for (const name of new Set(names)) {
      const ip = parseIp(name);
      if (!ip || formatIp(ip) !== name) continue;
      const entry = this.readEntry(name, ip);
      if (entry) out.push(entry);
    }
    return out;
  }

  /** One lease file; undefined when it is gone (removed by a writer that does not lock). */
  private readEntry(name: string, ip: Ip): StoreEntry | undefined {
    const content = this.readLease(name);
    return content === undefined ? undefined : { ip, name, content };
  }

  /**
   * A lease file's content, trimmed; undefined when there is no lease file
   * of that name. Only a regular file is a lease, as in a listing
   * (entries): a name read without a listing (an attachment's record, which
   * names every address its ADD tried, a directory, symlink or FIFO there
   * included, since a listing does not show them as taken) must not fail
   * the call (a directory), be taken for the attachment's own lease (a
   * symlink to it), or wait forever for a writer (a FIFO).
   */
  private readLease(name: string): string | undefined {
    const file = this.pathFor(name);
    try {
      return readRegular(file);
    } catch (err) {
      throw ioError('read lease', file, err);
    }
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
    const own = this.ownTemp();
    const tmp = this.pathFor(own ?? tempName('lease'));
    try {
      this.writeTemp(tmp, key, own !== undefined);
    } catch (err) {
      rmQuietly(tmp);
      throw ioError('write lease', tmp, err);
    }
    try {
      linkSync(tmp, file);
    } catch (err) {
      if (hasCode(err, 'EEXIST')) return false;
      throw ioError('create lease', file, err);
    } finally {
      rmQuietly(tmp);
    }
    return true;
  }

  /**
   * Creates a temp file (O_EXCL: never through a link or symlink someone
   * put there). An attachment's own temp name that exists already was left
   * by a killed call of that attachment (no other call uses the name):
   * removed, and made again.
   */
  private writeTemp(tmp: string, text: string, ownName: boolean): void {
    try {
      writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if (!ownName || !hasCode(err, 'EEXIST')) throw err;
      unlinkSync(tmp);
      writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    }
  }

  /** The lease temp file name of the attachment whose lock this call holds in this store, if any. */
  private ownTemp(): string | undefined {
    const held = heldAttachment.getStore();
    return held?.dir === this.dir ? attachmentTempName(held.digest) : undefined;
  }

  /**
   * Whether a file of this name exists (of any type: a name that is not a
   * lease file still makes link(2) fail); one lstat, far cheaper than
   * writing a temp file to learn it from link(2), which stays the authority.
   */
  exists(name: string): boolean {
    const file = this.pathFor(name);
    try {
      return lstatSync(file, { throwIfNoEntry: false }) !== undefined;
    } catch (err) {
      throw ioError('look up', file, err);
    }
  }

  /** Under the lock: removes temp files killed writers left (entries() does it too). */
  async sweepTemps(): Promise<void> {
    await this.entries({ contents: false });
  }

  /**
   * Under the lock: removes the temp file a killed ADD of the attachment
   * whose lock this call holds may have left (one unlink, no listing);
   * false when the call holds no attachment lock here, and the caller
   * sweeps with sweepTemps instead.
   */
  sweepOwnTemp(): boolean {
    const own = this.ownTemp();
    if (own === undefined) return false;
    rmQuietly(this.pathFor(own));
    return true;
  }

  /** One lease file's content, trimmed; undefined when there is no such lease. */
  async leaseContent(name: string): Promise<string | undefined> {
    return this.readLease(name);
  }

  /** Deletes a lease file; a file that is already gone counts as removed. */
  async remove(name: string): Promise<void> {
    const file = this.pathFor(name);
    try {
      unlinkSync(file);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw ioError('remove lease', file, err);
    }
  }

  /** The last IP handed out from range set `set`; unreadable or garbage means "none" (round-robin just restarts). */
  async lastReserved(set: number): Promise<Ip | undefined> {
    try {
      // Never through readFileSync: a FIFO there would block the ADD in
      // open(2), holding the store lock every call on the node waits for.
      const text = readRegular(this.pathFor(`${LAST_RESERVED_PREFIX}${set}`));
      return text === undefined ? undefined : parseIp(text);
    } catch {
      return undefined;
    }
  }

  /**
   * Writes last_reserved_ip.<set>. It is a round-robin hint, read only
   * under the lock, and the reference plugin rewrites it in place: so is it
   * here when it is our own plain 0600 file, which spares each ADD a new
   * inode and a rename inside the locked section (on ext4 the inode
   * allocator's search was a visible share of an ADD). A crash between the
   * write and the truncate can leave another address or garbage there; the
   * next allocation then starts the round elsewhere (lastReserved reads
   * garbage as none), and the lease files, created with link(2), stay the
   * only authority on what is taken. Anything else at the path (missing,
   * a symlink, a FIFO, another mode) is replaced atomically as before.
   */
  async setLastReserved(set: number, ip: Ip): Promise<void> {
    const file = this.pathFor(`${LAST_RESERVED_PREFIX}${set}`);
    if (rewriteInPlace(file, formatIp(ip))) return;
    const tmp = this.pathFor(tempName(`${LAST_RESERVED_PREFIX}${set}`));
    try {
      writeFileSync(tmp, formatIp(ip), { mode: 0o600, flag: 'wx' });
      renameSync(tmp, file);
    } catch (err) {
      rmQuietly(tmp);
      throw ioError('write', file, err);
    }
  }
}
