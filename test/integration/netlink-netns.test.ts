// The shim enters pod namespaces only on throw-away threads: whatever it does
// in a pod's netns, the calling process (the agent, in production) and every
// one of its threads stay in the namespace they started in. Also SO_PEERCRED,
// which the agent's CNI socket uses to serve root only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as nl from '../../src/netlink/index.js';
import { call, libcPeerCred } from '../../src/netlink/ffi.js';
import { addNetns, cleanupAll, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const REPO = resolve(import.meta.dirname, '../..');

/** The netns of the process's main thread (its tid is the pid). */
function mainThreadNetns(): string {
  return readlinkSync(`/proc/self/task/${process.pid}/ns/net`);
}

/** Every live thread's netns, by tid; a thread that exits while we look is skipped. */
function threadNetns(): Map<string, string> {
  const out = new Map<string, string>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      out.set(tid, readlinkSync(`/proc/self/task/${tid}/ns/net`));
    } catch {
      // the thread ended between readdir and readlink
    }
  }
  return out;
}

/**
 * Threads not in `want`. A throw-away thread may still be on its way out
 * right after its call returned, so this waits (bounded) for stragglers; a
 * thread left in a pod netns for good makes it return that thread.
 */
async function threadsOutside(want: string, waitMs = 2000): Promise<string[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const stray = [...threadNetns()].filter(([, ns]) => ns !== want).map(([tid, ns]) => `${tid}:${ns}`);
    if (stray.length === 0 || Date.now() >= deadline) return stray;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The fd under an accepted net.Socket (Node keeps it on the libuv handle). */
function socketFd(sock: Socket): number {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('accepted socket has no fd');
  return fd;
}

describe.skipIf(requireOrSkip('netlink-netns', { root: isRoot }))('netlink calls into pod namespaces leave the caller in its own netns', () => {
  let pod = '';
  let P: nl.InNetns;
  let own = '';

  beforeAll(() => {
    own = readlinkSync('/proc/self/ns/net');
    pod = addNetns('nspod');
    P = { netns: nsPath(pod) };
    execFileSync('ip', ['-n', pod, 'link', 'add', 'marker0', 'type', 'bridge']);
  });
  afterAll(() => cleanupAll());

  it('1,000 pod-netns calls (link, addr, route, sysctl, veth) leave the process and all its threads in their netns', async () => {
    expect(mainThreadNetns()).toBe(own);
    const peerNs = addNetns('nspeer');
    const t0 = Date.now();
    let calls = 0;
    for (let i = 0; i < 200; i++) {
      // Each call must really run in the pod netns: it sees the pod's marker.
      expect(nl.linkList(P).map((l) => l.name)).toContain('marker0');
      expect(nl.addrList({ dev: 'lo', ...P }).map((a) => a.cidr)).toContain('127.0.0.1/8');
      nl.routeList({ family: 'inet', ...P });
      expect(nl.sysctlGet('net.ipv4.conf.marker0.forwarding', P)).toMatch(/^[01]$/);
      // A veth born in the pod with its peer in another netns: two netns paths in one call.
      const pair = nl.createVeth({ name: 'vnst0', peerName: 'eth9', peerNetns: nsPath(peerNs), mtu: 1400, ...P });
      expect(pair.peer.mtu).toBe(1400);
      expect(nl.linkDelete('vnst0', P)).toBe(true);
      calls += 6;
      // The main thread is the one Node makes the cgo call on: never moved.
      if (i % 50 === 0) expect(mainThreadNetns()).toBe(own);
    }
    const ms = Date.now() - t0;
    console.log(`${calls} pod-netns shim calls in ${ms} ms (${((ms * 1000) / calls).toFixed(0)} µs/call)`);
    expect(calls).toBeGreaterThanOrEqual(1000);
    expect(readlinkSync('/proc/self/ns/net')).toBe(own);
    expect(mainThreadNetns()).toBe(own);
    expect(await threadsOutside(own)).toEqual([]);
    // Nothing leaked into the pod or the peer netns either.
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname).sort()).toEqual(['lo', 'marker0']);
    expect(ipJson<{ ifname: string }[]>(peerNs, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
  });

  it('4 worker threads making pod-netns calls at once (as the agent serves pods) leave every thread in its netns', async () => {
    // The workers load the compiled API (build/, from scripts/setup.sh): a
    // worker cannot import TypeScript sources.
    const api = pathToFileURL(join(REPO, 'build/netlink/index.js')).href;
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(workerData.api).then((nl) => {
        const P = { netns: workerData.netns };
        let calls = 0;
        for (let i = 0; i < 60; i++) {
          if (!nl.linkList(P).some((l) => l.name === 'marker0')) throw new Error('call ran outside the pod netns');
          const name = 'vw' + workerData.id + 'x' + i;
          nl.createVeth({ name, peerName: 'p' + name, peerNetns: workerData.netns, ...P });
          nl.linkDelete(name, P);
          calls += 3;
        }
        parentPort.postMessage(calls);
      });`;
    const workers = [0, 1, 2, 3].map((id) => new Worker(code, { eval: true, workerData: { api, netns: nsPath(pod), id } }));
    let mainMoved = false;
    const watch = setInterval(() => {
      if (mainThreadNetns() !== own) mainMoved = true;
    }, 2);
    try {
      const counts = await Promise.all(
        workers.map((w) => new Promise<number>((res, rej) => w.once('message', res).once('error', rej))),
      );
      expect(counts.reduce((a, b) => a + b, 0)).toBe(4 * 180);
    } finally {
      clearInterval(watch);
      await Promise.all(workers.map((w) => w.terminate()));
    }
    expect(mainMoved).toBe(false);
    expect(await threadsOutside(own)).toEqual([]);
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname).sort()).toEqual(['lo', 'marker0']);
  });

  it('seen by strace: only Go threads call setns (in enter/leave pairs), and every netlink socket gets 20 s send and receive timeouts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-strace-'));
    try {
      const script = join(dir, 'calls.mjs');
      writeFileSync(
        script,
        `import * as nl from ${JSON.stringify(pathToFileURL(join(REPO, 'build/netlink/index.js')).href)};
         const P = { netns: ${JSON.stringify(nsPath(pod))} };
         for (let i = 0; i < 50; i++) { nl.linkList(P); nl.addrList(P); nl.sysctlGet('net.ipv4.ip_forward', P); }
         nl.linkList();
         process.stdout.write(String(process.pid));`,
      );
      const trace = join(dir, 'trace');
      const child = spawnSync('strace', ['-f', '-qq', '-e', 'trace=setns,setsockopt', '-o', trace, process.execPath, script], {
        encoding: 'utf8',
      });
      expect(child.status, child.stderr).toBe(0);
      const lines = readFileSync(trace, 'utf8').split('\n').filter(Boolean);
      const mainPid = Number(child.stdout); // the node process: its main thread's tid is its pid
      expect(mainPid).toBeGreaterThan(0);
      // No call failed (a line of strace's may be split in two when threads interleave).
      expect(lines.filter((l) => /= -1 /.test(l))).toEqual([]);
      const setns = lines.filter((l) => / setns\(\d+, CLONE_NEWNET/.test(l));
      const byTid = new Map<number, number>();
      for (const l of setns) {
        const tid = Number(l.split(' ')[0]);
        byTid.set(tid, (byTid.get(tid) ?? 0) + 1);
      }
      // 150 calls that enter the pod: one enter and one leave each.
      expect(setns).toHaveLength(300);
      expect(byTid.has(mainPid)).toBe(false);
      for (const [tid, n] of byTid) expect({ tid, even: n % 2 === 0 }).toEqual({ tid, even: true });
      // Each netlink handle (100 pod + 1 own) sets both timeouts on each of its sockets, all to 20 s.
      const timeouts = lines.filter((l) => /SO_(SND|RCV)TIMEO/.test(l));
      expect(timeouts.length).toBeGreaterThanOrEqual(2 * 101);
      for (const l of timeouts) expect(l).toContain('"\\24\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0", 16'); // tv_sec 20
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('throw-away threads do not pile up: the thread count stays flat over 500 pod calls', async () => {
    for (let i = 0; i < 20; i++) nl.linkList(P); // let the Go runtime reach its steady state
    const before = readdirSync('/proc/self/task').length;
    for (let i = 0; i < 500; i++) nl.linkList(P);
    await threadsOutside(own);
    const after = readdirSync('/proc/self/task').length;
    console.log(`threads: ${before} before, ${after} after 500 pod calls`);
    expect(after).toBeLessThanOrEqual(before + 4);
  });

  it('a netns path that is not a network namespace fails the call and moves no thread', async () => {
    const notNet = '/proc/self/ns/uts';
    expect(() => nl.linkList({ netns: notNet })).toThrow(/enter netns \/proc\/self\/ns\/uts/);
    expect(() => nl.linkList({ netns: '/nonexistent/netns' })).toThrow(/open netns/);
    expect(() => nl.sysctlGet('net.ipv4.ip_forward', { netns: notNet })).toThrow(/enter netns/);
    expect(mainThreadNetns()).toBe(own);
    expect(await threadsOutside(own)).toEqual([]);
  });
});

describe.skipIf(requireOrSkip('netlink-netns', { root: isRoot }))('peerCred reads SO_PEERCRED of an accepted Unix socket', () => {
  let dir = '';
  let server: Server;
  const accepted: Socket[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-peercred-'));
    chmodSync(dir, 0o755);
    server = createServer((s) => accepted.push(s));
    server.listen(join(dir, 's.sock'));
    await once(server, 'listening');
    chmodSync(join(dir, 's.sock'), 0o666);
  });
  afterAll(() => {
    for (const s of accepted) s.destroy();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function acceptNext(connect: () => unknown): Promise<Socket> {
    const n = accepted.length;
    connect();
    for (let i = 0; i < 500 && accepted.length === n; i++) await new Promise((r) => setTimeout(r, 10));
    const s = accepted[n];
    if (!s) throw new Error('no connection accepted');
    return s;
  }

  it('reports this process as the peer of its own connection (pid, uid 0, gid 0), through libc as the shim reads it', async () => {
    const client = createConnection(join(dir, 's.sock'));
    const s = await acceptNext(() => undefined);
    expect(nl.peerCred(socketFd(s))).toEqual({ pid: process.pid, uid: 0, gid: 0 });
    // peerCred asks libc's getsockopt directly; the shim's op is its fallback and must agree.
    expect(libcPeerCred(socketFd(s))).toEqual({ pid: process.pid, uid: 0, gid: 0 });
    expect(call('sock.peercred', { fd: socketFd(s) })).toEqual({ pid: process.pid, uid: 0, gid: 0 });
    client.destroy();
  });

  it('reports a non-root client with its real uid, gid and pid', async () => {
    const sock = join(dir, 's.sock');
    const child = spawn(
      process.execPath,
      ['-e', `const c=require('net').createConnection(${JSON.stringify(sock)});c.on('connect',()=>setTimeout(()=>c.end(),3000))`],
      { uid: 65534, gid: 65534, stdio: 'ignore' },
    );
    try {
      const s = await acceptNext(() => undefined);
      expect(nl.peerCred(socketFd(s))).toEqual({ pid: child.pid, uid: 65534, gid: 65534 });
    } finally {
      child.kill();
    }
  });

  it('refuses a descriptor that is not a socket (ENOTSOCK) and a negative one (EBADF)', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      expect(() => nl.peerCred(fd)).toThrow(expect.objectContaining({ errno: 'ENOTSOCK' }));
    } finally {
      closeSync(fd);
    }
    expect(() => nl.peerCred(-1)).toThrow(expect.objectContaining({ errno: 'EBADF' }));
  });
});
