// Reading what a runtime writes to the plugin's stdin: the network
// configuration (or, for VERSION, a tiny body naming a version), bounded.
//
// fd 0 is read with synchronous read(2) calls first: merely touching
// process.stdin makes Node build a stream (net.Socket for a pipe, fs.ReadStream
// for a file, tty.ReadStream) and load the modules behind it, which cost a
// standalone plugin process about 5 ms of CPU on VERSION and 2.5 ms on ADD
// or DEL for a few hundred bytes (docs/benchmarks.md, sea-startup). Only
// when fd 0 is non-blocking and its writer has not finished (EAGAIN) does the
// rest come through the stream, which waits in the event loop.
import { readSync } from 'node:fs';
import { CniError, ErrorCode } from './errors.js';

/** Bytes asked of each read(2): a whole network configuration at once, in practice. */
const CHUNK = 64 * 1024;

function tooLarge(maxBytes: number): CniError {
  return new CniError(ErrorCode.DecodingFailure, `stdin is larger than ${maxBytes} bytes`);
}

function readError(err: unknown): CniError {
  return new CniError(ErrorCode.IOFailure, `error reading stdin: ${err instanceof Error ? err.message : String(err)}`);
}

/** What a synchronous read of an fd got: all of it (EOF seen), or what was ready before EAGAIN. */
export interface SyncRead {
  data: Buffer;
  /** false: the fd is non-blocking and had no more data yet; the rest must be awaited */
  complete: boolean;
}

/** The read(2) the synchronous reader uses (a seam for tests of EINTR and errors). */
export type ReadFn = (fd: number, buffer: Buffer, offset: number, length: number, position: null) => number;

/**
 * Reads `fd` synchronously until EOF, EAGAIN or more than `maxBytes`.
 * More than `maxBytes` fails with code 6 without reading further; a read
 * error fails with code 5; EINTR is retried.
 */
export function readFdSync(fd: number, maxBytes: number, read: ReadFn = readSync): SyncRead {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    // One byte past the bound is enough to know the input is too large.
    const want = Math.min(CHUNK, maxBytes + 1 - total);
    const buf = Buffer.allocUnsafe(want);
    let n: number;
    try {
      n = read(fd, buf, 0, want, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EINTR') continue;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return { data: Buffer.concat(chunks, total), complete: false };
      throw readError(err);
    }
    if (n === 0) return { data: Buffer.concat(chunks, total), complete: true };
    total += n;
    if (total > maxBytes) throw tooLarge(maxBytes);
    chunks.push(n === want ? buf : buf.subarray(0, n));
  }
}

/**
 * Reads a stream to the end, after `prefix` (bytes already read from the same
 * source), at most `maxBytes` in all. More fails with code 6 without
 * buffering the rest (the stream is destroyed); a read error fails with code 5.
 */
export async function readAllStdin(maxBytes: number, stream: NodeJS.ReadableStream = process.stdin, prefix: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  const chunks: Buffer[] = prefix.length ? [prefix] : [];
  let total = prefix.length;
  try {
    for await (const chunk of stream) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk);
      total += buf.length;
      if (total > maxBytes) {
        destroyQuietly(stream);
        throw tooLarge(maxBytes);
      }
      chunks.push(buf);
    }
  } catch (err) {
    if (err instanceof CniError) throw err;
    throw readError(err);
  }
  return Buffer.concat(chunks, total);
}

function destroyQuietly(stream: NodeJS.ReadableStream): void {
  const d = (stream as { destroy?: () => void }).destroy;
  if (typeof d === 'function') d.call(stream);
}

/**
 * All of the plugin's stdin (a pipe, a file, a terminal, /dev/null; a closed
 * fd 0 reads as empty, since Node reopens it on /dev/null), at most
 * `maxBytes`: read synchronously, and only when fd 0 is non-blocking and not
 * yet at its end, finished through `stream` (process.stdin). Errors as
 * readFdSync and readAllStdin.
 */
export async function readStdin(
  maxBytes: number,
  source: { fd: number; stream: () => NodeJS.ReadableStream } = { fd: 0, stream: () => process.stdin },
): Promise<Buffer> {
  const first = readFdSync(source.fd, maxBytes);
  if (first.complete) return first.data;
  return readAllStdin(maxBytes, source.stream(), first.data);
}
