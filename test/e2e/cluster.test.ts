// Four node namespaces (three on one L2 segment, one behind a router), a
// real etcd, tsflanneld on every node, two pods per node through the real
// tsflannel binary: every pod reaches every pod over flannel.1, pods reach
// the outside through masquerade, and the overlay follows nodes that leave
// and agents that restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Cluster, type Pod } from '../../src/demo/cluster.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { nexthopRoute } from '../helpers/nexthops.js';

function ping(fromNs: string, ip: string): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c1', '-W3', ip]).status === 0;
}

function nodeState(ns: string): { routes: string; neigh: string; fdb: string } {
  const run = (cmd: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
  return { routes: run('ip', ['route']), neigh: run('ip', ['neigh', 'show', 'dev', 'flannel.1']), fdb: run('bridge', ['fdb', 'show', 'dev', 'flannel.1']) };
}


describe.skipIf(requireOrSkip('cluster', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('a four-node tsflannel cluster', () => {
  const cluster = new Cluster({
    prefix: `tsfe2e${randomBytes(2).toString('hex')}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
      { name: 'n3', segment: 'a' },
      { name: 'n4', segment: 'b' },
    ],
    resyncSeconds: 3,
  });
  const subnets = new Map<string, string>();

  beforeAll(async () => {
    await cluster.start();
    for (const node of ['n1', 'n2', 'n3', 'n4']) {
      await cluster.addPod(node, 'p1');
      await cluster.addPod(node, 'p2');
      const env = readFileSync(cluster.subnetFile(node), 'utf8');
      subnets.set(node, /FLANNEL_SUBNET=(\S+)/.exec(env)![1]);
    }
  }, 120_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('attached every pod through the forwarder and its own node\'s agent (no standalone fallback)', () => {
    expect(cluster.pods.map((p) => `${p.node}/${p.name} ${p.servedBy}`)).toEqual(
      ['n1', 'n2', 'n3', 'n4'].flatMap((n) => [`${n}/p1 agent`, `${n}/p2 agent`]),
    );
  });

  it('gives every node its own /24 inside 10.244.0.0/16 and a flannel.1 VTEP', () => {
    expect(new Set(subnets.values()).size).toBe(4);
    for (const [node, subnet] of subnets) {
      expect(subnet).toMatch(/^10\.244\.\d+\.1\/24$/);
      const link = execFileSync('ip', ['-n', cluster.node(node).ns, '-d', 'link', 'show', 'flannel.1'], { encoding: 'utf8' });
      expect(link).toMatch(new RegExp(`vxlan id 1 local ${cluster.node(node).ip.replace(/\./g, '\\.')} dev eth0 .*dstport 8472 nolearning`));
      expect(link).toContain('mtu 1450');
    }
  });

  it('programs route, neigh and FDB for every other node', () => {
    const n1 = nodeState(cluster.node('n1').ns);
    for (const other of ['n2', 'n3', 'n4']) {
      const net = subnets.get(other)!.replace(/\.1\/24$/, '.0');
      expect(n1.routes).toMatch(nexthopRoute(`${net}/24`, net, 'flannel.1'));
      expect(n1.neigh).toMatch(new RegExp(`${net.replace(/\./g, '\\.')} lladdr [0-9a-f:]{17} PERMANENT`));
      expect(n1.fdb).toContain(`dst ${cluster.node(other).ip} self permanent`);
    }
  });

  it('every pod pings every other pod, in both directions', () => {
    const failures: string[] = [];
    for (const from of cluster.pods) {
      for (const to of cluster.pods) {
        if (from !== to && !ping(from.ns, to.ip)) failures.push(`${from.containerId} -> ${to.containerId} (${to.ip})`);
      }
    }
    expect(failures).toEqual([]);
    expect(cluster.pods).toHaveLength(8);
  });

  it('a pod reaches an address outside the pod network through masquerade', () => {
    for (const pod of cluster.pods.filter((p) => p.name === 'p1')) {
      expect(ping(pod.ns, cluster.topo!.outsideIP), `${pod.containerId} -> outside`).toBe(true);
    }
  });

  it('drops a node that leaves: its route, neigh and FDB go from the others', async () => {
    await cluster.stopAgent('n3');
    const n3net = subnets.get('n3')!.replace(/\.1\/24$/, '.0');
    await cluster.etcdctl(['del', `/coreos.com/network/subnets/${n3net}-24`]);
    await eventually('n3 removed from n1, n2, n4', 15_000, () =>
      ['n1', 'n2', 'n4'].every((n) => {
        const s = nodeState(cluster.node(n).ns);
        return !s.routes.includes(`${n3net}/24`) && !s.neigh.includes(`${n3net} `) && !s.fdb.includes(`dst ${cluster.node('n3').ip} `);
      }),
    );
    // The remaining nodes still talk.
    const p = (node: string) => cluster.pods.find((x) => x.node === node && x.name === 'p1') as Pod;
    expect(ping(p('n1').ns, p('n4').ip)).toBe(true);
  });

  it('an agent restart keeps pods talking and keeps its subnet', async () => {
    const before = nodeState(cluster.node('n1').ns);
    await cluster.stopAgent('n1');
    const p = (node: string) => cluster.pods.find((x) => x.node === node && x.name === 'p2') as Pod;
    expect(ping(p('n1').ns, p('n2').ip)).toBe(true); // routes stay while the agent is down
    // The restarted agent must write the subnet file afresh, so its content
    // proves what the new agent leased rather than what the old one left.
    rmSync(cluster.subnetFile('n1'));
    await cluster.startAgent('n1');
    await eventually('the restarted agent wrote its subnet file', 30_000, () => existsSync(cluster.subnetFile('n1')) && cluster.agentLog('n1').includes('wrote subnet file'));
    const env = readFileSync(cluster.subnetFile('n1'), 'utf8');
    expect(env).toContain(`FLANNEL_SUBNET=${subnets.get('n1')}`);
    const acquired = cluster
      .agentLog('n1')
      .split('\n')
      .filter((l) => l.includes('"acquired lease"'))
      .map((l) => (JSON.parse(l) as { subnet?: string }).subnet);
    expect(acquired).toEqual([subnets.get('n1')!.replace(/\.1\/24$/, '.0/24')]);
    const after = nodeState(cluster.node('n1').ns);
    expect(after.fdb).toBe(before.fdb);
    expect(ping(p('n1').ns, p('n4').ip)).toBe(true);
    expect(ping(p('n4').ns, p('n1').ip)).toBe(true);
  });
});
