// The VXLAN and host-gw backends for IPv6 against the real kernel: three
// dual-stack "nodes" (network namespaces), A and B on one underlay segment,
// C behind a router, each with a dual-stack cni0 and pod. Every node runs
// both VXLAN instances (flannel.1 on IPv4, flannel-v6.1 on IPv6), fed the
// same dual-stack leases directly, as the agent does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import { HostGwBackend } from '../../src/daemon/backend/hostgw.js';
import { chooseExternalInterface } from '../../src/daemon/external.js';
import type { ExternalInterface, Lease, VxlanBackendConfig } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath, sortedLines as lines } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { routesResolved, tsfNexthopLines } from '../helpers/nexthops.js';

const NETWORK = '10.244.0.0/16';
const NETWORK6 = 'fd00:10:244::/56';

interface Node {
  label: string;
  ns: string;
  pod: string;
  n: number;
  /** last group of the underlay IPv6 address: fd00:77::<n> */
  ul6: string;
  podIP: string;
  podIP6: string;
  ext?: ExternalInterface;
  v4?: VxlanBackend;
  v6?: VxlanBackend;
  lease?: Lease;
}

function ip(ns: string, args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function sysctl(ns: string, kv: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv]);
}

function pings(fromNs: string, to: string, extra: string[] = []): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c', '1', '-W', '1', ...extra, to], { stdio: 'ignore' }).status === 0;
}

/** Waits out the first pings, which may be lost while ND / ARP on cni0 resolves. */
function reachable(fromNs: string, to: string): boolean {
  for (let i = 0; i < 4; i++) if (pings(fromNs, to)) return true;
  return false;
}

/** IPv6 pod routes, each `nhid N` checked against the nexthop table and shown as `nhid *` */
const podRoutes6 = (ns: string): string[] => routesResolved(ns, ['-6', 'route', 'show']).filter((l) => l.startsWith('fd00:10:244:'));
const neigh6 = (ns: string): string[] => lines(inNs(ns, 'ip', ['-6', 'neigh', 'show', 'dev', 'flannel-v6.1']));
const fdb6 = (ns: string): string[] => lines(inNs(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel-v6.1']));
const state6 = (ns: string) => ({ routes: podRoutes6(ns), nexthops: tsfNexthopLines(ns, '-6'), neigh: neigh6(ns), fdb: fdb6(ns) });

/** A node netns with eth0 on an underlay, a dual-stack cni0 and one pod behind it. */
function buildNode(label: string, n: number, ul6: string): Node {
  const ns = addNetns(label);
  const pod = addNetns(`${label}pod`);
  sysctl(ns, 'net.ipv4.ip_forward=1');
  sysctl(ns, 'net.ipv6.conf.all.forwarding=1');
  ip(ns, ['link', 'add', 'cni0', 'type', 'bridge']);
  ip(ns, ['link', 'set', 'cni0', 'mtu', '1430', 'up']);
  ip(ns, ['addr', 'add', `10.244.${n}.1/24`, 'dev', 'cni0']);
  ip(ns, ['addr', 'add', `fd00:10:244:${n}::1/64`, 'dev', 'cni0', 'nodad']);
  ip(ns, ['link', 'add', 'vethpod', 'mtu', '1430', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
  ip(ns, ['link', 'set', 'vethpod', 'master', 'cni0', 'up']);
  ip(pod, ['addr', 'add', `10.244.${n}.2/24`, 'dev', 'eth0']);
  ip(pod, ['addr', 'add', `fd00:10:244:${n}::2/64`, 'dev', 'eth0', 'nodad']);
  ip(pod, ['link', 'set', 'eth0', 'up']);
  ip(pod, ['route', 'add', 'default', 'via', `10.244.${n}.1`]);
  ip(pod, ['-6', 'route', 'add', 'default', 'via', `fd00:10:244:${n}::1`]);
  return { label, ns, pod, n, ul6, podIP: `10.244.${n}.2`, podIP6: `fd00:10:244:${n}::2` };
}

/** Joins `node`'s eth0 to the underlay bridge and addresses it (both families). */
function plug(ulNs: string, node: Node, cidr: string, gw: string, cidr6: string, gw6: string): void {
  const port = `p${node.label}`.slice(0, 15);
  ip(ulNs, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.ns]);
  ip(ulNs, ['link', 'set', port, 'master', 'br0', 'up']);
  ip(node.ns, ['addr', 'add', cidr, 'dev', 'eth0']);
  ip(node.ns, ['addr', 'add', cidr6, 'dev', 'eth0', 'nodad']);
  ip(node.ns, ['link', 'set', 'eth0', 'up']);
  ip(node.ns, ['route', 'add', 'default', 'via', gw]);
  ip(node.ns, ['-6', 'route', 'add', 'default', 'via', gw6]);
}

function vxlanConfig(directRouting = false): VxlanBackendConfig {
  return { type: 'vxlan', vni: 1, port: 8472, directRouting };
}

/** The external interface with its IPv6 half, as the agent's interface selection fills it. */
function external(node: Node): ExternalInterface {
  const v4 = chooseExternalInterface({ netns: nsPath(node.ns) });
  const cidr = JSON.parse(execFileSync('ip', ['-n', node.ns, '-j', '-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global'], { encoding: 'utf8' })) as {
    addr_info: { local: string; prefixlen: number }[];
  }[];
  const a = cidr[0]!.addr_info[0]!;
  return { ...v4, ipv6: a.local, ipv6Cidr: `${a.local}/${a.prefixlen}`, publicIPv6: a.local };
}

async function startNode(node: Node, config: VxlanBackendConfig): Promise<void> {
  node.ext = external(node);
  const netns = nsPath(node.ns);
  node.v4 = new VxlanBackend({ config, network: NETWORK, netns });
  node.v6 = new VxlanBackend({ config, network: NETWORK6, netns, family: 6 });
  const data4 = await node.v4.prepare(node.ext);
  const data6 = await node.v6.prepare(node.ext);
  node.lease = {
    subnet: `10.244.${node.n}.0/24`,
    ipv6Subnet: `fd00:10:244:${node.n}::/64`,
    publicIP: node.ext.publicIP,
    publicIPv6: node.ext.publicIPv6!,
    backendType: 'vxlan',
    backendData: data4,
    backendV6Data: data6,
    nodeName: node.label,
  };
  expect((await node.v4.configure(node.lease)).mtu).toBe(node.ext.mtu - 50);
  expect((await node.v6.configure(node.lease)).mtu).toBe(node.ext.mtu - 70);
}

const others = (nodes: Node[], self: Node): Lease[] => nodes.filter((n) => n !== self).map((n) => n.lease!);
const mac6 = (node: Node): string => node.lease!.backendV6Data!.VtepMAC!;

describe.skipIf(requireOrSkip('IPv6 backends', { root: isRoot }))('VXLAN and host-gw backends for IPv6 on real namespaces', () => {
  let a: Node;
  let b: Node;
  let c: Node;
  let all: Node[];

  beforeAll(() => {
    const ul = addNetns('ul6');
    ip(ul, ['link', 'add', 'br0', 'type', 'bridge']);
    ip(ul, ['link', 'set', 'br0', 'up']);
    a = buildNode('a6', 1, '1');
    b = buildNode('b6', 2, '2');
    c = buildNode('c6', 3, '3');
    all = [a, b, c];
    plug(ul, a, '192.168.77.1/24', '192.168.77.254', 'fd00:77::1/64', 'fd00:77::fe');
    plug(ul, b, '192.168.77.2/24', '192.168.77.254', 'fd00:77::2/64', 'fd00:77::fe');
    // C sits on 192.168.88.0/24 and fd00:88::/64 behind a router: same cluster, other L2.
    const rt = addNetns('rt6');
    sysctl(rt, 'net.ipv4.ip_forward=1');
    sysctl(rt, 'net.ipv6.conf.all.forwarding=1');
    ip(ul, ['link', 'add', 'prt', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', rt]);
    ip(ul, ['link', 'set', 'prt', 'master', 'br0', 'up']);
    ip(rt, ['addr', 'add', '192.168.77.254/24', 'dev', 'eth0']);
    ip(rt, ['addr', 'add', 'fd00:77::fe/64', 'dev', 'eth0', 'nodad']);
    ip(rt, ['link', 'set', 'eth0', 'up']);
    ip(rt, ['link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.ns]);
    ip(rt, ['addr', 'add', '192.168.88.254/24', 'dev', 'eth1']);
    ip(rt, ['addr', 'add', 'fd00:88::fe/64', 'dev', 'eth1', 'nodad']);
    ip(rt, ['link', 'set', 'eth1', 'up']);
    ip(c.ns, ['addr', 'add', '192.168.88.3/24', 'dev', 'eth0']);
    ip(c.ns, ['addr', 'add', 'fd00:88::3/64', 'dev', 'eth0', 'nodad']);
    ip(c.ns, ['link', 'set', 'eth0', 'up']);
    ip(c.ns, ['route', 'add', 'default', 'via', '192.168.88.254']);
    ip(c.ns, ['-6', 'route', 'add', 'default', 'via', 'fd00:88::fe']);
  });
  afterAll(() => cleanupAll());

  it('creates flannel-v6.1 on the IPv6 underlay with its /128, MTU underlay - 70, and programs every IPv6 peer', async () => {
    for (const node of all) await startNode(node, vxlanConfig());
    const [link] = ipJson<{ mtu: number; address: string; flags: string[]; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }[]>(
      a.ns,
      ['-d', 'link', 'show', 'flannel-v6.1'],
    );
    expect(link.mtu).toBe(1430);
    expect(link.address).toBe(mac6(a));
    expect(mac6(a)).not.toBe(a.lease!.backendData.VtepMAC);
    expect(link.flags).toContain('UP');
    expect(link.linkinfo.info_kind).toBe('vxlan');
    expect(link.linkinfo.info_data).toMatchObject({ id: 1, local6: 'fd00:77::1', link: 'eth0', port: 8472, learning: false });
    const globals = lines(inNs(a.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global'])).map((l) => l.split(/\s+/)[3]);
    expect(globals).toEqual(['fd00:10:244:1::/128']);
    expect(inNs(a.ns, 'sysctl', ['-n', 'net.ipv6.conf.flannel-v6/1.accept_ra']).trim()).toBe('0');

    for (const node of all) {
      expect(node.v4!.reconcile(others(all, node))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
      expect(node.v6!.reconcile(others(all, node))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
    }
    expect(podRoutes6(a.ns)).toEqual(
      lines(`
        fd00:10:244:1::/64 dev cni0 proto kernel metric 256 pref medium
        fd00:10:244:1:: dev flannel-v6.1 proto kernel metric 256 pref medium
        fd00:10:244:2::/64 nhid * via fd00:10:244:2:: dev flannel-v6.1 metric 1024 onlink pref medium
        fd00:10:244:3::/64 nhid * via fd00:10:244:3:: dev flannel-v6.1 metric 1024 onlink pref medium`),
    );
    // one IPv6 nexthop of ours per peer; the IPv4 instance's are IPv4 ones
    expect(tsfNexthopLines(a.ns, '-6')).toEqual(['via fd00:10:244:2:: dev flannel-v6.1 onlink', 'via fd00:10:244:3:: dev flannel-v6.1 onlink']);
    expect(tsfNexthopLines(a.ns, '-4')).toEqual(['via 10.244.2.0 dev flannel.1 onlink', 'via 10.244.3.0 dev flannel.1 onlink']);
    expect(neigh6(a.ns)).toEqual(lines(`fd00:10:244:2:: lladdr ${mac6(b)} PERMANENT\nfd00:10:244:3:: lladdr ${mac6(c)} PERMANENT`));
    expect(fdb6(a.ns)).toEqual(lines(`${mac6(b)} dst fd00:77::2 self permanent\n${mac6(c)} dst fd00:88::3 self permanent`));
    expect(fdb6(c.ns)).toEqual(lines(`${mac6(a)} dst fd00:77::1 self permanent\n${mac6(b)} dst fd00:77::2 self permanent`));
  });

  it('carries IPv6 and IPv4 pod traffic between nodes, also across the router, with IPv6 path MTU 1430', () => {
    for (const [from, to] of [[a, b], [a, c], [c, b], [b, a]] as const) {
      expect(reachable(from.pod, to.podIP6), `${from.label} → ${to.label} ${to.podIP6}`).toBe(true);
      expect(reachable(from.pod, to.podIP), `${from.label} → ${to.label} ${to.podIP}`).toBe(true);
    }
    // 1382 bytes of payload + 8 ICMPv6 + 40 IPv6 = 1430: fits through the overlay; one more does not
    const df = (size: number) => pings(a.pod, b.podIP6, ['-M', 'do', '-s', String(size)]);
    expect(df(1382)).toBe(true);
    expect(df(1383)).toBe(false);
  });

  it('writes nothing for IPv6 when nothing changed, and ignores leases without an IPv6 subnet', () => {
    const v4only: Lease = { subnet: '10.244.9.0/24', publicIP: '192.168.77.9', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:58:00:00:00:09' }, nodeName: 'v4only' };
    const before = state6(a.ns);
    expect(a.v6!.reconcile([...others(all, a), v4only])).toEqual({ added: 0, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(state6(a.ns)).toEqual(before);
  });

  it('removes the IPv6 route, nexthop, neighbour and FDB entry of a node that left, and brings them back when it returns', () => {
    const before = state6(a.ns);
    expect(a.v6!.reconcile([b.lease!])).toEqual({ added: 0, updated: 0, removed: 3, programmed: 1, errors: [] });
    const after = state6(a.ns);
    expect(after.routes).toEqual(before.routes.filter((l) => !l.startsWith('fd00:10:244:3::/64')));
    expect(after.neigh).toEqual(before.neigh.filter((l) => !l.startsWith('fd00:10:244:3::')));
    expect(after.fdb).toEqual(before.fdb.filter((l) => !l.includes('fd00:88::3')));
    expect(after.nexthops).toEqual(before.nexthops.filter((l) => !l.startsWith('via fd00:10:244:3:: ')));
    expect(after.nexthops).toHaveLength(1);
    expect(pings(a.pod, c.podIP6)).toBe(false);
    expect(a.v6!.reconcile(others(all, a))).toEqual({ added: 3, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(state6(a.ns)).toEqual(before);
    expect(reachable(a.pod, c.podIP6)).toBe(true);
  });

  it('puts back hand-deleted IPv6 routes, neighbours and FDB entries, and removes foreign ones', () => {
    const valid = state6(a.ns);
    inNs(a.ns, 'ip', ['-6', 'route', 'del', 'fd00:10:244:2::/64', 'dev', 'flannel-v6.1']);
    inNs(a.ns, 'ip', ['-6', 'neigh', 'del', 'fd00:10:244:3::', 'dev', 'flannel-v6.1']);
    inNs(a.ns, 'bridge', ['fdb', 'del', mac6(b), 'dev', 'flannel-v6.1', 'dst', 'fd00:77::2']);
    inNs(a.ns, 'ip', ['-6', 'route', 'add', 'fd00:10:244:9::/64', 'via', 'fd00:10:244:9::', 'dev', 'flannel-v6.1', 'onlink']);
    expect(a.v6!.reconcile(others(all, a))).toEqual({ added: 3, updated: 0, removed: 1, programmed: 2, errors: [] });
    expect(state6(a.ns)).toEqual(valid);
    expect(reachable(a.pod, b.podIP6)).toBe(true);
  });

  it('follows a node that comes back with a new IPv6 address: edge update and exact pass agree', async () => {
    ip(b.ns, ['addr', 'del', 'fd00:77::2/64', 'dev', 'eth0']);
    ip(b.ns, ['addr', 'add', 'fd00:77::12/64', 'dev', 'eth0', 'nodad']);
    ip(b.ns, ['-6', 'route', 'replace', 'default', 'via', 'fd00:77::fe']);
    const oldMac = mac6(b);
    await startNode(b, vxlanConfig()); // local6 differs: flannel-v6.1 is recreated with the same MAC
    expect(b.lease!.publicIPv6).toBe('fd00:77::12');
    expect(mac6(b)).toBe(oldMac);
    expect(b.v6!.reconcile(others(all, b))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
    // A learns it through the edge-triggered path (no kernel read), C through the exact pass
    expect(a.v6!.update(others(all, a))).toEqual({ added: 0, updated: 1, removed: 0, programmed: 2, errors: [] });
    expect(c.v6!.reconcile(others(all, c))).toEqual({ added: 0, updated: 1, removed: 0, programmed: 2, errors: [] });
    expect(fdb6(a.ns)).toEqual(lines(`${mac6(b)} dst fd00:77::12 self permanent\n${mac6(c)} dst fd00:88::3 self permanent`));
    // the exact pass finds nothing left to do after the edge update
    expect(a.v6!.reconcile(others(all, a))).toEqual({ added: 0, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(reachable(a.pod, b.podIP6)).toBe(true);
    expect(reachable(c.pod, b.podIP6)).toBe(true);
  });

  it('rebuilds a deleted flannel-v6.1 with the same MAC and /128 and reprograms it', () => {
    inNs(a.ns, 'ip', ['link', 'del', 'flannel-v6.1']);
    expect(a.v6!.reconcile(others(all, a))).toEqual({ added: 6, updated: 0, removed: 0, programmed: 2, errors: [] });
    expect(ipJson<{ address: string }[]>(a.ns, ['link', 'show', 'flannel-v6.1'])[0]?.address).toBe(mac6(a));
    const globals = lines(inNs(a.ns, 'ip', ['-6', '-o', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global'])).map((l) => l.split(/\s+/)[3]);
    expect(globals).toEqual(['fd00:10:244:1::/128']);
    expect(reachable(a.pod, b.podIP6)).toBe(true);
  });

  it('with DirectRouting, routes the same-L2 IPv6 peer over the underlay and the routed one over flannel-v6.1', async () => {
    for (const node of all) await startNode(node, vxlanConfig(true));
    expect(a.v6!.reconcile(others(all, a))).toEqual({ added: 0, updated: 1, removed: 2, programmed: 2, errors: [] });
    expect(podRoutes6(a.ns)).toContain('fd00:10:244:2::/64 nhid * via fd00:77::12 dev eth0 metric 1024 pref medium');
    expect(podRoutes6(a.ns)).toContain('fd00:10:244:3::/64 nhid * via fd00:10:244:3:: dev flannel-v6.1 metric 1024 onlink pref medium');
    expect(neigh6(a.ns)).toEqual([`fd00:10:244:3:: lladdr ${mac6(c)} PERMANENT`]);
    for (const node of [b, c]) expect(node.v6!.reconcile(others(all, node)).errors).toEqual([]);
    expect(reachable(a.pod, b.podIP6)).toBe(true);
    expect(reachable(a.pod, c.podIP6)).toBe(true);
  });

  it('host-gw for IPv6: a route per peer via its PublicIPv6, and a refusal for the peer beyond the router', async () => {
    for (const node of all) inNs(node.ns, 'ip', ['link', 'del', 'flannel-v6.1']);
    // DirectRouting left same-L2 routes on eth0: start host-gw from none
    inNs(a.ns, 'ip', ['-6', 'route', 'del', 'fd00:10:244:2::/64', 'dev', 'eth0']);
    inNs(b.ns, 'ip', ['-6', 'route', 'del', 'fd00:10:244:1::/64', 'dev', 'eth0']);
    const gws = [a, b].map((node) => {
      const gw = new HostGwBackend({ network: NETWORK6, netns: nsPath(node.ns), family: 6 });
      return { node, gw };
    });
    for (const { node, gw } of gws) {
      expect(await gw.prepare(node.ext!)).toEqual({});
      expect((await gw.configure(node.lease!)).mtu).toBe(1500);
    }
    const hostGw = (self: Node): Lease[] => others(all, self).map((l) => ({ ...l, backendType: 'host-gw' as const, backendData: {}, backendV6Data: {} }));
    const ra = gws[0]!.gw.reconcile(hostGw(a));
    expect(ra).toMatchObject({ added: 1, updated: 0, removed: 0, programmed: 1 });
    expect(ra.errors).toEqual([expect.stringMatching(/fd00:10:244:3::\/64 \(c6\): public IP fd00:88::3 is not on our L2 subnet fd00:77::\/64/)]);
    expect(gws[1]!.gw.reconcile(hostGw(b)).added).toBe(1);
    expect(podRoutes6(a.ns)).toContain('fd00:10:244:2::/64 nhid * via fd00:77::12 dev eth0 metric 1024 pref medium');
    expect(gws[0]!.gw.reconcile(hostGw(a))).toMatchObject({ added: 0, updated: 0, removed: 0, programmed: 1 });
    expect(reachable(a.pod, b.podIP6)).toBe(true);
    // B leaves: its route goes, and only it
    expect(gws[0]!.gw.reconcile([])).toMatchObject({ removed: 1, programmed: 0, errors: [] });
    expect(podRoutes6(a.ns).filter((l) => l.includes('via'))).toEqual([]);
  });
});
