import { closeSync, openSync } from 'node:fs';
import { call, libcFlockNow, libcIsNetnsFd, libcPeerCred } from './ffi.js';
import { isErrno, NetlinkError } from './errors.js';
import type { InNetns } from './types.js';

/**
 * Reads a sysctl such as net.ipv4.ip_forward, in this or another netns. A key
 * naming a dotted interface uses slashes: net/ipv4/conf/flannel.1/rp_filter.
 */
export function sysctlGet(key: string, opts: InNetns = {}): string {
  return call('sysctl.get', { ...opts, key }) as string;
}

/** Writes a sysctl only when its value differs, so read-only /proc/sys is no problem when nothing changes. */
export function sysctlSet(key: string, value: string, opts: InNetns = {}): void {
  if (sysctlGet(key, opts) === value) return;
  call('sysctl.set', { ...opts, key, value });
}

/**
 * True when `path` is a network namespace handle (not just any file). Asked
 * of libc directly when it can be (no entry into the Go runtime, which
 * costs a call after an idle moment far more than this check), else of the
 * shim; either way opening it may block on a FIFO, so callers stat first.
 */
export function isNetns(path: string): boolean {
  return libcIsNetns(path) ?? (call('netns.check', { path }) as { netns: boolean }).netns;
}

/** libc's answer for `path`; undefined when libc is not loadable or the path does not open (the shim then words the error). */
function libcIsNetns(path: string): boolean | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    return libcIsNetnsFd(fd);
  } finally {
    closeSync(fd);
  }
}

export type LockMode = 'ex' | 'sh';

/**
 * Takes a flock(2) on an open descriptor, waiting in the kernel's queue of
 * lockers as the reference host-local does (a LOCK_NB poll could be starved
 * by it), and gives up with EAGAIN after `timeoutMs`, so a stuck holder
 * becomes a "try again later" instead of a hang. The wait blocks this
 * thread: it is meant for short-lived processes such as the plugin.
 */
export function flock(fd: number, mode: LockMode, timeoutMs: number): Promise<void> {
  try {
    // A free lock (the common case) is taken through libc at once; only a
    // held one waits in the shim, bounded by the timeout. The shim would try
    // LOCK_NB first as well: this spares an entry into the Go runtime.
    if (libcFlockNow(fd, mode) === true) return Promise.resolve();
    call('flock', { fd, op: mode, timeoutMs: Math.max(1, Math.round(timeoutMs)) });
    return Promise.resolve();
  } catch (err) {
    if (isErrno(err, 'EAGAIN')) {
      return Promise.reject(new NetlinkError('flock', `lock still held by another process after ${timeoutMs} ms`, 'EAGAIN', 11));
    }
    return Promise.reject(err);
  }
}

/** Takes the lock only if it is free right now; false when another holds it. */
export function tryFlock(fd: number, mode: LockMode): boolean {
  try {
    const now = libcFlockNow(fd, mode);
    if (now !== undefined) return now;
    call('flock', { fd, op: mode, nonblock: true });
    return true;
  } catch (err) {
    if (isErrno(err, 'EAGAIN')) return false;
    throw err;
  }
}

export function funlock(fd: number): void {
  if (libcFlockNow(fd, 'un') === undefined) call('flock', { fd, op: 'un' });
}

/** Credentials the kernel recorded for the peer of a connected Unix socket. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * SO_PEERCRED of a connected Unix socket (Node has no API for it): the
 * credentials the peer had when it connected. `fd` is the socket's descriptor,
 * e.g. the handle fd of a net.Socket a server accepted.
 */
export function peerCred(fd: number): PeerCred {
  if (!Number.isInteger(fd) || fd < 0) {
    throw new NetlinkError('sock.peercred', `bad socket descriptor ${fd}`, 'EBADF', 9);
  }
  return libcPeerCred(fd) ?? (call('sock.peercred', { fd }) as PeerCred);
}
