// The single place that touches FFI: it loads the Go shim with koffi and
// exposes one synchronous `call(op, request)`, plus libc's getsockopt for
// SO_PEERCRED. Swapping the FFI binding means rewriting this file only.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { constants as os, endianness } from 'node:os';
import { fileURLToPath } from 'node:url';
import { NetlinkError, type Errno } from './errors.js';
import { AssetError, inSea, seaAssetPaths } from '../sea/assets.js';

/** Bumped with native/tsfnl ShimVersion; a mismatch means a stale build. */
const EXPECTED_SHIM_VERSION = 9;

type RawCall = (op: string, request: string) => string;

let rawCall: RawCall | undefined;
/** The shim loaded ahead of its first call (preloadShim), not yet version-checked. */
let preloaded: RawCall | undefined;

type Koffi = typeof import('koffi');

/**
 * Names of the native files embedded in the single executable; they must
 * match the assets scripts/package.sh puts in the SEA blob.
 */
export const SEA_KOFFI_ADDON = 'koffi.node';
export const SEA_NETLINK_SHIM = 'libtsfnl.so';

/** The embedded files, extracted on first use (a SEA cannot dlopen from memory). */
function seaPaths(): Record<string, string> {
  try {
    return seaAssetPaths();
  } catch (err) {
    const code = err instanceof AssetError ? err.code : undefined;
    throw new NetlinkError('load', `cannot extract the embedded netlink libraries: ${(err as Error).message}`, code);
  }
}

/**
 * Where the shim is: TSFLANNEL_NETLINK_LIB, else the copy extracted from the
 * single executable, else the repository's build.
 */
export function shimPath(): string {
  const fromEnv = process.env.TSFLANNEL_NETLINK_LIB;
  if (fromEnv) return fromEnv;
  if (inSea()) return embedded(SEA_NETLINK_SHIM);
  return fileURLToPath(new URL('../../native/build/libtsfnl.so', import.meta.url));
}

function embedded(name: string): string {
  const path = seaPaths()[name];
  if (!path) throw new NetlinkError('load', `this executable does not embed ${name} (rebuild with npm run package)`);
  return path;
}

/**
 * koffi from node_modules, or in a single executable (whose require sees only
 * built-ins) its native addon loaded directly: the addon exports the same API
 * as the package, whose JavaScript part only locates the addon.
 */
let koffiLoaded: Koffi | undefined;

function loadKoffi(): Koffi {
  koffiLoaded ??= loadKoffiOnce();
  return koffiLoaded;
}

function loadKoffiOnce(): Koffi {
  if (!inSea()) {
    // koffi is CommonJS with a native addon; require keeps it out of
    // start-up until the first netlink call.
    return createRequire(import.meta.url)('koffi') as Koffi;
  }
  const addon = { exports: {} as Koffi };
  process.dlopen(addon, embedded(SEA_KOFFI_ADDON));
  return addon.exports;
}

function load(): RawCall {
  const path = shimPath();
  if (!existsSync(path)) {
    throw new NetlinkError('load', `netlink shim not found at ${path} (run scripts/setup.sh)`, 'ENOENT', 2);
  }
  const koffi = loadKoffi();
  const lib = withGoTimerSlack(() => koffi.load(path));
  const free = lib.func('void TsfFree(void *p)');
  const heapStr = koffi.disposable('TsfReply', 'str', free);
  const fn = lib.func('TsfCall', heapStr, ['str', 'str']) as (op: string, req: string) => string;
  return fn;
}

/**
 * The timer slack (ns) the Go runtime's own threads start with: its
 * scheduler thread (sysmon) and the threads cloned from them. Linux's
 * default is 50 µs. Why: each call into the shim leaves its P "in a
 * syscall" when it returns to Node (Go 1.19's cgo callbacks), and with
 * another P idle, sysmon takes it back only after 10 ms; until then sysmon
 * polls in usleep(20 µs) steps, doubling only after 50 of them: about 60
 * wake-ups, and 1.5 ms of CPU on a VM, after every pod call that comes
 * after a quiet moment. With 1 ms of slack the same 10 ms take about ten
 * wake-ups. Timers the shim sets are far longer (a lock's wait, a netlink
 * socket's 20 s), and blocking reads and futex waits are not timed, so
 * they do not move; a Go timer may fire up to 1 ms late.
 */
const GO_TIMER_SLACK_NS = 1_000_000;
const PR_SET_TIMERSLACK = 29;
const PR_GET_TIMERSLACK = 30;

/**
 * Runs fn (the shim's dlopen) with this thread's timer slack raised to
 * GO_TIMER_SLACK_NS, then restores it: the shim's constructor starts Go's
 * runtime on a thread cloned from this one, which inherits the slack, as
 * does every thread the runtime clones from it; this thread keeps its own.
 * Without libc, or if prctl refuses, the runtime keeps the default.
 */
function withGoTimerSlack<T>(fn: () => T): T {
  const c = loadLibc();
  const old = c ? c.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) : -1;
  if (!c || old < 0 || c.prctl(PR_SET_TIMERSLACK, GO_TIMER_SLACK_NS, 0, 0, 0) !== 0) return fn();
  try {
    return fn();
  } finally {
    c.prctl(PR_SET_TIMERSLACK, old, 0, 0, 0);
  }
}

/**
 * Loads koffi and the shim now without calling it. dlopen() of the shim
 * starts Go's runtime on a thread of its own, and the first call waits for
 * it: loaded at the start of a short-lived process's call, that start-up
 * overlaps the JavaScript work before the first netlink call (the
 * standalone plugin). A failure is left for the first call to report.
 */
export function preloadShim(): void {
  if (rawCall || preloaded) return;
  try {
    preloaded = load();
  } catch {
    // call() loads again and throws the error where it belongs.
  }
}

interface Reply {
  ok: boolean;
  result?: unknown;
  error?: string;
  errno?: string;
  code?: number;
  /** a tag for failures callers map to specific errors (the pod ops) */
  reason?: string;
  /** a panic's Go stack, kept off the message */
  stack?: string;
}

/** One shim call as traceShimCalls records it. */
export interface ShimCallTrace {
  op: string;
  /** the request named another netns (the op entered it) */
  netns: boolean;
  /** wall time of the call, JSON both ways included */
  ms: number;
  /** this process's CPU time (user + system, every thread) during the call */
  cpuMs: number;
}

let trace: ShimCallTrace[] | undefined;

/**
 * Starts (on) or stops recording every shim call's op and times, and returns
 * what was recorded so far (bench/cni-breakdown.js). Off by default.
 */
export function traceShimCalls(on: boolean): ShimCallTrace[] {
  const got = trace ?? [];
  trace = on ? [] : undefined;
  return got;
}

/** Runs one shim op and returns its result, or throws a NetlinkError. */
export function call(op: string, request: object): unknown {
  return callText(op, JSON.stringify(request), 'netns' in request && Boolean(request.netns));
}

/**
 * call() for an op whose request is not JSON (batch.apply's entry lines):
 * `request` goes to the shim as it is. `netns` only labels the trace.
 */
export function callText(op: string, request: string, netns = false): unknown {
  if (!rawCall) {
    rawCall = preloaded ?? load();
    preloaded = undefined;
    checkVersion(rawCall);
  }
  if (!trace) return unwrap(op, rawCall(op, request));
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  try {
    return unwrap(op, rawCall(op, request));
  } finally {
    const c = process.cpuUsage(c0);
    trace.push({ op, netns, ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000 });
  }
}

function unwrap(op: string, text: string): unknown {
  const reply = JSON.parse(text) as Reply;
  if (!reply.ok) {
    const err = new NetlinkError(op, reply.error ?? 'unknown error', reply.errno, reply.code);
    if (reply.stack) err.goStack = reply.stack;
    if (reply.reason) err.reason = reply.reason;
    throw err;
  }
  return reply.result;
}

type GetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: number[]) => number;
type FlockFn = (fd: number, operation: number) => number;
type FstatfsFn = (fd: number, buf: Buffer) => number;
type IoctlFn = (fd: number, request: number) => number;
type PrctlFn = (option: number, arg2: number, arg3: number, arg4: number, arg5: number) => number;
type IntFn3 = (a: number, b: number, c: number) => number;
type BindFn = (fd: number, addr: Buffer, len: number) => number;
type AcceptFn = (fd: number, addr: null, len: null, flags: number) => number;
type PollFn = (fds: Buffer, n: number, timeoutMs: number) => number;

interface Libc {
  getsockopt: GetSockOpt;
  flock: FlockFn;
  fstatfs: FstatfsFn;
  ioctl: IoctlFn;
  prctl: PrctlFn;
  socket: IntFn3;
  bind: BindFn;
  listen: (fd: number, backlog: number) => number;
  accept4: AcceptFn;
  poll: PollFn;
  epollCreate1: (flags: number) => number;
  epollCtl: (epfd: number, op: number, fd: number, event: Buffer) => number;
  epollWait: (epfd: number, events: Buffer, max: number, timeoutMs: number) => number;
  shutdown: (fd: number, how: number) => number;
  close: (fd: number) => number;
}

/**
 * A few libc functions called directly through koffi: no JSON and no entry
 * into the Go runtime. An entry costs little on a busy process, but after
 * an idle moment it wakes the runtime's threads, some 0.5 ms of CPU on a
 * VM, paid per call (docs/benchmarks.md). null when libc cannot be loaded
 * here; callers then ask the shim.
 */
let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc === undefined) {
    try {
      const lib = loadKoffi().load('libc.so.6');
      libc = {
        getsockopt: lib.func('int getsockopt(int, int, int, _Out_ uint8_t *val, _Inout_ uint32_t *len)') as GetSockOpt,
        flock: lib.func('int flock(int, int)') as FlockFn,
        fstatfs: lib.func('int fstatfs(int, _Out_ uint8_t *buf)') as FstatfsFn,
        // Declared without the variadic argument: NS_GET_NSTYPE takes none.
        ioctl: lib.func('int ioctl(int, unsigned long)') as IoctlFn,
        // prctl is variadic; every option reads at most these four words.
        prctl: lib.func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)') as PrctlFn,
        socket: lib.func('int socket(int, int, int)') as IntFn3,
        bind: lib.func('int bind(int, void *, uint32_t)') as BindFn,
        listen: lib.func('int listen(int, int)') as Libc['listen'],
        accept4: lib.func('int accept4(int, void *, void *, int)') as AcceptFn,
        poll: lib.func('int poll(void *, unsigned long, int)') as PollFn,
        epollCreate1: lib.func('int epoll_create1(int)') as Libc['epollCreate1'],
        epollCtl: lib.func('int epoll_ctl(int, int, int, void *)') as Libc['epollCtl'],
        epollWait: lib.func('int epoll_wait(int, void *, int, int)') as Libc['epollWait'],
        shutdown: lib.func('int shutdown(int, int)') as Libc['shutdown'],
        close: lib.func('int close(int)') as Libc['close'],
      };
    } catch {
      libc = null;
    }
  }
  return libc;
}

/** The errno of the last failed libc call, as a NetlinkError for `op`. */
function libcError(op: string, what: string): NetlinkError {
  const errno = loadKoffi().errno();
  const name = (Object.entries(os.errno).find(([, v]) => v === errno)?.[0] ?? 'EIO') as Errno;
  return new NetlinkError(op, `${what} failed: ${name}`, name, errno);
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

/**
 * SO_PEERCRED of a connected Unix socket through libc's getsockopt(2),
 * called directly: no JSON and no entry into the Go runtime, which on the
 * agent's main thread (one check per CNI connection) matters. undefined
 * when libc is not loadable here; the caller then asks the shim.
 */
export function libcPeerCred(fd: number): { pid: number; uid: number; gid: number } | undefined {
  const c = loadLibc();
  if (!c) return undefined;
  // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
  const buf = Buffer.alloc(12);
  const len = [12];
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0) throw libcError('sock.peercred', `getsockopt(SO_PEERCRED) on fd ${fd}`);
  // struct ucred in the host's byte order.
  const le = endianness() === 'LE';
  const u32 = (at: number) => (le ? buf.readUInt32LE(at) : buf.readUInt32BE(at));
  return { pid: le ? buf.readInt32LE(0) : buf.readInt32BE(0), uid: u32(4), gid: u32(8) };
}

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

/**
 * flock(2) through libc without waiting: 'ex' or 'sh' with LOCK_NB, or
 * 'un'. true when done, false when another open file holds the lock
 * (EWOULDBLOCK), undefined when libc is not loadable here (the caller asks
 * the shim). Other failures throw a NetlinkError, as the shim's flock op.
 */
export function libcFlockNow(fd: number, op: 'ex' | 'sh' | 'un'): boolean | undefined {
  const c = loadLibc();
  if (!c) return undefined;
  const how = op === 'un' ? LOCK_UN : (op === 'ex' ? LOCK_EX : LOCK_SH) | LOCK_NB;
  for (;;) {
    if (c.flock(fd, how) === 0) return true;
    const err = libcError('flock', `flock(${fd}, ${op})`);
    if (err.code === os.errno.EINTR) continue;
    if (err.code === os.errno.EAGAIN || err.code === os.errno.EWOULDBLOCK) return false;
    throw err;
  }
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
/** sun_path's size in struct sockaddr_un; the path and its NUL must fit. */
const SUN_PATH = 108;

function requireLibc(op: string): Libc {
  const c = loadLibc();
  if (!c) throw new NetlinkError(op, 'libc.so.6 cannot be loaded here', 'ENOSYS', os.errno.ENOSYS);
  return c;
}

const SOCK_NONBLOCK = 0o4000;

/**
 * A listening Unix stream socket bound at `path`, made with libc rather
 * than node:net: a non-blocking, close-on-exec descriptor that threads wait
 * on themselves (listenWaiter) and accept from, which libuv's event loop
 * cannot share. The caller owns the descriptor (closeSocket).
 */
export function unixListen(path: string, backlog: number): number {
  const c = requireLibc('socket.listen');
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length >= SUN_PATH || bytes.includes(0)) throw new NetlinkError('socket.listen', `socket path ${JSON.stringify(path)} does not fit sockaddr_un`, 'EINVAL', os.errno.EINVAL);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw libcError('socket.listen', 'socket(AF_UNIX)');
  // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } in the host's byte order.
  const addr = Buffer.alloc(2 + SUN_PATH);
  if (endianness() === 'LE') addr.writeUInt16LE(AF_UNIX, 0);
  else addr.writeUInt16BE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  if (c.bind(fd, addr, 2 + bytes.length + 1) !== 0 || c.listen(fd, backlog) !== 0) {
    const err = libcError('socket.listen', `bind/listen on ${path}`);
    c.close(fd);
    throw err;
  }
  return fd;
}

/**
 * The next connection on a non-blocking listening socket (a blocking,
 * close-on-exec descriptor): 'again' when another thread took it first,
 * 'closed' once the socket was shut down (shutdownSocket).
 */
export function unixAccept(fd: number): number | 'again' | 'closed' {
  const c = requireLibc('socket.accept');
  for (;;) {
    const conn = c.accept4(fd, null, null, SOCK_CLOEXEC);
    if (conn >= 0) return conn;
    const err = libcError('socket.accept', `accept4(${fd})`);
    if (err.code === os.errno.EINTR || err.code === os.errno.ECONNABORTED) continue;
    if (err.code === os.errno.EAGAIN || err.code === os.errno.EWOULDBLOCK) return 'again';
    if (err.code === os.errno.EINVAL || err.code === os.errno.EBADF) return 'closed';
    throw err;
  }
}

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLLIN = 0x1;
const EPOLLEXCLUSIVE = 1 << 28;

export interface ListenWaiter {
  /** Blocks this thread up to `ms` for a connection to accept; true when one may be there. */
  wait(ms: number): boolean;
  close(): void;
}

/**
 * One thread's wait for connections on a shared listening socket: its own
 * epoll instance holding the socket with EPOLLEXCLUSIVE. The kernel then
 * wakes one waiting thread per connection (no thundering herd), and always
 * the first, in the order the waiters were made, that is waiting now: with
 * calls one at a time the first worker takes them all and stays warm, and
 * the next ones serve only while it is busy.
 */
export function listenWaiter(listenFd: number): ListenWaiter {
  const c = requireLibc('socket.wait');
  const epfd = c.epollCreate1(EPOLL_CLOEXEC);
  if (epfd < 0) throw libcError('socket.wait', 'epoll_create1');
  // struct epoll_event { uint32_t events; epoll_data_t data; }, packed (12 bytes) on x86-64, 16 elsewhere.
  const ev = Buffer.alloc(16);
  if (endianness() === 'LE') ev.writeUInt32LE((EPOLLIN | EPOLLEXCLUSIVE) >>> 0, 0);
  else ev.writeUInt32BE((EPOLLIN | EPOLLEXCLUSIVE) >>> 0, 0);
  if (c.epollCtl(epfd, EPOLL_CTL_ADD, listenFd, ev) !== 0) {
    const err = libcError('socket.wait', `epoll_ctl(${listenFd})`);
    c.close(epfd);
    throw err;
  }
  const out = Buffer.alloc(16);
  return {
    wait(ms) {
      for (;;) {
        const n = c.epollWait(epfd, out, 1, ms);
        if (n >= 0) return n > 0;
        const err = libcError('socket.wait', 'epoll_wait');
        if (err.code !== os.errno.EINTR) throw err;
      }
    },
    close() {
      c.close(epfd);
    },
  };
}

const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;

/**
 * poll(2) of one descriptor for `events`, up to `ms` (EINTR retried within
 * it): the events it reports, 0 when the time ran out. POLLHUP and POLLERR
 * are reported whatever `events` asks for.
 */
function pollOne(fd: number, events: number, ms: number): number {
  const c = requireLibc('socket.poll');
  // struct pollfd { int fd; short events; short revents; } in the host's byte order
  const pfd = Buffer.alloc(8);
  const le = endianness() === 'LE';
  if (le) {
    pfd.writeInt32LE(fd, 0);
    pfd.writeInt16LE(events, 4);
  } else {
    pfd.writeInt32BE(fd, 0);
    pfd.writeInt16BE(events, 4);
  }
  const until = Date.now() + ms;
  for (;;) {
    const n = c.poll(pfd, 1, Math.max(0, until - Date.now()));
    if (n === 0) return 0;
    if (n > 0) return le ? pfd.readInt16LE(6) : pfd.readInt16BE(6);
    const err = libcError('socket.poll', `poll(${fd})`);
    if (err.code !== os.errno.EINTR) throw err;
  }
}

/** poll(2) for input on `fd` for up to `ms`: true when there is something to read (or the peer closed). */
export function pollIn(fd: number, ms: number): boolean {
  return pollOne(fd, POLLIN, ms) !== 0;
}

/**
 * Whether the peer of a connected Unix stream socket has closed it (or it is
 * in error), without waiting and without reading: poll(2) reports POLLHUP
 * only once both directions are shut, so a peer that only shut its write
 * side (it still reads the answer) is not "closed".
 */
export function peerClosed(fd: number): boolean {
  return (pollOne(fd, 0, 0) & (POLLHUP | POLLERR)) !== 0;
}

/**
 * close(2) of a descriptor these functions made. Not fs.closeSync: a worker
 * thread's closeSync of a descriptor fs did not open prints a process
 * warning each time.
 */
export function closeSocket(fd: number): void {
  requireLibc('socket.close').close(fd);
}

/**
 * shutdown(2): 'both' wakes every thread waiting in accept(2) on a
 * listening socket; 'write' tells a connected peer no more is coming.
 */
export function shutdownSocket(fd: number, how: 'write' | 'both' = 'both'): void {
  requireLibc('socket.shutdown').shutdown(fd, how === 'write' ? 1 : 2);
}

/** struct statfs is 120 bytes on 64-bit Linux; f_type comes first. */
const STATFS_SIZE = 256;

/** Architectures (process.arch) whose struct statfs has a 32-bit f_type: the 32-bit ones, and s390x (glibc: unsigned int). */
const STATFS_TYPE_32: readonly string[] = ['arm', 'ia32', 'mips', 'mipsel', 'ppc', 's390', 's390x'];

/**
 * f_type of a struct statfs as fstatfs(2) filled it, for `arch` in its byte
 * order. It is a long (__fsword_t) on 64-bit Linux, but 32 bits on 32-bit
 * and on s390x: read as a 64-bit value there, the next field (f_bsize) came
 * along and nsfs was never recognized, so every CNI_NETNS was "not a
 * network namespace". Filesystem magics fit in 32 bits: the word holding
 * the low half is read (the second one of a big-endian long).
 */
export function statfsType(buf: Buffer, arch: string = process.arch, le: boolean = endianness() === 'LE'): number {
  const at = !le && !STATFS_TYPE_32.includes(arch) ? 4 : 0;
  return le ? buf.readUInt32LE(at) : buf.readUInt32BE(at);
}
const NSFS_MAGIC = 0x6e736673;
const NS_GET_NSTYPE = 0xb703;
const CLONE_NEWNET = 0x40000000;

/**
 * Whether the open descriptor is a network namespace handle (nsfs, type
 * CLONE_NEWNET), through libc's fstatfs(2) and ioctl(NS_GET_NSTYPE), as the
 * shim's netns.check op decides it. undefined when libc is not loadable
 * here (the caller asks the shim); failures throw a NetlinkError.
 */
export function libcIsNetnsFd(fd: number): boolean | undefined {
  const c = loadLibc();
  if (!c) return undefined;
  const buf = Buffer.alloc(STATFS_SIZE);
  if (c.fstatfs(fd, buf) !== 0) throw libcError('netns.check', `fstatfs(${fd})`);
  if (statfsType(buf) !== NSFS_MAGIC) return false;
  const nstype = c.ioctl(fd, NS_GET_NSTYPE);
  if (nstype < 0) throw libcError('netns.check', `ioctl(${fd}, NS_GET_NSTYPE)`);
  return nstype === CLONE_NEWNET;
}

function checkVersion(fn: RawCall): void {
  const got = unwrap('version', fn('version', '{}')) as { version: number };
  if (got.version !== EXPECTED_SHIM_VERSION) {
    rawCall = undefined;
    throw new NetlinkError(
      'version',
      `netlink shim version ${got.version} at ${shimPath()}, expected ${EXPECTED_SHIM_VERSION} (rebuild with scripts/build-native.sh)`,
    );
  }
}
