// A real single-member etcd for tests (Debian's etcd-server, /usr/bin/etcd),
// on 127.0.0.1 with ports picked free at start, a private data directory, and
// a way to take it down and bring it back on the same data and ports for
// outage tests. Plus a TCP proxy that can cut clients off an etcd that keeps
// running, for partitions longer than a lease TTL.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ETCD_BIN = process.env.TSF_ETCD_BIN ?? '/usr/bin/etcd';
export const haveEtcd = existsSync(ETCD_BIN);

export interface EtcdServer {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  readonly running: boolean;
  /** Stops etcd for good and removes its data directory. */
  stop(): Promise<void>;
  /** SIGKILL and remove the data directory, synchronously (last-resort cleanup). */
  kill(): void;
  /** Stops the process (SIGTERM) but keeps data and ports for `restart`. */
  halt(): Promise<void>;
  /** Starts etcd again on the same data directory and ports and waits until it answers. */
  restart(): Promise<void>;
  /** The last lines etcd printed, for failure messages. */
  output(): string;
}

/** Servers not yet stopped, so a dying test process can still clean up after itself. */
const live = new Set<EtcdProcess>();
let exitHookInstalled = false;

function cleanupAll(): void {
  for (const server of live) server.kill();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test process that dies without reaching afterAll must not leave etcd
  // or its data behind. Signals are re-raised after cleanup so they still end the process.
  process.on('exit', cleanupAll);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanupAll();
      process.kill(process.pid, sig);
    });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return res.ok && body.health === 'true';
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Serve clients over TLS: etcd's own flags, files made by the test. */
export interface EtcdTls {
  certFile: string;
  keyFile: string;
  /** CA for client certificates; with clientCertAuth etcd refuses clients without one */
  trustedCaFile: string;
  clientCertAuth: boolean;
}

export interface EtcdStartOptions {
  tls?: EtcdTls;
}

class EtcdProcess implements EtcdServer {
  endpoint: string;
  private child: ChildProcess | undefined;
  private log: string[] = [];
  /** plain-http /health for readiness when clients must speak TLS */
  private readonly healthEndpoint: string;

  constructor(
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    private readonly opts: EtcdStartOptions = {},
    private readonly metricsPort = 0,
  ) {
    this.endpoint = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
    this.healthEndpoint = opts.tls ? `http://127.0.0.1:${metricsPort}` : this.endpoint;
  }

  private tlsArgs(): string[] {
    const tls = this.opts.tls;
    if (!tls) return [];
    return [
      '--cert-file', tls.certFile,
      '--key-file', tls.keyFile,
      '--trusted-ca-file', tls.trustedCaFile,
      ...(tls.clientCertAuth ? ['--client-cert-auth'] : []),
      '--listen-metrics-urls', this.healthEndpoint,
    ];
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  output(): string {
    return this.log.join('').slice(-4000);
  }

  async launch(timeoutMs = 20_000): Promise<void> {
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const child = spawn(
      ETCD_BIN,
      [
        '--name', 'default',
        '--data-dir', this.dataDir,
        '--listen-client-urls', this.endpoint,
        '--advertise-client-urls', this.endpoint,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `default=${peer}`,
        '--initial-cluster-state', 'new',
        '--logger', 'zap',
        '--log-level', 'warn',
        ...this.tlsArgs(),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    live.add(this);
    const keep = (chunk: Buffer) => {
      this.log.push(chunk.toString());
      if (this.log.length > 200) this.log.splice(0, this.log.length - 200);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`etcd exited during start-up:\n${this.output()}`);
      if (await answers(this.healthEndpoint)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGKILL');
    throw new Error(`etcd did not answer within ${timeoutMs} ms:\n${this.output()}`);
  }

  async halt(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited(child);
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.halt();
    await this.launch();
  }

  async stop(): Promise<void> {
    await this.halt();
    rmSync(this.dataDir, { recursive: true, force: true });
    live.delete(this);
  }

  kill(): void {
    this.child?.kill('SIGKILL');
    rmSync(this.dataDir, { recursive: true, force: true });
    live.delete(this);
  }
}

/** Starts a fresh etcd on free loopback ports; retries if a port was grabbed meanwhile. */
export async function startEtcd(opts: EtcdStartOptions = {}): Promise<EtcdServer> {
  installExitHook();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dataDir = mkdtempSync(join(tmpdir(), 'tsf-etcd-'));
    const server = new EtcdProcess(await freePort(), await freePort(), dataDir, opts, opts.tls ? await freePort() : 0);
    try {
      await server.launch();
      return server;
    } catch (err) {
      lastError = err;
      server.kill();
    }
  }
  throw lastError;
}

export interface TcpProxy {
  /** http://127.0.0.1:<port>, to give clients instead of the real endpoint */
  endpoint: string;
  /** Drops every open connection and refuses new ones, as a partition would. */
  cut(): void;
  restore(): void;
  /**
   * Silently drops everything on the connections open now, in both
   * directions, without closing them; new connections pass as before. What a
   * client sees when its etcd host dies without a word, or a NAT or load
   * balancer forgets the flow: no FIN, no RST, just nothing.
   */
  stall(): void;
  /** connections accepted so far */
  readonly accepted: number;
  close(): Promise<void>;
}

/** A loopback TCP forwarder to `target`: a port on 127.0.0.1, or a Unix socket path. */
export async function startTcpProxy(target: number | string): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  let isCut = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    if (isCut) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = typeof target === 'number' ? net.connect(target, '127.0.0.1') : net.connect(target);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.on('close', () => pairs.delete(pair));
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const dropAll = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut() {
      isCut = true;
      dropAll();
    },
    restore() {
      isCut = false;
    },
    stall() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        // Keep reading (so the kernel keeps acknowledging) and throw it away.
        client.on('data', () => undefined);
        upstream.on('data', () => undefined);
      }
      pairs.clear();
    },
    get accepted() {
      return accepted;
    },
    close() {
      dropAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
