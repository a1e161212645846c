// The wireguard backend with --kube-subnet-mgr: two node namespaces against
// a Kubernetes-API-shaped server. Each node publishes its public key in
// flannel's backend-data annotation ({"PublicKey":"..."}, backend-type
// wireguard), builds its peer from the other Node's annotations, and the
// two nodes reach each other through flannel-wg.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTopology, destroyTopology, type Topology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { parseDump } from '../../src/daemon/backend/wireguard-peers.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { appendLog } from '../helpers/agent-log.js';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const BRIDGE = fileURLToPath(new URL('../../build/demo/port-bridge.js', import.meta.url));
const PODCIDR: Record<string, string> = { k1: '10.244.1.0/24', k2: '10.244.2.0/24' };
const runnable = isRoot && existsSync('/usr/bin/wg') && existsSync('/usr/bin/wireguard-go');


describe.skipIf(requireOrSkip('wireguard-kube', { 'root, wg and wireguard-go (or kernel WireGuard)': runnable }))('the wireguard backend in Kubernetes mode', () => {
  let topo: Topology;
  let kube: FakeKube;
  let apiBridge: Server;
  let dir = '';
  const procs: ChildProcess[] = [];
  const holders = new Map<string, ChildProcess>();
  const node = (name: string) => topo.nodes.find((n) => n.name === name)!;
  // Asynchronous: the API bridge's root end lives in this process.
  const inNode = (name: string, cmd: string, args: string[]) =>
    new Promise<string>((resolve, reject) =>
      execFile('nsenter', [`--mount=/proc/${holders.get(name)!.pid}/ns/mnt`, `--net=${node(name).nsPath}`, cmd, ...args], { encoding: 'utf8' }, (err, out) =>
        err ? reject(err) : resolve(out),
      ),
    );
  const dump = async (name: string) => parseDump(await inNode(name, 'wg', ['show', 'flannel-wg', 'dump']));
  const annotations = (name: string) => kube.getNode(name)!.metadata.annotations!;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-wgkube-'));
    topo = buildTopology(`tsfwk${randomBytes(2).toString('hex')}`, [{ name: 'k1', segment: 'a' }, { name: 'k2', segment: 'b' }]);
    kube = await FakeKube.start();
    kube.addNode('k1', PODCIDR.k1);
    kube.addNode('k2', PODCIDR.k2);
    const sock = join(dir, 'api.sock');
    apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(kube.url).port));
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'wireguard', PersistentKeepaliveInterval: 25 } }));
    for (const name of ['k1', 'k2']) {
      mkdirSync(join(dir, name));
      // One node, one /run/wireguard (see src/demo/cluster.ts).
      const hold = join(dir, name, 'mount-ns.hold');
      writeFileSync(hold, '');
      const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c',
        'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0700 tsflannel-wg /run/wireguard && echo ready && exec tail -f "$0"', hold], { stdio: ['ignore', 'pipe', 'inherit'] });
      holders.set(name, holder);
      procs.push(holder);
      await new Promise((r) => holder.stdout!.once('data', r));
      const bridge = spawn('ip', ['netns', 'exec', node(name).ns, process.execPath, BRIDGE, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(bridge);
      await new Promise((r) => bridge.stdout!.once('data', r));
      const agent = spawn('nsenter', [`--mount=/proc/${holder.pid}/ns/mnt`, 'ip', 'netns', 'exec', node(name).ns, AGENT,
        '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443', '--net-config-path', netConf, '--node-name', name,
        '--iface', 'eth0', '--subnet-file', join(dir, name, 'subnet.env'), '--resync-period', '2', '--cni-socket', ''],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WIREGUARD_KEY_FILE: join(dir, name, 'wgkey') } });
      agent.stderr!.on('data', appendLog(join(dir, name, 'agent.log')));
      procs.push(agent);
    }
    await eventually('both subnet files', 30_000, () => ['k1', 'k2'].every((n) => existsSync(join(dir, n, 'subnet.env'))));
  }, 90_000);

  afterAll(async () => {
    for (const p of procs) p.kill('SIGKILL');
    for (const n of topo?.nodes ?? []) {
      const pids = spawnSync('ip', ['netns', 'pids', n.ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGTERM');
        } catch {
          // gone
        }
      }
    }
    apiBridge?.close();
    await kube?.close();
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  });

  it("publishes flannel's wireguard annotations: backend-type wireguard, backend-data {\"PublicKey\":...} = the device's key", async () => {
    for (const name of ['k1', 'k2']) {
      await eventually(`${name} annotated`, 15_000, () => annotations(name)['flannel.alpha.coreos.com/backend-type'] === 'wireguard');
      const ann = annotations(name);
      expect(ann['flannel.alpha.coreos.com/public-ip']).toBe(node(name).ip);
      const data = JSON.parse(ann['flannel.alpha.coreos.com/backend-data']!) as Record<string, unknown>;
      expect(Object.keys(data)).toEqual(['PublicKey']);
      expect(data.PublicKey).toBe((await dump(name)).publicKey);
    }
  });

  it("builds each node's peer from the other Node's annotations, and the nodes talk through flannel-wg", async () => {
    const key = (name: string) => (JSON.parse(annotations(name)['flannel.alpha.coreos.com/backend-data']!) as { PublicKey: string }).PublicKey;
    await eventually('peers on both nodes', 15_000, async () => (await dump('k1')).peers.length === 1 && (await dump('k2')).peers.length === 1);
    const p1 = (await dump('k1')).peers[0]!;
    expect([p1.publicKey, p1.endpoint, p1.allowedIPs, p1.persistentKeepalive]).toEqual([key('k2'), `${node('k2').ip}:51820`, [PODCIDR.k2], 25]);
    const p2 = (await dump('k2')).peers[0]!;
    expect([p2.publicKey, p2.endpoint, p2.allowedIPs]).toEqual([key('k1'), `${node('k1').ip}:51820`, [PODCIDR.k1]]);
    // k1's host reaches k2's flannel-wg address (10.244.2.0) from its own (10.244.1.0), through the tunnel.
    await eventually('k1 -> k2 through flannel-wg', 15_000, () => spawnSync('ip', ['netns', 'exec', node('k1').ns, 'ping', '-c1', '-W1', '10.244.2.0']).status === 0);
    expect((await dump('k1')).peers[0]!.latestHandshake).toBeGreaterThan(0);
  });
});
