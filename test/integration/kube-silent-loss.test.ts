// The Kubernetes subnet manager when its watch connection dies without a
// word: a NAT entry dropped, the API server's host gone without a FIN or RST.
// A Node watch only ever reads, so nothing on it fails: without a liveness
// check it waits on the dead connection until the next full re-list (5 to 6
// minutes in production), and Nodes that joined, left or changed meanwhile
// are not programmed. kube-apiserver's watch cache sends a BOOKMARK about once
// a minute to a watch that allows them; the fake API server here does the
// same, faster. In-process, a TCP proxy between it and the manager stops
// passing bytes on the open connection without closing it; for the real
// tsflanneld in a node netns, an nftables DROP in that netns silences the
// flows open at that moment while new connections pass.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { buildTopology, destroyTopology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { startTcpProxy, type TcpProxy } from '../helpers/etcd.js';
import { collectLeases } from '../helpers/lease-watch.js';
import { pollFor } from '../helpers/eventually.js';
import { appendLog } from '../helpers/agent-log.js';
import { isRoot } from '../helpers/netns.js';
import { nexthopRoute } from '../helpers/nexthops.js';
import { requireOrSkip } from '../helpers/require.js';
import { KubeSubnetManager, type KubeSubnetManagerOptions } from '../../src/daemon/subnet/kube.js';
import type { Lease } from '../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';
let dir: string;
let netConf: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-kube-silent-'));
  netConf = join(dir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function annotations(ip: string, mac: string): Record<string, string> {
  return {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: ip,
  };
}

/** A fake API server with two annotated Nodes, reached through a TCP proxy the test can stall. */
async function cluster(bookmarkEveryMs: number): Promise<{ fake: FakeKube; proxy: TcpProxy }> {
  const fake = await FakeKube.start({ bookmarkEveryMs });
  cleanups.push(() => fake.close());
  fake.addNode('node-a', '10.244.1.0/24', annotations('192.168.50.1', '0a:00:00:00:00:0a'));
  fake.addNode('node-b', '10.244.2.0/24', annotations('192.168.50.2', '0a:00:00:00:00:0b'));
  const proxy = await startTcpProxy(Number(new URL(fake.url).port));
  cleanups.push(() => proxy.close());
  return { fake, proxy };
}

function watch(proxy: TcpProxy, extra: Partial<KubeSubnetManagerOptions>): Lease[][] {
  const m = new KubeSubnetManager({
    nodeName: 'node-a',
    netConfPath: netConf,
    apiServerUrl: proxy.endpoint,
    // The full re-list must not be what finds the change: far beyond the test's length.
    resyncSeconds: 600,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: pino({ level: 'silent' }),
    ...extra,
  });
  cleanups.push(() => m.close());
  return collectLeases(m, (fn) => cleanups.push(fn));
}

const subnets = (calls: Lease[][]): string[] => (calls.at(-1) ?? []).map((l) => l.subnet).sort();

describe('kube subnet manager on a watch connection that dies silently', () => {
  it('notices a silent watch within the idle timeout and resumes it without a re-list: a Node added after the stall is delivered', async () => {
    const { fake, proxy } = await cluster(500);
    const restarts: string[] = [];
    const metrics = { apiError: () => undefined, watchRestart: (reason: string) => void restarts.push(reason) };
    const calls = watch(proxy, { watchIdleTimeoutMs: 3000, metrics });
    await pollFor('the first list', () => subnets(calls).length === 2);
    await pollFor('the watch open', () => fake.openWatches === 1);
    const lists = fake.count('list');
    const watches = fake.count('watch');
    const connections = proxy.accepted;

    proxy.stall();
    const stalledAt = Date.now();
    fake.addNode('node-c', '10.244.3.0/24', annotations('192.168.50.3', '0a:00:00:00:00:0c'));
    await pollFor('node-c delivered after the stall', () => subnets(calls).includes('10.244.3.0/24'), 30_000, 50);
    const noticedMs = Date.now() - stalledAt;
    // Within the idle timeout plus one bookmark period, with room for a loaded machine.
    expect(noticedMs).toBeLessThan(10_000);
    expect(subnets(calls)).toEqual(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24']);
    // Over a new connection, by a watch resumed from the last resourceVersion: no re-list.
    expect(proxy.accepted).toBeGreaterThan(connections);
    expect(fake.count('watch')).toBe(watches + 1);
    expect(fake.count('list')).toBe(lists);
    // Counted as tsflannel_watch_restarts_total{reason="idle"}, not as an API error.
    expect(restarts).toEqual(['idle']);
  }, 45_000);

  it('costs nothing while bookmarks arrive: a quiet but live watch is kept for many idle timeouts', async () => {
    const { fake, proxy } = await cluster(300);
    const calls = watch(proxy, { watchIdleTimeoutMs: 1200 });
    await pollFor('the first list', () => subnets(calls).length === 2);
    await pollFor('the watch open', () => fake.openWatches === 1);
    await new Promise((r) => setTimeout(r, 6000));
    expect(fake.count('watch')).toBe(1);
    expect(fake.count('list')).toBe(1);
    expect(proxy.accepted).toBe(2);
  }, 30_000);

  it('against an API server without periodic bookmarks, reopens a quiet watch once per idle timeout from where it stopped, never re-listing', async () => {
    const { fake, proxy } = await cluster(0);
    const calls = watch(proxy, { watchIdleTimeoutMs: 1000 });
    await pollFor('the first list', () => subnets(calls).length === 2);
    await new Promise((r) => setTimeout(r, 3500));
    // About one watch per second of quiet: 4 in 3.5 s, give or take one for timing.
    expect(fake.count('watch')).toBeGreaterThanOrEqual(3);
    expect(fake.count('watch')).toBeLessThanOrEqual(5);
    expect(fake.count('list')).toBe(1);
    expect(fake.requests.filter((r) => r.verb === 'watch').every((r) => r.query.resourceVersion === fake.resourceVersion)).toBe(true);
    fake.addNode('node-c', '10.244.3.0/24', annotations('192.168.50.3', '0a:00:00:00:00:0c'));
    await pollFor('node-c delivered', () => subnets(calls).includes('10.244.3.0/24'), 5000, 20);
  }, 30_000);
});

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const BRIDGE = fileURLToPath(new URL('../../build/demo/port-bridge.js', import.meta.url));
const NFT = '/usr/sbin/nft';

/** The local ports of the TCP connections from this netns to 127.0.0.1:6443 open now (the agent's side). */
function apiClientPorts(ns: string): number[] {
  const out = execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Htn', 'state', 'established', 'dst', '127.0.0.1:6443'], { encoding: 'utf8' });
  return out.split('\n').flatMap((line) => {
    const m = /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:6443\s*$/.exec(line.trim());
    return m ? [Number(m[1])] : [];
  });
}

describe.skipIf(requireOrSkip('kube silent connection loss (agent)', { root: isRoot, [`nft (${NFT})`]: existsSync(NFT) }))('tsflanneld on a Kubernetes API connection that dies silently', () => {
  it('programs a Node that joined after its open API connections were silently dropped (nftables DROP in the node netns), within the idle timeout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-kube-silent-agent-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const topo = buildTopology(`tsfksl${randomBytes(2).toString('hex')}`, [{ name: 'k1', segment: 'a' }]);
    cleanups.push(() => destroyTopology(topo));
    const ns = topo.nodes[0]!.ns;
    const peerIP = (last: number): string => topo.nodes[0]!.ip.replace(/\.\d+$/, `.${last}`);
    // kube-apiserver's bookmark period (a minute) scaled down with the idle timeout (75 s → 4 s).
    const fake = await FakeKube.start({ bookmarkEveryMs: 1000 });
    cleanups.push(() => fake.close());
    fake.addNode('k1', '10.244.1.0/24');
    fake.addNode('k2', '10.244.2.0/24', annotations(peerIP(202), '0a:00:00:00:00:02'));
    const sock = join(dir, 'api.sock');
    const apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(fake.url).port));
    cleanups.push(() => void apiBridge.close());
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
    const bridge = spawn('ip', ['netns', 'exec', ns, process.execPath, BRIDGE, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void bridge.kill('SIGKILL'));
    await new Promise((r) => bridge.stdout!.once('data', r));
    const log = join(dir, 'agent.log');
    // Through the environment, so an agent without the flag starts all the same and shows the old behaviour.
    const agent = spawn('ip', ['netns', 'exec', ns, AGENT, '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443',
      '--net-config-path', netConf, '--node-name', 'k1', '--iface', 'eth0', '--subnet-file', join(dir, 'subnet.env'),
      '--cni-socket', '', '--resync-period', '2'], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FLANNELD_KUBE_WATCH_IDLE_TIMEOUT: '4' } });
    cleanups.push(() => void agent.kill('SIGKILL'));
    agent.stderr!.on('data', appendLog(log));
    const routes = (): string => execFileSync('ip', ['-n', ns, 'route'], { encoding: 'utf8' });
    const tail = (): string => readFileSync(log, 'utf8').split('\n').slice(-8).join('\n');
    await pollFor('k2 programmed', () => nexthopRoute('10.244.2.0/24', '10.244.2.0', 'flannel.1').test(routes()), 30_000).catch((err: Error) => {
      throw new Error(`${err.message}; agent log:\n${tail()}`);
    });
    await pollFor('the agent watching', () => fake.openWatches === 1);
    const ports = apiClientPorts(ns);
    expect(ports.length, 'the agent\'s watch connection').toBeGreaterThan(0);
    const lists = fake.count('list');
    const watches = fake.count('watch');

    // The flows open now lose every packet both ways, as when a NAT entry is dropped; new connections pass.
    const set = ports.join(', ');
    execFileSync('ip', ['netns', 'exec', ns, NFT, '-f', '-'], {
      input: `table inet tsf_cut {\n chain in {\n  type filter hook input priority -300;\n  tcp sport { ${set} } counter drop\n  tcp dport { ${set} } counter drop\n }\n}\n`,
    });
    const cutAt = Date.now();
    fake.addNode('k3', '10.244.3.0/24', annotations(peerIP(203), '0a:00:00:00:00:03'));
    await pollFor('k3 programmed after the cut', () => nexthopRoute('10.244.3.0/24', '10.244.3.0', 'flannel.1').test(routes()), 40_000, 100).catch((err: Error) => {
      throw new Error(`${err.message}; agent log:\n${tail()}`);
    });
    const programmedMs = Date.now() - cutAt;
    // The idle timeout (4 s) plus one bookmark period, a reconcile pass and room for a loaded machine.
    expect(programmedMs).toBeLessThan(20_000);
    // The cut was real: the old connection's bookmarks (and k3's event) were dropped on it.
    const counters = execFileSync('ip', ['netns', 'exec', ns, NFT, 'list', 'table', 'inet', 'tsf_cut'], { encoding: 'utf8' });
    expect(Math.max(...[...counters.matchAll(/packets (\d+)/g)].map((m) => Number(m[1])))).toBeGreaterThan(0);
    // Resumed by a new watch from where it stopped, not a re-list.
    expect(fake.count('watch')).toBeGreaterThan(watches);
    expect(fake.count('list')).toBe(lists);
    expect(readFileSync(log, 'utf8')).toContain('presuming its connection dead');
  }, 90_000);
});
