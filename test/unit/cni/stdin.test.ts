// The plugin's stdin reader: synchronous read(2)s on fd 0 to EOF, bounded,
// finished through the stream only when a non-blocking fd 0 says EAGAIN.
// Real files and pipes here; a real process with a pipe, a file, a
// non-blocking FIFO and a slow writer is in process.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { readAllStdin, readFdSync, readStdin, type ReadFn } from '../../../src/cni/stdin.js';

let dir = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-stdin-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function fileFd(content: Buffer | string): number {
  const path = join(dir, `f${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, content);
  return openSync(path, 'r');
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated, read`), { code });
}

/** A read(2) that plays `script`: a string is data returned (at most what was asked), an Error is thrown, 0 is EOF. */
function scripted(script: Array<string | Error | 0>): ReadFn & { calls: number } {
  const steps = [...script];
  const read = (_fd: number, buf: Buffer, off: number, len: number): number => {
    fn.calls++;
    const step = steps.shift();
    if (step === undefined || step === 0) return 0;
    if (step instanceof Error) throw step;
    const bytes = Buffer.from(step);
    if (bytes.length > len) {
      steps.unshift(bytes.subarray(len).toString('latin1'));
      bytes.copy(buf, off, 0, len);
      return len;
    }
    bytes.copy(buf, off);
    return bytes.length;
  };
  const fn = Object.assign(read, { calls: 0 });
  return fn;
}

describe('readFdSync', () => {
  it('reads a file to its end, in one piece', () => {
    const fd = fileFd('{"cniVersion":"1.1.0","name":"n","type":"tsflannel"}');
    try {
      const r = readFdSync(fd, 1 << 20);
      expect(r.complete).toBe(true);
      expect(r.data.toString()).toBe('{"cniVersion":"1.1.0","name":"n","type":"tsflannel"}');
    } finally {
      closeSync(fd);
    }
  });

  it('reads an empty file and /dev/null as empty and complete', () => {
    for (const fd of [fileFd(''), openSync('/dev/null', 'r')]) {
      try {
        expect(readFdSync(fd, 1 << 20)).toEqual({ data: Buffer.alloc(0), complete: true });
      } finally {
        closeSync(fd);
      }
    }
  });

  it('takes exactly the bound, and fails with code 6 one byte past it', () => {
    const max = 200_000; // more than one 64 KiB read
    const ok = fileFd(Buffer.alloc(max, 0x61));
    const over = fileFd(Buffer.alloc(max + 1, 0x61));
    try {
      const r = readFdSync(ok, max);
      expect(r.complete).toBe(true);
      expect(r.data.length).toBe(max);
      expect(r.data.every((b) => b === 0x61)).toBe(true);
      expect(() => readFdSync(over, max)).toThrow(expect.objectContaining({ code: 6, message: `stdin is larger than ${max} bytes` }));
    } finally {
      closeSync(ok);
      closeSync(over);
    }
  });

  it('stops reading once past the bound (a writer that never ends cannot make it buffer more)', () => {
    const read = scripted(Array.from({ length: 100 }, () => 'x'.repeat(1000)));
    expect(() => readFdSync(0, 2500, read)).toThrow(expect.objectContaining({ code: 6 }));
    expect(read.calls).toBe(3);
  });

  it('joins short reads (a pipe hands data over as it comes) until EOF', () => {
    const read = scripted(['{"cni', 'Version":', '"1.0.0"}', 0]);
    expect(readFdSync(0, 1024, read)).toEqual({ data: Buffer.from('{"cniVersion":"1.0.0"}'), complete: true });
  });

  it('retries a read interrupted by a signal (EINTR)', () => {
    const read = scripted(['{"a":', errno('EINTR'), '1}', 0]);
    expect(readFdSync(0, 1024, read)).toEqual({ data: Buffer.from('{"a":1}'), complete: true });
  });

  it('returns what it has, incomplete, when a non-blocking fd says EAGAIN', () => {
    expect(readFdSync(0, 1024, scripted(['{"a":', errno('EAGAIN')]))).toEqual({ data: Buffer.from('{"a":'), complete: false });
    expect(readFdSync(0, 1024, scripted([errno('EAGAIN')]))).toEqual({ data: Buffer.alloc(0), complete: false });
  });

  it('fails with code 5 naming the error on any other read error (EIO, a directory)', () => {
    expect(() => readFdSync(0, 1024, scripted([errno('EIO')]))).toThrow(expect.objectContaining({ code: 5, message: 'error reading stdin: EIO: simulated, read' }));
    const d = openSync(dir, 'r');
    try {
      expect(() => readFdSync(d, 1024)).toThrow(expect.objectContaining({ code: 5, message: expect.stringContaining('EISDIR') }));
    } finally {
      closeSync(d);
    }
  });
});

describe('readStdin', () => {
  it('never touches the stream when the fd reaches its end', async () => {
    const fd = fileFd('{"a":1}');
    try {
      const buf = await readStdin(1024, { fd, stream: () => { throw new Error('stream opened'); } });
      expect(buf.toString()).toBe('{"a":1}');
    } finally {
      closeSync(fd);
    }
  });

  it('finishes through the stream after EAGAIN, with the bytes already read first and the bound over both', async () => {
    // A non-blocking FIFO with its writer open and nothing written: read(2) says EAGAIN at once.
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const w = openSync(fifo, 'w');
    const later = new PassThrough();
    try {
      const p = readStdin(1024, { fd: r, stream: () => later });
      later.end(Buffer.from('{"a":1}'));
      expect((await p).toString()).toBe('{"a":1}');
    } finally {
      closeSync(r);
      closeSync(w);
    }
    await expect(readAllStdin(10, Readable.from([Buffer.from('67890')]), Buffer.from('12345'))).resolves.toEqual(Buffer.from('1234567890'));
    await expect(readAllStdin(10, Readable.from([Buffer.from('678901')]), Buffer.from('12345'))).rejects.toMatchObject({ code: 6 });
  });
});

describe('readAllStdin', () => {
  it('reads a stream to the end', async () => {
    const buf = await readAllStdin(1024, Readable.from([Buffer.from('{"a":'), Buffer.from('1}')]));
    expect(buf.toString()).toBe('{"a":1}');
  });

  it('reads an immediately closed stream as empty', async () => {
    const s = new PassThrough();
    s.end();
    expect((await readAllStdin(1024, s)).length).toBe(0);
  });

  it('fails with 6 past the limit and stops reading', async () => {
    const s = new PassThrough();
    s.write(Buffer.alloc(600));
    s.write(Buffer.alloc(600));
    const p = readAllStdin(1000, s);
    await expect(p).rejects.toMatchObject({ code: 6 });
    expect(s.destroyed).toBe(true);
  });

  it('fails with 5 on a read error', async () => {
    const s = new PassThrough();
    const p = readAllStdin(1000, s);
    s.destroy(new Error('EIO: i/o error, read'));
    await expect(p).rejects.toMatchObject({ code: 5, message: expect.stringContaining('EIO') });
  });
});
