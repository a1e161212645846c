// The real tsflanneld in Kubernetes mode, in a node netns, against the fake
// API server holding N Nodes: a storm of status heartbeats, then every remote
// Node changing its VTEP MAC at once. Kernel writes are counted by `ip
// monitor` and `bridge monitor` in the node netns, reconcile passes by the
// agent's own metrics, CPU from /proc. Used by test/e2e/kube-scale.test.ts
// (quick sizes) and bench/kube-scale.js (5,000 Nodes, 10,000 heartbeats).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTopology, destroyTopology, type Topology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { FakeKube } from './fake-kube.js';
import { changedMac, nodeName, scaleNode } from './kube-scale.js';
import { appendLog } from './agent-log.js';
import { pollFor } from './eventually.js';

const P = 'flannel.alpha.coreos.com';
const METRICS_PORT = 9479;
const execFileAsync = promisify(execFile);

export interface AgentStormOptions {
  nodes: number;
  heartbeats: number;
  /** repository root (bin/tsflanneld and build/ must be built) */
  repoRoot?: string;
  log?: (line: string) => void;
  timeoutMs?: number;
}

export interface AgentStormResult {
  nodes: number;
  /** agent start to every remote Node programmed */
  programMs: number;
  /** kernel entries written by one MAC change alone (the sentinel's share) */
  oneChangeWrites: number;
  heartbeats: number;
  /** kernel changes during the storm (ip/bridge monitor messages) not about the sentinel Node */
  heartbeatKernelWrites: number;
  /** the first few of them, if any */
  heartbeatKernelLines: string[];
  /** reconcile passes the agent ran for the storm (the sentinel's pass taken off) */
  heartbeatPasses: number;
  /** Node events the agent counted as ignored over the storm (tsflannel_lease_events_total) */
  heartbeatsIgnored: number;
  /** the agent process's CPU over the storm, from /proc (10 ms ticks) */
  heartbeatAgentCpuMs: number;
  heartbeatWallMs: number;
  changes: number;
  /** reconcile passes for all remote Nodes changing their MAC in one burst */
  changePasses: number;
  changeKernelWrites: number;
  changeWallMs: number;
  changeAgentCpuMs: number;
  /** list and watch requests over the whole run */
  lists: number;
  watches: number;
  agentRssMiB: number;
}

function clockTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

function procCpuMs(pid: number, ticks: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** Where the agent's threads wait in the kernel (a stuck netlink call shows as rtnl/netlink frames). */
function kernelWaits(pid: number): string {
  try {
    const waits = new Map<string, number>();
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      let top = '';
      try {
        top = readFileSync(`/proc/${pid}/task/${tid}/stack`, 'utf8').split('\n').slice(0, 4).map((l) => l.replace(/^\[<[^>]*>\] /, '').replace(/\+0x.*$/, '')).join('<');
      } catch {
        top = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8');
      }
      waits.set(top, (waits.get(top) ?? 0) + 1);
    }
    return `agent threads in the kernel: ${[...waits].map(([w, n]) => `${n}× ${w || 'running'}`).join('; ')}`;
  } catch (err) {
    return `no thread states (${(err as Error).message})`;
  }
}

/** A monitor process in the node netns, keeping the first line of every message. */
function monitor(ns: string, cmd: string, args: string[]): { proc: ChildProcess; lines: () => number; since: (n: number) => string[] } {
  const seen: string[] = [];
  const proc = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'ignore'] });
  let partial = '';
  proc.stdout!.on('data', (d: Buffer) => {
    const text = partial + d.toString();
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    // Continuation lines of one message start with whitespace.
    seen.push(...parts.filter((l) => l && !/^\s/.test(l)));
  });
  return { proc, lines: () => seen.length, since: (n) => seen.slice(n) };
}

export async function runAgentStorm(opts: AgentStormOptions): Promise<AgentStormResult> {
  const repo = opts.repoRoot ?? fileURLToPath(new URL('../../', import.meta.url));
  const agentBin = join(repo, 'bin/tsflanneld');
  const bridgeJs = join(repo, 'build/demo/port-bridge.js');
  const log = opts.log ?? (() => undefined);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const ticks = clockTicks();
  const procs: ChildProcess[] = [];
  let topo: Topology | undefined;
  let kube: FakeKube | undefined;
  let apiBridge: Server | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'tsf-kube-storm-'));
  try {
    topo = buildTopology(`tsfks${randomBytes(2).toString('hex')}`, [{ name: 'k1', segment: 'a' }]);
    const ns = topo.nodes[0]!.ns;
    kube = await FakeKube.start({ historyLimit: opts.heartbeats + opts.nodes * 2 + 100 });
    const fake = kube;
    const own = nodeName(0);
    fake.addNode(own, scaleNode(0).podCIDR);
    fake.addNodes(opts.nodes - 1, (i) => scaleNode(i + 1));
    const sock = join(dir, 'api.sock');
    apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(fake.url).port));
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } }));
    const bridge = spawn('ip', ['netns', 'exec', ns, process.execPath, bridgeJs, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(bridge);
    await new Promise((r) => bridge.stdout!.once('data', r));
    const agentLog = join(dir, 'agent.log');
    const t0 = performance.now();
    const agent = spawn(
      'ip',
      ['netns', 'exec', ns, agentBin, '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443', '--net-config-path', netConf,
        '--node-name', own, '--iface', 'eth0', '--subnet-file', join(dir, 'subnet.env'), '--cni-socket', '',
        // No periodic exact pass during the run: every pass counted comes from the watch.
        '--resync-period', '3600', '--healthz-port', String(METRICS_PORT)],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    procs.push(agent);
    agent.stderr!.on('data', appendLog(agentLog));
    const pid = agent.pid!;
    let exited = '';
    agent.on('exit', (code, sig) => (exited = `agent exited (${code ?? sig})`));

    // Asynchronous: this process also serves the fake API server and the socket bridge, which a
    // blocking child process would stall (a 300 KB Node list then trickles through for a minute).
    const metrics = async (): Promise<Record<string, number>> => {
      // Node itself fetches inside the netns: no curl needed on the machine.
      const fetchScript = `fetch('http://127.0.0.1:${METRICS_PORT}/metrics', { signal: AbortSignal.timeout(5000) }).then((r) => r.text()).then((t) => process.stdout.write(t))`;
      const { stdout: text } = await execFileAsync('ip', ['netns', 'exec', ns, process.execPath, '-e', fetchScript], { encoding: 'utf8' });
      const out: Record<string, number> = {};
      for (const line of text.split('\n')) {
        const m = /^(tsflannel_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$/.exec(line);
        if (m) out[m[1]!] = Number(m[2]);
      }
      return out;
    };
    const passes = async (): Promise<number> => (await metrics())['tsflannel_reconcile_duration_seconds_count{reason="watch"}'] ?? 0;
    const ignoredEvents = async (): Promise<number> => {
      const all = await metrics();
      const key = Object.keys(all).find((k) => k.startsWith('tsflannel_lease_events_total{') && k.includes('source="kube"') && k.includes('result="ignored"'));
      return key ? all[key]! : 0;
    };
    const remote = opts.nodes - 1;
    let lastSeen = 'no answer from /metrics yet';
    await pollFor(
      `${remote} remote Nodes programmed`,
      async () => {
        if (exited) throw new Error(exited);
        try {
          const programmed = (await metrics())['tsflannel_routes_programmed'];
          lastSeen = `tsflannel_routes_programmed ${programmed}`;
          return programmed === remote;
        } catch {
          return false;
        }
      },
      timeoutMs,
      200,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (${lastSeen}; ${fake.count('list')} lists, ${fake.count('watch')} watches, ${fake.count('patch')} patches so far; ${kernelWaits(pid)})`);
    });
    const programMs = performance.now() - t0;
    log(`agent programmed ${remote} remote Nodes in ${(programMs / 1000).toFixed(1)} s`);

    const ip = monitor(ns, 'ip', ['monitor', 'route', 'neigh', 'link', 'address']);
    const br = monitor(ns, 'bridge', ['monitor', 'fdb']);
    procs.push(ip.proc, br.proc);
    const writes = () => ip.lines() + br.lines();
    await new Promise((r) => setTimeout(r, 500));

    const neighMac = (i: number): string | undefined => {
      const subnet = scaleNode(i).podCIDR.split('/')[0]!;
      const out = execFileSync('ip', ['-n', ns, 'neigh', 'show', subnet, 'dev', 'flannel.1'], { encoding: 'utf8' });
      return /lladdr (\S+)/.exec(out)?.[1];
    };
    // One MAC change alone: what the sentinel writes.
    const sentinel = opts.nodes - 1;
    let w = writes();
    let p = (await passes());
    const setMac = (i: number, mac: string) => fake.setAnnotations(nodeName(i), { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}` });
    setMac(sentinel, '0a:99:00:00:00:01');
    await pollFor('the first sentinel in the kernel', () => neighMac(sentinel) === '0a:99:00:00:00:01', timeoutMs, 50);
    await new Promise((r) => setTimeout(r, 500));
    const oneChangeWrites = writes() - w;
    const onePasses = (await passes()) - p;

    // The storm: status heartbeats in bursts of 1000, then a second sentinel.
    const ignoredBefore = (await ignoredEvents());
    const ipMark = ip.lines();
    const brMark = br.lines();
    p = (await passes());
    const hbWall = performance.now();
    const c0 = procCpuMs(pid, ticks);
    for (let sent = 0; sent < opts.heartbeats; ) {
      const n = Math.min(1000, opts.heartbeats - sent);
      fake.burst(() => {
        for (let k = 0; k < n; k++) fake.heartbeat(nodeName((sent + k) % opts.nodes), new Date(Date.now() + sent + k));
      });
      sent += n;
      await new Promise((r) => setImmediate(r));
    }
    setMac(sentinel, '0a:99:00:00:00:02');
    await pollFor('the sentinel after the storm in the kernel', () => neighMac(sentinel) === '0a:99:00:00:00:02', timeoutMs, 20);
    const heartbeatAgentCpuMs = procCpuMs(pid, ticks) - c0;
    const heartbeatWallMs = performance.now() - hbWall;
    await new Promise((r) => setTimeout(r, 500));
    // Everything the monitors saw, less the sentinel's own entries (its subnet, its old and new MAC).
    const sentinelMarks = [scaleNode(sentinel).podCIDR.split('/')[0]!, '0a:99:00:00:00:01', '0a:99:00:00:00:02'];
    const stormLines = [...ip.since(ipMark), ...br.since(brMark)].filter((l) => !sentinelMarks.some((m) => l.includes(` ${m} `) || l.startsWith(`${m} `)));
    const heartbeatKernelWrites = stormLines.length;
    const heartbeatPasses = (await passes()) - p - onePasses;
    const heartbeatsIgnored = (await ignoredEvents()) - ignoredBefore;
    log(`${opts.heartbeats} heartbeats: ${heartbeatKernelWrites} kernel writes, ${heartbeatPasses} passes, agent CPU ${heartbeatAgentCpuMs} ms`);

    // Every remote Node changes its VTEP MAC, in one burst.
    w = writes();
    p = (await passes());
    const chWall = performance.now();
    const c1 = procCpuMs(pid, ticks);
    fake.burst(() => {
      for (let i = 1; i < opts.nodes; i++) setMac(i, changedMac(i));
    });
    const allChanged = (): boolean => {
      const out = execFileSync('ip', ['-n', ns, 'neigh', 'show', 'dev', 'flannel.1'], { encoding: 'utf8' });
      let n = 0;
      for (const m of out.matchAll(/lladdr (0a:02:\S+)/g)) if (m[1]) n++;
      return n === remote;
    };
    await pollFor('every new MAC in the kernel', allChanged, timeoutMs, 100);
    const changeWallMs = performance.now() - chWall;
    const changeAgentCpuMs = procCpuMs(pid, ticks) - c1;
    await new Promise((r) => setTimeout(r, 500));
    const changePasses = (await passes()) - p;
    const changeKernelWrites = writes() - w;
    log(`${remote} MAC changes: ${changePasses} passes, ${changeKernelWrites} kernel writes in ${changeWallMs.toFixed(0)} ms`);

    return {
      nodes: opts.nodes,
      programMs,
      oneChangeWrites,
      heartbeats: opts.heartbeats,
      heartbeatKernelWrites,
      heartbeatKernelLines: stormLines.slice(0, 5),
      heartbeatPasses,
      heartbeatsIgnored,
      heartbeatAgentCpuMs,
      heartbeatWallMs,
      changes: remote,
      changePasses,
      changeKernelWrites,
      changeWallMs,
      changeAgentCpuMs,
      lists: fake.count('list'),
      watches: fake.count('watch'),
      agentRssMiB: rssMiB(pid),
    };
  } catch (err) {
    try {
      log(`agent log tail:\n${readFileSync(join(dir, 'agent.log'), 'utf8').split('\n').slice(-20).join('\n')}`);
    } catch {
      /* no log yet */
    }
    throw err;
  } finally {
    for (const p of procs) if (p.exitCode === null && p.pid) p.kill('SIGKILL');
    apiBridge?.close();
    await kube?.close();
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  }
}
