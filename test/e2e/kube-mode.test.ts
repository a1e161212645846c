// tsflanneld with --kube-subnet-mgr on two node namespaces, against a
// Kubernetes-API-shaped server: leases from spec.podCIDR, flannel's
// annotations published, the overlay built from the other Node's
// annotations, and no entry flushed while the watch breaks and errors.
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
import { callPlugin } from '../helpers/plugin.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { nexthopRoute } from '../helpers/nexthops.js';
import { appendLog } from '../helpers/agent-log.js';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const BRIDGE = fileURLToPath(new URL('../../build/demo/port-bridge.js', import.meta.url));
const PODCIDR: Record<string, string> = { k1: '10.244.1.0/24', k2: '10.244.2.0/24' };


describe.skipIf(requireOrSkip('kube mode', { root: isRoot }))('tsflanneld in Kubernetes mode', () => {
  let topo: Topology;
  let kube: FakeKube;
  let apiBridge: Server;
  let dir = '';
  const procs: ChildProcess[] = [];
  const ns = (node: string) => topo.nodes.find((n) => n.name === node)!.ns;
  const routes = (node: string) => execFileSync('ip', ['-n', ns(node), 'route'], { encoding: 'utf8' });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-kube-'));
    topo = buildTopology(`tsfkb${randomBytes(2).toString('hex')}`, [{ name: 'k1', segment: 'a' }, { name: 'k2', segment: 'a' }]);
    kube = await FakeKube.start();
    kube.addNode('k1', PODCIDR.k1);
    kube.addNode('k2', PODCIDR.k2);
    const sock = join(dir, 'api.sock');
    apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(kube.url).port));
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
    for (const node of ['k1', 'k2']) {
      mkdirSync(join(dir, node));
      const bridge = spawn('ip', ['netns', 'exec', ns(node), process.execPath, BRIDGE, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(bridge);
      await new Promise((r) => bridge.stdout!.once('data', r));
      const agent = spawn('ip', ['netns', 'exec', ns(node), AGENT, '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443',
        '--net-config-path', netConf, '--node-name', node, '--iface', 'eth0', '--subnet-file', join(dir, node, 'subnet.env'),
        '--cni-socket', join(dir, node, 'cni.sock'), '--resync-period', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
      agent.stderr!.on('data', appendLog(join(dir, node, 'agent.log')));
      procs.push(agent);
    }
    await eventually('both subnet files', 30_000, () => ['k1', 'k2'].every((n) => existsSync(join(dir, n, 'subnet.env'))));
  }, 90_000);
  afterAll(async () => {
    for (const p of procs) p.kill('SIGKILL');
    apiBridge?.close();
    await kube?.close();
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  });

  it('leases the podCIDR and publishes flannel annotations on its Node', () => {
    expect(readFileSync(join(dir, 'k1', 'subnet.env'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.1.1/24');
    const ann = kube.getNode('k1')!.metadata.annotations!;
    expect(ann['flannel.alpha.coreos.com/backend-type']).toBe('vxlan');
    expect(ann['flannel.alpha.coreos.com/public-ip']).toBe(topo.nodes[0].ip);
    expect(ann['flannel.alpha.coreos.com/kube-subnet-manager']).toBe('true');
    const mac = execFileSync('ip', ['-n', ns('k1'), '-j', 'link', 'show', 'flannel.1'], { encoding: 'utf8' });
    const data = JSON.parse(ann['flannel.alpha.coreos.com/backend-data']) as { VNI: number; VtepMAC: string };
    expect(data.VNI).toBe(1);
    expect(mac).toContain(data.VtepMAC);
  });

  it('routes pods between the two nodes', async () => {
    await eventually('k1 routes k2', 10_000, () => nexthopRoute('10.244.2.0/24', '10.244.2.0', 'flannel.1').test(routes('k1')));
    const pods: { ns: string; ip: string }[] = [];
    for (const node of ['k1', 'k2']) {
      const podNs = addPodNamespace(topo, `${node}-pod`);
      const out = await callPlugin({
        nodeNs: ns(node), command: 'ADD', containerId: `${node}-pod`, netns: `/var/run/netns/${podNs}`, ifname: 'eth0',
        stdin: { cniVersion: '1.0.0', name: 'cbr0', type: 'tsflannel', subnetFile: join(dir, node, 'subnet.env'), dataDir: join(dir, node, 'ipam') },
      });
      expect(out.code, out.stdout).toBe(0);
      pods.push({ ns: podNs, ip: (out.json!.ips as { address: string }[])[0].address.split('/')[0] });
    }
    expect(execFileSync('ip', ['netns', 'exec', pods[0].ns, 'ping', '-c2', '-W2', pods[1].ip], { encoding: 'utf8' })).toContain('2 received');
  });

  it('keeps every entry while the watch breaks and the API errors, then converges', async () => {
    let flushed = false;
    const sampler = setInterval(() => {
      if (!nexthopRoute('10.244.2.0/24', '10.244.2.0', 'flannel.1').test(routes('k1'))) flushed = true;
    }, 50);
    try {
      kube.failNextRequests(6, 500);
      kube.closeWatches('abrupt');
      await new Promise((r) => setTimeout(r, 3000));
      kube.closeWatches('graceful');
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      clearInterval(sampler);
    }
    expect(flushed).toBe(false);
    // After the storm, a change is still seen: k2 leaves and k1 drops it.
    kube.deleteNode('k2');
    await eventually('k2 removed from k1', 15_000, () => !routes('k1').includes('10.244.2.0/24'));
    const fdb = execFileSync('bridge', ['-n', ns('k1'), 'fdb', 'show', 'dev', 'flannel.1'], { encoding: 'utf8' });
    expect(fdb).not.toContain(topo.nodes[1].ip);
  });
});
