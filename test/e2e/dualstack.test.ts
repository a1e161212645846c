// Dual-stack and IPv6-only tsflannel clusters end to end: four node
// namespaces (three on one L2 segment, one behind a router) on an IPv4 and
// IPv6 underlay, the real agents (etcd mode, then Kubernetes mode against the
// fake API server with spec.podCIDRs), pods added through the real plugin.
// Every pod pings every pod on another node over both families, pods reach
// the outside through masquerade in both families, the IPv6 overlay follows
// a node that leaves and comes back with a new IPv6 address, and IPv6
// entries deleted by hand come back within the resync period.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cluster, PLUGIN_BIN, type Pod } from '../../src/demo/cluster.js';
import type { NodeSpec } from '../../src/demo/topology.js';
import { cidrContainsIp, parseCidr, parseIp, splitCidr } from '../../src/net/ip.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { seenSource, startSourceEcho } from '../helpers/masq-topology.js';

const NETWORK6 = 'fd00:10:244::/56';
const DUAL_CONF = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } };
const V6_ONLY_CONF = { EnableIPv4: false, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } };
const FOUR: NodeSpec[] = [
  { name: 'n1', segment: 'a' },
  { name: 'n2', segment: 'a' },
  { name: 'n3', segment: 'a' },
  { name: 'n4', segment: 'b' },
];
const RESYNC = 3;

function ping(fromNs: string, ip: string): boolean {
  const family = ip.includes(':') ? '-6' : '-4';
  // the first packet may wait for neighbour discovery on cni0: one retry
  for (let i = 0; i < 2; i++) if (spawnSync('ip', ['netns', 'exec', fromNs, 'ping', family, '-c1', '-W3', ip]).status === 0) return true;
  return false;
}

/** Every pod → every pod on another node, over `family`; the pairs that failed. */
function pingMatrix(pods: Pod[], family: 4 | 6): string[] {
  const failures: string[] = [];
  for (const from of pods) {
    for (const to of pods) {
      if (from.node === to.node) continue;
      const dst = family === 6 ? to.ip6 : to.ip;
      if (!dst || !ping(from.ns, dst)) failures.push(`${from.containerId} -> ${to.containerId} (${dst ?? 'no IPv6 address'})`);
    }
  }
  return failures;
}

function run(ns: string, cmd: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
}

/** flannel-v6.1's routes, neighbours and FDB, each sorted (the kernel lists neighbours and FDB entries in hash order). */
function v6State(ns: string): { routes: string; neigh: string; fdb: string } {
  const sorted = (text: string) => text.split('\n').map((l) => l.trim()).filter(Boolean).sort().join('\n') + '\n';
  return {
    routes: sorted(run(ns, 'ip', ['-6', 'route', 'show', 'dev', 'flannel-v6.1'])),
    neigh: sorted(run(ns, 'ip', ['-6', 'neigh', 'show', 'dev', 'flannel-v6.1'])),
    fdb: sorted(run(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel-v6.1'])),
  };
}

function subnetEnv(cluster: Cluster, node: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(cluster.subnetFile(node), 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** The network form of a FLANNEL_*SUBNET gateway CIDR: fd00:10:244:3::1/64 → fd00:10:244:3::/64, 10.244.7.1/24 → 10.244.7.0/24. */
function networkOf(gateway: string): string {
  return splitCidr(gateway).network;
}

function inSubnet(ip: string | undefined, gateway: string): boolean {
  const c = parseCidr(gateway);
  const a = ip === undefined ? undefined : parseIp(ip);
  return c !== undefined && a !== undefined && cidrContainsIp({ ip: c.ip, prefix: c.prefix }, a);
}

/**
 * Waits until every node routes to every other node over each family's
 * VTEP: the agents' start-up is done, not just their subnet files.
 */
async function meshReady(cluster: Cluster, names: string[], families: (4 | 6)[]): Promise<void> {
  const vias = (ns: string, family: 4 | 6) =>
    run(ns, 'ip', [`-${family}`, 'route', 'show', 'dev', family === 6 ? 'flannel-v6.1' : 'flannel.1']).split('\n').filter((l) => l.includes(' via ')).length;
  await eventually('every node programs every other node', 60_000, () =>
    names.every((n) => families.every((f) => vias(cluster.node(n).ns, f) === names.length - 1)),
  );
}

/** `tsflannel <cmd>` inside a node, asynchronously (the etcd bridge's root end lives in this process). */
function nodeTool(cluster: Cluster, node: string, cmd: 'status' | 'doctor', extra: string[]): Promise<{ code: number; stdout: string }> {
  const args = ['netns', 'exec', cluster.node(node).ns, PLUGIN_BIN, cmd, '--subnet-file', cluster.subnetFile(node),
    '--data-dir', join(cluster.nodeDir(node), 'networks'), '--cni-socket', cluster.cniSocket(node), ...extra];
  return new Promise((resolve) => {
    execFile('ip', args, { encoding: 'utf8', timeout: 60_000 }, (err, stdout) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout }));
  });
}

/** Starts a four-node dual-stack cluster with one pod per node, waits for the full mesh, and starts the outside echo server. */
async function startFourWithPods(cluster: Cluster): Promise<ChildProcess> {
  await cluster.start();
  for (const { name } of FOUR) await cluster.addPod(name, 'p1');
  await meshReady(cluster, FOUR.map((n) => n.name), [4, 6]);
  return startSourceEcho(cluster.topo!.outsideNs, true);
}

/** The checks every dual-stack cluster passes, whatever the subnet manager. */
function dualStackChecks(get: () => { cluster: Cluster; outside: () => string }): void {
  it('gives every node an IPv4 and an IPv6 subnet (subnet.env as flanneld writes it) and both VTEPs', () => {
    const { cluster } = get();
    const v6nets = new Set<string>();
    for (const { name } of FOUR) {
      const env = subnetEnv(cluster, name);
      expect(env.FLANNEL_NETWORK).toBe('10.244.0.0/16');
      expect(env.FLANNEL_IPV6_NETWORK).toBe(NETWORK6);
      expect(env.FLANNEL_IPV6_SUBNET).toMatch(/^fd00:10:244:[0-9a-f]*::1\/64$/);
      // one pod MTU for both families: flannel-v6's, 70 below the underlay
      expect(env.FLANNEL_MTU).toBe('1430');
      v6nets.add(env.FLANNEL_IPV6_SUBNET!);
      const node = cluster.node(name);
      const v6 = run(node.ns, 'ip', ['-d', 'link', 'show', 'flannel-v6.1']);
      expect(v6).toMatch(new RegExp(`vxlan id 1 local ${node.ip6!} dev eth0 .*dstport 8472 nolearning`));
      expect(v6).toContain('mtu 1430');
      expect(run(node.ns, 'ip', ['-d', 'link', 'show', 'flannel.1'])).toContain('mtu 1450');
      expect(run(node.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global'])).toContain(`${networkOf(env.FLANNEL_IPV6_SUBNET!).replace('/64', '')}/128`);
    }
    expect(v6nets.size).toBe(4);
  });

  it('gives every pod an IPv4 and an IPv6 address from its node\'s subnets', () => {
    const { cluster } = get();
    expect(cluster.pods).toHaveLength(4);
    for (const pod of cluster.pods) {
      const env = subnetEnv(cluster, pod.node);
      expect(inSubnet(pod.ip, env.FLANNEL_SUBNET!), `${pod.containerId} ${pod.ip}`).toBe(true);
      expect(inSubnet(pod.ip6, env.FLANNEL_IPV6_SUBNET!), `${pod.containerId} ${pod.ip6}`).toBe(true);
    }
  });

  it('every pod pings every pod on another node over IPv4 and over IPv6', () => {
    const { cluster } = get();
    expect(pingMatrix(cluster.pods, 4)).toEqual([]);
    expect(pingMatrix(cluster.pods, 6)).toEqual([]);
  });

  it('pods reach the outside host through masquerade in both families (it sees the node\'s underlay addresses)', () => {
    const { cluster, outside } = get();
    for (const pod of cluster.pods) {
      const node = cluster.node(pod.node);
      expect(seenSource(pod.ns, outside()), `${pod.containerId} → outside over IPv4`).toBe(node.ip);
      expect(seenSource(pod.ns, cluster.topo!.outsideIP6!), `${pod.containerId} → outside over IPv6`).toBe(node.ip6);
    }
  });
}

describe.skipIf(requireOrSkip('dual-stack cluster (etcd)', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('a dual-stack four-node cluster in etcd mode', () => {
  const cluster = new Cluster({ prefix: `tsfds${randomBytes(2).toString('hex')}`, nodes: FOUR, netConf: DUAL_CONF, ipv6Underlay: true, resyncSeconds: RESYNC });
  let echo: ChildProcess | undefined;

  beforeAll(async () => {
    echo = await startFourWithPods(cluster);
  }, 180_000);
  afterAll(async () => {
    if (echo?.pid) echo.kill();
    await cluster.stop();
  }, 60_000);

  dualStackChecks(() => ({ cluster, outside: () => cluster.topo!.outsideIP }));

  it('publishes flannel\'s dual-stack lease in etcd: IPv6Subnet in the key, PublicIPv6 and BackendV6Data in the value', async () => {
    const out = await cluster.etcdctl(['get', '--prefix', '/coreos.com/network/subnets/']);
    const lines = out.split('\n').filter(Boolean);
    const n1 = cluster.node('n1');
    const i = lines.findIndex((l) => l.includes(`"PublicIP":"${n1.ip}"`));
    expect(i).toBeGreaterThan(0);
    expect(lines[i - 1]).toMatch(/^\/coreos\.com\/network\/subnets\/10\.244\.\d+\.0-24&fd00:10:244:[0-9a-f]*::-64$/);
    const value = JSON.parse(lines[i]!) as { PublicIPv6: string; BackendV6Data: { VNI: number; VtepMAC: string } };
    expect(value.PublicIPv6).toBe(n1.ip6);
    const mac = JSON.parse(run(n1.ns, 'ip', ['-j', 'link', 'show', 'flannel-v6.1']))[0].address as string;
    expect(value.BackendV6Data).toEqual({ VNI: 1, VtepMAC: mac });
  });

  it('status and doctor cover flannel-v6, the IPv6 remote nodes and the IPv6 masquerade rules', async () => {
    const etcd = ['--etcd-endpoints', 'http://127.0.0.1:2379'];
    const doc = await nodeTool(cluster, 'n1', 'doctor', ['--json', ...etcd]);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: { id: string; status: string; message: string }[] };
    const byId = new Map(report.checks.map((c) => [c.id, c]));
    expect(byId.get('ipv6-overlay'), JSON.stringify(byId.get('ipv6-overlay'))).toMatchObject({ status: 'pass' });
    expect(byId.get('ipv6-overlay')!.message).toMatch(/^flannel-v6\.1 local fd00:77::10 mtu 1430 fd00:10:244:[0-9a-f]*::\/128 up; 3 remote IPv6 subnets programmed \(checked against the leases\)$/);
    expect(byId.get('ipv6-masquerade'), JSON.stringify(byId.get('ipv6-masquerade'))).toMatchObject({ status: 'pass' });
    expect(byId.get('ipv6-masquerade')!.message).toContain('ip6tables FLANNEL-POSTRTG; ff00::/8 excluded');
    expect(byId.get('masquerade')!.status).toBe('pass');

    const status = await nodeTool(cluster, 'n1', 'status', etcd);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/vxlan \(v6\)\s+flannel-v6\.1 vni 1 local fd00:77::10 dev eth0 dstport 8472 nolearning mtu 1430/);
    expect(status.stdout).toContain("IPv6 remote nodes (from flannel-v6.1's routes, neighbours and FDB): 3");
    expect(status.stdout).toMatch(/ip6tables\s+FORWARD policy \S+, FLANNEL-FWD 2 rules, FLANNEL-POSTRTG 6 rules/);
    expect(status.stdout).toContain(`FLANNEL_IPV6_SUBNET=${subnetEnv(cluster, 'n1').FLANNEL_IPV6_SUBNET}`);
  });

  it('a node that leaves takes its IPv6 entries with it; back with a new IPv6 address, the others\' routes, neighbours and FDB follow', async () => {
    const n2 = cluster.node('n2');
    const env = subnetEnv(cluster, 'n2');
    const v4net = networkOf(env.FLANNEL_SUBNET!);
    const v6net = networkOf(env.FLANNEL_IPV6_SUBNET!);
    const others = ['n1', 'n3', 'n4'];
    for (const n of others) expect(v6State(cluster.node(n).ns).fdb).toContain(`dst ${n2.ip6} self permanent`);

    await cluster.stopAgent('n2');
    await cluster.etcdctl(['del', '--prefix', `/coreos.com/network/subnets/${v4net.replace('/', '-')}`]);
    await eventually('n2\'s IPv6 entries removed from n1, n3, n4', 20_000, () =>
      others.every((n) => {
        const s = v6State(cluster.node(n).ns);
        return !s.routes.includes(v6net) && !s.neigh.includes(`${v6net.replace('/64', '')} `) && !s.fdb.includes(`dst ${n2.ip6} `);
      }),
    );

    // n2 comes back with another IPv6 address on its underlay
    const oldIp6 = n2.ip6!;
    const newIp6 = oldIp6.replace(/::[0-9a-f]+$/, '::51');
    execFileSync('ip', ['-n', n2.ns, 'addr', 'del', n2.cidr6!, 'dev', 'eth0']);
    execFileSync('ip', ['-n', n2.ns, 'addr', 'add', `${newIp6}/64`, 'dev', 'eth0', 'nodad']);
    execFileSync('ip', ['-n', n2.ns, '-6', 'route', 'replace', 'default', 'via', 'fd00:77::1']);
    n2.ip6 = newIp6;
    n2.cidr6 = `${newIp6}/64`;
    await cluster.startAgent('n2');
    await eventually('n1, n3, n4 program n2 at its new IPv6 address', 30_000, () =>
      others.every((n) => {
        const s = v6State(cluster.node(n).ns);
        return s.fdb.includes(`dst ${newIp6} self permanent`) && !s.fdb.includes(`dst ${oldIp6} `) && s.routes.includes(v6net);
      }),
    );
    // n2 itself is back once its first reconcile ran (its log starts afresh with the restart)
    await eventually('n2\'s restarted agent is ready', 30_000, () => cluster.agentLog('n2').includes('ready: first reconcile done'));
    expect(run(n2.ns, 'ip', ['-d', 'link', 'show', 'flannel-v6.1'])).toContain(`local ${newIp6} `);
    // n2 kept its subnets (asked for them again from its subnet.env)
    expect(subnetEnv(cluster, 'n2').FLANNEL_IPV6_SUBNET).toBe(env.FLANNEL_IPV6_SUBNET);
    const p2 = cluster.pods.find((p) => p.node === 'n2')!;
    for (const from of cluster.pods.filter((p) => p.node !== 'n2')) {
      expect(ping(from.ns, p2.ip6!), `${from.containerId} -> n2 over IPv6`).toBe(true);
      expect(ping(p2.ns, from.ip6!), `n2 -> ${from.containerId} over IPv6`).toBe(true);
    }
  });

  it('IPv6 routes, neighbours and FDB entries deleted by hand come back within the resync period', async () => {
    const n1 = cluster.node('n1');
    const before = v6State(n1.ns);
    const n3 = cluster.node('n3');
    const v6net = networkOf(subnetEnv(cluster, 'n3').FLANNEL_IPV6_SUBNET!);
    const gw = v6net.replace('/64', '');
    const mac = /([0-9a-f:]{17}) dst/.exec(before.fdb.split('\n').find((l) => l.includes(`dst ${n3.ip6} `))!)![1]!;
    const start = Date.now();
    run(n1.ns, 'ip', ['-6', 'route', 'del', v6net, 'dev', 'flannel-v6.1']);
    run(n1.ns, 'ip', ['-6', 'neigh', 'del', gw, 'dev', 'flannel-v6.1']);
    run(n1.ns, 'bridge', ['fdb', 'del', mac, 'dev', 'flannel-v6.1', 'dst', n3.ip6!]);
    expect(v6State(n1.ns)).not.toEqual(before);
    await eventually('n1\'s IPv6 entries for n3 are back', 20_000, () => {
      const s = v6State(n1.ns);
      return s.routes === before.routes && s.neigh === before.neigh && s.fdb === before.fdb;
    });
    const took = Date.now() - start;
    // one resync period, plus the time a loaded machine needs to run it
    expect(took).toBeLessThan(RESYNC * 1000 + 5_000);
    const p3 = cluster.pods.find((p) => p.node === 'n3')!;
    const p1 = cluster.pods.find((p) => p.node === 'n1')!;
    expect(ping(p1.ns, p3.ip6!)).toBe(true);
  });
});

describe.skipIf(requireOrSkip('dual-stack cluster (kube)', { root: isRoot }))('a dual-stack four-node cluster in Kubernetes mode (spec.podCIDRs)', () => {
  let kube: FakeKube;
  let cluster: Cluster;
  let echo: ChildProcess | undefined;

  beforeAll(async () => {
    kube = await FakeKube.start();
    FOUR.forEach(({ name }, i) => kube.addNode(name, [`10.244.${i + 1}.0/24`, `fd00:10:244:${i + 1}::/64`]));
    cluster = new Cluster({
      prefix: `tsfdk${randomBytes(2).toString('hex')}`,
      nodes: FOUR,
      netConf: DUAL_CONF,
      ipv6Underlay: true,
      kube: { url: kube.url },
      resyncSeconds: RESYNC,
    });
    echo = await startFourWithPods(cluster);
  }, 180_000);
  afterAll(async () => {
    if (echo?.pid) echo.kill();
    await cluster?.stop();
    await kube?.close();
  }, 60_000);

  dualStackChecks(() => ({ cluster, outside: () => cluster.topo!.outsideIP }));

  it('doctor reads both halves of the Nodes\' leases: flannel-v6 checked against the IPv6 leases, no failure', async () => {
    const kubeArgs = ['--json', '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443', '--node-name', 'n1', '--net-config-path', cluster.netConfFile];
    const doc = await nodeTool(cluster, 'n1', 'doctor', kubeArgs);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: { id: string; status: string; message: string }[] };
    const byId = new Map(report.checks.map((c) => [c.id, c]));
    expect(byId.get('ipv6-overlay')!.message, JSON.stringify(byId.get('ipv6-overlay'))).toMatch(/; 3 remote IPv6 subnets programmed \(checked against the leases\)$/);
    expect(byId.get('lease'), JSON.stringify(byId.get('lease'))).toMatchObject({ status: 'pass' });
    expect(report.checks.filter((c) => c.status === 'fail'), doc.stdout).toEqual([]);
  });

  it('takes each node\'s subnets from spec.podCIDRs and publishes flannel\'s IPv6 annotations', () => {
    FOUR.forEach(({ name }, i) => {
      const env = subnetEnv(cluster, name);
      expect(env.FLANNEL_SUBNET).toBe(`10.244.${i + 1}.1/24`);
      expect(env.FLANNEL_IPV6_SUBNET).toBe(`fd00:10:244:${i + 1}::1/64`);
      const ann = kube.getNode(name)!.metadata.annotations!;
      expect(ann['flannel.alpha.coreos.com/public-ipv6']).toBe(cluster.node(name).ip6);
      const mac = JSON.parse(run(cluster.node(name).ns, 'ip', ['-j', 'link', 'show', 'flannel-v6.1']))[0].address as string;
      expect(JSON.parse(ann['flannel.alpha.coreos.com/backend-v6-data']!)).toEqual({ VNI: 1, VtepMAC: mac });
    });
  });
});

describe.skipIf(requireOrSkip('IPv6-only cluster', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('an IPv6-only cluster (EnableIPv4 false)', () => {
  const nodes: NodeSpec[] = [
    { name: 'v1', segment: 'a' },
    { name: 'v2', segment: 'a' },
    { name: 'v3', segment: 'b' },
  ];
  const cluster = new Cluster({ prefix: `tsfv6${randomBytes(2).toString('hex')}`, nodes, netConf: V6_ONLY_CONF, ipv6Underlay: true, resyncSeconds: RESYNC });

  beforeAll(async () => {
    await cluster.start();
    for (const { name } of nodes) await cluster.addPod(name, 'p1');
    await meshReady(cluster, nodes.map((n) => n.name), [6]);
  }, 180_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('writes IPv6 lines only to subnet.env and creates flannel-v6.1 but no flannel.1', () => {
    for (const { name } of nodes) {
      const env = subnetEnv(cluster, name);
      expect(env.FLANNEL_NETWORK).toBeUndefined();
      expect(env.FLANNEL_SUBNET).toBeUndefined();
      expect(env.FLANNEL_IPV6_NETWORK).toBe(NETWORK6);
      expect(env.FLANNEL_MTU).toBe('1430');
      const ns = cluster.node(name).ns;
      expect(run(ns, 'ip', ['-d', 'link', 'show', 'flannel-v6.1'])).toContain(`local ${cluster.node(name).ip6!} `);
      expect(spawnSync('ip', ['-n', ns, 'link', 'show', 'flannel.1']).status).not.toBe(0);
    }
  });

  it('gives pods IPv6 only, and every pod pings every pod on another node', () => {
    expect(cluster.pods).toHaveLength(3);
    for (const pod of cluster.pods) {
      expect(pod.ip).toContain(':');
      expect(pod.ip6).toBe(pod.ip);
      expect(inSubnet(pod.ip6, subnetEnv(cluster, pod.node).FLANNEL_IPV6_SUBNET!)).toBe(true);
    }
    expect(pingMatrix(cluster.pods, 6)).toEqual([]);
  });

  it('status shows the IPv6 half; doctor checks it and skips the IPv4 overlay checks, with no failure', async () => {
    const etcd = ['--etcd-endpoints', 'http://127.0.0.1:2379'];
    const doc = await nodeTool(cluster, 'v1', 'doctor', ['--json', ...etcd]);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: { id: string; status: string; message: string }[] };
    const byId = new Map(report.checks.map((c) => [c.id, c]));
    expect(report.checks.filter((c) => c.status === 'fail' || c.status === 'warn')).toEqual([]);
    expect(byId.get('ipv6-overlay')!.message).toMatch(/^flannel-v6\.1 local fd00:77::10 mtu 1430 .*; 2 remote IPv6 subnets programmed \(checked against the leases\)$/);
    expect(byId.get('ipv6-masquerade')!.status).toBe('pass');
    for (const id of ['vxlan-device', 'lease', 'masquerade']) expect(byId.get(id)!.message).toMatch(/^IPv6-only node/);
    expect(doc.code).toBe(0);
    const status = await nodeTool(cluster, 'v1', 'status', etcd);
    expect(status.stdout).toContain("IPv6 remote nodes (from flannel-v6.1's routes, neighbours and FDB): 2");
    expect(status.stdout).toMatch(/subnet file .*: FLANNEL_IPV6_NETWORK=fd00:10:244::\/56 FLANNEL_IPV6_SUBNET=\S+ FLANNEL_MTU=1430/);
  });
});
