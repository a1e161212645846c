import { setTimeout as sleep } from 'node:timers/promises';
import { call } from './ffi.js';
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

/** True when `path` is a network namespace handle (not just any file). */
export function isNetns(path: string): boolean {
  return (call('netns.check', { path }) as { netns: boolean }).netns;
}

export type LockMode = 'ex' | 'sh';

/**
 * Takes a flock(2) on an open descriptor without blocking the event loop:
 * it polls LOCK_NB with a growing pause and gives up with EAGAIN after
 * `timeoutMs`, so a stuck holder becomes a "try again later" instead of a hang.
 */
export async function flock(fd: number, mode: LockMode, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = 1; ; pause = Math.min(pause * 2, 25)) {
    try {
      call('flock', { fd, op: mode, nonblock: true });
      return;
    } catch (err) {
      if (!isErrno(err, 'EAGAIN')) throw err;
      if (Date.now() >= deadline) {
        throw new NetlinkError('flock', `lock still held by another process after ${timeoutMs} ms`, 'EAGAIN', 11);
      }
    }
    await sleep(pause);
  }
}

export function funlock(fd: number): void {
  call('flock', { fd, op: 'un' });
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
  return call('sock.peercred', { fd }) as PeerCred;
}
