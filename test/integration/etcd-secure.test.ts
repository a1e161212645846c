// Secured etcd, for real: Debian's etcd with TLS and client-certificate
// auth (a PKI made by openssl in this test), and with authentication enabled
// (a user whose role covers only the flannel prefix). The agent leases and
// watches through its own client code; a wrong CA, a missing or untrusted
// client certificate, a wrong password each make tsflanneld exit 1 with one
// line naming the flag, and no secret reaches the logs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { EtcdSubnetManager } from '../../src/daemon/subnet/etcd.js';
import { checkEtcdAccess, EtcdAccessError } from '../../src/daemon/subnet/etcd-client.js';
import type { Lease } from '../../src/daemon/types.js';
import { bridgeUnixToTcp, pipe } from '../../src/demo/port-bridge.js';
import { makePki, type TestPki } from '../helpers/certs.js';
import { haveEtcd, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { addNetns, cleanupAll, isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const AGENT = join(ROOT, 'bin/tsflanneld');
const PORT_BRIDGE = join(ROOT, 'build/demo/port-bridge.js');
const NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}';
const PREFIX = '/coreos.com/network';
const haveOpenssl = existsSync('/usr/bin/openssl');
const PASSWORD = 'Fl4nnel-pw-9d2c';
const ROOT_PASSWORD = 'r00t-pw-51aa';

const attrs = (ip: string) => ({ publicIP: ip, backendType: 'vxlan' as const, backendData: { VNI: 1, VtepMAC: '0e:00:00:00:00:01' } });

/** Leases seen by a watch, once it has seen `n` of them. */
function watchUntil(m: EtcdSubnetManager, n: number): Promise<Lease[]> {
  const ac = new AbortController();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      ac.abort();
      reject(new Error(`watch did not see ${n} leases`));
    }, 15_000);
    void m.watchLeases((leases) => {
      if (leases.length >= n) {
        clearTimeout(timer);
        ac.abort();
        resolve(leases);
      }
    }, ac.signal);
  });
}

interface AgentRun {
  code: number | null;
  stderr: string;
}

/** Runs tsflanneld to its exit (bounded); used where it must fail at the etcd check. */
function runAgentToExit(args: string[], env: Record<string, string> = {}, ns?: string): Promise<AgentRun> {
  // '--cni-socket ''': no CNI server, so no test agent touches the machine's /run/tsflannel
  const all = [...args, '--cni-socket', ''];
  const cmd = ns ? ['ip', ['netns', 'exec', ns, process.execPath, AGENT, ...all]] as const : [process.execPath, [AGENT, ...all]] as const;
  return new Promise((resolve) => {
    const child = spawn(cmd[0], [...cmd[1]], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** A node netns whose 127.0.0.1:2379 leads to the test's etcd (TLS passes through untouched). */
class Node {
  ns = '';
  private bridgeProc?: ChildProcess;
  private server?: Server;
  readonly dir = mkdtempSync(join(tmpdir(), 'tsf-etcdsec-'));

  /** `etcdPort` undefined: the node's 127.0.0.1:2379 answers but leads nowhere until serve(). */
  async start(label: string, etcdPort?: number): Promise<void> {
    this.ns = addNetns(label);
    const ipn = (args: string[]) => execFileSync('ip', ['-n', this.ns, ...args]);
    // an underlay with an address and a default route; the peer end stays in the same netns
    ipn(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    ipn(['addr', 'add', '192.168.210.10/24', 'dev', 'eth0']);
    ipn(['link', 'set', 'eth0peer', 'up']);
    ipn(['link', 'set', 'eth0', 'up']);
    ipn(['route', 'add', 'default', 'dev', 'eth0']);
    const socket = join(this.dir, 'etcd.sock');
    if (etcdPort !== undefined) await this.serve(etcdPort);
    const child = spawn('ip', ['netns', 'exec', this.ns, process.execPath, PORT_BRIDGE, '127.0.0.1', '2379', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.bridgeProc = child;
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`port bridge exited ${code}`)));
    });
  }

  /** Connects the node's 127.0.0.1:2379 to etcd. */
  async serve(etcdPort: number): Promise<void> {
    this.server = await bridgeUnixToTcp(join(this.dir, 'etcd.sock'), '127.0.0.1', etcdPort);
  }

  /** Serves the node's 127.0.0.1:2379 with `handler` (a relay that misbehaves on purpose) instead of etcd. */
  async relay(handler: (client: Socket) => void): Promise<void> {
    const server = createServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(join(this.dir, 'etcd.sock'), () => resolve());
    });
    this.server = server;
  }

  stop(): void {
    if (this.bridgeProc?.pid) this.bridgeProc.kill();
    this.server?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function oneFatalLine(stderr: string): string {
  const fatal = stderr.split('\n').filter((l) => /FATAL/.test(l));
  expect(fatal).toHaveLength(1);
  return fatal[0]!;
}

describe.skipIf(requireOrSkip('etcd-secure', { root: isRoot, etcd: haveEtcd, openssl: haveOpenssl }))('etcd with TLS and client-certificate auth', () => {
  let pki: TestPki;
  let etcd: EtcdServer;
  const node = new Node();
  const lateNode = new Node();
  const flakyNode = new Node();
  const managers: EtcdSubnetManager[] = [];
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    pki = makePki();
    etcd = await startEtcd({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey, trustedCaFile: pki.caFile, clientCertAuth: true } });
    const admin = new Etcd3({
      hosts: etcd.endpoint,
      credentials: { rootCertificate: readFileSync(pki.caFile), certChain: readFileSync(pki.clientCert), privateKey: readFileSync(pki.clientKey) },
    });
    await admin.put(`${PREFIX}/config`).value(NET_CONF);
    admin.close();
    await node.start('etcdtls', etcd.clientPort);
    await lateNode.start('etcdlate');
    await flakyNode.start('etcdflaky');
  }, 60_000);
  afterAll(async () => {
    if (agent?.pid) agent.kill('SIGKILL');
    for (const m of managers) await m.close();
    node.stop();
    lateNode.stop();
    flakyNode.stop();
    cleanupAll();
    await etcd?.stop();
    pki?.remove();
  }, 30_000);

  const tls = () => ({ caFile: pki.caFile, certFile: pki.clientCert, keyFile: pki.clientKey });

  it('leases and watches through the agent\'s etcd client with --etcd-cafile/--etcd-certfile/--etcd-keyfile', async () => {
    const a = new EtcdSubnetManager({ endpoints: [etcd.endpoint], security: tls(), leaseTtlSeconds: 60 });
    const b = new EtcdSubnetManager({ endpoints: [etcd.endpoint], security: tls(), leaseTtlSeconds: 60 });
    managers.push(a, b);
    expect(await checkEtcdAccess([etcd.endpoint], tls(), `${PREFIX}/config`)).toBe(true);
    const la = await a.acquireLease(attrs('192.168.210.1'));
    const lb = await b.acquireLease(attrs('192.168.210.2'));
    expect(la.subnet).not.toBe(lb.subnet);
    const seen = await watchUntil(a, 2);
    expect(seen.map((l) => l.subnet).sort()).toEqual([la.subnet, lb.subnet].sort());
  });

  it('runs the real tsflanneld in a node netns over TLS: it leases, writes subnet.env and logs no insecure-http warning', async () => {
    const subnetFile = join(node.dir, 'subnet.env');
    let stderr = '';
    agent = spawn('ip', ['netns', 'exec', node.ns, process.execPath, AGENT,
      '--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--etcd-certfile', pki.clientCert, '--etcd-keyfile', pki.clientKey,
      '--iface', 'eth0', '--subnet-file', subnetFile, '--node-name', 'tls-node', '--log-format', 'text', '--cni-socket', ''], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!stderr.includes('ready: first reconcile done') && Date.now() < deadline && agent.exitCode === null) await new Promise((r) => setTimeout(r, 200));
    expect(stderr).toContain('ready: first reconcile done');
    expect(readFileSync(subnetFile, 'utf8')).toMatch(/^FLANNEL_SUBNET=10\.244\.\d+\.1\/24$/m);
    expect(stderr).not.toContain('This is insecure');
    agent.kill('SIGTERM');
  }, 40_000);

  it('a wrong CA: exits 1 with one line naming --etcd-cafile', async () => {
    await expect(checkEtcdAccess([etcd.endpoint], { ...tls(), caFile: pki.wrongCaFile }, `${PREFIX}/config`)).rejects.toThrow(EtcdAccessError);
    const run = await runAgentToExit(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.wrongCaFile, '--etcd-certfile', pki.clientCert, '--etcd-keyfile', pki.clientKey, '--log-format', 'text'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneFatalLine(run.stderr)).toMatch(/--etcd-cafile .*wrong-ca\.pem/);
  }, 40_000);

  it('no client certificate: exits 1 naming --etcd-certfile and --etcd-keyfile', async () => {
    const run = await runAgentToExit(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--log-format', 'text'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneFatalLine(run.stderr)).toMatch(/requires a client certificate: give --etcd-certfile and --etcd-keyfile/);
  }, 40_000);

  it('a client certificate from a CA etcd does not trust: exits 1 naming --etcd-certfile', async () => {
    const run = await runAgentToExit(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--etcd-certfile', pki.strangerCert, '--etcd-keyfile', pki.strangerKey, '--log-format', 'text'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneFatalLine(run.stderr)).toMatch(/rejected the client certificate --etcd-certfile .*stranger\.pem/);
  }, 40_000);

  it('etcd out of reach at start, then reachable and rejecting the client certificate: the agent still exits 1 naming --etcd-certfile', async () => {
    // the node's 127.0.0.1:2379 takes connections and closes them (no etcd behind it) for 4 s
    const reachable = new Promise<void>((resolve) => setTimeout(() => void lateNode.serve(etcd.clientPort).then(resolve), 4000));
    const started = Date.now();
    const run = await runAgentToExit(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--etcd-certfile', pki.strangerCert, '--etcd-keyfile', pki.strangerKey, '--log-format', 'text'], {}, lateNode.ns);
    await reachable;
    expect(run.code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(4000);
    expect(oneFatalLine(run.stderr)).toMatch(/rejected the client certificate --etcd-certfile .*stranger\.pem/);
  }, 40_000);

  it('etcd restarting behind a TLS-terminating proxy after the agent got its lease: handshakes that end in a close do not make the working agent exit', async () => {
    // The agent's own client connects once and keeps its connection; the
    // access check makes a new one per attempt. The check's attempts before
    // the agent got in fail without a verdict (the relay hangs up before
    // TLS: a proxy whose etcd is not there), the agent's client gets through
    // and takes its lease. Then etcd restarts behind a proxy that terminates
    // TLS: for 8 s every connection is closed right after the handshake (the
    // open one is cut too), then etcd is back.
    const context = createSecureContext({ key: readFileSync(pki.serverKey), cert: readFileSync(pki.serverCert) });
    const forwarded: Socket[] = [];
    let phase: 'starting' | 'restarting' | 'up' = 'starting';
    let connections = 0;
    let closedAfterHandshake = 0;
    await flakyNode.relay((client) => {
      client.on('error', () => undefined);
      connections++;
      // the first connection is the check's (made first); the second, the agent's client
      if (phase === 'up' || (phase === 'starting' && connections === 2)) {
        forwarded.push(client);
        return pipe(client, connect(etcd.clientPort, '127.0.0.1'));
      }
      if (phase === 'starting') return void client.destroy();
      const tlsSocket = new TLSSocket(client, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
      tlsSocket.on('error', () => undefined);
      tlsSocket.once('secure', () => {
        closedAfterHandshake++;
        tlsSocket.destroy();
      });
    });
    const subnetFile = join(flakyNode.dir, 'subnet.env');
    let stderr = '';
    const child = spawn('ip', ['netns', 'exec', flakyNode.ns, process.execPath, AGENT,
      '--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--etcd-certfile', pki.clientCert, '--etcd-keyfile', pki.clientKey,
      '--iface', 'eth0', '--subnet-file', subnetFile, '--node-name', 'flaky-node', '--log-format', 'text', '--cni-socket', ''], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const leaseBy = Date.now() + 20_000;
      while (!stderr.includes('acquired lease') && Date.now() < leaseBy && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
      expect(stderr).toContain('acquired lease');
      phase = 'restarting';
      for (const s of forwarded.splice(0)) s.destroy();
      await Promise.race([exited, new Promise((r) => setTimeout(r, 8000))]);
      phase = 'up';
      // etcd is back: the agent must still be there, and ready
      const readyBy = Date.now() + 20_000;
      while (!stderr.includes('ready: first reconcile done') && Date.now() < readyBy && child.exitCode === null) await new Promise((r) => setTimeout(r, 200));
      expect(stderr.split('\n').filter((l) => /FATAL/.test(l))).toEqual([]);
      expect(child.exitCode).toBeNull();
      expect(stderr).toContain('ready: first reconcile done');
      expect(closedAfterHandshake).toBeGreaterThan(0);
    } finally {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
  }, 70_000);

  it('an unreadable --etcd-keyfile: exits 1 naming the flag and the path', async () => {
    const run = await runAgentToExit(['--etcd-endpoints', 'https://127.0.0.1:2379', '--etcd-cafile', pki.caFile, '--etcd-certfile', pki.clientCert, '--etcd-keyfile', join(pki.dir, 'nope.key'), '--log-format', 'text'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneFatalLine(run.stderr)).toMatch(/--etcd-keyfile .*nope\.key: cannot read it \(ENOENT\)/);
  }, 40_000);
});

describe.skipIf(requireOrSkip('etcd-secure', { root: isRoot, etcd: haveEtcd }))('etcd with authentication enabled', () => {
  let etcd: EtcdServer;
  const node = new Node();
  const managers: EtcdSubnetManager[] = [];
  const ctl = (args: string[], user?: string) =>
    execFileSync('/usr/bin/etcdctl', ['--endpoints', etcd.endpoint, ...(user ? ['--user', user] : []), ...args], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });

  beforeAll(async () => {
    etcd = await startEtcd();
    ctl(['put', `${PREFIX}/config`, NET_CONF]);
    ctl(['user', 'add', 'root', `--new-user-password=${ROOT_PASSWORD}`]);
    ctl(['role', 'add', 'flannel']);
    ctl(['role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', `${PREFIX}/`]);
    ctl(['user', 'add', 'flannel', `--new-user-password=${PASSWORD}`]);
    ctl(['user', 'grant-role', 'flannel', 'flannel']);
    ctl(['auth', 'enable']);
    ctl(['role', 'add', 'other'], `root:${ROOT_PASSWORD}`);
    await node.start('etcdauth', etcd.clientPort);
  }, 60_000);
  afterAll(async () => {
    for (const m of managers) await m.close();
    node.stop();
    cleanupAll();
    await etcd?.stop();
  }, 30_000);

  it('leases and watches as a user whose role covers only the flannel prefix', async () => {
    const sec = { username: 'flannel', password: PASSWORD };
    expect(await checkEtcdAccess([etcd.endpoint], sec, `${PREFIX}/config`)).toBe(true);
    const a = new EtcdSubnetManager({ endpoints: [etcd.endpoint], security: sec, leaseTtlSeconds: 60 });
    const b = new EtcdSubnetManager({ endpoints: [etcd.endpoint], security: sec, leaseTtlSeconds: 60 });
    managers.push(a, b);
    const la = await a.acquireLease(attrs('192.168.211.1'));
    const lb = await b.acquireLease(attrs('192.168.211.2'));
    const seen = await watchUntil(b, 2);
    expect(seen.map((l) => l.subnet).sort()).toEqual([la.subnet, lb.subnet].sort());
    // the key was written as flannel, under the prefix its role allows
    expect(ctl(['get', '--prefix', '--keys-only', `${PREFIX}/subnets/`], `root:${ROOT_PASSWORD}`)).toContain(la.subnet.replace('/', '-'));
  });

  it('a wrong password (given by env): exits 1 naming --etcd-password, the password appears nowhere, the http warning is flanneld\'s', async () => {
    const wrong = 'not-the-pw-77f1';
    const run = await runAgentToExit(['--etcd-endpoints', 'http://127.0.0.1:2379', '--etcd-username', 'flannel'], { FLANNELD_ETCD_PASSWORD: wrong }, node.ns);
    expect(run.code).toBe(1);
    expect(oneJsonFatal(run.stderr)).toMatch(/wrong --etcd-username or --etcd-password/);
    expect(run.stderr).not.toContain(wrong);
    expect(run.stderr).toContain('connecting to etcd with http. This is insecure');
  }, 40_000);

  it('no credentials against an etcd with auth enabled: exits 1 naming --etcd-username and --etcd-password', async () => {
    const run = await runAgentToExit(['--etcd-endpoints', 'http://127.0.0.1:2379'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneJsonFatal(run.stderr)).toMatch(/give --etcd-username and --etcd-password/);
  }, 40_000);

  it('a user without a role on the prefix: exits 1 saying the role must be granted', async () => {
    ctl(['user', 'add', 'nobody', '--new-user-password=nobody-pw-1'], `root:${ROOT_PASSWORD}`);
    ctl(['user', 'grant-role', 'nobody', 'other'], `root:${ROOT_PASSWORD}`);
    const run = await runAgentToExit(['--etcd-endpoints', 'http://127.0.0.1:2379', '--etcd-username', 'nobody', '--etcd-password', 'nobody-pw-1'], {}, node.ns);
    expect(run.code).toBe(1);
    expect(oneJsonFatal(run.stderr)).toMatch(/denied user "nobody" access to the prefix/);
  }, 40_000);
});

function oneJsonFatal(stderr: string): string {
  const fatal = stderr
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { level: string; msg: string })
    .filter((l) => l.level === 'fatal');
  expect(fatal).toHaveLength(1);
  return fatal[0]!.msg;
}
