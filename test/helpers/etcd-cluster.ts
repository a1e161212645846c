// A real three-member etcd cluster whose members each live in a network
// namespace of their own (test/helpers' topology: one L2 segment), so one
// member can be cut off from the other two while clients still reach it.
// Clients reach each member through its Unix socket (the file system crosses
// namespaces) and a loopback TCP proxy in this process, which can also
// refuse new connections (TcpProxy.cut).
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildTopology, destroyTopology, type Topology } from '../../src/demo/topology.js';
import { ETCD_BIN, startTcpProxy, type TcpProxy } from './etcd.js';

export interface EtcdMember {
  name: string;
  /** http://127.0.0.1:<port>: the member's client endpoint, through its proxy */
  endpoint: string;
  proxy: TcpProxy;
  /** Takes the member's underlay link down: it keeps serving clients but loses its peers. */
  isolate(): void;
  rejoin(): void;
}

export interface EtcdCluster {
  members: EtcdMember[];
  stop(): Promise<void>;
}

async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    return res.ok && ((await res.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'tsf-etcd-cluster-'));
  const names = Array.from({ length: size }, (_, i) => `e${i}`);
  let topo: Topology | undefined;
  const children: ChildProcess[] = [];
  const proxies: TcpProxy[] = [];
  const logs = new Map<string, string[]>();
  const stop = async (): Promise<void> => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    await Promise.all(proxies.map((p) => p.close()));
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    topo = buildTopology(`tsfec${randomBytes(2).toString('hex')}`, names.map((name) => ({ name, segment: 'a' as const })));
    const nodes = topo.nodes;
    const cluster = nodes.map((n) => `${n.name}=http://${n.ip}:2380`).join(',');
    const members: EtcdMember[] = [];
    for (const node of nodes) {
      const cwd = join(dir, node.name);
      mkdirSync(cwd);
      // etcd takes a Unix listen URL's host:port as a file name, relative to its working directory.
      const client = 'unix://client.sock:0';
      const child = spawn('ip', ['netns', 'exec', node.ns, ETCD_BIN,
        '--name', node.name, '--data-dir', join(cwd, 'data'),
        '--listen-client-urls', client, '--advertise-client-urls', client,
        '--listen-peer-urls', `http://${node.ip}:2380`, '--initial-advertise-peer-urls', `http://${node.ip}:2380`,
        '--initial-cluster', cluster, '--initial-cluster-state', 'new',
        '--logger', 'zap', '--log-level', 'warn'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      const lines: string[] = [];
      logs.set(node.name, lines);
      const keep = (b: Buffer) => {
        lines.push(b.toString());
        if (lines.length > 100) lines.shift();
      };
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      const proxy = await startTcpProxy(join(cwd, 'client.sock:0'));
      proxies.push(proxy);
      const segNs = topo.namespaces.find((ns) => ns.endsWith('-sega'))!;
      members.push({
        name: node.name,
        endpoint: proxy.endpoint,
        proxy,
        isolate: () => execFileSync('ip', ['-n', segNs, 'link', 'set', node.name, 'down']),
        rejoin: () => execFileSync('ip', ['-n', segNs, 'link', 'set', node.name, 'up']),
      });
    }
    const deadline = Date.now() + 30_000;
    for (const m of members) {
      while (!(await answers(m.endpoint))) {
        if (Date.now() > deadline) throw new Error(`etcd member ${m.name} did not become healthy:\n${logs.get(m.name)!.join('')}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    return { members, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
