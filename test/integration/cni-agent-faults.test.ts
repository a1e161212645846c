// The agent-served path under faults: the agent SIGKILLed with ADDs in
// flight (every call still ends, with a result or a CNI error; nothing is
// leaked or held twice), and the agent-served plugin, the standalone plugin
// and the reference host-local racing into one host-local store.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { callPlugin, PLUGIN_BIN, type CniOutcome } from '../helpers/plugin.js';
import { FORWARDER_BIN, forwarderBuilt, socketCall, startCniAgent, type RunningAgent } from '../helpers/cni-agent.js';
import { execFileSync } from 'node:child_process';
import { createConnection } from 'node:net';
import { requireOrSkip } from '../helpers/require.js';
import { attachmentLockName } from '../../src/ipam/store.js';

const HOST_LOCAL = '/usr/lib/cni/host-local';
const FORWARD_DEADLINE_MS = 20_000;

describe.skipIf(requireOrSkip('cni-agent-faults', { root: isRoot, 'the forwarder (scripts/build-forward.sh)': forwarderBuilt }))('agent-served CNI path under faults', () => {
  let node = '';
  let dir = '';
  let socket = '';
  let subnetFile = '';
  let dataDir = '';
  let agent: RunningAgent | undefined;
  const netName = `tsffault${process.pid}`;
  const conf = () => ({ cniVersion: '1.0.0', name: netName, type: 'tsflannel', subnetFile, dataDir, agentSocket: socket });
  const forward = (command: string, id: string, netns: string): Promise<CniOutcome> =>
    callPlugin({
      nodeNs: node,
      bin: FORWARDER_BIN,
      command,
      containerId: id,
      netns,
      ifname: 'eth0',
      stdin: conf(),
      extraEnv: { TSFLANNEL_STANDALONE: PLUGIN_BIN, TSFLANNEL_FORWARD_TIMEOUT_MS: String(FORWARD_DEADLINE_MS) },
    });
  /** ip → "containerId/ifname" of every lease in the store. */
  const leaseOwners = (): Map<string, string> => {
    const d = join(dataDir, netName);
    const out = new Map<string, string>();
    if (!existsSync(d)) return out;
    for (const f of readdirSync(d).filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n))) {
      out.set(f, readFileSync(join(d, f), 'utf8').trim().split(/\r?\n/).join('/'));
    }
    return out;
  };
  /** Holds a lock file of the store (its directories made) for `seconds`, as another process would; released after each test. */
  const holders: { child: ChildProcess; released: Promise<void> }[] = [];
  const holdLock = (file: string, seconds: number): Promise<void> => {
    mkdirSync(dirname(file), { recursive: true });
    const child = spawn('flock', ['-x', file, 'sleep', String(seconds)], { stdio: 'ignore' });
    const released = new Promise<void>((r) => child.on('close', () => r()));
    holders.push({ child, released });
    return released;
  };
  const storeLock = () => join(dataDir, netName, 'lock');
  const attachmentLock = (id: string) => join(dataDir, netName, 'attachments', attachmentLockName(id, 'eth0'));
  /** A call straight to the agent's socket, as the forwarder sends it, waiting up to 20 s for the store's locks. */
  const direct = (command: string, id: string, netns: string) =>
    socketCall(
      socket,
      { CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: nsPath(netns), CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' },
      JSON.stringify({ ...conf(), lockTimeoutMs: 20_000 }),
    );
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const veths = () => ipJson<{ ifname: string }[]>(node, ['link', 'show', 'type', 'veth']).map((l) => l.ifname);
  const ipOf = (r: CniOutcome) => (r.json?.ips as { address: string }[] | undefined)?.[0]?.address.split('/')[0];

  beforeAll(() => {
    node = addNetns('fnode');
    dir = mkdtempSync(join(tmpdir(), 'tsf-faults-'));
    socket = join(dir, 'run', 'cni.sock');
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  });
  afterEach(async () => {
    for (const h of holders.splice(0)) {
      h.child.kill('SIGKILL');
      await h.released;
    }
    await agent?.stop();
    agent = undefined;
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the agent with 20 ADDs in flight: each call ends with a result or a CNI error in time; no IP twice; DEL of all leaves nothing', async () => {
    agent = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    const pods = Array.from({ length: 20 }, (_, i) => addNetns(`k${i}`));
    const started = Date.now();
    const calls = pods.map((p, i) => {
      const t0 = Date.now();
      return forward('ADD', `kill${i}`, nsPath(p)).then((r) => ({ r, ms: Date.now() - t0 }));
    });
    // Kill once the agent is at work: the first veth exists.
    while (veths().length === 0 && Date.now() - started < 20_000) await sleep(5);
    await agent.stop('SIGKILL');
    agent = undefined;
    const outcomes = await Promise.all(calls);

    for (const { r, ms } of outcomes) {
      // A result, or a CNI error document: never a hang, never empty output.
      expect(r.json, r.stdout + r.stderr).toBeDefined();
      if (r.code === 0) expect(ipOf(r)).toMatch(/^10\.244\.5\.\d+$/);
      else expect(typeof r.json?.code).toBe('number');
      // The forwarder's deadline, plus the standalone run it may fall back to.
      expect(ms).toBeLessThan(FORWARD_DEADLINE_MS + 60_000);
    }
    const fellBack = outcomes.filter(({ r }) => r.stderr.includes('running standalone')).length;
    expect(fellBack, 'some calls must have been cut off by the kill').toBeGreaterThan(0);

    const owners = leaseOwners();
    const held = [...owners.values()];
    expect(new Set(held).size, `leases: ${JSON.stringify([...owners])}`).toBe(held.length); // one IP per attachment
    outcomes.forEach(({ r }, i) => {
      if (r.code !== 0) return;
      expect(owners.get(ipOf(r)!)).toBe(`kill${i}/eth0`);
      expect(inNs(pods[i]!, 'ip', ['-4', 'addr', 'show', 'eth0'])).toContain(`inet ${ipOf(r)}/24`);
    });
    const ok = outcomes.filter(({ r }) => r.code === 0).map(({ r }) => ipOf(r));
    expect(new Set(ok).size).toBe(ok.length);

    const dels = await Promise.all(pods.map((p, i) => forward('DEL', `kill${i}`, nsPath(p))));
    for (const d of dels) expect(d.code, d.stdout + d.stderr).toBe(0);
    expect([...leaseOwners()]).toEqual([]);
    expect(veths()).toEqual([]);
  }, 240_000);

  it('never runs a call whose forwarder gave up while it waited in the listen queue behind a busy worker', async () => {
    agent = await startCniAgent({ socket, nodeNs: node, workers: 1 });
    const podA = addNetns('qa');
    const podB = addNetns('qb');
    // Something else holds the store's lock for 6 s: the only worker blocks
    // in flock (a synchronous wait) serving pod A's ADD.
    const released = holdLock(storeLock(), 6);
    await sleep(300);
    const a = direct('ADD', 'queueA', podA);
    await sleep(300);
    // Pod B's forwarder waits 2 s (its connection sits in the socket's
    // queue), then gives up; its fallback here does nothing.
    const b = await callPlugin({
      nodeNs: node,
      bin: FORWARDER_BIN,
      command: 'ADD',
      containerId: 'queueB',
      netns: nsPath(podB),
      ifname: 'eth0',
      stdin: conf(),
      extraEnv: { TSFLANNEL_STANDALONE: '/bin/false', TSFLANNEL_FORWARD_TIMEOUT_MS: '2000' },
    });
    expect(b.stderr).toContain('running standalone');
    expect((await a).exitCode, JSON.stringify(await a)).toBe(0);
    await released;
    await sleep(2000); // the worker is free again and takes pod B's connection
    expect(inNs(podB, 'ip', ['-o', 'link', 'show'])).not.toContain('eth0');
    expect([...leaseOwners().values()]).toEqual(['queueA/eth0']);
    const del = await forward('DEL', 'queueA', nsPath(podA));
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect([...leaseOwners()]).toEqual([]);
  }, 120_000);

  it('serves a call that waits for its attachment\'s earlier call on another worker once that one ends, and keeps that worker thread', async () => {
    const running = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    agent = running;
    const pod = addNetns('wa');
    // The first ADD of wa/eth0 waits 3 s for that attachment's lock (held here).
    holdLock(attachmentLock('wa'), 3);
    await sleep(300);
    const add = direct('ADD', 'wa', pod);
    await sleep(300);
    const del = direct('DEL', 'wa', pod); // on the other worker, behind the ADD
    const [a, d] = await Promise.all([add, del]);
    expect(a.exitCode, JSON.stringify(a)).toBe(0);
    expect(d.exitCode, JSON.stringify(d)).toBe(0);
    expect(inNs(pod, 'ip', ['-o', 'link', 'show'])).not.toContain('eth0'); // the DEL ran after the ADD
    expect([...leaseOwners()]).toEqual([]);
    expect(running.stderr()).not.toContain('CNI worker died');
  }, 60_000);

  it('serves another pod\'s ADD at once while both base workers are held: one by a call stuck on its attachment\'s lock, one by a call parked behind it', async () => {
    const running = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    agent = running;
    const held = addNetns('sh');
    const other = addNetns('so');
    const ref = addNetns('sr');
    // What an ADD costs here with a free worker: the bound below is that plus well under a second.
    let t0 = Date.now();
    expect((await direct('ADD', 'stallref', ref)).exitCode).toBe(0);
    const refMs = Date.now() - t0;
    // Worker 1: an ADD of sh/eth0 waits 8 s for its attachment's lock (held
    // here). Worker 2: that attachment's DEL, parked until the ADD ends.
    const released = holdLock(attachmentLock('stallheld'), 8);
    await sleep(300);
    const add = direct('ADD', 'stallheld', held);
    await sleep(300);
    const del = direct('DEL', 'stallheld', held);
    await sleep(300);
    t0 = Date.now();
    const third = await direct('ADD', 'stallother', other);
    const ms = Date.now() - t0;
    expect(third.exitCode, JSON.stringify(third)).toBe(0);
    expect(ms, `a free-worker ADD took ${refMs} ms`).toBeLessThan(refMs + 1000);
    await released;
    const [a, d] = await Promise.all([add, del]);
    expect(a.exitCode, JSON.stringify(a)).toBe(0);
    expect(d.exitCode, JSON.stringify(d)).toBe(0);
    expect(inNs(held, 'ip', ['-o', 'link', 'show'])).not.toContain('eth0'); // the DEL still ran after the ADD
    for (const [id, ns] of [['stallother', other], ['stallref', ref]] as const) {
      const r = await direct('DEL', id, ns);
      expect(r.exitCode, JSON.stringify(r)).toBe(0);
    }
    expect([...leaseOwners()]).toEqual([]);
    expect(running.stderr()).not.toContain('CNI worker died');
  }, 60_000);

  it('serves another pod\'s ADD at once while both base workers read a frame from a sender that stalls mid-frame', async () => {
    agent = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    const pod = addNetns('sf');
    const ref = addNetns('sg');
    let t0 = Date.now();
    expect((await direct('ADD', 'slowref', ref)).exitCode).toBe(0);
    const refMs = Date.now() - t0;
    // Two callers send 2 bytes of a frame's 4-byte length and stop: each
    // holds a worker for the 10 s frame bound.
    const slow = [0, 1].map(() => {
      const c = createConnection(socket);
      c.on('error', () => undefined);
      c.on('connect', () => c.write(Buffer.from([0, 0])));
      return c;
    });
    await sleep(500);
    t0 = Date.now();
    const r = await direct('ADD', 'slowother', pod);
    const ms = Date.now() - t0;
    for (const c of slow) c.destroy();
    expect(r.exitCode, JSON.stringify(r)).toBe(0);
    expect(ms, `a free-worker ADD took ${refMs} ms`).toBeLessThan(refMs + 1000);
    for (const [id, ns] of [['slowother', pod], ['slowref', ref]] as const) {
      const d = await direct('DEL', id, ns);
      expect(d.exitCode, JSON.stringify(d)).toBe(0);
    }
    expect([...leaseOwners()]).toEqual([]);
  }, 60_000);

  it('SIGTERM lets a spare thread finish its call too: every call in progress ends with its own result, then the agent exits by itself', async () => {
    const running = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    agent = running;
    const held = addNetns('th');
    const other = addNetns('to');
    // Base workers: an ADD stuck 4 s on its attachment's lock, and its DEL parked behind it.
    holdLock(attachmentLock('termheld'), 4);
    await sleep(300);
    const add = direct('ADD', 'termheld', held);
    await sleep(300);
    const del = direct('DEL', 'termheld', held);
    await sleep(700);
    // The spare: another pod's ADD, waiting 3 s for the store's lock.
    holdLock(storeLock(), 3);
    await sleep(200);
    const third = direct('ADD', 'termother', other);
    await sleep(500);
    const threads = () =>
      readdirSync(`/proc/${running.pid}/task`).map((t) => {
        try {
          return readFileSync(`/proc/${running.pid}/task/${t}/comm`, 'utf8').trim();
        } catch {
          return '';
        }
      });
    // (Go runtime threads a worker starts take its name too: the names, once each.)
    expect([...new Set(threads().filter((n) => n.startsWith('tsf-cni-')))].sort()).toEqual(['tsf-cni-0', 'tsf-cni-1', 'tsf-cni-2']);
    await running.stop('SIGTERM'); // SIGKILL after 10 s
    agent = undefined;
    const [a, d, t] = await Promise.all([add, del, third]);
    expect(a.exitCode, JSON.stringify(a)).toBe(0);
    expect(d.exitCode, JSON.stringify(d)).toBe(0);
    expect(t.exitCode, JSON.stringify(t)).toBe(0);
    expect(running.child.signalCode).toBeNull();
    expect(running.child.exitCode).toBe(0);
    expect(inNs(other, 'ip', ['-o', 'link', 'show'])).toContain('eth0');
    // the agent is gone: the forwarder's fallback deletes it
    const r = await forward('DEL', 'termother', nsPath(other));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect([...leaseOwners()]).toEqual([]);
  }, 60_000);

  it('counts the time a call waited in the listen queue against its forwarder\'s deadline: the agent answers "try again" before the forwarder gives up', async () => {
    agent = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    const pod = addNetns('dq');
    const other = addNetns('do');
    // Worker 1 serves an ADD of attachment dlq/eth0 that waits 10 s for that
    // attachment's lock; worker 2 an ADD of another pod that waits 3 s for
    // the store's. Meanwhile dlq/eth0's next call (a forwarder that waits
    // 6 s) sits in the socket's queue; taken at ~3 s, it then waits behind
    // worker 1's.
    holdLock(attachmentLock('dlq'), 10);
    holdLock(storeLock(), 3);
    await sleep(300);
    const first = direct('ADD', 'dlq', pod);
    await sleep(100);
    const blocker = direct('ADD', 'dlqother', other);
    await sleep(200);
    const t0 = Date.now();
    const queued = await callPlugin({
      nodeNs: node,
      bin: FORWARDER_BIN,
      command: 'ADD',
      containerId: 'dlq',
      netns: nsPath(pod),
      ifname: 'eth0',
      stdin: { ...conf(), lockTimeoutMs: 20_000 },
      extraEnv: { TSFLANNEL_STANDALONE: '/bin/false', TSFLANNEL_FORWARD_TIMEOUT_MS: '6000' },
    });
    expect(queued.stderr).not.toContain('running standalone');
    expect(queued.json?.code, queued.stdout + queued.stderr).toBe(11);
    expect(Date.now() - t0).toBeLessThan(6000);
    expect((await first).exitCode).toBe(0);
    expect((await blocker).exitCode).toBe(0);
    for (const [id, ns] of [['dlq', pod], ['dlqother', other]] as const) {
      const del = await forward('DEL', id, nsPath(ns));
      expect(del.code, del.stdout + del.stderr).toBe(0);
    }
    expect([...leaseOwners()]).toEqual([]);
  }, 120_000);

  it('SIGTERM lets the call a worker is serving finish with its own result, then the agent exits by itself', async () => {
    const running = await startCniAgent({ socket, nodeNs: node, workers: 1 });
    agent = running;
    const pod = addNetns('st');
    // The call is at work (waiting for the store's lock, held 3 s) when the agent is told to stop.
    holdLock(storeLock(), 3);
    await sleep(300);
    const add = direct('ADD', 'stopping', pod);
    await sleep(700);
    await running.stop('SIGTERM'); // SIGKILL after 10 s
    agent = undefined;
    const res = await add;
    expect(res.exitCode, JSON.stringify(res)).toBe(0);
    expect(inNs(pod, 'ip', ['-o', 'link', 'show'])).toContain('eth0');
    expect(running.child.signalCode).toBeNull();
    expect(running.child.exitCode).toBe(0);
    // the agent is gone: the forwarder's fallback deletes it
    const del = await forward('DEL', 'stopping', nsPath(pod));
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect([...leaseOwners()]).toEqual([]);
  }, 120_000);

  it('out of descriptors (EMFILE) for a while, the agent keeps its worker and serves the waiting call once it has them again', async () => {
    const running = await startCniAgent({ socket, nodeNs: node, workers: 1 });
    agent = running;
    // The agent's lowest free descriptor becomes its limit: accept(2) fails with EMFILE.
    const open = new Set(readdirSync(`/proc/${running.pid}/fd`).map(Number));
    let free = 0;
    while (open.has(free)) free++;
    // Only the soft limit: raising a hard limit again may be refused.
    const [soft, hard] = /^Max open files\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${running.pid}/limits`, 'utf8'))!.slice(1);
    execFileSync('prlimit', ['--pid', String(running.pid), `--nofile=${free}:${hard}`]);
    const call = socketCall(socket, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}').then(
      (r) => r,
      (e: Error) => e,
    );
    await sleep(1500);
    try {
      execFileSync('prlimit', ['--pid', String(running.pid), `--nofile=${soft}:${hard}`], { stdio: 'ignore' });
    } catch {
      // the agent is gone: the call's answer below says how
    }
    const res = await call;
    expect(res instanceof Error ? res.message : res.exitCode, running.stderr()).toBe(0);
    expect(running.child.exitCode).toBeNull();
    expect(running.stderr()).not.toContain('CNI worker died');
  }, 60_000);

  it.skipIf(requireOrSkip('cni-agent-faults', { 'reference host-local': existsSync(HOST_LOCAL) }))('agent-served, standalone and the reference host-local race into one store: every IP once', async () => {
    agent = await startCniAgent({ socket, nodeNs: node, workers: 2 });
    const n = 12;
    const served = Array.from({ length: n }, (_, i) => addNetns(`ra${i}`));
    const alone = Array.from({ length: n }, (_, i) => addNetns(`rs${i}`));
    const refConf = {
      cniVersion: '1.0.0',
      name: netName,
      ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.244.5.0/24', gateway: '10.244.5.1' }]] },
    };
    const reference = (command: string, id: string) =>
      callPlugin({ nodeNs: node, bin: HOST_LOCAL, command, containerId: id, netns: nsPath(node), ifname: 'eth0', stdin: refConf });
    const results = await Promise.all([
      ...served.map((p, i) => forward('ADD', `agent${i}`, nsPath(p))),
      ...alone.map((p, i) => callPlugin({ nodeNs: node, command: 'ADD', containerId: `alone${i}`, netns: nsPath(p), ifname: 'eth0', stdin: conf() })),
      ...Array.from({ length: n }, (_, i) => reference('ADD', `ref${i}`)),
    ]);
    for (const r of results) expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const r of results.slice(0, n)) expect(r.stderr).not.toContain('running standalone');
    const ips = results.map(ipOf);
    expect(new Set(ips).size).toBe(3 * n);
    const owners = leaseOwners();
    expect(owners.size).toBe(3 * n);
    expect(new Set(owners.values()).size).toBe(3 * n);

    await Promise.all([
      ...served.map((p, i) => forward('DEL', `agent${i}`, nsPath(p))),
      ...alone.map((p, i) => callPlugin({ nodeNs: node, command: 'DEL', containerId: `alone${i}`, netns: nsPath(p), ifname: 'eth0', stdin: conf() })),
      ...Array.from({ length: n }, (_, i) => reference('DEL', `ref${i}`)),
    ]);
    expect([...leaseOwners()]).toEqual([]);
    expect(veths()).toEqual([]);
  }, 240_000);
});
