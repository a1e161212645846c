// pipe() in src/demo/port-bridge.ts joins two connections. When one side
// closes cleanly, what is still queued for the other side must be written
// before that side ends; only an error drops both at once. Streams in memory
// make the queue deterministic: the receiving side takes one chunk at a time.
import { describe, expect, it } from 'vitest';
import { Duplex } from 'node:stream';
import { pipe } from '../../src/demo/port-bridge.js';

/** A connection whose writes complete one at a time, slowly, as to a reader slower than the server. */
function slowSink(): { side: Duplex; received: Buffer[]; ended: Promise<void> } {
  const received: Buffer[] = [];
  let ended!: () => void;
  const side = new Duplex({
    highWaterMark: 1024,
    read() {},
    write(chunk: Buffer, _enc, cb) {
      setTimeout(() => {
        received.push(chunk);
        cb();
      }, 2);
    },
    final(cb) {
      ended();
      cb();
    },
  });
  // Ends cleanly, or is destroyed with its queue thrown away.
  const done = new Promise<void>((r) => {
    ended = r;
    side.on('close', r);
  });
  return { side, received, ended: done };
}

/** A connection that sends `chunks`, ends and closes at once, as a server answering with Connection: close. */
function closingSource(chunks: Buffer[]): Duplex {
  const side = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  setImmediate(() => {
    for (const c of chunks) side.push(c);
    side.push(null);
    side.end();
  });
  return side;
}

describe('port bridge pipe', () => {
  it('writes everything queued for one side before ending it when the other side closes cleanly', async () => {
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.alloc(4096, i));
    const server = closingSource(chunks);
    const client = slowSink();
    let serverClosed = false;
    server.on('close', () => (serverClosed = true));
    pipe(server, client.side);
    await client.ended;
    // The server side closed long before the slow client took its last chunk.
    expect(serverClosed).toBe(true);
    const sent = Buffer.concat(chunks);
    expect(Buffer.concat(client.received).length).toBe(sent.length);
    expect(Buffer.concat(client.received).equals(sent)).toBe(true);
  });

  it('drops both sides at once when one fails', async () => {
    const a = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    const b = slowSink();
    pipe(a, b.side);
    b.side.on('error', () => undefined);
    a.destroy(new Error('ECONNRESET'));
    await new Promise((r) => setImmediate(r));
    expect(a.destroyed).toBe(true);
    expect(b.side.destroyed).toBe(true);
  });
});
