// What every runtime suite shares: the tsflannel cluster (namespaces, etcd,
// one agent per node), the per-node CNI view a runtime gets (conf dir with a
// tsflannel conflist, subnet file, lease dir), probes run inside node
// namespaces, and a clean-up list that runs in reverse even when a step fails.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from '../../../src/demo/cluster.js';
import type { ClusterNode, NodeSpec } from '../../../src/demo/topology.js';
import { expect } from 'vitest';
import { makeBinDir, makeConfDir, tsflannelConflist } from './cni.js';
import { statsFilePath } from '../../../src/daemon/cni-server.js';
import { eventually, registerMachineDirs, releaseMachineDirs, unmountUnder } from './host.js';

export interface NodeNet {
  node: ClusterNode;
  /** FLANNEL_SUBNET as written by the agent, e.g. 10.244.3.1/24 */
  subnet: string;
  gateway: string;
  subnetFile: string;
  dataDir: string;
  /** host-local store of the network: one file per leased IP */
  leaseDir: string;
  confDir: string;
}

/**
 * The two paths a runtime's call to /opt/cni/bin/tsflannel (the forwarder)
 * can take; every runtime suite runs once on each, with the same assertions.
 */
export interface RuntimePath {
  name: string;
  /** false: the nodes' agents are SIGKILLed after start-up (routes and subnet files stay), so the forwarder falls back */
  agent: boolean;
}

export const RUNTIME_PATHS: RuntimePath[] = [
  { name: 'forwarder, agent serving', agent: true },
  { name: 'forwarder, agent stopped (fallback)', agent: false },
];

/** Puts the nodes on `path`: with the agent stopped, calls run the standalone plugin. */
export async function takePath(cluster: Cluster, path: RuntimePath, nodes: string[]): Promise<void> {
  if (path.agent) return;
  // Routes stay when an agent dies, but only those it already programmed:
  // wait until every node routes to every other one.
  const deadline = Date.now() + 30_000;
  const routed = (n: string) =>
    execFileSync('ip', ['-n', cluster.node(n).ns, 'route', 'show', 'dev', 'flannel.1'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length;
  while (!nodes.every((n) => routed(n) >= nodes.length - 1)) {
    if (Date.now() > deadline) throw new Error('the nodes did not program routes to each other within 30 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const n of nodes) await cluster.stopAgent(n, 'SIGKILL');
}

/** CNI calls the node's agent served, per command (its stats file, written at most once a second). */
export function agentCalls(cluster: Cluster, node: string): Record<string, { ok: number; error: number }> {
  try {
    return (JSON.parse(readFileSync(statsFilePath(cluster.cniSocket(node)), 'utf8')) as { calls: Record<string, { ok: number; error: number }> }).calls;
  } catch {
    return {};
  }
}

/**
 * Checks the calls took `path`: with the agent serving, its stats count an ADD
 * on every one of `nodes`; with the agent stopped, none at all.
 */
export async function expectPathTaken(cluster: Cluster, path: RuntimePath, nodes: string[]): Promise<void> {
  if (path.agent) {
    // The agent writes its counters at most once a second.
    await eventually('the agent counted the runtime\'s calls', 5_000, () =>
      nodes.every((n) => (agentCalls(cluster, n).ADD?.ok ?? 0) > 0));
  } else {
    for (const n of nodes) expect(agentCalls(cluster, n).ADD?.ok ?? 0, n).toBe(0);
  }
}

export function suitePrefix(tag: string): string {
  return `tsf${tag}${randomBytes(2).toString('hex')}`;
}

/**
 * The suite's own temp dir (images, CNI bin dir, runtime roots), apart from the
 * cluster's, which exists only once the cluster started. Returns the dir and a
 * clean-up that unmounts whatever a runtime left mounted there and deletes it.
 */
export function suiteDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-rt-`));
  return {
    dir,
    remove: () => {
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function newCluster(prefix: string, nodes: NodeSpec[]): Cluster {
  return new Cluster({ prefix, nodes, resyncSeconds: 3, log: (l) => process.stderr.write(`[${prefix}] ${l}\n`) });
}

export interface SuiteSetup<T> {
  cluster: Cluster;
  /** the suite's temp dir (see suiteDir) */
  dir: string;
  /** the CNI bin dir the runtime calls: the installed forwarder and the reference plugins */
  binDir: string;
  /** what `alongside` returned */
  built: T;
}

/**
 * The preamble every runtime suite shares. Each clean-up is registered before
 * the step it undoes, so a failing start still cleans: the machine-dir guard,
 * the cluster of `nodes`, the suite dir, then the suite's own `cleanups` (what
 * its runtime will leave on the machine). Then the cluster starts while
 * `alongside` runs (an image build in the suite dir), the nodes are put on
 * `path`, and the CNI bin dir is made.
 */
export async function setUpSuite<T = undefined>(opts: {
  prefix: string;
  nodes: NodeSpec[];
  path: RuntimePath;
  cleanup: Cleanup;
  cleanups?: Array<[label: string, fn: () => unknown]>;
  alongside?: (dir: string) => Promise<T>;
}): Promise<SuiteSetup<T>> {
  const { cleanup } = opts;
  registerMachineDirs();
  cleanup.add('machine dirs', () => releaseMachineDirs());
  const cluster = newCluster(opts.prefix, opts.nodes);
  cleanup.add('cluster', () => cluster.stop());
  const work = suiteDir(opts.prefix);
  cleanup.add('suite dir', work.remove);
  for (const [label, fn] of opts.cleanups ?? []) cleanup.add(label, fn);
  const [built] = await both(opts.alongside ? opts.alongside(work.dir) : Promise.resolve(undefined as T), cluster.start());
  await takePath(cluster, opts.path, opts.nodes.map((n) => n.name));
  return { cluster, dir: work.dir, binDir: makeBinDir(join(work.dir, 'cni-bin')), built };
}

// Cluster.addPod calls the plugin with this network name and <node dir>/networks
// as dataDir; runtimes on the node must share that host-local store, or pods
// added both ways would be handed the same IPs.
export const NETWORK = 'cbr0';

/** The node's subnet file as the agent wrote it, and the conf dir a runtime on that node reads. */
export function nodeNet(cluster: Cluster, name: string, opts: { portmap?: boolean } = {}): NodeNet {
  const network = NETWORK;
  const subnetFile = cluster.subnetFile(name);
  const env = readFileSync(subnetFile, 'utf8');
  const subnet = /FLANNEL_SUBNET=(\S+)/.exec(env)?.[1];
  if (!subnet) throw new Error(`no FLANNEL_SUBNET in ${subnetFile}`);
  const dataDir = join(cluster.nodeDir(name), 'networks');
  const agentSocket = cluster.cniSocket(name);
  const confDir = makeConfDir(join(cluster.nodeDir(name), 'net.d'), tsflannelConflist({ name: network, subnetFile, dataDir, portmap: opts.portmap, agentSocket }));
  return {
    node: cluster.node(name), subnet, gateway: subnet.split('/')[0], subnetFile, dataDir, leaseDir: join(dataDir, network), confDir,
  };
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** True when `ip` lies in `cidr` (a.b.c.d/len). */
export function inSubnet(ip: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(ipToInt(ip) / size) === Math.floor(ipToInt(net) / size);
}

/** Runs a command in a netns (ip netns exec); returns status and output. */
export function inNode(ns: string, cmd: string[], timeoutMs = 20_000): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/**
 * An HTTP GET from inside a netns with busybox wget; the body or undefined.
 * (Debian's busybox 1.35 wget crashes with -T, so the time limit is the spawn's.)
 */
export function httpGetFrom(ns: string, url: string): string | undefined {
  const r = inNode(ns, ['busybox', 'wget', '-q', '-O', '-', url], 5000);
  return r.status === 0 ? r.stdout : undefined;
}

/** flannel.1's transmitted packet counter in a node netns. */
export function vxlanTxPackets(ns: string): number {
  const out = execFileSync('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'flannel.1'], { encoding: 'utf8' });
  const [link] = JSON.parse(out) as { stats64: { tx: { packets: number } } }[];
  return link.stats64.tx.packets;
}

/** Awaits both, and only then rethrows the first failure, so nothing is left running behind a clean-up. */
export async function both<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b]);
  if (ra.status === 'rejected') throw ra.reason;
  if (rb.status === 'rejected') throw rb.reason;
  return [ra.value, rb.value];
}

/**
 * Clean-up steps run newest first; each failure is recorded and the rest still run.
 * `run()` throws one error listing every failed step.
 */
export class Cleanup {
  private readonly steps: { label: string; fn: () => unknown }[] = [];

  add(label: string, fn: () => unknown): void {
    this.steps.push({ label, fn });
  }

  async run(): Promise<void> {
    const failures: string[] = [];
    while (this.steps.length) {
      const step = this.steps.pop()!;
      const started = Date.now();
      // A slow step is named, so a clean-up hook that runs out of time says where.
      const slow = setTimeout(() => console.error(`clean-up step "${step.label}" still running after 20 s`), 20_000);
      try {
        await step.fn();
      } catch (err) {
        failures.push(`${step.label}: ${err instanceof Error ? err.message : String(err)}`);
      } finally {
        clearTimeout(slow);
        if (Date.now() - started > 20_000) console.error(`clean-up step "${step.label}" took ${Math.round((Date.now() - started) / 1000)} s`);
      }
    }
    if (failures.length) throw new Error(`clean-up failed:\n${failures.join('\n')}`);
  }
}
