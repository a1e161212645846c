// The VXLAN backend against the real kernel: three "nodes" (network
// namespaces), A and B on one underlay segment, C behind a router on
// another, each with a cni0 bridge and a pod. The backends are driven from
// this process through their netns option, exactly as a node agent would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import { chooseExternalInterface } from '../../src/daemon/external.js';
import type { ExternalInterface, Lease, VxlanBackendConfig } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath, sortedLines as lines } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { nexthopsOf, routesResolved, TSF_NEXTHOP_PROTOCOL, tsfNexthopLines } from '../helpers/nexthops.js';

const NETWORK = '10.244.0.0/16';

interface Node {
  label: string;
  ns: string;
  pod: string;
  n: number;
  subnet: string;
  podIP: string;
  ext?: ExternalInterface;
  backend?: VxlanBackend;
  lease?: Lease;
}

function ip(ns: string, args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function sysctl(ns: string, kv: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv]);
}

function pings(fromNs: string, to: string): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c', '1', '-W', '1', to], { stdio: 'ignore' }).status === 0;
}

/** Waits out the first ping, which may be lost while ARP on cni0 resolves. */
function reachable(fromNs: string, to: string): boolean {
  return pings(fromNs, to) || pings(fromNs, to);
}

/** `ip -4 route`, each `nhid N` checked against the nexthop table and shown as `nhid *` */
const routesOf = (ns: string): string[] => routesResolved(ns);
const neighOf = (ns: string): string[] => lines(inNs(ns, 'ip', ['-4', 'neigh', 'show', 'dev', 'flannel.1']));
const fdbOf = (ns: string): string[] => lines(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']));
const stateOf = (ns: string) => ({ routes: routesOf(ns), nexthops: tsfNexthopLines(ns), neigh: neighOf(ns), fdb: fdbOf(ns) });

/** A node netns with eth0 on an underlay, cni0 and one pod behind it. */
function buildNode(label: string, n: number): Node {
  const ns = addNetns(label);
  const pod = addNetns(`${label}pod`);
  sysctl(ns, 'net.ipv4.ip_forward=1');
  ip(ns, ['link', 'add', 'cni0', 'type', 'bridge']);
  ip(ns, ['link', 'set', 'cni0', 'mtu', '1450', 'up']);
  ip(ns, ['addr', 'add', `10.244.${n}.1/24`, 'dev', 'cni0']);
  ip(ns, ['link', 'add', 'vethpod', 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
  ip(ns, ['link', 'set', 'vethpod', 'master', 'cni0', 'up']);
  ip(pod, ['addr', 'add', `10.244.${n}.2/24`, 'dev', 'eth0']);
  ip(pod, ['link', 'set', 'eth0', 'up']);
  ip(pod, ['route', 'add', 'default', 'via', `10.244.${n}.1`]);
  return { label, ns, pod, n, subnet: `10.244.${n}.0/24`, podIP: `10.244.${n}.2` };
}

/** Joins `node`'s eth0 to the underlay bridge and addresses it. */
function plug(ulNs: string, node: Node, cidr: string, gw: string): void {
  const port = `p${node.label}`.slice(0, 15);
  ip(ulNs, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.ns]);
  ip(ulNs, ['link', 'set', port, 'master', 'br0', 'up']);
  ip(node.ns, ['addr', 'add', cidr, 'dev', 'eth0']);
  ip(node.ns, ['link', 'set', 'eth0', 'up']);
  ip(node.ns, ['route', 'add', 'default', 'via', gw]);
}

function vxlanConfig(directRouting = false): VxlanBackendConfig {
  return { type: 'vxlan', vni: 1, port: 8472, directRouting };
}

async function startNode(node: Node, config: VxlanBackendConfig, vtepMac?: string): Promise<void> {
  node.ext = chooseExternalInterface({ netns: nsPath(node.ns) });
  node.backend = new VxlanBackend({ config, network: NETWORK, netns: nsPath(node.ns), ...(vtepMac ? { vtepMac } : {}) });
  const data = await node.backend.prepare(node.ext);
  node.lease = { subnet: node.subnet, publicIP: node.ext.publicIP, backendType: 'vxlan', backendData: data, nodeName: node.label };
  const { mtu } = await node.backend.configure(node.lease);
  expect(mtu).toBe(node.ext.mtu - 50);
}

function leasesExcept(nodes: Node[], self: Node): Lease[] {
  return nodes.filter((n) => n !== self).map((n) => n.lease!);
}

const mac = (node: Node): string => node.lease!.backendData.VtepMAC!;

describe.skipIf(requireOrSkip('VXLAN backend', { root: isRoot }))('VXLAN backend on real namespaces', () => {
  let a: Node;
  let b: Node;
  let c: Node;
  let all: Node[];

  beforeAll(() => {
    const ul = addNetns('ul');
    ip(ul, ['link', 'add', 'br0', 'type', 'bridge']);
    ip(ul, ['link', 'set', 'br0', 'up']);
    a = buildNode('a', 1);
    b = buildNode('b', 2);
    c = buildNode('c', 3);
    all = [a, b, c];
    plug(ul, a, '192.168.77.1/24', '192.168.77.254');
    plug(ul, b, '192.168.77.2/24', '192.168.77.254');
    // C sits on 192.168.88.0/24 behind a router: same cluster, other L2.
    const rt = addNetns('rt');
    sysctl(rt, 'net.ipv4.ip_forward=1');
    ip(ul, ['link', 'add', 'prt', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', rt]);
    ip(ul, ['link', 'set', 'prt', 'master', 'br0', 'up']);
    ip(rt, ['addr', 'add', '192.168.77.254/24', 'dev', 'eth0']);
    ip(rt, ['link', 'set', 'eth0', 'up']);
    ip(rt, ['link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.ns]);
    ip(rt, ['addr', 'add', '192.168.88.254/24', 'dev', 'eth1']);
    ip(rt, ['link', 'set', 'eth1', 'up']);
    ip(c.ns, ['addr', 'add', '192.168.88.3/24', 'dev', 'eth0']);
    ip(c.ns, ['link', 'set', 'eth0', 'up']);
    ip(c.ns, ['route', 'add', 'default', 'via', '192.168.88.254']);
  });
  afterAll(() => cleanupAll());

  it('creates flannel.1 as flannel does and programs every peer', async () => {
    for (const node of all) await startNode(node, vxlanConfig());
    expect(a.ext).toMatchObject({ name: 'eth0', ip: '192.168.77.1', cidr: '192.168.77.1/24', publicIP: '192.168.77.1', mtu: 1500 });

    const [link] = ipJson<{ mtu: number; address: string; flags: string[]; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }[]>(
      a.ns,
      ['-d', 'link', 'show', 'flannel.1'],
    );
    expect(link.mtu).toBe(1450);
    expect(link.address).toBe(mac(a));
    expect(link.flags).toContain('UP');
    expect(link.linkinfo.info_kind).toBe('vxlan');
    expect(link.linkinfo.info_data).toMatchObject({ id: 1, local: '192.168.77.1', link: 'eth0', port: 8472, learning: false });
    expect(lines(inNs(a.ns, 'ip', ['-4', '-o', 'addr', 'show', 'flannel.1'])).map((l) => l.split(/\s+/)[3])).toEqual(['10.244.1.0/32']);

    for (const node of all) expect(node.backend!.reconcile(leasesExcept(all, node))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });

    expect(routesOf(a.ns)).toEqual(
      lines(`
        default via 192.168.77.254 dev eth0
        10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1
        10.244.2.0/24 nhid * via 10.244.2.0 dev flannel.1 onlink
        10.244.3.0/24 nhid * via 10.244.3.0 dev flannel.1 onlink
        192.168.77.0/24 dev eth0 proto kernel scope link src 192.168.77.1`),
    );
    // one tsflannel nexthop per peer, nothing else
    expect(tsfNexthopLines(a.ns)).toEqual(['via 10.244.2.0 dev flannel.1 onlink', 'via 10.244.3.0 dev flannel.1 onlink']);
    expect(neighOf(a.ns)).toEqual(lines(`10.244.2.0 lladdr ${mac(b)} PERMANENT\n10.244.3.0 lladdr ${mac(c)} PERMANENT`));
    expect(fdbOf(a.ns)).toEqual(lines(`${mac(b)} dst 192.168.77.2 self permanent\n${mac(c)} dst 192.168.88.3 self permanent`));
    expect(fdbOf(c.ns)).toEqual(lines(`${mac(a)} dst 192.168.77.1 self permanent\n${mac(b)} dst 192.168.77.2 self permanent`));
  });

  it('carries pod traffic between nodes, also across the router, with path MTU 1450', () => {
    expect(reachable(a.pod, b.podIP)).toBe(true);
    expect(reachable(a.pod, c.podIP)).toBe(true);
    expect(reachable(c.pod, b.podIP)).toBe(true);
    // 1422 bytes of payload + 28 of headers = 1450: fits; one more does not
    const df = (size: number) => spawnSync('ip', ['netns', 'exec', a.pod, 'ping', '-c', '1', '-W', '1', '-M', 'do', '-s', String(size), b.podIP], { stdio: 'ignore' }).status;
    expect(df(1422)).toBe(0);
    expect(df(1423)).not.toBe(0);
  });

  it('writes nothing when nothing changed', async () => {
    // Watch the kernel's own change notifications for flannel.1 and pod routes.
    const mon = spawn('ip', ['-n', a.ns, 'monitor', 'route', 'neigh', 'link', 'address'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let events = '';
    mon.stdout.on('data', (d: Buffer) => (events += d.toString()));
    // The kernel's own IPv6 link-local address on flannel.1 (addrconf, DAD
    // finishing a second or so after the device came up) is not a write of ours.
    const ours = (text: string) => text.split('\n').filter((l) => /flannel\.1|10\.244\./.test(l) && !/fe80::/.test(l));
    await sleep(300);
    const report = a.backend!.reconcile(leasesExcept(all, a));
    await sleep(300);
    const quiet = events;
    // the monitor does see our writes: drop C and bring it back
    a.backend!.reconcile([b.lease!]);
    a.backend!.reconcile(leasesExcept(all, a));
    await sleep(300);
    mon.kill();
    expect(report).toEqual({ added: 0, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(ours(quiet)).toEqual([]);
    expect(ours(events.slice(quiet.length)).length).toBeGreaterThanOrEqual(6);
  });

  it('removes the route, neighbour and FDB entry of a node that left, and only those', () => {
    const before = stateOf(a.ns);
    expect(a.backend!.reconcile([b.lease!])).toEqual({ added: 0, updated: 0, removed: 3, programmed: 1, errors: [] });
    const after = stateOf(a.ns);
    expect(after.routes).toEqual(before.routes.filter((l) => !l.startsWith('10.244.3.0/24')));
    expect(after.neigh).toEqual(before.neigh.filter((l) => !l.startsWith('10.244.3.0')));
    expect(after.fdb).toEqual(before.fdb.filter((l) => !l.includes('192.168.88.3')));
    expect(before.nexthops).toContain('via 10.244.3.0 dev flannel.1 onlink');
    expect(after.nexthops).toEqual(before.nexthops.filter((l) => !l.startsWith('via 10.244.3.0 ')));
    expect(reachable(a.pod, b.podIP)).toBe(true);
    expect(pings(a.pod, c.podIP)).toBe(false);
    // and it comes back
    expect(a.backend!.reconcile([b.lease!, c.lease!])).toEqual({ added: 3, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(stateOf(a.ns)).toEqual(before);
  });

  it('replaces the neighbour and FDB entry when a node changes its VtepMAC', async () => {
    const oldMac = mac(b);
    const newMac = '0a:58:00:00:0b:02';
    await startNode(b, vxlanConfig(), newMac); // adopts flannel.1 and sets the new MAC
    expect(mac(b)).toBe(newMac);
    // A MAC change flushes the device's neighbours, even permanent ones; B's
    // own reconcile (which an agent runs right after start) puts them back.
    expect(neighOf(b.ns)).toEqual([]);
    expect(b.backend!.reconcile(leasesExcept(all, b))).toEqual({ added: 2, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(pings(a.pod, b.podIP)).toBe(false); // A still sends to the old MAC, which B drops
    const report = a.backend!.reconcile(leasesExcept(all, a));
    expect(report.errors).toEqual([]);
    expect(report).toMatchObject({ updated: 1, added: 1, removed: 1 }); // neigh rewritten, fdb entry swapped
    expect(neighOf(a.ns)).toContain(`10.244.2.0 lladdr ${newMac} PERMANENT`);
    expect(fdbOf(a.ns)).toContain(`${newMac} dst 192.168.77.2 self permanent`);
    expect(fdbOf(a.ns).join('\n')).not.toContain(oldMac);
    expect(reachable(a.pod, b.podIP)).toBe(true);
    expect(c.backend!.reconcile(leasesExcept(all, c)).errors).toEqual([]);
    expect(reachable(c.pod, b.podIP)).toBe(true);
  });

  it('moves the FDB entry when a node changes its public IP', async () => {
    ip(b.ns, ['addr', 'del', '192.168.77.2/24', 'dev', 'eth0']);
    ip(b.ns, ['addr', 'add', '192.168.77.12/24', 'dev', 'eth0']);
    ip(b.ns, ['route', 'replace', 'default', 'via', '192.168.77.254']);
    await startNode(b, vxlanConfig(), mac(b)); // local address differs: flannel.1 is recreated, same MAC
    expect(b.lease!.publicIP).toBe('192.168.77.12');
    expect(ipJson<{ linkinfo: { info_data: { local: string } } }[]>(b.ns, ['-d', 'link', 'show', 'flannel.1'])[0]?.linkinfo.info_data.local).toBe('192.168.77.12');
    // B's recreated device lost its peers; A and C learn B's new address
    expect(b.backend!.reconcile(leasesExcept(all, b))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(a.backend!.reconcile(leasesExcept(all, a))).toEqual({ added: 0, updated: 1, removed: 0, programmed: 2, errors: [] });
    expect(c.backend!.reconcile(leasesExcept(all, c))).toEqual({ added: 0, updated: 1, removed: 0, programmed: 2, errors: [] });
    expect(fdbOf(a.ns)).toEqual(lines(`${mac(b)} dst 192.168.77.12 self permanent\n${mac(c)} dst 192.168.88.3 self permanent`));
    expect(reachable(a.pod, b.podIP)).toBe(true);
    expect(reachable(c.pod, b.podIP)).toBe(true);
  });

  it('after a restart, removes stale entries and leaves valid ones untouched', async () => {
    const valid = stateOf(a.ns);
    const macBefore = mac(a);
    // what a previous run might have left: a departed node, a changed neighbour, a stale direct route
    inNs(a.ns, 'ip', ['route', 'add', '10.244.9.0/24', 'via', '10.244.9.0', 'dev', 'flannel.1', 'onlink']);
    inNs(a.ns, 'ip', ['neigh', 'add', '10.244.9.0', 'lladdr', '0a:58:00:00:00:09', 'dev', 'flannel.1', 'nud', 'permanent']);
    inNs(a.ns, 'bridge', ['fdb', 'append', '0a:58:00:00:00:09', 'dev', 'flannel.1', 'dst', '192.168.77.9']);
    inNs(a.ns, 'ip', ['route', 'add', '10.244.8.0/24', 'via', '192.168.77.8', 'dev', 'eth0']);
    inNs(a.ns, 'ip', ['neigh', 'replace', '10.244.3.0', 'lladdr', '0a:58:00:00:00:33', 'dev', 'flannel.1', 'nud', 'permanent']);
    expect(stateOf(a.ns)).not.toEqual(valid);

    await startNode(a, vxlanConfig()); // a fresh instance, as after an agent restart
    expect(mac(a)).toBe(macBefore); // the equal device was adopted, MAC kept
    expect(a.backend!.reconcile(leasesExcept(all, a))).toEqual({ added: 0, updated: 1, removed: 4, programmed: 2, errors: [] });
    expect(stateOf(a.ns)).toEqual(valid);
    expect(reachable(a.pod, c.podIP)).toBe(true);
  });

  it('converts a plain route left by flannel, restores a nexthop deleted by hand, and never touches a foreign nexthop', () => {
    const valid = stateOf(a.ns);
    // somebody else's nexthops on both our devices (no protocol / proto static) ...
    inNs(a.ns, 'ip', ['nexthop', 'add', 'id', '900', 'via', '10.244.50.0', 'dev', 'flannel.1', 'onlink']);
    inNs(a.ns, 'ip', ['nexthop', 'add', 'id', '901', 'via', '192.168.77.50', 'dev', 'eth0', 'proto', 'static']);
    // ... a stale route of ours on flannel.1 through the foreign one,
    inNs(a.ns, 'ip', ['route', 'add', '10.244.60.0/24', 'nhid', '900']);
    // B's route in flannel's plain form,
    inNs(a.ns, 'ip', ['route', 'replace', '10.244.2.0/24', 'via', '10.244.2.0', 'dev', 'flannel.1', 'onlink']);
    // and C's nexthop deleted by hand, which takes C's route along.
    const cNexthop = nexthopsOf(a.ns).find((n) => n.gateway === '10.244.3.0' && n.protocol === TSF_NEXTHOP_PROTOCOL);
    expect(cNexthop).toBeDefined();
    inNs(a.ns, 'ip', ['nexthop', 'del', 'id', String(cNexthop!.id)]);
    expect(inNs(a.ns, 'ip', ['-4', 'route', 'show'])).not.toContain('10.244.3.0/24');
    expect(inNs(a.ns, 'ip', ['-4', 'route', 'show'])).toContain('10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink');

    expect(a.backend!.reconcile(leasesExcept(all, a))).toEqual({ added: 1, updated: 1, removed: 1, programmed: 2, errors: [] });
    expect(stateOf(a.ns)).toEqual(valid);
    const foreign = nexthopsOf(a.ns).filter((n) => n.id >= 900).map((n) => `${n.id} via ${n.gateway} dev ${n.dev} ${n.protocol ?? 'unspec'}`);
    expect(foreign).toEqual(['900 via 10.244.50.0 dev flannel.1 unspec', '901 via 192.168.77.50 dev eth0 static']);
    // in sync now: another pass writes nothing
    expect(a.backend!.reconcile(leasesExcept(all, a))).toEqual({ added: 0, updated: 0, removed: 0, programmed: 2, errors: [] });
    inNs(a.ns, 'ip', ['nexthop', 'del', 'id', '900']);
    inNs(a.ns, 'ip', ['nexthop', 'del', 'id', '901']);
    expect(reachable(a.pod, c.podIP)).toBe(true);
  });

  it('keeps going when one lease is bad, and reports it', () => {
    const bad: Lease = { subnet: '10.244.7.0/24', publicIP: '192.168.77.7', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'zz' }, nodeName: 'bad' };
    const quiet: Lease = { ...bad, subnet: '10.244.6.0/24', backendData: { VNI: 1 }, nodeName: 'nomac' };
    const report = a.backend!.reconcile([bad, quiet, ...leasesExcept(all, a)]);
    // four leases, one refused and one skipped: two are programmed
    expect(report).toMatchObject({ added: 0, updated: 0, removed: 0, programmed: 2 });
    expect(report.errors).toEqual(['lease 10.244.7.0/24 (bad): VtepMAC "zz" is not a unicast MAC']);
    expect(routesOf(a.ns).join('\n')).not.toMatch(/10\.244\.[67]\.0/);
  });

  it('rebuilds a deleted flannel.1 with the same MAC and reprograms it', () => {
    inNs(a.ns, 'ip', ['link', 'del', 'flannel.1']);
    const report = a.backend!.reconcile(leasesExcept(all, a));
    expect(report).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(ipJson<{ address: string }[]>(a.ns, ['link', 'show', 'flannel.1'])[0]?.address).toBe(mac(a));
    expect(lines(inNs(a.ns, 'ip', ['-4', '-o', 'addr', 'show', 'flannel.1'])).map((l) => l.split(/\s+/)[3])).toEqual(['10.244.1.0/32']);
    expect(reachable(a.pod, b.podIP)).toBe(true);
  });

  it('with DirectRouting, routes same-L2 peers over the underlay and the routed peer over VXLAN', async () => {
    for (const node of all) await startNode(node, vxlanConfig(true));
    const ra = a.backend!.reconcile(leasesExcept(all, a));
    // B's overlay route is replaced by a direct one; its neighbour and FDB entry go
    expect(ra).toEqual({ added: 0, updated: 1, removed: 2, programmed: 2, errors: [] });
    expect(routesOf(a.ns)).toEqual(
      lines(`
        default via 192.168.77.254 dev eth0
        10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1
        10.244.2.0/24 nhid * via 192.168.77.12 dev eth0
        10.244.3.0/24 nhid * via 10.244.3.0 dev flannel.1 onlink
        192.168.77.0/24 dev eth0 proto kernel scope link src 192.168.77.1`),
    );
    expect(neighOf(a.ns)).toEqual([`10.244.3.0 lladdr ${mac(c)} PERMANENT`]);
    expect(fdbOf(a.ns)).toEqual([`${mac(c)} dst 192.168.88.3 self permanent`]);
    // B's overlay nexthop went with its overlay route
    expect(tsfNexthopLines(a.ns)).toEqual(['via 10.244.3.0 dev flannel.1 onlink', 'via 192.168.77.12 dev eth0']);
    b.backend!.reconcile(leasesExcept(all, b));
    c.backend!.reconcile(leasesExcept(all, c));
    expect(routesOf(c.ns).filter((l) => l.startsWith('10.244.'))).toContain('10.244.1.0/24 nhid * via 10.244.1.0 dev flannel.1 onlink');

    const txPackets = (): number =>
      ipJson<{ stats64: { tx: { packets: number } } }[]>(a.ns, ['-s', 'link', 'show', 'flannel.1'])[0]!.stats64.tx.packets;
    const t0 = txPackets();
    expect(reachable(a.pod, b.podIP)).toBe(true);
    const t1 = txPackets();
    expect(t1).toBe(t0); // A ↔ B never touched flannel.1
    expect(reachable(a.pod, c.podIP)).toBe(true);
    expect(txPackets()).toBeGreaterThan(t1); // A ↔ C is encapsulated

    // turning DirectRouting off again puts B back on the overlay
    await startNode(a, vxlanConfig(false));
    expect(a.backend!.reconcile(leasesExcept(all, a))).toEqual({ added: 2, updated: 1, removed: 0, programmed: 2, errors: [] });
    expect(routesOf(a.ns)).toContain('10.244.2.0/24 nhid * via 10.244.2.0 dev flannel.1 onlink');
  });
});
