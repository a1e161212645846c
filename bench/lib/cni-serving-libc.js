// The libc calls of bench/cni-serving.js's "bare" design, through koffi: a
// listening Unix socket made without libuv, and one connection served by
// blocking calls on the thread that accepted it.
import { createRequire } from 'node:module';

const koffi = createRequire(import.meta.url)('koffi');
const lib = koffi.load('libc.so.6');
const c = {
  socket: lib.func('int socket(int, int, int)'),
  bind: lib.func('int bind(int, void *, uint32_t)'),
  listen: lib.func('int listen(int, int)'),
  accept4: lib.func('int accept4(int, void *, void *, int)'),
  read: lib.func('long read(int, void *, size_t)'),
  write: lib.func('long write(int, void *, size_t)'),
  close: lib.func('int close(int)'),
  getsockopt: lib.func('int getsockopt(int, int, int, _Out_ uint8_t *val, _Inout_ uint32_t *len)'),
};
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

export function listenUnix(path) {
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket: errno ${koffi.errno()}`);
  const addr = Buffer.alloc(110);
  addr.writeUInt16LE(AF_UNIX, 0);
  addr.write(path, 2);
  if (c.bind(fd, addr, 2 + Buffer.byteLength(path) + 1) !== 0) throw new Error(`bind: errno ${koffi.errno()}`);
  if (c.listen(fd, 128) !== 0) throw new Error(`listen: errno ${koffi.errno()}`);
  return fd;
}

export function accept(fd) {
  for (;;) {
    const conn = c.accept4(fd, null, null, SOCK_CLOEXEC);
    if (conn >= 0) return conn;
    if (koffi.errno() !== 4) throw new Error(`accept: errno ${koffi.errno()}`);
  }
}

export function peerUid(fd) {
  const buf = Buffer.alloc(12);
  if (c.getsockopt(fd, 1, 17, buf, [12]) !== 0) return -1;
  return buf.readUInt32LE(4);
}

function readFull(fd, buf) {
  let at = 0;
  while (at < buf.length) {
    const n = Number(c.read(fd, at === 0 ? buf : buf.subarray(at), buf.length - at));
    if (n === 0) return false;
    if (n < 0) {
      if (koffi.errno() === 4) continue;
      return false;
    }
    at += n;
  }
  return true;
}

/** One request frame's body, or undefined when the peer closed early. */
export function readFrame(fd) {
  const head = Buffer.alloc(4);
  if (!readFull(fd, head)) return undefined;
  const body = Buffer.alloc(head.readUInt32BE(0));
  return readFull(fd, body) ? body : undefined;
}

export function writeAll(fd, bytes) {
  let at = 0;
  while (at < bytes.length) {
    const n = Number(c.write(fd, at === 0 ? bytes : bytes.subarray(at), bytes.length - at));
    if (n < 0) {
      if (koffi.errno() === 4) continue;
      return;
    }
    at += n;
  }
}

export const closeFd = (fd) => c.close(fd);
