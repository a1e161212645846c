// The start-up etcd access check against local servers that misbehave in
// exactly one way each, so every path to a verdict is deterministic: a TLS
// server that completes the handshake and then drops the connection (what a
// TLS 1.3 client sees when the server rejects its certificate after the
// handshake is over on the client's side), one that rejects the certificate
// with an alert, a port where nothing listens (etcd down or restarting), and
// a TCP listener that hangs up before any TLS (a proxy with no etcd behind it).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { checkEtcdAccess, EtcdAccessError, type EtcdSecurity } from '../../../src/daemon/subnet/etcd-client.js';
import { makePki, type TestPki } from '../../helpers/certs.js';
import { freePort } from '../../helpers/etcd.js';
import { requireOrSkip } from '../../helpers/require.js';

const KEY = '/coreos.com/network/config';
const haveOpenssl = existsSync('/usr/bin/openssl');

/** A listener on 127.0.0.1 closed in afterEach. */
const servers: net.Server[] = [];
function listen(server: net.Server, port = 0): Promise<number> {
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

describe.skipIf(requireOrSkip('etcd access check', { openssl: haveOpenssl }))('checkEtcdAccess', () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = makePki();
  });
  afterAll(() => pki?.remove());
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  const stranger = (): EtcdSecurity => ({ caFile: pki.caFile, certFile: pki.strangerCert, keyFile: pki.strangerKey });

  /**
   * TLS with our server certificate, asking for a client certificate but
   * accepting any, then dropping every connection as soon as the handshake
   * is done: `how` 'end' closes cleanly, 'reset' sends a TCP RST.
   */
  function dropAfterHandshake(how: 'end' | 'reset', port = 0): Promise<{ port: number; handshakes: () => number }> {
    let handshakes = 0;
    const context = tls.createSecureContext({ key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) });
    // TLS over a TCP socket of our own, so the drop can be a real RST on that socket
    const server = net.createServer((raw) => {
      raw.on('error', () => undefined);
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
      socket.on('error', () => undefined);
      socket.once('secure', () => {
        handshakes++;
        if (how === 'reset') raw.resetAndDestroy();
        else socket.destroy();
      });
    });
    return listen(server, port).then((p) => ({ port: p, handshakes: () => handshakes }));
  }

  /** Aborts after `n` retries were reported, and collects their reasons. */
  function stopAfter(n: number) {
    const ac = new AbortController();
    const reasons: string[] = [];
    return {
      signal: ac.signal,
      reasons,
      onRetry: (reason: string) => {
        reasons.push(reason);
        if (reasons.length >= n) ac.abort();
      },
    };
  }

  it.each(['end', 'reset'] as const)('a connection dropped (%s) right after every TLS handshake with a client certificate: EtcdAccessError naming --etcd-certfile', async (how) => {
    const server = await dropAfterHandshake(how);
    const reasons: string[] = [];
    const check = checkEtcdAccess([`https://127.0.0.1:${server.port}`], stranger(), KEY, { onRetry: (r) => reasons.push(r) });
    await expect(check).rejects.toThrow(EtcdAccessError);
    await expect(check).rejects.toThrow(/rejected the client certificate --etcd-certfile .*stranger\.pem/);
    // grpc-js's words for a close (or reset) once TLS is up; the third ends the check
    expect(reasons).toHaveLength(2);
    for (const r of reasons) expect(r).toMatch(how === 'end' ? /Last error: Failed to connect/ : /Last error: read ECONNRESET/);
    expect(server.handshakes()).toBeGreaterThanOrEqual(3);
  });

  it('a node:tls server that verifies client certificates and refuses ours (it closes without an alert the client sees): EtcdAccessError naming --etcd-certfile', async () => {
    const server = tls.createServer(
      { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert), ca: readFileSync(pki.caFile), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] },
      (socket) => socket.destroy(),
    );
    server.on('tlsClientError', () => undefined);
    const port = await listen(server);
    await expect(checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY)).rejects.toThrow(/rejected the client certificate --etcd-certfile .*stranger\.pem/);
  });

  it('nothing listening (etcd down or restarting): no verdict, it keeps checking until stopped, then resolves false', async () => {
    const port = await freePort();
    const stop = stopAfter(5);
    const started = Date.now();
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, { retryMs: 20, maxRetryMs: 50, signal: stop.signal, onRetry: stop.onRetry });
    expect(verdict).toBe(false);
    expect(stop.reasons).toHaveLength(5);
    for (const r of stop.reasons) expect(r).toMatch(/ECONNREFUSED/);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('etcd that comes up after a refused start and then rejects the certificate: the check still ends naming --etcd-certfile', async () => {
    const port = await freePort();
    let retries = 0;
    let serving: Promise<unknown> | undefined;
    const check = checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, {
      retryMs: 20,
      maxRetryMs: 50,
      onRetry: () => {
        // two refused attempts, then the rejecting server appears on that port
        if (++retries === 2) serving = dropAfterHandshake('end', port);
      },
    });
    await expect(check).rejects.toThrow(/rejected the client certificate --etcd-certfile/);
    expect(serving).toBeDefined();
    expect(retries).toBeGreaterThanOrEqual(4);
  });

  it('a listener that hangs up before the TLS handshake (a proxy with no etcd behind it) is not taken for a rejection', async () => {
    const port = await listen(net.createServer((socket) => socket.destroy()));
    const stop = stopAfter(6);
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, { retryMs: 20, maxRetryMs: 50, signal: stop.signal, onRetry: stop.onRetry });
    expect(verdict).toBe(false);
    expect(stop.reasons).toHaveLength(6);
    for (const r of stop.reasons) expect(r).toMatch(/before secure TLS connection was established/);
  });

  it('drops after the handshake without a client certificate configured are not blamed on a certificate', async () => {
    const server = await dropAfterHandshake('end');
    const stop = stopAfter(6);
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${server.port}`], { caFile: pki.caFile }, KEY, { retryMs: 20, maxRetryMs: 50, signal: stop.signal, onRetry: stop.onRetry });
    expect(verdict).toBe(false);
    expect(stop.reasons).toHaveLength(6);
    expect(server.handshakes()).toBeGreaterThanOrEqual(6);
  });

  it('a refused attempt between drops (etcd restarting) starts the count again', async () => {
    // drop, drop, refused, drop, drop: never three drops in a row, so no verdict
    const server = tls.createServer(
      { key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert), requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2'] },
      (socket) => socket.destroy(),
    );
    const port = await listen(server);
    const reasons: string[] = [];
    const ac = new AbortController();
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, {
      retryMs: 100,
      maxRetryMs: 100,
      signal: ac.signal,
      onRetry: (reason) => {
        reasons.push(reason);
        // close() stops listening at once; listen() again is back well within the pause
        if (reasons.length === 2) server.close();
        if (reasons.length === 3) void listen(server, port);
        if (reasons.length === 5) ac.abort();
      },
    });
    expect(verdict).toBe(false);
    expect(reasons).toHaveLength(5);
    expect(reasons[2]).toMatch(/ECONNREFUSED/);
    expect(reasons[4]).not.toMatch(/ECONNREFUSED/);
  });

  it('two endpoints, one down (refused) and one dropping every connection after the handshake: each endpoint keeps its own count, so the check still ends naming --etcd-certfile', async () => {
    const down = await freePort();
    const server = await dropAfterHandshake('end');
    const reasons: string[] = [];
    const check = checkEtcdAccess([`https://127.0.0.1:${down}`, `https://127.0.0.1:${server.port}`], stranger(), KEY, {
      retryMs: 10,
      maxRetryMs: 20,
      onRetry: (reason) => reasons.push(reason),
    });
    await expect(check).rejects.toThrow(new RegExp(`rejected the client certificate --etcd-certfile .*127\\.0\\.0\\.1:${server.port} closed`));
    // the endpoints alternate: refused, dropped, refused, dropped, refused, then the third drop
    expect(reasons.filter((r) => /ECONNREFUSED/.test(r)).length).toBeGreaterThanOrEqual(2);
  });

  it('attempts that keep running into their deadline (a server that never finishes TLS) are no verdict and are spaced out further', async () => {
    const sockets: net.Socket[] = [];
    const port = await listen(net.createServer((socket) => sockets.push(socket)));
    const ac = new AbortController();
    const at: number[] = [];
    const reasons: string[] = [];
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, {
      timeoutMs: 100,
      retryMs: 10,
      maxRetryMs: 50,
      signal: ac.signal,
      onRetry: (reason) => {
        reasons.push(reason);
        at.push(Date.now());
        if (reasons.length === 6) ac.abort();
      },
    });
    expect(verdict).toBe(false);
    for (const r of reasons) expect(r).toMatch(/deadline/i);
    // pauses 10, 50, 100, 200, 400 ms after the 1st to 5th deadline (the first as usual, then doubling)
    expect(at[5]! - at[4]!).toBeGreaterThanOrEqual(400);
    expect(at[4]! - at[3]!).toBeGreaterThanOrEqual(200);
    // each attempt's connection stays with the server: grpc-js has no TLS handshake timeout
    expect(sockets.length).toBe(6);
    for (const sock of sockets) sock.destroy();
  });

  it('gives up, without a verdict, after maxDeadlines attempts in a row ran into their deadline (a hung etcd), so it stops leaving sockets behind', async () => {
    const sockets: net.Socket[] = [];
    const port = await listen(net.createServer((socket) => sockets.push(socket)));
    const retries: string[] = [];
    const verdict = await checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, {
      timeoutMs: 100,
      retryMs: 10,
      maxRetryMs: 20,
      maxDeadlines: 3,
      onRetry: (reason) => retries.push(reason),
    });
    expect(verdict).toBe(false);
    // two attempts were retried, the third ended the check
    expect(retries).toHaveLength(2);
    expect(sockets).toHaveLength(3);
    for (const sock of sockets) sock.destroy();
  });

  it('stops promptly when stopped during a pending attempt, although the attempt would wait 30 s for its deadline', async () => {
    // a listener that takes the connection and never answers (a hung etcd)
    const sockets: net.Socket[] = [];
    const port = await listen(net.createServer((socket) => sockets.push(socket)));
    const ac = new AbortController();
    const started = Date.now();
    const check = checkEtcdAccess([`https://127.0.0.1:${port}`], stranger(), KEY, { timeoutMs: 30_000, signal: ac.signal });
    setTimeout(() => ac.abort(), 300);
    expect(await check).toBe(false);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(sockets).toHaveLength(1);
    // grpc-js leaves its pending TLS handshake to the server: close it here
    for (const s of sockets) s.destroy();
  });
});
