// A node's day-2 events on a two-node netns cluster with a real etcd, each
// one with pods kept reachable: agent restarts that keep pods masqueraded,
// an MTU raise, an underlay address change, a deleted lease, a wiped etcd
// and a subnet that changes under the bridge. The tests run in order on one
// cluster; each leaves it healthy for the next.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AGENT_BIN, Cluster, PLUGIN_BIN, type Pod } from '../../src/demo/cluster.js';
import { isRoot } from '../helpers/netns.js';
import { haveEtcd } from '../helpers/etcd.js';
import { requireOrSkip } from '../helpers/require.js';
import { startPing, stopPing } from '../helpers/ping.js';
import { eventually } from '../helpers/eventually.js';

const RESYNC_SECONDS = 2;
const GRACE_SECONDS = 10;
const OUTSIDE_PORT = 9099;



const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a command asynchronously: the etcd bridge of the agents lives in this process. */
function runAsync(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe.skipIf(requireOrSkip('day2', { root: isRoot, etcd: haveEtcd }))('day-2 events on a two-node etcd cluster', () => {
  let cluster: Cluster;
  let a: Pod; // on n1
  let b: Pod; // on n2
  const ns = (node: string) => cluster.node(node).ns;
  const sh = (node: string, cmd: string, args: string[]) => execFileSync('ip', ['netns', 'exec', ns(node), cmd, ...args], { encoding: 'utf8' });
  const subnetOf = (node: string) => /FLANNEL_SUBNET=(\S+)/.exec(readFileSync(cluster.subnetFile(node), 'utf8'))![1]!;
  const netOf = (node: string) => subnetOf(node).replace(/\.1\/24$/, '.0/24');
  const keyOf = (net: string) => `/coreos.com/network/subnets/${net.replace('/', '-')}`;
  const vtepMac = (node: string) => (JSON.parse(sh(node, 'ip', ['-j', 'link', 'show', 'flannel.1'])) as { address: string }[])[0]!.address;
  const pingOnce = (from: Pod, to: Pod) => runAsync('ip', ['netns', 'exec', from.ns, 'ping', '-c1', '-W2', to.ip]).then((r) => r.code === 0);

  async function restartAgent(node: string, signal: NodeJS.Signals = 'SIGTERM', between?: () => Promise<void>): Promise<void> {
    await cluster.stopAgent(node, signal);
    await between?.();
    await cluster.startAgent(node);
    await eventually(`${node}'s agent wrote its subnet file`, 30_000, () => cluster.agentLog(node).includes('wrote subnet file'));
  }

  beforeAll(async () => {
    cluster = new Cluster({
      prefix: `tsfd2${randomBytes(2).toString('hex')}`,
      nodes: [
        { name: 'n1', segment: 'a' },
        { name: 'n2', segment: 'b' },
      ],
      resyncSeconds: RESYNC_SECONDS,
      // The default lease TTL (24 h) on purpose: renewal then runs only once a minute.
      extraAgentArgs: ['--store-loss-grace', String(GRACE_SECONDS)],
    });
    await cluster.start();
    a = await cluster.addPod('n1', 'a');
    b = await cluster.addPod('n2', 'b');
    await eventually('a reaches b', 15_000, () => pingOnce(a, b));
  }, 90_000);
  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail' || !cluster) return;
    for (const node of ['n1', 'n2']) console.log(`--- ${node} agent log (tail)\n${cluster.agentLog(node).split('\n').slice(-25).join('\n')}`);
  });
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('keeps masquerade rules across SIGTERM and SIGKILL restarts: every new pod connection to the outside leaves with the node address, none lost', async () => {
    const outside = cluster.topo!.outsideNs;
    const receiver = spawn('ip', ['netns', 'exec', outside, process.execPath, '-e', `
      const s = require('node:dgram').createSocket('udp4');
      s.on('message', (m, r) => process.stdout.write(r.address + ' ' + m + '\\n'));
      s.bind(${OUTSIDE_PORT}, () => process.stdout.write('ready\\n'));`]);
    let received = '';
    receiver.stdout.on('data', (d: Buffer) => (received += d.toString()));
    await eventually('receiver ready', 10_000, () => received.includes('ready'));
    // A new socket (a new source port, so a new conntrack entry that NAT
    // decides afresh) every 20 ms, numbered.
    const sender = spawn('ip', ['netns', 'exec', a.ns, process.execPath, '-e', `
      const dgram = require('node:dgram'); let n = 0;
      setInterval(() => { const s = dgram.createSocket('udp4'); s.send(String(n++), ${OUTSIDE_PORT}, '${cluster.topo!.outsideIP}', () => s.close()); }, 20);`]);
    try {
      await sleep(500);
      for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
        await restartAgent('n1', signal, async () => {
          // The agent is gone; its rules are not.
          expect(sh('n1', 'iptables', ['-t', 'nat', '-S', 'POSTROUTING'])).toContain('-j FLANNEL-POSTRTG');
          expect(sh('n1', 'iptables', ['-S', 'FORWARD'])).toContain('-j FLANNEL-FWD');
          await sleep(300);
        });
        await sleep(300);
      }
    } finally {
      sender.kill('SIGKILL');
      await sleep(300);
      receiver.kill('SIGKILL');
    }
    const lines = received.split('\n').filter((l) => /^\S+ \d+$/.test(l));
    const sources = new Set(lines.map((l) => l.split(' ')[0]));
    const seqs = lines.map((l) => Number(l.split(' ')[1])).sort((x, y) => x - y);
    const missing = seqs.length > 0 ? seqs[seqs.length - 1]! - seqs[0]! + 1 - seqs.length : -1;
    console.log(`[day2] masquerade across 2 agent restarts: ${lines.length} new connections, sources ${[...sources].join(',')}, ${missing} missing`);
    expect(lines.length).toBeGreaterThan(50);
    expect([...sources]).toEqual([cluster.node('n1').ip]);
    expect(missing).toBe(0);
  });

  it('raises cni0 to a raised FLANNEL_MTU at the next ADD; the old pod keeps working and doctor names it', async () => {
    const seg = `${cluster.topo!.prefix}-sega`;
    execFileSync('ip', ['-n', seg, 'link', 'set', 'n1', 'mtu', '9000']);
    execFileSync('ip', ['-n', ns('n1'), 'link', 'set', 'eth0', 'mtu', '9000']);
    await restartAgent('n1');
    expect(readFileSync(cluster.subnetFile('n1'), 'utf8')).toContain('FLANNEL_MTU=8950');
    const mtuOf = (node: string, dev: string, podNs?: string) =>
      (JSON.parse(execFileSync('ip', ['-n', podNs ?? ns(node), '-j', 'link', 'show', dev], { encoding: 'utf8' })) as { mtu: number }[])[0]!.mtu;
    expect(mtuOf('n1', 'cni0')).toBe(1450);
    const big = await cluster.addPod('n1', 'big');
    expect(mtuOf('n1', 'cni0')).toBe(8950);
    expect(mtuOf('n1', 'eth0', big.ns)).toBe(8950);
    expect(mtuOf('n1', 'eth0', a.ns)).toBe(1450);
    // Routed to at its own MTU, so too large a packet from another node gets "fragmentation needed".
    expect(sh('n1', 'ip', ['route', 'show', `${a.ip}/32`])).toContain('mtu 1450');
    // Old and new pods talk to each other (through the bridge, at the old pod's size) and across nodes.
    expect(await pingOnce(a, big)).toBe(true);
    expect(await pingOnce(big, a)).toBe(true);
    expect(await pingOnce(a, b)).toBe(true);
    expect(await pingOnce(big, b)).toBe(true);
    expect(sh('n1', 'ping', ['-c1', '-W2', '-M', 'do', '-s', String(8950 - 28), big.ip])).toContain('1 received');

    const doctor = await runAsync('ip', ['netns', 'exec', ns('n1'), PLUGIN_BIN, 'doctor', '--json', '--subnet-file', cluster.subnetFile('n1'),
      '--data-dir', join(cluster.nodeDir('n1'), 'networks'), '--etcd-endpoints', 'http://127.0.0.1:2379']);
    const mtu = (JSON.parse(doctor.stdout) as { checks: { id: string; status: string; message: string; details?: string[] }[] }).checks.find((c) => c.id === 'mtu')!;
    expect(mtu.status).toBe('warn');
    expect(mtu.message).toContain(a.containerId);
    expect(mtu.message).not.toContain(big.containerId);
  });

  it('updates its lease in place when the underlay address changes: same subnet and VTEP MAC, never a route to itself, peers follow', async () => {
    const net = netOf('n1');
    const mac = vtepMac('n1');
    const oldIP = cluster.node('n1').ip;
    const newIP = oldIP.replace(/\.\d+$/, '.20');
    await restartAgent('n1', 'SIGTERM', async () => {
      execFileSync('ip', ['-n', ns('n1'), 'addr', 'del', `${oldIP}/24`, 'dev', 'eth0']);
      execFileSync('ip', ['-n', ns('n1'), 'addr', 'add', `${newIP}/24`, 'dev', 'eth0']);
      execFileSync('ip', ['-n', ns('n1'), 'route', 'replace', 'default', 'via', oldIP.replace(/\.\d+$/, '.1')]);
    });
    cluster.node('n1').ip = newIP;
    cluster.node('n1').cidr = `${newIP}/24`;
    expect(netOf('n1')).toBe(net);
    expect(vtepMac('n1')).toBe(mac);
    const stored = await cluster.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/']);
    expect(stored).toContain(keyOf(net));
    expect(stored.split('\n').filter((l) => l.includes(mac))).toHaveLength(1);
    expect(stored).toContain(`"PublicIP":"${newIP}"`);
    expect(stored).not.toContain(`"PublicIP":"${oldIP}"`);
    // Our own subnet stays on cni0, never behind flannel.1.
    const routes = sh('n1', 'ip', ['route']);
    expect(routes).not.toMatch(new RegExp(`^${net.replace(/\./g, '\\.')} .*flannel`, 'm'));
    expect(routes).toMatch(new RegExp(`^${net.replace(/\./g, '\\.')} dev cni0`, 'm'));
    const ms = Date.now();
    await eventually('n2 points n1\'s VTEP at the new address', RESYNC_SECONDS * 1000 + 2000, () =>
      sh('n2', 'bridge', ['fdb', 'show', 'dev', 'flannel.1']).includes(`${mac} dst ${newIP}`));
    console.log(`[day2] address change ${oldIP} -> ${newIP}: peer followed in ${Date.now() - ms} ms after the agent wrote its file`);
    expect(sh('n2', 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain(oldIP);
    // n1 rebuilt flannel.1 for its new address and programs n2 again a moment after its subnet file.
    await eventually('b reaches a', 5000, () => pingOnce(b, a));
    const c = await cluster.addPod('n1', 'c');
    expect(await pingOnce(b, c)).toBe(true);
  });

  it('asks for its previous subnet again after its lease was deleted ("found previously leased subnet, reusing")', async () => {
    const net = netOf('n1');
    await restartAgent('n1', 'SIGKILL', async () => {
      await cluster.etcdctl(['del', keyOf(net)]);
    });
    expect(netOf('n1')).toBe(net);
    expect(cluster.agentLog('n1')).toContain('found previously leased subnet, reusing');
    await eventually('b reaches a again', 10_000, () => pingOnce(b, a));
  });

  it('loses under 2 s of pings when etcd is wiped and restored from nothing: agents keep their peers and re-register at once', async () => {
    const nets = ['n1', 'n2'].map(netOf);
    const pinger = startPing(b, a);
    await sleep(1000);
    const started = Date.now();
    await cluster.wipeEtcd();
    const restored = Date.now();
    const back = await eventually('both leases back in the store', 20_000, async () => {
      const out = await cluster.etcdctl(['get', '--prefix', '--keys-only', '/coreos.com/network/subnets/']);
      return nets.every((n) => out.includes(keyOf(n))) ? Date.now() : false;
    });
    await sleep(1000);
    const stats = await stopPing(pinger);
    console.log(`[day2] etcd wipe: etcd down ${restored - started} ms, leases re-registered ${back - restored} ms after restore; ` +
      `${stats.sent} pings at 10/s, ${stats.lost} lost (${stats.lost * 100} ms)`);
    expect(stats.sent).toBeGreaterThan(20);
    expect(stats.lost).toBeLessThan(20);
    expect(['n1', 'n2'].map(netOf)).toEqual(nets);
    expect(cluster.agentLog('n1')).toContain('re-registering now');
    // After the grace period the kernel matches the store again, peers included.
    await sleep(GRACE_SECONDS * 1000);
    expect(await pingOnce(a, b)).toBe(true);
    expect(cluster.agentLog('n1')).toContain('store-loss grace period over');
  }, 60_000);

  it('moves cni0 to the new gateway when the subnet changes, once no pod holds an old address, and names the pods until then', async () => {
    const oldNet = netOf('n1');
    // Someone else holds our subnet by the time we come back: we get another one.
    await restartAgent('n1', 'SIGKILL', async () => {
      await cluster.etcdctl(['del', keyOf(oldNet)]);
      await cluster.etcdctl(['put', keyOf(oldNet), JSON.stringify({ PublicIP: '192.168.78.99', BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:99' } })]);
    });
    const newGateway = subnetOf('n1');
    expect(netOf('n1')).not.toBe(oldNet);
    const pods = cluster.pods.filter((p) => p.node === 'n1');
    const add = (id: string) => cluster.plugin('n1', { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_NETNS: `/var/run/netns/${a.ns}`, CNI_IFNAME: 'eth9' });
    const refused = await add('n1-probe');
    expect(refused.code).not.toBe(0);
    const err = JSON.parse(refused.stdout) as { msg: string; details?: string };
    for (const p of pods) expect(err.msg).toContain(p.containerId);
    expect(err.msg).toContain(oldNet.replace('.0/24', '.1/24'));
    for (const p of pods) await cluster.deletePod(p);
    const fresh = await cluster.addPod('n1', 'fresh');
    const addrs = sh('n1', 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    expect(addrs).toContain(newGateway);
    expect(addrs).not.toContain(oldNet.replace('.0/24', '.1/24'));
    await eventually('b reaches the pod on the new subnet', 10_000, () => pingOnce(b, fresh));
    await cluster.etcdctl(['del', keyOf(oldNet)]);
    a = fresh;
  });

  it('tsflanneld --cleanup removes FLANNEL-POSTRTG and FLANNEL-FWD and their jumps, and its nexthops with their routes', async () => {
    await cluster.stopAgent('n1', 'SIGTERM');
    expect(sh('n1', 'iptables', ['-t', 'nat', '-S'])).toContain('FLANNEL-POSTRTG');
    // a stopped agent leaves its routes; somebody else's nexthop sits next to ours
    expect(sh('n1', 'ip', ['-4', 'route', 'show', 'dev', 'flannel.1'])).toMatch(/ nhid \d+ via /);
    expect(sh('n1', 'ip', ['nexthop', 'show', 'protocol', '157'])).toContain('dev flannel.1');
    sh('n1', 'ip', ['nexthop', 'add', 'id', '4242', 'via', '10.244.250.0', 'dev', 'flannel.1', 'onlink', 'proto', 'static']);
    const out = await runAsync('ip', ['netns', 'exec', ns('n1'), AGENT_BIN, '--cleanup', '--subnet-file', cluster.subnetFile('n1')]);
    expect(out.code, out.stderr).toBe(0);
    expect(sh('n1', 'iptables', ['-t', 'nat', '-S'])).not.toContain('FLANNEL');
    expect(sh('n1', 'iptables', ['-S'])).not.toContain('FLANNEL');
    expect(sh('n1', 'ip', ['nexthop', 'show', 'protocol', '157']).trim()).toBe('');
    expect(sh('n1', 'ip', ['-4', 'route', 'show', 'dev', 'flannel.1'])).not.toContain('nhid');
    expect(sh('n1', 'ip', ['nexthop', 'show', 'id', '4242'])).toContain('proto static');
    sh('n1', 'ip', ['nexthop', 'del', 'id', '4242']);
  });
});
