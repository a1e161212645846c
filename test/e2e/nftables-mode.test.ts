// A two-node cluster switched from iptables to nftables mode by flipping
// EnableNFTables in the network config and restarting the agents: the
// iptables chains left behind are removed, each node holds flannel's table
// ip flannel-ipv4, pods talk across nodes and reach the outside host
// (which has no route to the pod network) only through the nft masquerade.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Cluster, DEFAULT_NET_CONF, PLUGIN_BIN, type Pod } from '../../src/demo/cluster.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';

const haveEtcd = existsSync('/usr/bin/etcd');
const haveNft = existsSync('/usr/sbin/nft');
const NODES = ['n1', 'n2'];

function ping(fromNs: string, ip: string): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c1', '-W2', ip]).status === 0;
}

const inNode = (ns: string, cmd: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
const iptablesFlannel = (ns: string) =>
  ['nat', 'filter'].flatMap((t) => inNode(ns, 'iptables', ['-t', t, '-S']).split('\n').filter((l) => l.includes('FLANNEL')));
const nftTable = (ns: string): string | null => {
  const res = spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'ip', 'flannel-ipv4'], { encoding: 'utf8' });
  return res.status === 0 ? res.stdout : null;
};


describe.skipIf(requireOrSkip('nftables-mode', { root: isRoot, etcd: haveEtcd, nft: haveNft }))('switching a cluster to EnableNFTables', () => {
  const cluster = new Cluster({
    prefix: `tsfnft${randomBytes(2).toString('hex')}`,
    nodes: [{ name: 'n1', segment: 'a' }, { name: 'n2', segment: 'b' }],
    resyncSeconds: 2,
  });
  const pods: Pod[] = [];

  beforeAll(async () => {
    await cluster.start();
    for (const node of NODES) pods.push(await cluster.addPod(node, 'p1'));
  }, 120_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('starts in iptables mode (the default) with no nftables table', () => {
    for (const node of NODES) {
      const ns = cluster.node(node).ns;
      expect(iptablesFlannel(ns).length).toBeGreaterThan(0);
      expect(nftTable(ns)).toBeNull();
    }
  });

  it('after EnableNFTables and an agent restart (rules left behind by a kill), only the nft table remains', async () => {
    await cluster.etcdctl(['put', '/coreos.com/network/config', JSON.stringify({ ...DEFAULT_NET_CONF, EnableNFTables: true })]);
    for (const node of NODES) {
      const ns = cluster.node(node).ns;
      await cluster.stopAgent(node, 'SIGKILL');
      expect(iptablesFlannel(ns).length).toBeGreaterThan(0); // leftovers of the iptables mode
      await cluster.startAgent(node);
      await eventually(`${node}: nft table written and iptables chains gone`, 30_000, () => nftTable(ns) !== null && iptablesFlannel(ns).length === 0);
      const table = nftTable(ns)!;
      expect(table).toContain('type nat hook postrouting priority srcnat; policy accept;');
      expect(table).toContain('ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random');
      expect(table).toContain('ip daddr 10.244.0.0/16 accept');
    }
  }, 90_000);

  it('pods ping across nodes and reach the outside host only through the nft masquerade', async () => {
    const [a, b] = pods;
    await eventually('pods ping each other', 20_000, () => ping(a!.ns, b!.ip) && ping(b!.ns, a!.ip));
    for (const pod of pods) expect(ping(pod.ns, cluster.topo!.outsideIP), `${pod.node} -> outside`).toBe(true);
    // without its masquerade the outside host cannot answer pod addresses (agent killed so nothing repairs it)
    const ns = cluster.node('n1').ns;
    await cluster.stopAgent('n1', 'SIGKILL');
    inNode(ns, 'nft', ['flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    expect(ping(a!.ns, cluster.topo!.outsideIP)).toBe(false);
    await cluster.startAgent('n1');
    await eventually('pod reaches outside again after the restart', 20_000, () => ping(a!.ns, cluster.topo!.outsideIP));
    // and the running agent restores a flushed chain and says so: by its
    // periodic check ("traffic rules were changed"), or by the first check
    // of its start-up when the flush lands while that is still running;
    // either way the nftables manager logs the write with the drift it found.
    const writes = () => cluster.agentLog('n1').split('wrote flannel nftables table').length - 1;
    const writesBefore = writes();
    inNode(ns, 'nft', ['flush', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    await eventually('n1 restores its table', 15_000, () => (nftTable(ns) ?? '').includes('masquerade fully-random'));
    await eventually('repair logged', 10_000, () => writes() > writesBefore);
    expect(ping(a!.ns, cluster.topo!.outsideIP)).toBe(true);
  }, 60_000);

  it('tsflannel doctor reads the nftables rules: masquerade and forward checks pass on n1', () => {
    const node = 'n1';
    const res = spawnSync('ip', ['netns', 'exec', cluster.node(node).ns, PLUGIN_BIN, 'doctor', '--json', '--subnet-file', cluster.subnetFile(node),
      '--data-dir', join(cluster.nodeDir(node), 'networks'), '--etcd-endpoints', 'http://127.0.0.1:2379'], { encoding: 'utf8', timeout: 30_000 });
    const report = JSON.parse(res.stdout) as { checks: { id: string; status: string; message: string }[] };
    const check = (id: string) => report.checks.find((c) => c.id === id)!;
    expect(check('masquerade')).toMatchObject({ status: 'pass' });
    expect(check('masquerade').message).toContain('nftables table ip flannel-ipv4');
    expect(check('forward-policy').status).toBe('pass');
  }, 40_000);
});
