// The static C forwarder (native/forward, installed as /opt/cni/bin/tsflannel)
// against a small server implementing the agent's side of the socket protocol (docs/architecture-cni-path.md), and
// against a fake standalone plugin that reports the environment, arguments and
// stdin it was exec'ed with. What it proves: the relay is exact, only CNI_* and
// TSFLANNEL_* reach the agent, every failure of the agent ends in the
// standalone with the same env and the same stdin bytes, and VERSION never
// leaves the process.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { requireOrSkip } from '../helpers/require.js';
import { programFor } from '../../src/main/dispatch.js';
import { decodeConfig, netConfFromObject } from '../../src/cni/config.js';
import { parsePluginConfig } from '../../src/plugin/config.js';

const REPO = resolve(import.meta.dirname, '../..');
const FORWARDER = join(REPO, 'native/build/tsflannel-forward');
const STANDALONE_PLUGIN = join(REPO, 'bin/tsflannel');
const MAX_FRAME = 2 * 1024 * 1024;
const MAX_STDIN = 1024 * 1024;

/** JSON text with every non-ASCII UTF-16 unit written as a \\u escape. */
const asciiJson = (s: string) => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

interface Run {
  stdout: Buffer;
  stderr: string;
  status: number | null;
  ms: number;
}

/** Runs the forwarder asynchronously (the test server lives in this process). */
function runForwarder(env: Record<string, string>, stdin: Buffer | string, args: string[] = []): Promise<Run> {
  const t0 = performance.now();
  const child = spawn(FORWARDER, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  return collect(child, stdin, t0);
}

function collect(child: ChildProcess, stdin: Buffer | string, t0: number): Promise<Run> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => out.push(c));
  child.stderr?.on('data', (c: Buffer) => err.push(c));
  // A child that stops reading early (VERSION over 4 KiB) must not fail the test.
  child.stdin?.on('error', () => undefined);
  child.stdin?.end(stdin);
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (status) =>
      res({ stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), status, ms: performance.now() - t0 }),
    );
  });
}

interface Request {
  v: number;
  env: Record<string, string>;
  stdin: string;
}

type Behaviour =
  | { kind: 'answer'; make: (req: Request) => { stdout: Buffer; exitCode: number; stderr: string } }
  | { kind: 'close-mid-answer' }
  | { kind: 'never-answer' }
  | { kind: 'raw'; bytes: Buffer };

/**
 * The agent's side of the protocol: one length-prefixed JSON frame in, one
 * out, then close. `behaviour` decides what it answers, including the ways an
 * agent can fail.
 */
class TestAgent {
  readonly path: string;
  readonly requests: Request[] = [];
  connections = 0;
  behaviour: Behaviour = { kind: 'never-answer' };
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(dir: string, name = 'cni.sock') {
    this.path = join(dir, name);
    this.server = createServer((s) => this.serve(s));
  }

  async listen(): Promise<void> {
    this.server.listen(this.path);
    await once(this.server, 'listening');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private serve(sock: Socket): void {
    this.connections++;
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const n = buf.readUInt32BE(0);
      if (n > MAX_FRAME) throw new Error(`request frame of ${n} bytes`);
      if (buf.length < 4 + n) return;
      const req = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as Request;
      this.requests.push(req);
      this.respond(sock, req);
    });
  }

  private respond(sock: Socket, req: Request): void {
    const b = this.behaviour;
    switch (b.kind) {
      case 'answer': {
        const a = b.make(req);
        sock.end(frame({ v: 1, stdout: a.stdout.toString('base64'), exitCode: a.exitCode, stderr: a.stderr }));
        return;
      }
      case 'close-mid-answer': {
        // The header promises 1000 bytes; the agent dies after 10.
        const head = Buffer.alloc(4);
        head.writeUInt32BE(1000);
        sock.end(Buffer.concat([head, Buffer.from('{"v":1,"st')]));
        return;
      }
      case 'raw':
        sock.end(b.bytes);
        return;
      case 'never-answer':
        return;
    }
  }
}

function frame(obj: unknown): Buffer {
  return rawFrame(JSON.stringify(obj));
}

function rawFrame(text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** What the fake standalone reports about how it was started. */
interface StandaloneReport {
  standalone: true;
  argv: string[];
  env: Record<string, string>;
  stdinSha256: string;
  stdinLength: number;
}

const FAKE_EXIT = 7;

function fakeStandaloneSource(): string {
  return `#!${process.execPath}
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c)).on('end', () => {
  const b = Buffer.concat(chunks);
  process.stdout.write(JSON.stringify({
    standalone: true, argv: process.argv.slice(2), env: process.env,
    stdinSha256: require('node:crypto').createHash('sha256').update(b).digest('hex'), stdinLength: b.length,
  }));
  process.exitCode = ${FAKE_EXIT};
});
`;
}

describe('tsflannel-forward (static CNI forwarder)', () => {
  let dir = '';
  let agent: TestAgent;
  let fake = '';
  /** The environment of a real runtime's call: CNI_*, TSFLANNEL_* and unrelated variables. */
  let baseEnv: Record<string, string>;

  beforeAll(async () => {
    if (!existsSync(FORWARDER)) throw new Error(`${FORWARDER} missing: run scripts/setup.sh (scripts/build-forward.sh)`);
    dir = mkdtempSync(join(tmpdir(), 'tsf-fwd-'));
    agent = new TestAgent(dir);
    await agent.listen();
    fake = join(dir, 'fake-standalone.cjs');
    writeFileSync(fake, fakeStandaloneSource());
    chmodSync(fake, 0o755);
    baseEnv = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: '/root',
      UNRELATED_SECRET: 'must-not-reach-the-agent',
      XCNI_NOT_A_PREFIX: 'no',
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c0ffee',
      CNI_NETNS: '/var/run/netns/x',
      CNI_IFNAME: 'eth0',
      CNI_ARGS: 'K8S_POD_NAME=p;K8S_POD_NAMESPACE=default',
      CNI_PATH: '/opt/cni/bin',
      TSFLANNEL_STANDALONE: fake,
      TSFLANNEL_LOG_LEVEL: 'debug',
    };
  });
  afterEach(() => {
    agent.behaviour = { kind: 'never-answer' };
  });
  afterAll(async () => {
    await agent?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function conf(extra: Record<string, unknown> = {}): string {
    return JSON.stringify({ cniVersion: '1.0.0', name: 'fwdtest', type: 'tsflannel', agentSocket: agent.path, ...extra });
  }

  function lastFallback(): Record<string, string> {
    const lines = readFileSync(join(dir, 'fallbacks.log'), 'utf8').trimEnd().split('\n');
    return JSON.parse(lines.at(-1)!) as Record<string, string>;
  }

  function standaloneReport(run: Run): StandaloneReport {
    const report = JSON.parse(run.stdout.toString('utf8')) as StandaloneReport;
    expect(report.standalone).toBe(true);
    expect(run.status).toBe(FAKE_EXIT);
    return report;
  }

  it('is a static executable of at most 3 MB', () => {
    const size = statSync(FORWARDER).size;
    console.log(`tsflannel-forward: ${size} bytes (${(size / 1024 / 1024).toFixed(2)} MiB)`);
    expect(size).toBeLessThanOrEqual(3 * 1024 * 1024);
    expect(spawnSync('file', ['-L', FORWARDER], { encoding: 'utf8' }).stdout).toMatch(/statically linked/);
    const ldd = spawnSync('ldd', [FORWARDER], { encoding: 'utf8' });
    expect(ldd.status).not.toBe(0);
    expect(`${ldd.stdout}${ldd.stderr}`).toMatch(/not a dynamic executable/);
  });

  it('builds with any CC alone (a cross compiler): the build strips at link time, so the host\'s strip never has to read a foreign ELF', () => {
    const tree = mkdtempSync(join(tmpdir(), 'tsf-fwd-build-'));
    try {
      mkdirSync(join(tree, 'scripts'));
      mkdirSync(join(tree, 'native'));
      writeFileSync(join(tree, 'scripts/build-forward.sh'), readFileSync(join(REPO, 'scripts/build-forward.sh')));
      spawnSync('cp', ['-r', join(REPO, 'native/forward'), join(tree, 'native/')]);
      // A stand-in for aarch64-linux-gnu-gcc: gcc, then e_machine set to AArch64 (183),
      // which x86 binutils' strip refuses ("Unable to recognise the format").
      const cc = join(tree, 'fake-cross-gcc');
      writeFileSync(
        cc,
        `#!/bin/sh\nset -e\nout=""; prev=""\nfor a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\ngcc "$@"\nprintf '\\267\\000' | dd of="$out" bs=1 seek=18 conv=notrunc status=none\n`,
        { mode: 0o755 },
      );
      const build = spawnSync('bash', [join(tree, 'scripts/build-forward.sh')], { env: { ...process.env, CC: cc }, encoding: 'utf8' });
      expect({ status: build.status, stderr: build.stderr }).toEqual({ status: 0, stderr: '' });
      const out = join(tree, 'native/build/tsflannel-forward');
      expect(spawnSync('file', [out], { encoding: 'utf8' }).stdout).toMatch(/ARM aarch64.*stripped/);
      expect(readFileSync(`${out}.cc`, 'utf8').trim()).toBe(cc);
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
  });

  it('relays the agent\'s stdout bytes, stderr text and exit code exactly', async () => {
    const stdout = Buffer.concat([Buffer.from('{"cniVersion":"1.0.0"}\n'), Buffer.from([0, 0xff, 0xfe, 10])]);
    agent.behaviour = { kind: 'answer', make: () => ({ stdout, exitCode: 3, stderr: 'agent: something to say\nsecond line\n' }) };
    const before = agent.requests.length;
    const run = await runForwarder(baseEnv, conf());
    expect(run.stdout.equals(stdout)).toBe(true);
    expect(run.stderr).toBe('agent: something to say\nsecond line\n');
    expect(run.status).toBe(3);
    expect(agent.requests.length).toBe(before + 1);
  });

  it('sends exactly the CNI_* and TSFLANNEL_* variables, protocol version 1 and the stdin bytes', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.alloc(0), exitCode: 0, stderr: '' }) };
    const stdin = conf({ note: 'ünïcödé' });
    const run = await runForwarder(baseEnv, stdin);
    expect(run.status).toBe(0);
    expect(run.stdout.length).toBe(0);
    const req = agent.requests.at(-1)!;
    expect(req.v).toBe(1);
    const expected = Object.fromEntries(Object.entries(baseEnv).filter(([k]) => k.startsWith('CNI_') || k.startsWith('TSFLANNEL_')));
    expect(req.env).toEqual(expected);
    expect(Buffer.from(req.stdin, 'base64').equals(Buffer.from(stdin))).toBe(true);
  });

  it('round-trips a 900 KiB stdin to the agent and a 900 KiB answer back', async () => {
    const stdin = conf({ padding: randomBytes(450 * 1024).toString('hex') });
    expect(stdin.length).toBeGreaterThan(900 * 1024);
    const big = randomBytes(900 * 1024);
    agent.behaviour = {
      kind: 'answer',
      make: (req) => ({ stdout: big, exitCode: 0, stderr: `got ${sha256(Buffer.from(req.stdin, 'base64'))}` }),
    };
    const run = await runForwarder(baseEnv, stdin);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe(`got ${sha256(stdin)}`);
    expect(run.stdout.equals(big)).toBe(true);
  });

  it('falls back to the standalone when the socket is missing: same env, same stdin, one stderr line', async () => {
    const missing = join(dir, 'nothing-here.sock');
    const stdin = conf({ agentSocket: missing, padding: 'x'.repeat(200 * 1024) });
    const run = await runForwarder(baseEnv, stdin, ['--some-arg']);
    const report = standaloneReport(run);
    expect(report.env).toEqual(baseEnv); // the whole environment, not only CNI_*
    expect(report.argv).toEqual(['--some-arg']);
    expect(report.stdinSha256).toBe(sha256(stdin));
    expect(report.stdinLength).toBe(Buffer.byteLength(stdin));
    expect(run.stderr).toBe(`tsflannel: agent at ${missing} unavailable (no socket), running standalone\n`);
    // Recorded beside the socket for `tsflannel status`: the agent never saw this call.
    expect(lastFallback()).toMatchObject({ command: 'ADD', containerId: 'c0ffee', ifname: 'eth0', socket: missing, reason: 'no socket' });
    expect(statSync(join(dir, 'fallbacks.log')).mode & 0o777).toBe(0o600);
  });

  it('keeps fallbacks.log bounded: past 256 KiB it moves to fallbacks.log.1', async () => {
    const own = mkdtempSync(join(tmpdir(), 'tsf-fwd-log-'));
    try {
      const old = `${'{"old":true}\n'.repeat(25_000)}`;
      writeFileSync(join(own, 'fallbacks.log'), old);
      expect(old.length).toBeGreaterThan(256 * 1024);
      const run = await runForwarder(baseEnv, conf({ agentSocket: join(own, 'cni.sock') }));
      standaloneReport(run);
      expect(readFileSync(join(own, 'fallbacks.log.1'), 'utf8')).toBe(old);
      const fresh = readFileSync(join(own, 'fallbacks.log'), 'utf8').trimEnd().split('\n');
      expect(fresh).toHaveLength(1);
      expect(JSON.parse(fresh[0]!)).toMatchObject({ reason: 'no socket' });
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('never appends to fallbacks.log through a symlink, nor in a directory others can write', async () => {
    const own = mkdtempSync(join(tmpdir(), 'tsf-fwd-link-'));
    try {
      const victim = join(own, 'victim');
      writeFileSync(victim, 'untouched\n');
      const shared = join(own, 'shared');
      mkdirSync(shared);
      chmodSync(shared, 0o777);
      symlinkSync(victim, join(shared, 'fallbacks.log'));
      standaloneReport(await runForwarder(baseEnv, conf({ agentSocket: join(shared, 'cni.sock') })));
      // root's own 0700 directory, but the log is a symlink: not followed either.
      const privateDir = join(own, 'private');
      mkdirSync(privateDir, { mode: 0o700 });
      symlinkSync(victim, join(privateDir, 'fallbacks.log'));
      standaloneReport(await runForwarder(baseEnv, conf({ agentSocket: join(privateDir, 'cni.sock') })));
      expect(readFileSync(victim, 'utf8')).toBe('untouched\n');
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('falls back, and never into the agent\'s socket, when started with stderr closed (fd 2 is given /dev/null)', async () => {
    // An agent that accepts and never reads: had the socket become fd 2, the "unavailable" line would wait on it forever.
    const path = join(dir, 'silent.sock');
    const silent = createServer({ pauseOnConnect: true }, () => undefined);
    await new Promise<void>((r) => silent.listen(path, r));
    const stdin = conf({ agentSocket: path, padding: 'y'.repeat(800 * 1024) });
    const t0 = performance.now();
    const child = spawn('/bin/sh', ['-c', 'exec "$0" 2>&-', FORWARDER], { env: { ...baseEnv, TSFLANNEL_FORWARD_TIMEOUT_MS: '500' }, stdio: ['pipe', 'pipe', 'pipe'] });
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    try {
      const run = await collect(child, stdin, t0);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
    } finally {
      clearTimeout(killer);
      silent.close();
    }
  });

  it('is not killed by SIGPIPE when the runtime stopped reading its stderr: it still falls back, and the standalone gets the default SIGPIPE', async () => {
    const out = join(dir, 'sigpipe-report.json');
    // stderr is a pipe whose reader (`true`) has exited before the forwarder writes its "unavailable" line.
    const script = 'exec 3>"$1"; ( sleep 0.5; exec "$0" ) 2>&1 >&3 3>&- | true; echo "rc=${PIPESTATUS[0]}" >&3';
    const stdin = conf({ agentSocket: join(dir, 'absent-for-sigpipe.sock') });
    const r = spawnSync('/bin/bash', ['-c', script, FORWARDER, out], { env: baseEnv, input: stdin, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('"standalone":true');
    expect(text).toMatch(/rc=7$/m);
  });

  it('falls back without connecting when the request frame would exceed 2 MiB (escaped environment): the standalone takes it', async () => {
    const before = agent.requests.length;
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('agent'), exitCode: 0, stderr: '' }) };
    const stdin = conf({ padding: 'z'.repeat(1000 * 1024) });
    // '<' is written as \u003c by encoding/json: 6 bytes each. One variable holds at most 128 KiB.
    const env = { ...baseEnv, CNI_ARGS: '<'.repeat(100 * 1024), TSFLANNEL_PAD: '<'.repeat(60 * 1024) };
    expect(Math.ceil(Buffer.byteLength(stdin) / 3) * 4 + 160 * 1024 * 6).toBeGreaterThan(2 * 1024 * 1024);
    const run = await runForwarder(env, stdin);
    expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
    expect(run.stderr).toContain('request frame over 2 MiB');
    expect(agent.requests.length).toBe(before);
  });

  it('falls back without recording anything when the socket\'s directory does not exist (the agent never ran)', async () => {
    const nowhere = join(dir, 'no-such-dir', 'cni.sock');
    const stdin = conf({ agentSocket: nowhere });
    const run = await runForwarder(baseEnv, stdin);
    expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
    expect(existsSync(join(dir, 'no-such-dir'))).toBe(false);
  });

  it('falls back when the socket refuses (the agent was killed and left its socket file)', async () => {
    const dead = join(dir, 'dead.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(dead)}, () => console.log('up'))`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(child.stdout!, 'data');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(existsSync(dead)).toBe(true);
    const stdin = conf({ agentSocket: dead });
    const run = await runForwarder(baseEnv, stdin);
    const report = standaloneReport(run);
    expect(report.stdinSha256).toBe(sha256(stdin));
    expect(run.stderr).toBe(`tsflannel: agent at ${dead} unavailable (connection refused), running standalone\n`);
  });

  it('says "not a socket" (not "connection refused") when agentSocket names a file, a directory or a FIFO, on stderr and in fallbacks.log', async () => {
    const file = join(dir, 'subnet.env');
    writeFileSync(file, 'FLANNEL_NETWORK=10.244.0.0/16\n');
    const sub = join(dir, 'a-directory');
    mkdirSync(sub, { recursive: true });
    const fifo = join(dir, 'a-fifo');
    if (!existsSync(fifo)) expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    for (const path of [file, sub, fifo]) {
      const stdin = conf({ agentSocket: path });
      const run = await runForwarder(baseEnv, stdin);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
      expect(run.stderr).toBe(`tsflannel: agent at ${path} unavailable (not a socket), running standalone\n`);
      expect(lastFallback()).toMatchObject({ socket: path, reason: 'not a socket' });
    }
  });

  it('waits the 1 s connect timeout for an agent whose backlog is full (stopped process), then falls back', async () => {
    const stuck = join(dir, 'stuck.sock');
    const child = spawn(
      process.execPath,
      ['-e', `require('net').createServer().listen({ path: ${JSON.stringify(stuck)}, backlog: 1 }, () => console.log('up'))`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const fillers: Socket[] = [];
    try {
      await once(child.stdout!, 'data');
      child.kill('SIGSTOP'); // the kernel still queues connections, nobody accepts them
      for (let i = 0; i < 4; i++) {
        const s = createConnection(stuck);
        s.on('error', () => undefined);
        fillers.push(s);
      }
      await new Promise((r) => setTimeout(r, 100));
      const stdin = conf({ agentSocket: stuck });
      const run = await runForwarder(baseEnv, stdin);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
      expect(run.stderr).toBe(`tsflannel: agent at ${stuck} unavailable (no connection within 1s), running standalone\n`);
      expect(run.ms).toBeGreaterThanOrEqual(950);
    } finally {
      for (const s of fillers) s.destroy();
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });

  it.skipIf(requireOrSkip('forwarder', { root: process.getuid?.() === 0 }))('does not trust a socket served by a non-root user: it never sends the call and runs standalone', async () => {
    // A world-writable directory, where anybody could bind a fake agent.
    const open = mkdtempSync(join(tmpdir(), 'tsf-fwd-open-'));
    chmodSync(open, 0o1777);
    const fakeAgent = join(open, 'cni.sock');
    const child = spawn(
      process.execPath,
      [
        '-e',
        `require('net').createServer((s) => { s.on('data', () => { console.log('GOT THE CALL'); }); }).listen(${JSON.stringify(fakeAgent)}, () => { require('fs').chmodSync(${JSON.stringify(fakeAgent)}, 0o777); console.log('up'); })`,
      ],
      { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let childOut = '';
    try {
      child.stdout!.on('data', (c: Buffer) => (childOut += c.toString()));
      await once(child.stdout!, 'data');
      const stdin = conf({ agentSocket: fakeAgent });
      const run = await runForwarder(baseEnv, stdin);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
      expect(run.stderr).toBe(
        `tsflannel: agent at ${fakeAgent} unavailable (the process listening there runs as uid 65534, not root), running standalone\n`,
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(childOut).not.toContain('GOT THE CALL');
    } finally {
      child.kill('SIGKILL');
      await once(child, 'exit');
      rmSync(open, { recursive: true, force: true });
    }
  });

  it('falls back with the same 900 KiB stdin when the agent closes mid-answer', async () => {
    agent.behaviour = { kind: 'close-mid-answer' };
    const stdin = conf({ padding: randomBytes(450 * 1024).toString('hex') });
    const before = agent.requests.length;
    const run = await runForwarder(baseEnv, stdin);
    expect(agent.requests.length).toBe(before + 1); // the agent did get the call
    const report = standaloneReport(run);
    expect(report.stdinLength).toBe(Buffer.byteLength(stdin));
    expect(report.stdinSha256).toBe(sha256(stdin));
    expect(report.env).toEqual(baseEnv);
    expect(run.stderr).toBe(
      `tsflannel: agent at ${agent.path} unavailable (connection closed before a complete answer), running standalone\n`,
    );
    expect(lastFallback()).toMatchObject({ socket: agent.path, reason: 'connection closed before a complete answer' });
  });

  it('falls back when the agent process is SIGKILLed while it holds the call', async () => {
    const dying = join(dir, 'dying.sock');
    const child = spawn(
      process.execPath,
      ['-e', `require('net').createServer((s) => s.on('data', () => process.kill(process.pid, 'SIGKILL'))).listen(${JSON.stringify(dying)}, () => console.log('up'))`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await once(child.stdout!, 'data');
    const stdin = conf({ agentSocket: dying, padding: 'k'.repeat(300 * 1024) });
    const [run, [, signal]] = await Promise.all([runForwarder(baseEnv, stdin), once(child, 'exit')]);
    expect(signal).toBe('SIGKILL');
    const report = standaloneReport(run);
    expect(report.stdinSha256).toBe(sha256(stdin));
    expect(report.env).toEqual(baseEnv);
    expect(run.stderr).toBe(`tsflannel: agent at ${dying} unavailable (connection closed before a complete answer), running standalone\n`);
  });

  it('falls back when the agent never answers, after TSFLANNEL_FORWARD_TIMEOUT_MS', async () => {
    agent.behaviour = { kind: 'never-answer' };
    const stdin = conf();
    const run = await runForwarder({ ...baseEnv, TSFLANNEL_FORWARD_TIMEOUT_MS: '300' }, stdin);
    const report = standaloneReport(run);
    expect(report.stdinSha256).toBe(sha256(stdin));
    expect(report.env.TSFLANNEL_FORWARD_TIMEOUT_MS).toBe('300');
    expect(run.stderr).toBe(`tsflannel: agent at ${agent.path} unavailable (no answer within 300 ms), running standalone\n`);
    expect(run.ms).toBeGreaterThanOrEqual(300);
    expect(run.ms).toBeLessThan(15_000);
  });

  it('waits for the agent, never skips it, when TSFLANNEL_FORWARD_TIMEOUT_MS is huge (past what nanoseconds in 64 bits hold): the call is served', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('served'), exitCode: 0, stderr: '' }) };
    for (const ms of ['9223372036854', '9223372036855', '10000000000000', '9223372036854775807']) {
      const before = agent.requests.length;
      const run = await runForwarder({ ...baseEnv, TSFLANNEL_FORWARD_TIMEOUT_MS: ms }, conf());
      expect({ ms, stdout: run.stdout.toString(), stderr: run.stderr, status: run.status }).toEqual({ ms, stdout: 'served', stderr: '', status: 0 });
      expect(agent.requests.length).toBe(before + 1);
    }
  });

  it('falls back on a malformed or missing answer (not an object, no or bad exit code, bad base64, trailing bytes, oversize frame, closed at once, half a header)', async () => {
    const bad: [Buffer, RegExp][] = [
      [frame('not an object'), /malformed answer/],
      [frame({ v: 1, stdout: '', stderr: '' }), /malformed answer/],
      [frame({ v: 2, stdout: '', exitCode: 0, stderr: '' }), /malformed answer/],
      [Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.from('{"v":')]), /malformed answer/],
      [Buffer.from([0x7f, 0xff, 0xff, 0xff]), /over the 2097152 limit/],
      [rawFrame('{"v":1,"stdout":"","exitCode":0,"stderr":""} trailing'), /malformed answer/],
      [rawFrame('{"v":1,"stdout":"not base64!","exitCode":0,"stderr":""}'), /malformed answer/],
      [rawFrame('{"v":1,"stdout":"","exitCode":256,"stderr":""}'), /malformed answer/],
      [Buffer.alloc(0), /connection closed before a complete answer/],
      [Buffer.from([0, 0]), /connection closed before a complete answer/],
    ];
    for (const [bytes, reason] of bad) {
      agent.behaviour = { kind: 'raw', bytes };
      const stdin = conf();
      const run = await runForwarder(baseEnv, stdin);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
      expect(run.stderr).toMatch(reason);
      expect(run.stderr).toMatch(/running standalone\n$/);
    }
  });

  it('answers a CNI error (code 999, naming the socket and the standalone) when the standalone is missing too', async () => {
    const missing = join(dir, 'no-standalone');
    const sock = join(dir, 'nothing-here.sock');
    const run = await runForwarder({ ...baseEnv, TSFLANNEL_STANDALONE: missing }, conf({ agentSocket: sock, cniVersion: '0.4.0' }));
    expect(run.status).toBe(1);
    const err = JSON.parse(run.stdout.toString('utf8')) as { cniVersion: string; code: number; msg: string };
    expect(err.code).toBe(999);
    expect(err.cniVersion).toBe('0.4.0');
    expect(err.msg).toContain(sock);
    expect(err.msg).toContain(missing);
    expect(run.stderr).toContain(`tsflannel: agent at ${sock} unavailable (no socket), running standalone\n`);
  });

  it('names the fix when the standalone cannot run: start tsflanneld or reinstall with `tsflannel install` (TSFLANNEL_STANDALONE when that names it), for a missing file, a file without x bits, agentSocket "" and a person\'s command', async () => {
    const sock = join(dir, 'nothing-here.sock');
    const notExec = join(dir, 'not-executable');
    writeFileSync(notExec, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    // The installed layout: the forwarder with no tsflannel-standalone beside it.
    const bin = mkdtempSync(join(tmpdir(), 'tsf-fwd-bin-'));
    const installed = join(bin, 'tsflannel');
    writeFileSync(installed, readFileSync(FORWARDER), { mode: 0o755 });
    const { TSFLANNEL_STANDALONE: _unset, ...noOverride } = baseEnv;
    try {
      const errOf = (run: Run) => {
        expect(run.status).toBe(1);
        return JSON.parse(run.stdout.toString('utf8')) as { code: number; msg: string; details?: string };
      };
      const missing = errOf(await collect(spawn(installed, [], { env: noOverride }), conf({ agentSocket: sock }), performance.now()));
      expect(missing.msg).toBe(`tsflannel: agent at ${sock} unavailable and standalone plugin ${join(bin, 'tsflannel-standalone')} not runnable: no such file or directory`);
      expect(missing.details).toBe(`start tsflanneld (its --cni-socket must be ${sock}), or reinstall with \`tsflannel install\`, which puts tsflannel-standalone beside ${installed}`);

      const off = errOf(await collect(spawn(installed, [], { env: noOverride }), conf({ agentSocket: '' }), performance.now()));
      expect(off.msg).toBe(`tsflannel: cannot run the standalone plugin ${join(bin, 'tsflannel-standalone')}: no such file or directory`);
      expect(off.details).toBe(`reinstall with \`tsflannel install\`, which puts tsflannel-standalone beside ${installed}`);

      const bits = errOf(await runForwarder({ ...baseEnv, TSFLANNEL_STANDALONE: notExec }, conf({ agentSocket: sock })));
      expect(bits.msg).toMatch(/not runnable: permission denied$/);
      expect(bits.details).toBe(`start tsflanneld (its --cni-socket must be ${sock}), or make TSFLANNEL_STANDALONE name the standalone plugin (tsflannel-standalone)`);

      const { CNI_COMMAND: _c, ...person } = noOverride;
      const tool = await collect(spawn(installed, ['status'], { env: person }), '', performance.now());
      expect(tool.status).toBe(1);
      expect(tool.stderr).toBe(
        `tsflannel: cannot run the standalone plugin ${join(bin, 'tsflannel-standalone')}: no such file or directory; reinstall with \`tsflannel install\`, which puts tsflannel-standalone beside ${installed}\n`,
      );
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('runs the standalone at once, with stdin untouched, when CNI_COMMAND is unset (a person running `tsflannel status`)', async () => {
    const { CNI_COMMAND: _omit, ...env } = baseEnv;
    const before = agent.connections;
    const run = await runForwarder(env, 'typed by hand', ['status', '--json']);
    const report = standaloneReport(run);
    expect(report.argv).toEqual(['status', '--json']);
    expect(report.stdinSha256).toBe(sha256('typed by hand'));
    expect(run.stderr).toBe('');
    expect(agent.connections).toBe(before);
  });

  it('never forwards when agentSocket is "" and leaves an oversize stdin to the standalone', async () => {
    const before = agent.connections;
    const off = conf({ agentSocket: '' });
    const run = await runForwarder(baseEnv, off);
    expect(standaloneReport(run).stdinSha256).toBe(sha256(off));
    expect(run.stderr).toBe('');
    // Over 1 MiB: the real standalone plugin answers its own size error.
    const huge = conf({ padding: 'y'.repeat(1024 * 1024) });
    const real = await runForwarder({ ...baseEnv, TSFLANNEL_STANDALONE: STANDALONE_PLUGIN }, huge);
    expect(real.status).toBe(1);
    expect(JSON.parse(real.stdout.toString('utf8'))).toMatchObject({ code: 6, msg: 'stdin is larger than 1048576 bytes' });
    expect(agent.connections).toBe(before);
  });

  it('answers VERSION itself, byte-identical to the standalone plugin, without touching the socket', async () => {
    const bodies: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['bad JSON', Buffer.from('{"cniVersion": "1.0.0"')],
      ['garbage', Buffer.from('not json at all')],
      ['unknown version', Buffer.from('{"cniVersion":"9.9.9"}')],
      ['unsupported old version', Buffer.from('{"cniVersion":"0.2.0"}')],
      ['non-string version', Buffer.from('{"cniVersion":1.0}')],
      ['key in other case', Buffer.from('{"CNIVersion":"0.4.0"}')],
      ['array', Buffer.from('["0.4.0"]')],
      ['null', Buffer.from('null')],
      ['duplicate keys', Buffer.from('{"cniVersion":"0.3.1","cniVersion":"0.4.0"}')],
      ['escaped key', Buffer.from('{"cni\\u0056ersion":"0.3.0"}')],
      ['invalid UTF-8 elsewhere', Buffer.concat([Buffer.from('{"x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('","cniVersion":"1.0.0"}')])],
      ['oversize (5000 bytes)', Buffer.from(JSON.stringify({ cniVersion: '0.4.0', pad: 'z'.repeat(5000) }))],
      ['exactly 4096 bytes', Buffer.from(JSON.stringify({ cniVersion: '0.4.0', pad: 'z'.repeat(4096 - 31) }))],
      ['4097 bytes', Buffer.from(JSON.stringify({ cniVersion: '0.4.0', pad: 'z'.repeat(4097 - 31) }))],
      ...['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'].map((v): [string, Buffer] => [v, Buffer.from(JSON.stringify({ cniVersion: v, name: 'n', type: 'tsflannel' }))]),
    ];
    const env = { ...baseEnv, CNI_COMMAND: 'VERSION', TSFLANNEL_STANDALONE: join(dir, 'must-not-run') };
    expect(bodies.find(([l]) => l === 'exactly 4096 bytes')?.[1].length).toBe(4096);
    const before = agent.connections;
    for (const [label, body] of bodies) {
      const fwd = await runForwarder(env, body);
      const t0 = performance.now();
      const ref = await collect(spawn(STANDALONE_PLUGIN, [], { env, stdio: ['pipe', 'pipe', 'pipe'] }), body, t0);
      expect({ label, out: fwd.stdout.toString('utf8'), status: fwd.status }).toEqual({ label, out: ref.stdout.toString('utf8'), status: ref.status });
      expect(fwd.stdout.equals(ref.stdout)).toBe(true);
      expect(fwd.stderr).toBe('');
    }
    expect(agent.connections).toBe(before);
  });

  // What C makes risky: buffer bounds, the JSON scanner, escapes both ways.

  it('forwards a stdin of exactly 1 MiB and hands 1 MiB + 1 to the standalone untouched (exactly the first 1 MiB + 1 bytes)', async () => {
    agent.behaviour = { kind: 'answer', make: (req) => ({ stdout: Buffer.alloc(0), exitCode: 0, stderr: sha256(Buffer.from(req.stdin, 'base64')) }) };
    const pad = (total: number) => {
      const head = conf({ padding: '' });
      return `${head.slice(0, -2)}${'p'.repeat(total - head.length)}"}`;
    };
    const exact = pad(MAX_STDIN);
    expect(Buffer.byteLength(exact)).toBe(MAX_STDIN);
    const before = agent.connections;
    const run = await runForwarder(baseEnv, exact);
    expect(run.status).toBe(0);
    expect(run.stderr).toBe(sha256(exact));
    expect(agent.connections).toBe(before + 1);

    const over = pad(MAX_STDIN + 1);
    const fallback = await runForwarder(baseEnv, over);
    const report = standaloneReport(fallback);
    expect(report.stdinLength).toBe(MAX_STDIN + 1);
    expect(report.stdinSha256).toBe(sha256(over));
    expect(fallback.stderr).toBe('');
    expect(agent.connections).toBe(before + 1);
  });

  it('ignores an agentSocket key nested in a sub-object or an array: only the top-level key names the socket', async () => {
    const missing = join(dir, 'top-level-only.sock');
    const before = agent.connections;
    const bodies = [
      `{"cniVersion":"1.0.0","x":{"agentSocket":${JSON.stringify(agent.path)}},"agentSocket":${JSON.stringify(missing)}}`,
      `{"agentSocket":${JSON.stringify(missing)},"plugins":[{"agentSocket":${JSON.stringify(agent.path)}}],"y":"{\\"agentSocket\\":1}"}`,
      `{"a":[[{"b":{"agentSocket":${JSON.stringify(agent.path)}}}]],"agent\\u0053ocket":${JSON.stringify(missing)}}`,
    ];
    for (const stdin of bodies) {
      const run = await runForwarder(baseEnv, stdin);
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
      expect(run.stderr).toBe(`tsflannel: agent at ${missing} unavailable (no socket), running standalone\n`);
    }
    expect(agent.connections).toBe(before);
  });

  it('reads agentSocket from flannel\'s delegate map as the plugin\'s config does: used when the top level has none, "" there means never forward, the top level wins', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('from the agent'), exitCode: 0, stderr: '' }) };
    const missing = join(dir, 'delegate-top-level.sock');
    // The plugin's own reading of each conf (src/plugin/config.ts), so the two cannot drift apart.
    const pluginSocket = (stdin: string) => parsePluginConfig(netConfFromObject(decodeConfig(stdin), 'ADD')).agentSocket;

    const viaDelegate = JSON.stringify({ cniVersion: '1.0.0', name: 'fwdtest', type: 'tsflannel', delegate: { hairpinMode: true, agentSocket: agent.path } });
    expect(pluginSocket(viaDelegate)).toBe(agent.path);
    let before = agent.connections;
    const served = await runForwarder(baseEnv, viaDelegate);
    expect(served.stderr).toBe('');
    expect(served.stdout.toString()).toBe('from the agent');
    expect(agent.connections).toBe(before + 1);

    const offInDelegate = JSON.stringify({ cniVersion: '1.0.0', name: 'fwdtest', type: 'tsflannel', delegate: { agentSocket: '' } });
    expect(pluginSocket(offInDelegate)).toBe('');
    before = agent.connections;
    const off = await runForwarder(baseEnv, offInDelegate);
    expect(standaloneReport(off).stdinSha256).toBe(sha256(offInDelegate));
    expect(off.stderr).toBe('');
    expect(agent.connections).toBe(before);

    const both = JSON.stringify({ cniVersion: '1.0.0', name: 'fwdtest', type: 'tsflannel', delegate: { agentSocket: agent.path }, agentSocket: missing });
    expect(pluginSocket(both)).toBe(missing);
    before = agent.connections;
    const top = await runForwarder(baseEnv, both);
    expect(standaloneReport(top).stdinSha256).toBe(sha256(both));
    expect(top.stderr).toBe(`tsflannel: agent at ${missing} unavailable (no socket), running standalone\n`);
    expect(agent.connections).toBe(before);
  });

  it('never connects to an agentSocket the plugin\'s config refuses (relative, "@abstract", NUL inside, 108 bytes): no stderr line, no fallbacks.log in the runtime\'s cwd, and the standalone answers error 7; 107 bytes still connects', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('from the agent'), exitCode: 0, stderr: '' }) };
    const before = agent.connections;
    const refused = ['cni.sock', `@tsf-fwd-abstract-${process.pid}`, `${agent.path}\u0000junk`, `/${'a'.repeat(107)}`];
    for (const agentSocket of refused) {
      const stdin = conf({ agentSocket });
      // cwd = the agent's directory: a relative "cni.sock" names its socket from there.
      const run = await collect(spawn(FORWARDER, [], { env: baseEnv, cwd: dir }), stdin, performance.now());
      expect({ agentSocket, stderr: run.stderr, status: run.status }).toEqual({ agentSocket, stderr: '', status: FAKE_EXIT });
      expect(standaloneReport(run).stdinSha256).toBe(sha256(stdin));
    }
    expect(agent.connections).toBe(before);
    const cwd = mkdtempSync(join(tmpdir(), 'tsf-fwd-cwd-'));
    try {
      chmodSync(cwd, 0o755);
      const real = await collect(
        spawn(FORWARDER, [], { env: { ...baseEnv, TSFLANNEL_STANDALONE: STANDALONE_PLUGIN }, cwd }),
        conf({ agentSocket: 'nothing-here.sock' }),
        performance.now(),
      );
      expect(real.status).toBe(1);
      expect(JSON.parse(real.stdout.toString('utf8'))).toMatchObject({ code: 7, msg: expect.stringContaining('"agentSocket" must be "" or an absolute path') });
      expect(existsSync(join(cwd, 'fallbacks.log'))).toBe(false);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
    // The longest path the plugin accepts (107 bytes, sun_path's NUL after it) is served.
    const longDir = mkdtempSync(join(tmpdir(), 'tsf-fwd-107-'));
    const longAgent = new TestAgent(longDir, 'x'.repeat(107 - longDir.length - 1));
    await longAgent.listen();
    try {
      expect(Buffer.byteLength(longAgent.path)).toBe(107);
      longAgent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('ok'), exitCode: 0, stderr: '' }) };
      const run = await runForwarder(baseEnv, conf({ agentSocket: longAgent.path }));
      expect({ stdout: run.stdout.toString(), stderr: run.stderr, status: run.status }).toEqual({ stdout: 'ok', stderr: '', status: 0 });
    } finally {
      await longAgent.close();
      rmSync(longDir, { recursive: true, force: true });
    }
  });

  it('decodes escapes in agentSocket (\\u00e9, \\", \\\\, a surrogate pair) to the exact socket path', async () => {
    const odd = mkdtempSync(join(tmpdir(), 'tsf-fwd-é-'));
    const oddAgent = new TestAgent(odd, 'a"b\\c-😀.sock');
    await oddAgent.listen();
    try {
      oddAgent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.from('ok'), exitCode: 0, stderr: '' }) };
      const escaped = asciiJson(oddAgent.path);
      expect(escaped).toMatch(/\\u00e9/);
      expect(escaped).toMatch(/\\ud83d\\ude00/);
      const run = await runForwarder(baseEnv, `{"cniVersion":"1.0.0","agentSocket":${escaped}}`);
      expect(run.stderr).toBe('');
      expect(run.stdout.toString()).toBe('ok');
      expect(oddAgent.requests).toHaveLength(1);
    } finally {
      await oddAgent.close();
      rmSync(odd, { recursive: true, force: true });
    }
  });

  it('decodes escapes in the answer\'s stderr (\\u00e9, \\", \\\\, surrogate pairs; a lone surrogate becomes U+FFFD)', async () => {
    agent.behaviour = {
      kind: 'raw',
      bytes: rawFrame('{"v":1,"stdout":"aGk=","exitCode":4,"stderr":"caf\\u00e9 \\"q\\" back\\\\slash \\ud83d\\ude00 lone \\ud800! \\/\\t\\n"}'),
    };
    const run = await runForwarder(baseEnv, conf());
    expect(run.status).toBe(4);
    expect(run.stdout.toString()).toBe('hi');
    expect(run.stderr).toBe('café "q" back\\slash 😀 lone \ufffd! /\t\n');
  });

  it('falls back on a truncated answer frame and on huge length prefixes, within a 64 MiB address-space limit (no allocation from the prefix)', async () => {
    const stdin = conf();
    // The limit passes on to the standalone, too small for Node: a shell one.
    const caught = join(dir, 'limited-standalone.stdin');
    const shStandalone = join(dir, 'limited-standalone.sh');
    writeFileSync(shStandalone, `#!/bin/sh\ncat > "${caught}"\nexit 9\n`);
    chmodSync(shStandalone, 0o755);
    const env = { ...baseEnv, TSFLANNEL_STANDALONE: shStandalone };
    const cases: [Buffer, string][] = [
      [Buffer.concat([Buffer.from([0, 0, 0, 100]), Buffer.from('{"v":1,"stdout":"","exitCode":0,"stderr":"'), Buffer.alloc(8, 0x61)]), 'connection closed before a complete answer'],
      [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7b]), 'answer frame of 4294967295 bytes is over the 2097152 limit'],
      [Buffer.from([0x00, 0x20, 0x00, 0x01]), 'answer frame of 2097153 bytes is over the 2097152 limit'],
    ];
    for (const [bytes, reason] of cases) {
      agent.behaviour = { kind: 'raw', bytes };
      const t0 = performance.now();
      const child = spawn('prlimit', [`--as=${64 * 1024 * 1024}`, FORWARDER], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      const run = await collect(child, stdin, t0);
      expect(run.status).toBe(9);
      expect(readFileSync(caught, 'utf8')).toBe(stdin);
      rmSync(caught);
      expect(run.stderr).toBe(`tsflannel: agent at ${agent.path} unavailable (${reason}), running standalone\n`);
    }
    // The largest frame allowed is relayed, under the same limit.
    const head = '{"v":1,"stdout":"","exitCode":0,"stderr":"';
    const text = 'e'.repeat(MAX_FRAME - head.length - 2);
    agent.behaviour = { kind: 'raw', bytes: rawFrame(`${head}${text}"}`) };
    const child = spawn('prlimit', [`--as=${64 * 1024 * 1024}`, FORWARDER], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const run = await collect(child, stdin, performance.now());
    expect(run.status).toBe(0);
    expect(run.stderr).toBe(text);
  });

  it('sends env values with quotes, backslashes, newlines, tabs, non-ASCII and HTML characters to the agent intact', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.alloc(0), exitCode: 0, stderr: '' }) };
    const env = {
      ...baseEnv,
      CNI_ARGS: 'K8S_POD_NAME=p"q\\r;X=line1\nline2\ttab\r é 😀 <>& \u2028\u2029 \u0001\u007f',
      TSFLANNEL_NOTE: '"quoted"\r\n',
      TSFLANNEL_EMPTY: '',
      CNI_EQUALS: '=a=b=',
    };
    const run = await runForwarder(env, conf());
    expect(run.status).toBe(0);
    const expected = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('CNI_') || k.startsWith('TSFLANNEL_')));
    expect(agent.requests.at(-1)!.env).toEqual(expected);
  });

  it('sends an env value that is not UTF-8 with U+FFFD for each bad byte (as encoding/json writes it)', async () => {
    agent.behaviour = { kind: 'answer', make: () => ({ stdout: Buffer.alloc(0), exitCode: 0, stderr: '' }) };
    const child = spawn('sh', ['-c', 'CNI_ARGS="$(printf "a\\377b\\355\\240\\200c")" exec "$0"', FORWARDER], { env: baseEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    const run = await collect(child, conf(), performance.now());
    expect(run.status).toBe(0);
    expect(agent.requests.at(-1)!.env.CNI_ARGS).toBe('a\ufffdb\ufffd\ufffd\ufffdc');
  });

  // Node's start-up variables: the runtime's environment must not reach the standalone's Node through them.

  /** What Node, its OpenSSL and libuv act on at start-up, as a runtime's environment might carry them. */
  const NODE_STARTUP_ENV: Record<string, string> = {
    NODE_OPTIONS: '--require=/nonexistent --inspect=0.0.0.0:9229',
    NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt',
    NODE_V8_COVERAGE: '/tmp/tsf-fwd-coverage',
    NODE_ICU_DATA: '/nonexistent/icu',
    NODE_PRESERVE_SYMLINKS: '1',
    NODE_REPL_HISTORY: '/tmp/x',
    NODE_TLS_REJECT_UNAUTHORIZED: '0',
    NODE_PENDING_DEPRECATION: '1',
    NODE_NO_WARNINGS: '1',
    NODE_DEBUG: 'net,fs',
    NODE_DEBUG_NATIVE: 'SEA',
    NODE_COMPILE_CACHE: '/tmp/cache',
    NODE_SKIP_PLATFORM_CHECK: '1',
    NODE_DISABLE_COLORS: '1',
    NODE_REDIRECT_WARNINGS: '/tmp/w',
    NODE_PATH: '/tmp/modules',
    NODE_CHANNEL_FD: '3',
    NODE_NAME: 'node-1', // not Node's, but the plugin reads no NODE_* at all
    OPENSSL_CONF: '/tmp/evil-openssl.cnf',
    OPENSSL_MODULES: '/tmp/providers',
    UV_THREADPOOL_SIZE: '128',
    UV_USE_IO_URING: '1',
  };
  /** Look-alikes and generic variables that must pass unchanged. */
  const KEPT_ENV: Record<string, string> = {
    SSL_CERT_FILE: '/etc/ssl/certs/ca-certificates.crt',
    SSL_CERT_DIR: '/etc/ssl/certs',
    TZ: 'UTC',
    FORCE_COLOR: '1',
    NO_COLOR: '1',
    NODEJS_HOME: '/opt/node',
    XNODE_OPTIONS: '--require=/nonexistent',
    node_options: 'lower case: not Node\'s',
    MY_UV_THING: 'u',
  };

  /** A shell standalone (Node would trip over NODE_OPTIONS) that records its environment and argv. */
  function envRecorder(): { path: string; env: () => Record<string, string>; argv: () => string[] } {
    const out = join(dir, 'env-recorder');
    const path = join(dir, 'env-recorder.sh');
    writeFileSync(path, `#!/bin/sh\nenv -0 > "${out}.env"\nprintf '%s\\0' "$@" > "${out}.argv"\ncat > /dev/null\nexit ${FAKE_EXIT}\n`);
    chmodSync(path, 0o755);
    const nulList = (file: string) => readFileSync(file, 'utf8').split('\0').filter((x) => x !== '');
    return {
      path,
      env: () => Object.fromEntries(nulList(`${out}.env`).filter((kv) => !kv.startsWith('PWD=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
      argv: () => nulList(`${out}.argv`),
    };
  }

  it('execs the standalone of a CNI call without NODE_*, OPENSSL_* and UV_* (no socket, agent closing mid-answer, agentSocket "", oversize stdin, empty CNI_COMMAND); CNI_*, PATH, SSL_CERT_*, TZ and look-alikes pass unchanged', async () => {
    const rec = envRecorder();
    const runtimeEnv = { ...baseEnv, ...NODE_STARTUP_ENV, ...KEPT_ENV, TSFLANNEL_STANDALONE: rec.path };
    const expected = { ...baseEnv, ...KEPT_ENV, TSFLANNEL_STANDALONE: rec.path };
    const cases: [string, Record<string, string>, string][] = [
      ['no socket', runtimeEnv, conf({ agentSocket: join(dir, 'absent-node-env.sock') })],
      ['agentSocket ""', runtimeEnv, conf({ agentSocket: '' })],
      ['stdin over 1 MiB', runtimeEnv, conf({ padding: 'n'.repeat(MAX_STDIN) })],
      ['empty CNI_COMMAND', { ...runtimeEnv, CNI_COMMAND: '' }, conf()],
      ['agent closes mid-answer', runtimeEnv, conf()],
    ];
    for (const [label, env, stdin] of cases) {
      agent.behaviour = label === 'agent closes mid-answer' ? { kind: 'close-mid-answer' } : { kind: 'never-answer' };
      const run = await runForwarder(env, stdin);
      expect({ label, status: run.status }).toEqual({ label, status: FAKE_EXIT });
      const want = label === 'empty CNI_COMMAND' ? { ...expected, CNI_COMMAND: '' } : expected;
      expect({ label, env: rec.env() }).toEqual({ label, env: want });
    }
    // What reaches the agent is untouched by this: CNI_* and TSFLANNEL_* only, as always.
    expect(agent.requests.at(-1)!.env).toEqual(Object.fromEntries(Object.entries(runtimeEnv).filter(([k]) => k.startsWith('CNI_') || k.startsWith('TSFLANNEL_'))));
  });

  it('keeps the whole environment, Node\'s variables included, when the standalone runs as the node tool or the agent (a person\'s choice), and drops them for a runtime-style call that lacks CNI_COMMAND', async () => {
    const rec = envRecorder();
    const all: Record<string, string> = { ...baseEnv, ...NODE_STARTUP_ENV, ...KEPT_ENV, TSFLANNEL_STANDALONE: rec.path };
    const { CNI_COMMAND: _omit, ...noCommand } = all;
    const before = agent.connections;
    // `tsflannel status --json` typed on a node: the tool may reach etcd or the API server over TLS.
    expect((await runForwarder(noCommand, '', ['status', '--json'])).status).toBe(FAKE_EXIT);
    expect(rec.env()).toEqual(noCommand);
    expect(rec.argv()).toEqual(['status', '--json']);
    // A first argument naming the agent runs the agent, even with CNI_COMMAND set.
    const withCommand = { ...noCommand, CNI_COMMAND: 'ADD' };
    expect((await runForwarder(withCommand, conf({ agentSocket: '' }), ['tsflanneld', '--help'])).status).toBe(FAKE_EXIT);
    expect(rec.env()).toEqual(withCommand);
    // No arguments and CNI_CONTAINERID set: src/main/dispatch.ts makes that the plugin (which answers the missing CNI_COMMAND).
    expect((await runForwarder(noCommand, conf())).status).toBe(FAKE_EXIT);
    expect(Object.keys(rec.env()).filter((k) => /^(NODE|OPENSSL|UV)_/.test(k))).toEqual([]);
    expect(rec.env().CNI_CONTAINERID).toBe('c0ffee');
    expect(agent.connections).toBe(before);
  });

  it('drops Node\'s variables exactly when src/main/dispatch.ts would run the standalone as the plugin (36 argv × env cases)', async () => {
    const rec = envRecorder();
    const argvs = [[], ['status'], ['--help'], ['tsflanneld'], ['tsflannel'], ['tsflannel-standalone', 'status']];
    const cniVars: Record<string, string>[] = [{}, { CNI_COMMAND: 'ADD' }, { CNI_COMMAND: '' }, { CNI_CONTAINERID: 'c' }, { CNI_NETNS: '/n' }, { CNI_IFNAME: 'eth0' }];
    const runtimeBase = { PATH: baseEnv.PATH!, TSFLANNEL_STANDALONE: rec.path, NODE_OPTIONS: '--require=/x', OPENSSL_CONF: '/x', UV_THREADPOOL_SIZE: '9' };
    const before = agent.connections;
    const kinds = { plugin: 0, tool: 0, agent: 0 };
    for (const args of argvs) {
      for (const vars of cniVars) {
        const env = { ...runtimeBase, ...vars };
        const label = `${JSON.stringify(args)} ${JSON.stringify(vars)}`;
        const run = await runForwarder(env, conf({ agentSocket: '' }), args);
        expect({ label, status: run.status }).toEqual({ label, status: FAKE_EXIT });
        // The standalone is started as rec.path: its kind is decided as for tsflannel-standalone (not the agent's name).
        const kind = programFor(rec.path, ['node', rec.path, ...args], env).kind;
        const kept = Object.keys(rec.env()).filter((k) => k in runtimeBase && k !== 'PATH' && k !== 'TSFLANNEL_STANDALONE').sort();
        expect({ label, kind, kept }).toEqual({ label, kind, kept: kind === 'plugin' ? [] : ['NODE_OPTIONS', 'OPENSSL_CONF', 'UV_THREADPOOL_SIZE'] });
        kinds[kind]++;
      }
    }
    expect(kinds).toEqual({ plugin: 16, tool: 14, agent: 6 });
    expect(agent.connections).toBe(before);
  });

  const skip = requireOrSkip('forwarder default socket', { root: process.getuid?.() === 0, 'unshare (util-linux)': existsSync('/usr/bin/unshare') });

  /**
   * Runs the forwarder in a private mount namespace whose /run is an empty
   * tmpfs, with `bind` (if given) mounted on /run/tsflannel: the default
   * socket path is then ours, never the machine's agent.
   */
  function runWithPrivateRun(env: Record<string, string>, stdin: Buffer | string, bind = ''): Promise<Run> {
    const script = 'mount -t tmpfs tsf-fwd-run /run && { [ -z "$2" ] || { mkdir /run/tsflannel && mount --bind "$2" /run/tsflannel; }; } && exec "$1"';
    const child = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', FORWARDER, bind], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    return collect(child, stdin, performance.now());
  }

  it.skipIf(skip)('uses the default /run/tsflannel/cni.sock when agentSocket is missing, null, not a string, only nested, or stdin is not a JSON object', async () => {
    agent.behaviour = { kind: 'answer', make: (req) => ({ stdout: Buffer.from('via default'), exitCode: 0, stderr: sha256(Buffer.from(req.stdin, 'base64')) }) };
    const bodies = [
      '{"cniVersion":"1.0.0","name":"n","type":"tsflannel"}',
      '{"cniVersion":"1.0.0","agentSocket":null}',
      '{"cniVersion":"1.0.0","agentSocket":5}',
      `{"cniVersion":"1.0.0","x":{"agentSocket":${JSON.stringify(join(dir, 'nothing-here.sock'))}}}`,
      'not json',
      '["agentSocket"]',
      '',
    ];
    for (const body of bodies) {
      const before = agent.requests.length;
      const run = await runWithPrivateRun(baseEnv, body, dir);
      expect({ body, stdout: run.stdout.toString(), stderr: run.stderr, status: run.status }).toEqual({ body, stdout: 'via default', stderr: sha256(body), status: 0 });
      expect(agent.requests.length).toBe(before + 1);
    }
  });

  it.skipIf(skip)('fuzz: 150 random stdins with no agent reach the standalone byte for byte, with the whole environment', async () => {
    const out = join(dir, 'fuzz-out');
    const fuzzStandalone = join(dir, 'fuzz-standalone.sh');
    writeFileSync(fuzzStandalone, `#!/bin/sh\ncat > "${out}.stdin"\nenv -0 > "${out}.env"\nexit 9\n`);
    chmodSync(fuzzStandalone, 0o755);
    const alphabet = Buffer.from('{}[]":,\\ u0123abcdeftrnl.-+E\n\tagentSocket');
    const sizes = [0, 1, 2, 3, 4095, 4096, 4097, 65535, 65536, 65537, MAX_STDIN - 1, MAX_STDIN, MAX_STDIN + 1, MAX_STDIN + 4096];
    for (let i = 0; i < 150; i++) {
      const size = i < sizes.length ? sizes[i]! : Math.random() < 0.1 ? Math.floor(Math.random() * 300 * 1024) : Math.floor(Math.random() * 4096);
      const stdin = i % 2 ? randomBytes(size) : Buffer.from(Array.from({ length: size }, () => alphabet[Math.floor(Math.random() * alphabet.length)]!));
      const env = { ...baseEnv, CNI_COMMAND: ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'][i % 5]!, TSFLANNEL_STANDALONE: fuzzStandalone };
      const run = await runWithPrivateRun(env, stdin);
      const label = `case ${i}: ${size} bytes`;
      expect({ label, status: run.status }).toEqual({ label, status: 9 });
      const got = readFileSync(`${out}.stdin`);
      const want = stdin.subarray(0, MAX_STDIN + 1); // past the limit the standalone only needs to see more than it
      expect({ label, length: got.length, sha: sha256(got) }).toEqual({ label, length: want.length, sha: sha256(want) });
      const seen = Object.fromEntries(
        readFileSync(`${out}.env`, 'utf8').split('\0').filter((kv) => kv !== '' && !kv.startsWith('PWD=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      expect(seen).toEqual(env);
      if (stdin.length <= MAX_STDIN) expect(run.stderr).toBe('tsflannel: agent at /run/tsflannel/cni.sock unavailable (no socket), running standalone\n');
      else expect(run.stderr).toBe('');
      rmSync(`${out}.stdin`);
    }
  }, 120_000);
});
