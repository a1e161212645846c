// The demo's and the tests' TCP-over-Unix-socket bridge (src/demo/port-bridge.ts),
// node side and root side chained as the kube tests chain them, between a
// server that writes a large answer and closes at once and readers slower
// than the server: every byte must arrive, in order, before the end. (The old
// bridge destroyed one side as soon as the other closed, dropping what was
// still queued for it; with real sockets that depends on timing, so the
// deterministic check is test/unit/port-bridge-pipe.test.ts.)
import { afterEach, describe, expect, it } from 'vitest';
import { connect, createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeTcpToUnix, bridgeUnixToTcp } from '../../src/demo/port-bridge.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const fn of cleanups.splice(0).reverse()) fn();
});

function portOf(server: Server): number {
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('not listening on TCP');
  return addr.port;
}

/** Reads everything from 127.0.0.1:port, starting only after `delayMs`; resolves with the bytes at the end. */
function fetchAll(port: number, delayMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const client = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    client.pause();
    setTimeout(() => client.resume(), delayMs);
    client.on('data', (d: Buffer) => chunks.push(d));
    client.on('end', () => resolve(Buffer.concat(chunks)));
    client.on('error', reject);
    client.write('GET / HTTP/1.1\r\n\r\n');
  });
}

describe('port bridge', () => {
  it('delivers every byte of 4 MB answers the server wrote and closed at once, to readers slower than the server', async () => {
    const SIZE = 4_000_000;
    const answer = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE; i++) answer[i] = i % 251;
    const server = createServer((s) => {
      s.on('data', () => undefined);
      s.end(answer);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const dir = mkdtempSync(join(tmpdir(), 'tsf-port-bridge-'));
    const sock = join(dir, 'api.sock');
    const rootSide = await bridgeUnixToTcp(sock, '127.0.0.1', portOf(server));
    const nodeSide = await bridgeTcpToUnix('127.0.0.1', 0, sock);
    cleanups.push(() => {
      nodeSide.close();
      rootSide.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    });

    const short: string[] = [];
    for (let i = 0; i < 40; i++) {
      const got = await fetchAll(portOf(nodeSide), i % 2 === 0 ? 0 : 20);
      if (!got.equals(answer)) short.push(`transfer ${i}: ${got.length} bytes`);
    }
    expect(short).toEqual([]);
  }, 60_000);
});
