// The host-gw backend against the real kernel: nodes A and B share an
// underlay segment, C is behind a router. A routes to B's pods via B's
// address, refuses C (no L2 path), and cleans up routes it no longer owns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { HostGwBackend } from '../../src/daemon/backend/hostgw.js';
import { createBackend } from '../../src/daemon/backend/index.js';
import { chooseExternalInterface } from '../../src/daemon/external.js';
import type { ExternalInterface, Lease } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { routesResolved, tsfNexthopLines } from '../helpers/nexthops.js';

const NETWORK = '10.244.0.0/16';

function ip(ns: string, args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

function reachable(fromNs: string, to: string): boolean {
  const once = () => spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c', '1', '-W', '1', to], { stdio: 'ignore' }).status === 0;
  return once() || once();
}

/** pod routes, each `nhid N` checked against the nexthop table and shown as `nhid *` */
const podRoutes = (ns: string): string[] => routesResolved(ns).filter((l) => l.startsWith('10.244.'));

interface Node {
  ns: string;
  pod: string;
  subnet: string;
  lease: Lease;
  ext: ExternalInterface;
  backend: HostGwBackend;
}

describe.skipIf(requireOrSkip('host-gw backend', { root: isRoot }))('host-gw backend on real namespaces', () => {
  const nodes: Record<'a' | 'b' | 'c', Node> = {} as Record<'a' | 'b' | 'c', Node>;

  function makeNode(label: 'a' | 'b' | 'c', n: number, attach: (ns: string) => void): void {
    const ns = addNetns(`hg${label}`);
    const pod = addNetns(`hg${label}pod`);
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    ip(ns, ['link', 'add', 'cni0', 'type', 'bridge']);
    ip(ns, ['addr', 'add', `10.244.${n}.1/24`, 'dev', 'cni0']);
    ip(ns, ['link', 'set', 'cni0', 'up']);
    ip(ns, ['link', 'add', 'vethpod', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
    ip(ns, ['link', 'set', 'vethpod', 'master', 'cni0', 'up']);
    ip(pod, ['addr', 'add', `10.244.${n}.2/24`, 'dev', 'eth0']);
    ip(pod, ['link', 'set', 'eth0', 'up']);
    ip(pod, ['route', 'add', 'default', 'via', `10.244.${n}.1`]);
    attach(ns);
    const ext = chooseExternalInterface({ iface: ['eth0'], netns: nsPath(ns) });
    const backend = new HostGwBackend({ network: NETWORK, netns: nsPath(ns) });
    const subnet = `10.244.${n}.0/24`;
    const lease: Lease = { subnet, publicIP: ext.publicIP, backendType: 'host-gw', backendData: {}, nodeName: label };
    nodes[label] = { ns, pod, subnet, lease, ext, backend };
  }

  beforeAll(async () => {
    const ul = addNetns('hgul');
    ip(ul, ['link', 'add', 'br0', 'type', 'bridge']);
    ip(ul, ['link', 'set', 'br0', 'up']);
    const plug = (name: string, cidr: string, gw: string) => (ns: string) => {
      ip(ul, ['link', 'add', name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(ul, ['link', 'set', name, 'master', 'br0', 'up']);
      ip(ns, ['addr', 'add', cidr, 'dev', 'eth0']);
      ip(ns, ['link', 'set', 'eth0', 'up']);
      ip(ns, ['route', 'add', 'default', 'via', gw]);
    };
    makeNode('a', 1, plug('pa', '192.168.77.1/24', '192.168.77.254'));
    makeNode('b', 2, plug('pb', '192.168.77.2/24', '192.168.77.254'));
    const rt = addNetns('hgrt');
    execFileSync('ip', ['netns', 'exec', rt, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    plug('prt', '192.168.77.254/24', '192.168.77.1')(rt);
    makeNode('c', 3, (ns) => {
      ip(rt, ['link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(rt, ['addr', 'add', '192.168.88.254/24', 'dev', 'eth1']);
      ip(rt, ['link', 'set', 'eth1', 'up']);
      ip(ns, ['addr', 'add', '192.168.88.3/24', 'dev', 'eth0']);
      ip(ns, ['link', 'set', 'eth0', 'up']);
      ip(ns, ['route', 'add', 'default', 'via', '192.168.88.254']);
    });
    for (const node of Object.values(nodes)) {
      expect(await node.backend.prepare(node.ext)).toEqual({});
      expect(await node.backend.configure(node.lease)).toEqual({ mtu: 1500 });
    }
  });
  afterAll(() => cleanupAll());

  it('routes same-L2 peers via their address and refuses the one behind the router', () => {
    const { a, b, c } = nodes;
    const report = a.backend.reconcile([b.lease, c.lease]);
    expect(report.added).toBe(1);
    expect(report.programmed).toBe(1); // c is refused, so only b's route counts
    expect(report.errors).toEqual([
      'lease 10.244.3.0/24 (c): public IP 192.168.88.3 is not on our L2 subnet 192.168.77.0/24; host-gw needs every node on one segment',
    ]);
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1', '10.244.2.0/24 nhid * via 192.168.77.2 dev eth0']);
    expect(tsfNexthopLines(a.ns)).toEqual(['via 192.168.77.2 dev eth0']);
    expect(b.backend.reconcile([a.lease, c.lease]).added).toBe(1);
    expect(reachable(a.pod, '10.244.2.2')).toBe(true);
    expect(reachable(b.pod, '10.244.1.2')).toBe(true);
    // C refuses both A and B for the same reason
    expect(c.backend.reconcile([a.lease, b.lease]).errors).toHaveLength(2);
    expect(podRoutes(c.ns)).toEqual(['10.244.3.0/24 dev cni0 proto kernel scope link src 10.244.3.1']);
  });

  it('is a no-op when nothing changed', () => {
    const { a, b, c } = nodes;
    const before = podRoutes(a.ns);
    const report = a.backend.reconcile([b.lease, c.lease]);
    expect([report.added, report.updated, report.removed]).toEqual([0, 0, 0]);
    expect(podRoutes(a.ns)).toEqual(before);
  });

  it('removes routes it owns that no lease wants, repairs changed ones, and leaves others alone', () => {
    const { a, b } = nodes;
    inNs(a.ns, 'ip', ['route', 'add', '10.244.9.0/24', 'via', '192.168.77.9', 'dev', 'eth0']); // a departed node
    inNs(a.ns, 'ip', ['route', 'replace', '10.244.2.0/24', 'via', '192.168.77.99', 'dev', 'eth0']); // wrong gateway
    inNs(a.ns, 'ip', ['route', 'add', '172.16.0.0/24', 'via', '192.168.77.254', 'dev', 'eth0']); // not the cluster's
    const report = a.backend.reconcile([b.lease]);
    expect(report).toEqual({ added: 0, updated: 1, removed: 1, programmed: 1, errors: [] });
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1', '10.244.2.0/24 nhid * via 192.168.77.2 dev eth0']);
    expect(tsfNexthopLines(a.ns)).toEqual(['via 192.168.77.2 dev eth0']);
    expect(inNs(a.ns, 'ip', ['route', 'show', '172.16.0.0/24'])).toContain('via 192.168.77.254');
    expect(reachable(a.pod, '10.244.2.2')).toBe(true);
  });

  it('removes the route and nexthop of a node that left', () => {
    const { a } = nodes;
    expect(a.backend.reconcile([])).toEqual({ added: 0, updated: 0, removed: 1, programmed: 0, errors: [] });
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1']);
    expect(tsfNexthopLines(a.ns)).toEqual([]);
  });

  it('never routes a lease onto a subnet this node still serves on cni0 (its own lease from before an address change)', async () => {
    // Node a's address changed and its agent took a new subnet (host-gw leases carry nothing but the
    // address, so the old one cannot be recognised); its old lease, on the subnet cni0 still serves
    // for its old pods, names the old address on the same segment.
    const { a } = nodes;
    const moved = new HostGwBackend({ network: NETWORK, netns: nsPath(a.ns) });
    await moved.prepare(a.ext);
    await moved.configure({ ...a.lease, subnet: '10.244.5.0/24' });
    const stale: Lease = { subnet: a.subnet, publicIP: '192.168.77.50', backendType: 'host-gw', backendData: {}, nodeName: 'a-before' };
    const report = moved.reconcile([stale]);
    expect(report.programmed).toBe(0);
    expect(report.errors.join('\n')).toMatch(/10\.244\.1\.0\/24.*cni0/);
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1']);
    expect(reachable(a.ns, '10.244.1.2')).toBe(true);
    // Once cni0 no longer serves it (the old pods gone, the bridge moved), the subnet is routed as any peer's.
    ip(a.ns, ['addr', 'del', '10.244.1.1/24', 'dev', 'cni0']);
    try {
      expect(moved.reconcile([stale]).added).toBe(1);
      expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 nhid * via 192.168.77.50 dev eth0']);
    } finally {
      moved.reconcile([]);
      ip(a.ns, ['addr', 'add', '10.244.1.1/24', 'dev', 'cni0']);
    }
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1']);
  });

  it('routes a /24 lease inside a wider local address of the cluster network (a docker0-like bridge on a /20 does not block it)', () => {
    // Only a local address of the SAME network as the lease would lose its connected route to a host-gw
    // route; a wider one (docker0 172.17.0.1/16 in a 172.16.0.0/12 cluster, an underlay address inside the
    // cluster network) stays, and the more specific /24 wins for the lease's pods.
    const { a, b } = nodes;
    const wide: Lease = { subnet: '10.244.17.0/24', publicIP: b.ext.publicIP, backendType: 'host-gw', backendData: {}, nodeName: 'b-wide' };
    ip(a.ns, ['link', 'add', 'hgwide', 'type', 'bridge']);
    try {
      ip(a.ns, ['addr', 'add', '10.244.16.1/20', 'dev', 'hgwide']);
      ip(a.ns, ['link', 'set', 'hgwide', 'up']);
      const report = a.backend.reconcile([wide]);
      expect(report.errors).toEqual([]);
      expect(report).toMatchObject({ added: 1, programmed: 1 });
      expect(podRoutes(a.ns)).toContain('10.244.17.0/24 nhid * via 192.168.77.2 dev eth0');
      expect(inNs(a.ns, 'ip', ['route', 'get', '10.244.17.5'])).toContain('via 192.168.77.2 dev eth0');
    } finally {
      a.backend.reconcile([]);
      ip(a.ns, ['link', 'del', 'hgwide']);
    }
    expect(podRoutes(a.ns)).toEqual(['10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1']);
  });

  it('refuses to start behind NAT, and the factory builds both backends', async () => {
    const { a } = nodes;
    const natted = createBackend({ type: 'host-gw' }, { network: NETWORK, netns: nsPath(a.ns) });
    expect(natted.type).toBe('host-gw');
    await expect(natted.prepare({ ...a.ext, publicIP: '203.0.113.5' })).rejects.toThrow(/behind NAT/);
    const vx = createBackend({ type: 'vxlan', vni: 1, port: 8472, directRouting: false }, { network: NETWORK });
    expect(vx.type).toBe('vxlan');
    expect(() => natted.reconcile([])).toThrow(/before prepare/);
    expect(() => new HostGwBackend({ network: 'bogus' })).toThrow(/cluster network "bogus" is not an IPv4 CIDR/);
  });
});
