// Three node namespaces on the wireguard backend with a real etcd and
// tsflanneld on every node: flannel-wg on kernel WireGuard when the kernel
// has it, wireguard-go otherwise (this machine), one peer per remote lease,
// pod traffic encrypted on the underlay, and the peers follow hand-made
// damage, agent restarts and nodes that leave.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Cluster, PLUGIN_BIN, type Pod } from '../../src/demo/cluster.js';
import { parseDump, type DeviceDump } from '../../src/daemon/backend/wireguard-peers.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually, timeUntil } from '../helpers/eventually.js';

const have = (bin: string) => existsSync(bin);
const runnable = isRoot && have('/usr/bin/etcd') && have('/usr/bin/wg') && have('/usr/bin/tcpdump') && (have('/usr/bin/wireguard-go') || kernelHasWireguard());

function kernelHasWireguard(): boolean {
  const ns = `tsfwgprobe${randomBytes(2).toString('hex')}`;
  if (spawnSync('ip', ['netns', 'add', ns]).status !== 0) return false;
  try {
    return spawnSync('ip', ['-n', ns, 'link', 'add', 'probe', 'type', 'wireguard']).status === 0;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

function ping(fromNs: string, ip: string): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c1', '-W3', ip]).status === 0;
}


interface EtcdLease {
  subnet: string;
  publicIP: string;
  publicKey: string;
}

describe.skipIf(requireOrSkip('wireguard', { 'root, wg and wireguard-go (or kernel WireGuard)': runnable }))('a three-node cluster on the wireguard backend', () => {
  const resyncSeconds = 3;
  const cluster = new Cluster({
    prefix: `tsfwg${randomBytes(2).toString('hex')}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
      { name: 'n3', segment: 'b' },
    ],
    netConf: { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'wireguard' } },
    resyncSeconds,
  });
  const nodes = ['n1', 'n2', 'n3'];
  const kernelWg = isRoot ? kernelHasWireguard() : false;

  const dump = async (node: string): Promise<DeviceDump> => parseDump(await cluster.nodeExec(node, 'wg', ['show', 'flannel-wg', 'dump']));
  const pod = (node: string, name = 'p1'): Pod => cluster.pods.find((p) => p.node === node && p.name === name)!;
  async function leases(): Promise<Map<string, EtcdLease>> {
    const out = await cluster.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/']);
    const lines = out.split('\n').filter(Boolean);
    const byIP = new Map<string, EtcdLease>();
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const subnet = lines[i].split('/').pop()!.replace('-', '/');
      const v = JSON.parse(lines[i + 1]) as { PublicIP: string; BackendType: string; BackendData: { PublicKey: string } };
      expect(v.BackendType).toBe('wireguard');
      byIP.set(v.PublicIP, { subnet, publicIP: v.PublicIP, publicKey: v.BackendData.PublicKey });
    }
    return byIP;
  }
  const leaseOf = async (node: string): Promise<EtcdLease> => (await leases()).get(cluster.node(node).ip)!;

  beforeAll(async () => {
    await cluster.start();
    for (const node of nodes) {
      await cluster.addPod(node, 'p1');
      await cluster.addPod(node, 'p2');
    }
    // Every node holds a peer for each of the two others.
    await eventually('a full mesh of peers', 20_000, async () => {
      for (const n of nodes) if ((await dump(n)).peers.length !== 2) return false;
      return true;
    });
  }, 120_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it(`runs flannel-wg on ${kernelWg ? 'kernel WireGuard' : 'wireguard-go'} with the key file's key, port 51820 and MTU 1500 - 60`, async () => {
    for (const node of nodes) {
      const link = execFileSync('ip', ['-n', cluster.node(node).ns, '-d', 'link', 'show', 'flannel-wg'], { encoding: 'utf8' });
      expect(link).toContain(kernelWg ? 'wireguard' : 'tun type tun');
      expect(link).toContain('mtu 1440');
      expect(readFileSync(cluster.subnetFile(node), 'utf8')).toContain('FLANNEL_MTU=1440');
      const keyFile = cluster.wireguardKeyFile(node);
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      const d = await dump(node);
      expect(d.listenPort).toBe(51820);
      expect(d.privateKey).toBe(readFileSync(keyFile, 'utf8').trim());
      expect(d.publicKey).toBe((await leaseOf(node)).publicKey);
      const lease = await leaseOf(node);
      const addr = execFileSync('ip', ['-n', cluster.node(node).ns, '-4', 'addr', 'show', 'flannel-wg'], { encoding: 'utf8' });
      expect(addr).toContain(`inet ${lease.subnet.replace('/24', '/32')}`);
      const routes = execFileSync('ip', ['-n', cluster.node(node).ns, 'route'], { encoding: 'utf8' });
      expect(routes).toContain('10.244.0.0/16 dev flannel-wg scope link');
    }
  });

  it('gives every node one peer per other node: its published key, endpoint public IP:51820, its subnet as allowed IPs', async () => {
    const all = await leases();
    expect(all.size).toBe(3);
    for (const node of nodes) {
      const d = await dump(node);
      const want = [...all.values()]
        .filter((l) => l.publicIP !== cluster.node(node).ip)
        .map((l) => ({ key: l.publicKey, endpoint: `${l.publicIP}:51820`, allowed: [l.subnet] }))
        .sort((a, b) => a.key.localeCompare(b.key));
      const got = d.peers.map((p) => ({ key: p.publicKey, endpoint: p.endpoint, allowed: p.allowedIPs })).sort((a, b) => a.key.localeCompare(b.key));
      expect(got).toEqual(want);
    }
  });

  it('every pod pings every other pod, in both directions (30 pairs)', () => {
    const failures: string[] = [];
    for (const from of cluster.pods) {
      for (const to of cluster.pods) {
        if (from !== to && !ping(from.ns, to.ip)) failures.push(`${from.containerId} -> ${to.containerId} (${to.ip})`);
      }
    }
    expect(cluster.pods).toHaveLength(6);
    expect(failures).toEqual([]);
  });

  it('a full-size packet (pod MTU 1440, DF set) crosses flannel-wg: 60 bytes of IPv4 WireGuard overhead is exact', () => {
    // 1412 bytes of ICMP payload + 8 ICMP + 20 IP = 1440; outer 1440 + 60 = the underlay's 1500.
    const r = spawnSync('ip', ['netns', 'exec', pod('n1').ns, 'ping', '-c1', '-W3', '-M', 'do', '-s', '1412', pod('n3').ip], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const tooBig = spawnSync('ip', ['netns', 'exec', pod('n1').ns, 'ping', '-c1', '-W3', '-M', 'do', '-s', '1413', pod('n3').ip], { encoding: 'utf8' });
    expect(tooBig.status).not.toBe(0);
  });

  it('on the underlay, pod traffic is only UDP between WireGuard ports, while flannel-wg carries the cleartext ICMP', async () => {
    const n1 = cluster.node('n1');
    const capture = (iface: string, file: string) =>
      spawn('ip', ['netns', 'exec', n1.ns, 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', iface, '-n', '-U', '-w', file, 'ip'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const underFile = join(cluster.dir, 'underlay.pcap');
    const wgFile = join(cluster.dir, 'flannel-wg.pcap');
    const under = capture('eth0', underFile);
    const inner = capture('flannel-wg', wgFile);
    const started = (c: ReturnType<typeof capture>) =>
      new Promise<void>((resolve) => {
        c.stderr.on('data', (d: Buffer) => d.toString().includes('listening on') && resolve());
        setTimeout(resolve, 5000);
      });
    await Promise.all([started(under), started(inner)]);
    const pairs: [Pod, Pod][] = [
      [pod('n1'), pod('n2')],
      [pod('n1'), pod('n3')],
      [pod('n2'), pod('n1')],
      [pod('n3', 'p2'), pod('n1', 'p2')],
    ];
    for (const [a, b] of pairs) expect(ping(a.ns, b.ip), `${a.containerId} -> ${b.containerId}`).toBe(true);
    // Let the last replies reach the files before stopping the captures.
    await new Promise((r) => setTimeout(r, 500));
    for (const c of [under, inner]) {
      c.kill('SIGINT');
      await new Promise((r) => c.once('exit', r));
    }
    const read = (file: string) =>
      execFileSync('tcpdump', ['-r', file, '-n', '-q'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean);
    const underLines = read(underFile);
    // Every IP packet on eth0 is UDP from port 51820 to port 51820 of another node.
    const notWg = underLines.filter((l) => !/ IP 192\.168\.7[78]\.\d+\.51820 > 192\.168\.7[78]\.\d+\.51820: UDP, length \d+$/.test(l));
    expect(notWg).toEqual([]);
    expect(underLines.filter((l) => /ICMP|10\.244\./.test(l))).toEqual([]);
    // Request and reply per pair, each encrypted: at least 8 packets.
    expect(underLines.length).toBeGreaterThanOrEqual(8);
    const innerLines = read(wgFile);
    for (const [a, b] of pairs) {
      expect(innerLines.some((l) => l.includes(`${a.ip} > ${b.ip}: ICMP`) || l.includes(`${b.ip} > ${a.ip}: ICMP`)), `${a.ip} <-> ${b.ip} on flannel-wg`).toBe(true);
    }
  }, 60_000);

  it('tsflannel doctor and status cover the backend: device, key file, peers matching leases, fresh handshakes; a missing peer fails with its wg set repair', async () => {
    const cli = (node: string, cmd: string) =>
      cluster.nodeExec(node, 'env', [
        `WIREGUARD_KEY_FILE=${cluster.wireguardKeyFile(node)}`, PLUGIN_BIN, cmd, '--json',
        '--subnet-file', cluster.subnetFile(node), '--data-dir', join(cluster.nodeDir(node), 'networks'),
        '--etcd-endpoints', 'http://127.0.0.1:2379', '--cni-socket', cluster.cniSocket(node),
      ]).catch((err: { code: number; stdout: string }) => err.stdout);
    type Report = { ok: boolean; checks: { id: string; status: string; message: string; fix?: string; details?: string[] }[] };
    const healthy = JSON.parse(await cli('n2', 'doctor')) as Report;
    const byId = (r: Report) => new Map(r.checks.map((c) => [c.id, c]));
    const notPass = healthy.checks.filter((c) => c.status !== 'pass').map((c) => `${c.id}:${c.status}`);
    expect(notPass).toEqual(['vxlan-device:skip', 'vtep-reachability:skip', 'kernel-limits:skip']);
    expect(byId(healthy).get('wireguard-device')!.message).toContain(kernelWg ? 'on kernel WireGuard' : 'on wireguard-go');
    expect(byId(healthy).get('wireguard-peers')!.message).toMatch(/^2 peers answered through flannel-wg; latest handshakes/);
    expect(byId(healthy).get('mtu')!.message).toContain('underlay 1500 − 60 = 1440 ≥ flannel-wg 1440');

    const status = JSON.parse(await cli('n2', 'status')) as { backend: string; wireguard: { device: { impl: string; peers: unknown[] }; keyFile: { mode: number } }; remotes: { wgPeer: string; handshake: number }[] };
    expect(status.backend).toBe('wireguard');
    expect(status.wireguard.device.impl).toBe(kernelWg ? 'kernel' : 'wireguard-go');
    expect(status.wireguard.keyFile.mode).toBe(0o600);
    expect(status.remotes.map((r) => r.wgPeer)).toEqual(['ok', 'ok']);
    expect(status.remotes.every((r) => r.handshake > 0)).toBe(true);

    // With the agent stopped nothing repairs the device, so doctor sees the damage.
    const n3 = await leaseOf('n3');
    await cluster.stopAgent('n2');
    try {
      await cluster.nodeExec('n2', 'wg', ['set', 'flannel-wg', 'peer', n3.publicKey, 'remove']);
      const broken = JSON.parse(await cli('n2', 'doctor')) as Report;
      expect(broken.ok).toBe(false);
      const peers = byId(broken).get('peer-entries')!;
      expect(peers.status).toBe('fail');
      expect(peers.details!.join('\n')).toContain(`no peer for key ${n3.publicKey}`);
      expect(peers.fix).toContain(`wg set flannel-wg peer ${n3.publicKey} endpoint ${n3.publicIP}:51820 allowed-ips ${n3.subnet}`);
    } finally {
      await cluster.startAgent('n2');
    }
    await eventually('n2 peer for n3 restored by the agent', 15_000, async () => (await dump('n2')).peers.some((p) => p.publicKey === n3.publicKey));
  }, 90_000);

  it('a peer deleted by hand comes back within the resync period, with its endpoint and allowed IPs', async () => {
    const n2 = await leaseOf('n2');
    await cluster.nodeExec('n1', 'wg', ['set', 'flannel-wg', 'peer', n2.publicKey, 'remove']);
    expect((await dump('n1')).peers.map((p) => p.publicKey)).not.toContain(n2.publicKey);
    const took = await timeUntil('n2 peer back on n1', (resyncSeconds + 3) * 1000, async () =>
      (await dump('n1')).peers.some((p) => p.publicKey === n2.publicKey && p.endpoint === `${n2.publicIP}:51820` && p.allowedIPs.join() === n2.subnet),
    );
    expect(took).toBeLessThanOrEqual((resyncSeconds + 3) * 1000);
    expect(ping(pod('n1').ns, pod('n2').ip)).toBe(true);
  }, 30_000);

  it('a peer whose endpoint was changed by hand gets its lease endpoint back', async () => {
    const n3 = await leaseOf('n3');
    await cluster.nodeExec('n2', 'wg', ['set', 'flannel-wg', 'peer', n3.publicKey, 'endpoint', '192.0.2.1:4444', 'allowed-ips', '10.244.250.0/24']);
    await eventually('n3 peer on n2 repaired', (resyncSeconds + 3) * 1000, async () =>
      (await dump('n2')).peers.some((p) => p.publicKey === n3.publicKey && p.endpoint === `${n3.publicIP}:51820` && p.allowedIPs.join() === n3.subnet),
    );
    expect(ping(pod('n2').ns, pod('n3').ip)).toBe(true);
  }, 30_000);

  it('a deleted flannel-wg is rebuilt with the same key, so the other nodes need no change', async () => {
    const before = await leaseOf('n2');
    const peersOnN1 = (await dump('n1')).peers.map((p) => `${p.publicKey} ${p.endpoint}`).sort();
    execFileSync('ip', ['-n', cluster.node('n2').ns, 'link', 'del', 'flannel-wg']);
    await eventually('flannel-wg rebuilt on n2 with both peers', (resyncSeconds + 5) * 1000, async () => {
      try {
        return (await dump('n2')).peers.length === 2;
      } catch {
        return false;
      }
    });
    expect((await dump('n2')).publicKey).toBe(before.publicKey);
    expect((await leaseOf('n2')).publicKey).toBe(before.publicKey);
    expect((await dump('n1')).peers.map((p) => `${p.publicKey} ${p.endpoint}`).sort()).toEqual(peersOnN1);
    await eventually('n2 pod reaches n1 pod again', 10_000, () => ping(pod('n2').ns, pod('n1').ip));
  }, 40_000);

  it('an agent restart keeps its key file, its published key and every peer; pods keep talking while it is down', async () => {
    const keyBefore = readFileSync(cluster.wireguardKeyFile('n1'), 'utf8');
    const leaseBefore = await leaseOf('n1');
    const peersElsewhere = async () =>
      (await Promise.all(['n2', 'n3'].map(async (n) => (await dump(n)).peers.map((p) => `${n} ${p.publicKey} ${p.endpoint} ${p.allowedIPs.join()}`)))).flat().sort();
    const before = await peersElsewhere();
    await cluster.stopAgent('n1');
    // wireguard-go (or the kernel device) outlives the agent.
    expect(ping(pod('n1').ns, pod('n3').ip)).toBe(true);
    const logLines = cluster.agentLog('n2').split('\n').length;
    await cluster.startAgent('n1');
    await eventually('n1 agent reconciled after restart', 20_000, () => /"msg":"reconciled"|"msg":"WireGuard config"/.test(cluster.agentLog('n1')));
    await new Promise((r) => setTimeout(r, (resyncSeconds + 1) * 1000));
    expect(readFileSync(cluster.wireguardKeyFile('n1'), 'utf8')).toBe(keyBefore);
    expect((await leaseOf('n1')).publicKey).toBe(leaseBefore.publicKey);
    expect(cluster.agentLog('n1')).not.toContain('generated the WireGuard private key');
    expect(await peersElsewhere()).toEqual(before);
    // n2 saw n1's lease rewritten with the same key and changed nothing.
    const newLines = cluster.agentLog('n2').split('\n').slice(logLines - 1).join('\n');
    expect(newLines).not.toMatch(/updating peer|adding peer|removing peer/);
    expect((await dump('n1')).peers).toHaveLength(2);
    expect(ping(pod('n1').ns, pod('n2').ip)).toBe(true);
    expect(ping(pod('n3').ns, pod('n1').ip)).toBe(true);
  }, 60_000);

  it('a node whose key changes (key file lost, agent restarted) is re-keyed on the others: old peer removed, new one added', async () => {
    const old = await leaseOf('n2');
    await cluster.stopAgent('n2');
    rmSync(cluster.wireguardKeyFile('n2'));
    await cluster.startAgent('n2');
    await eventually('n2 publishes a new key', 20_000, async () => (await leaseOf('n2')).publicKey !== old.publicKey);
    const fresh = await leaseOf('n2');
    await eventually('n1 and n3 hold only the new key for n2', 15_000, async () => {
      for (const n of ['n1', 'n3']) {
        const keys = (await dump(n)).peers.map((p) => p.publicKey);
        if (keys.includes(old.publicKey) || !keys.includes(fresh.publicKey)) return false;
      }
      return true;
    });
    expect((await dump('n2')).publicKey).toBe(fresh.publicKey);
    await eventually('n1 pod reaches n2 pod over the new key', 10_000, () => ping(pod('n1').ns, pod('n2').ip));
  }, 60_000);

  it('a node that leaves loses its peer on the others, and its pods become unreachable rather than reachable in cleartext', async () => {
    const n3 = await leaseOf('n3');
    await cluster.stopAgent('n3');
    await cluster.etcdctl(['del', `/coreos.com/network/subnets/${n3.subnet.replace('/', '-')}`]);
    await eventually('n3 peer gone from n1 and n2', 15_000, async () => {
      for (const n of ['n1', 'n2']) if ((await dump(n)).peers.some((p) => p.publicKey === n3.publicKey)) return false;
      return true;
    });
    for (const n of ['n1', 'n2']) expect((await dump(n)).peers).toHaveLength(1);
    expect(ping(pod('n1').ns, pod('n2').ip)).toBe(true);
    // The cluster route still sends 10.244.0.0/16 into flannel-wg, which has no peer for n3's subnet.
    const route = execFileSync('ip', ['-n', cluster.node('n1').ns, 'route', 'get', pod('n3').ip], { encoding: 'utf8' });
    expect(route).toContain('dev flannel-wg');
    expect(ping(pod('n1').ns, pod('n3').ip)).toBe(false);
  }, 40_000);
});
