// A cluster of "nodes" built from network namespaces: used by the demo and
// by the end-to-end tests. Two L2 segments joined by a router namespace,
// which also leads to an "outside" namespace standing in for the internet.
// With `ipv6` the underlay is dual-stack: every segment, node, the router and
// the outside host also get IPv6 addresses (fd00:77::/64, fd00:78::/64,
// fd00:18::/64), and IPv6 forwarding is on. Nothing here touches the root
// network namespace.
import { execFileSync, spawnSync } from 'node:child_process';

export interface NodeSpec {
  name: string;
  /** 'a' or 'b': which underlay segment the node sits on */
  segment: 'a' | 'b';
}

export interface ClusterNode {
  name: string;
  /** netns name, e.g. tsf1a2b-node1 */
  ns: string;
  nsPath: string;
  /** underlay interface inside the node and its address */
  iface: string;
  ip: string;
  cidr: string;
  /** the node's IPv6 underlay address and prefix, with a dual-stack underlay */
  ip6?: string;
  cidr6?: string;
}

export interface TopologyOptions {
  /** a dual-stack underlay: IPv6 addresses and routes next to the IPv4 ones */
  ipv6?: boolean;
}

export interface Topology {
  prefix: string;
  nodes: ClusterNode[];
  /** namespace of the outside host and its address */
  outsideNs: string;
  outsideIP: string;
  /** the outside host's IPv6 address, with a dual-stack underlay */
  outsideIP6?: string;
  /** every namespace made, for clean-up */
  namespaces: string[];
}

const SEGMENTS = {
  a: { net: '192.168.77', router: '192.168.77.1' },
  b: { net: '192.168.78', router: '192.168.78.1' },
} as const;
const OUTSIDE = { router: '198.18.0.1', host: '198.18.0.2' };
const SEGMENTS6 = {
  a: { net: 'fd00:77::', router: 'fd00:77::1' },
  b: { net: 'fd00:78::', router: 'fd00:78::1' },
} as const;
const OUTSIDE6 = { router: 'fd00:18::1', host: 'fd00:18::2' };

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function sysctl(ns: string, key: string, value: string): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`]);
}

function addNs(topo: Topology, name: string): string {
  const ns = `${topo.prefix}-${name}`;
  ip(['netns', 'add', ns]);
  topo.namespaces.push(ns);
  ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  return ns;
}

/** Builds the namespaces; on any failure removes what it made and rethrows. */
export function buildTopology(prefix: string, specs: NodeSpec[], opts: TopologyOptions = {}): Topology {
  const v6 = opts.ipv6 === true;
  const topo: Topology = { prefix, nodes: [], outsideNs: '', outsideIP: OUTSIDE.host, namespaces: [] };
  if (v6) topo.outsideIP6 = OUTSIDE6.host;
  // no duplicate address detection: the addresses are ours alone, and DAD
  // would keep them unusable for a second or more after they are added
  const addr6 = (ns: string, cidr: string, dev: string) => ip(['-n', ns, 'addr', 'add', cidr, 'dev', dev, 'nodad']);
  try {
    const router = addNs(topo, 'router');
    sysctl(router, 'net.ipv4.ip_forward', '1');
    if (v6) sysctl(router, 'net.ipv6.conf.all.forwarding', '1');
    const segNs: Record<'a' | 'b', string> = { a: addNs(topo, 'sega'), b: addNs(topo, 'segb') };
    for (const seg of ['a', 'b'] as const) {
      const ns = segNs[seg];
      ip(['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', ns, 'link', 'set', 'br0', 'up']);
      ip(['-n', ns, 'link', 'add', 'rt', 'type', 'veth', 'peer', 'name', `seg${seg}`, 'netns', router]);
      ip(['-n', ns, 'link', 'set', 'rt', 'master', 'br0', 'up']);
      ip(['-n', router, 'addr', 'add', `${SEGMENTS[seg].router}/24`, 'dev', `seg${seg}`]);
      if (v6) addr6(router, `${SEGMENTS6[seg].router}/64`, `seg${seg}`);
      ip(['-n', router, 'link', 'set', `seg${seg}`, 'up']);
    }
    topo.outsideNs = addNs(topo, 'outside');
    ip(['-n', router, 'link', 'add', 'out', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', topo.outsideNs]);
    ip(['-n', router, 'addr', 'add', `${OUTSIDE.router}/24`, 'dev', 'out']);
    if (v6) addr6(router, `${OUTSIDE6.router}/64`, 'out');
    ip(['-n', router, 'link', 'set', 'out', 'up']);
    ip(['-n', topo.outsideNs, 'addr', 'add', `${OUTSIDE.host}/24`, 'dev', 'eth0']);
    ip(['-n', topo.outsideNs, 'link', 'set', 'eth0', 'up']);
    // The outside host knows only the underlay networks, not the pod network:
    // pods reach it only through masquerade, as they would the internet.
    ip(['-n', topo.outsideNs, 'route', 'add', '192.168.0.0/16', 'via', OUTSIDE.router]);
    if (v6) {
      addr6(topo.outsideNs, `${OUTSIDE6.host}/64`, 'eth0');
      for (const seg of ['a', 'b'] as const) ip(['-n', topo.outsideNs, '-6', 'route', 'add', `${SEGMENTS6[seg].net}/64`, 'via', OUTSIDE6.router]);
    }

    const hostIds = { a: 10, b: 10 };
    for (const spec of specs) {
      const ns = addNs(topo, spec.name);
      const seg = SEGMENTS[spec.segment];
      const addr = `${seg.net}.${hostIds[spec.segment]++}`;
      ip(['-n', segNs[spec.segment], 'link', 'add', spec.name.slice(0, 15), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(['-n', segNs[spec.segment], 'link', 'set', spec.name.slice(0, 15), 'master', 'br0', 'up']);
      ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', ns, 'route', 'add', 'default', 'via', seg.router]);
      sysctl(ns, 'net.ipv4.ip_forward', '1');
      const node: ClusterNode = { name: spec.name, ns, nsPath: `/var/run/netns/${ns}`, iface: 'eth0', ip: addr, cidr: `${addr}/24` };
      if (v6) {
        const seg6 = SEGMENTS6[spec.segment];
        node.ip6 = `${seg6.net}${addr.split('.')[3]}`;
        node.cidr6 = `${node.ip6}/64`;
        addr6(ns, node.cidr6, 'eth0');
        ip(['-n', ns, '-6', 'route', 'add', 'default', 'via', seg6.router]);
        sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
      }
      topo.nodes.push(node);
    }
    return topo;
  } catch (err) {
    destroyTopology(topo);
    throw err;
  }
}

/** Removes every namespace of the topology (and all links inside them). */
export function destroyTopology(topo: Pick<Topology, 'namespaces'>): void {
  for (const ns of [...topo.namespaces].reverse()) spawnSync('ip', ['netns', 'del', ns]);
  topo.namespaces.length = 0;
}

/** Adds a pod namespace (no interfaces yet but lo) and records it for clean-up. */
export function addPodNamespace(topo: Topology, name: string): string {
  return addNs(topo, name);
}
