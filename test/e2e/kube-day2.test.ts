// Day-2 events in Kubernetes mode (tsflanneld --kube-subnet-mgr against a
// Kubernetes-API-shaped server), on two node namespaces: a Node whose
// InternalIP changes and a Node whose podCIDR is reassigned, with pods
// reachable across both.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTopology, destroyTopology, addPodNamespace, type Topology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { callPlugin, type CniOutcome } from '../helpers/plugin.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { nexthopRoute } from '../helpers/nexthops.js';
import { appendLog } from '../helpers/agent-log.js';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const BRIDGE = fileURLToPath(new URL('../../build/demo/port-bridge.js', import.meta.url));
const ANN = 'flannel.alpha.coreos.com';


function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

describe.skipIf(requireOrSkip('kube-day2', { root: isRoot }))('day-2 events in Kubernetes mode', () => {
  let topo: Topology;
  let kube: FakeKube;
  let apiBridge: Server;
  let dir = '';
  let netConf = '';
  const bridges: ChildProcess[] = [];
  const agents = new Map<string, ChildProcess>();
  const pods = new Map<string, { ns: string; ip: string; id: string }>();
  const ns = (node: string) => topo.nodes.find((n) => n.name === node)!.ns;
  const sh = (node: string, cmd: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns(node), cmd, ...args], { encoding: 'utf8' });
  const subnetFile = (node: string) => join(dir, node, 'subnet.env');
  const log = (node: string) => (existsSync(join(dir, node, 'agent.log')) ? readFileSync(join(dir, node, 'agent.log'), 'utf8') : '');
  const ping = (fromNs: string, ip: string) =>
    new Promise<boolean>((resolve) => spawn('ip', ['netns', 'exec', fromNs, 'ping', '-c1', '-W2', ip]).once('exit', (code) => resolve(code === 0)));

  function startAgent(node: string): void {
    writeFileSync(join(dir, node, 'agent.log'), '');
    const agent = spawn('ip', ['netns', 'exec', ns(node), AGENT, '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443',
      '--net-config-path', netConf, '--node-name', node, '--iface', 'eth0', '--subnet-file', subnetFile(node),
      '--resync-period', '2', '--cni-socket', ''], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr!.on('data', appendLog(join(dir, node, 'agent.log')));
    agents.set(node, agent);
  }

  async function restartAgent(node: string, between: () => void): Promise<void> {
    const agent = agents.get(node)!;
    agent.kill('SIGTERM');
    await exited(agent);
    between();
    startAgent(node);
    await eventually(`${node}'s agent wrote its subnet file`, 30_000, () => log(node).includes('wrote subnet file'));
  }

  function cni(node: string, command: 'ADD' | 'DEL', id: string, podNs: string): Promise<CniOutcome> {
    return callPlugin({
      nodeNs: ns(node), command, containerId: id, netns: `/var/run/netns/${podNs}`, ifname: 'eth0',
      stdin: { cniVersion: '1.0.0', name: 'cbr0', type: 'tsflannel', subnetFile: subnetFile(node), dataDir: join(dir, node, 'ipam') },
    });
  }

  async function addPod(node: string, name: string): Promise<{ ns: string; ip: string; id: string }> {
    const podNs = addPodNamespace(topo, `${node}-${name}`);
    const id = `${node}-${name}`;
    const out = await cni(node, 'ADD', id, podNs);
    expect(out.code, out.stdout).toBe(0);
    const pod = { ns: podNs, id, ip: (out.json!.ips as { address: string }[])[0]!.address.split('/')[0]! };
    pods.set(id, pod);
    return pod;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-kube-d2-'));
    topo = buildTopology(`tsfkd${randomBytes(2).toString('hex')}`, [{ name: 'k1', segment: 'a' }, { name: 'k2', segment: 'a' }]);
    kube = await FakeKube.start();
    kube.addNode('k1', '10.244.1.0/24');
    kube.addNode('k2', '10.244.2.0/24');
    const sock = join(dir, 'api.sock');
    apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(kube.url).port));
    netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
    for (const node of ['k1', 'k2']) {
      mkdirSync(join(dir, node));
      const bridge = spawn('ip', ['netns', 'exec', ns(node), process.execPath, BRIDGE, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
      bridges.push(bridge);
      await new Promise((r) => bridge.stdout!.once('data', r));
      startAgent(node);
    }
    await eventually('both subnet files', 30_000, () => ['k1', 'k2'].every((n) => existsSync(subnetFile(n))));
    await addPod('k1', 'a');
    await addPod('k2', 'b');
    await eventually('k2 reaches k1\'s pod', 15_000, () => ping(pods.get('k2-b')!.ns, pods.get('k1-a')!.ip));
  }, 90_000);
  afterAll(async () => {
    for (const p of [...agents.values(), ...bridges]) p.kill('SIGKILL');
    apiBridge?.close();
    await kube?.close();
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a Node whose InternalIP changes republishes its public IP with the same VTEP MAC; the peer follows', async () => {
    const before = JSON.parse(kube.getNode('k1')!.metadata.annotations![`${ANN}/backend-data`]!) as { VtepMAC: string };
    const oldIP = topo.nodes[0]!.ip;
    const newIP = oldIP.replace(/\.\d+$/, '.30');
    await restartAgent('k1', () => {
      execFileSync('ip', ['-n', ns('k1'), 'addr', 'del', `${oldIP}/24`, 'dev', 'eth0']);
      execFileSync('ip', ['-n', ns('k1'), 'addr', 'add', `${newIP}/24`, 'dev', 'eth0']);
      execFileSync('ip', ['-n', ns('k1'), 'route', 'replace', 'default', 'via', oldIP.replace(/\.\d+$/, '.1')]);
    });
    const ann = kube.getNode('k1')!.metadata.annotations!;
    expect(ann[`${ANN}/public-ip`]).toBe(newIP);
    expect((JSON.parse(ann[`${ANN}/backend-data`]!) as { VtepMAC: string }).VtepMAC).toBe(before.VtepMAC);
    expect(readFileSync(subnetFile('k1'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.1.1/24');
    await eventually('k2 points k1\'s VTEP at the new address', 5000, () => sh('k2', 'bridge', ['fdb', 'show', 'dev', 'flannel.1']).includes(`${before.VtepMAC} dst ${newIP}`));
    expect(sh('k2', 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain(oldIP);
    // The neighbour entry for k1's VTEP kept its MAC: nothing in k2's ARP table moved.
    expect(sh('k2', 'ip', ['neigh', 'show', 'dev', 'flannel.1'])).toContain(`10.244.1.0 lladdr ${before.VtepMAC}`);
    await eventually('k2\'s pod reaches k1\'s pod', 5000, () => ping(pods.get('k2-b')!.ns, pods.get('k1-a')!.ip));
  });

  it('a Node whose podCIDR is reassigned: cni0 moves to the new gateway once the old pods are gone, and names them until then', async () => {
    await restartAgent('k1', () => {
      kube.setPodCIDR('k1', '10.244.3.0/24');
    });
    expect(readFileSync(subnetFile('k1'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.3.1/24');
    const old = pods.get('k1-a')!;
    const probeNs = addPodNamespace(topo, 'k1-probe');
    const refused = await cni('k1', 'ADD', 'k1-probe', probeNs);
    expect(refused.code).not.toBe(0);
    const msg = String(refused.json?.msg);
    expect(msg).toContain(old.id);
    expect(msg).toContain(old.ip);
    expect(msg).toContain('10.244.1.1/24');
    // The refused ADD left nothing behind in the probe netns.
    expect(execFileSync('ip', ['-n', probeNs, '-o', 'link'], { encoding: 'utf8' })).not.toContain('eth0');
    expect((await cni('k1', 'DEL', old.id, old.ns)).code).toBe(0);
    const fresh = await addPod('k1', 'fresh');
    expect(fresh.ip).toMatch(/^10\.244\.3\./);
    const addrs = sh('k1', 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    expect(addrs).toContain('10.244.3.1/24');
    expect(addrs).not.toContain('10.244.1.1/24');
    await eventually('k2 routes the new podCIDR', 10_000, () => nexthopRoute('10.244.3.0/24', '10.244.3.0', 'flannel.1').test(sh('k2', 'ip', ['route'])));
    await eventually('k2\'s pod reaches the pod on the new podCIDR', 5000, () => ping(pods.get('k2-b')!.ns, fresh.ip));
  });

  it('a Node re-created while the agent runs: same podCIDR, annotations and NetworkUnavailable=False published again; another podCIDR, the agent exits for a restart that takes it', async () => {
    const agent = agents.get('k1')!;
    const networkUnavailable = () => kube.getNode('k1')?.status.conditions?.find((c) => c.type === 'NetworkUnavailable')?.status;
    await eventually('k1 marked its network available at start', 10_000, () => networkUnavailable() === 'False');
    kube.deleteNode('k1');
    kube.addNode('k1', '10.244.3.0/24');
    // What a kubelet whose cloud provider configures routes writes into a new Node (and the node
    // lifecycle controller then taints it network-unavailable): flannel's CompleteLease clears it.
    kube.setCondition('k1', { type: 'NetworkUnavailable', status: 'True', reason: 'NoRouteCreated' });
    await eventually('k1 published its annotations again', 10_000, () => kube.getNode('k1')?.metadata.annotations?.[`${ANN}/public-ip`] !== undefined);
    expect(log('k1')).toContain('publishing them again');
    await eventually('the re-created Node marked NetworkUnavailable=False again', 10_000, () => networkUnavailable() === 'False');
    await eventually('k2 routes k1 again', 10_000, () => nexthopRoute('10.244.3.0/24', '10.244.3.0', 'flannel.1').test(sh('k2', 'ip', ['route'])));
    expect(agent.exitCode).toBeNull();

    kube.deleteNode('k1');
    kube.addNode('k1', '10.244.4.0/24');
    await eventually('k1\'s agent exited', 10_000, () => agent.exitCode !== null);
    expect(agent.exitCode).toBe(1);
    expect(log('k1')).toContain('pod CIDR changed from 10.244.3.0/24 to 10.244.4.0/24');
    // What the DaemonSet does: start it again.
    startAgent('k1');
    await eventually('k1\'s agent wrote its subnet file', 30_000, () => log('k1').includes('wrote subnet file'));
    expect(readFileSync(subnetFile('k1'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.4.1/24');
    await eventually('k2 routes the new podCIDR', 10_000, () => nexthopRoute('10.244.4.0/24', '10.244.4.0', 'flannel.1').test(sh('k2', 'ip', ['route'])));
  });
});
