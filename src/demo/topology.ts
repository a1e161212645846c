// A cluster of "nodes" built from network namespaces: used by the demo and
// by the end-to-end tests. Two L2 segments joined by a router namespace,
// which also leads to an "outside" namespace standing in for the internet.
// Nothing here touches the root network namespace.
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
}

export interface Topology {
  prefix: string;
  nodes: ClusterNode[];
  /** namespace of the outside host and its address */
  outsideNs: string;
  outsideIP: string;
  /** every namespace made, for clean-up */
  namespaces: string[];
}

const SEGMENTS = {
  a: { net: '192.168.77', router: '192.168.77.1' },
  b: { net: '192.168.78', router: '192.168.78.1' },
} as const;
const OUTSIDE = { router: '198.18.0.1', host: '198.18.0.2' };

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
export function buildTopology(prefix: string, specs: NodeSpec[]): Topology {
  const topo: Topology = { prefix, nodes: [], outsideNs: '', outsideIP: OUTSIDE.host, namespaces: [] };
  try {
    const router = addNs(topo, 'router');
    sysctl(router, 'net.ipv4.ip_forward', '1');
    const segNs: Record<'a' | 'b', string> = { a: addNs(topo, 'sega'), b: addNs(topo, 'segb') };
    for (const seg of ['a', 'b'] as const) {
      const ns = segNs[seg];
      ip(['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', ns, 'link', 'set', 'br0', 'up']);
      ip(['-n', ns, 'link', 'add', 'rt', 'type', 'veth', 'peer', 'name', `seg${seg}`, 'netns', router]);
      ip(['-n', ns, 'link', 'set', 'rt', 'master', 'br0', 'up']);
      ip(['-n', router, 'addr', 'add', `${SEGMENTS[seg].router}/24`, 'dev', `seg${seg}`]);
      ip(['-n', router, 'link', 'set', `seg${seg}`, 'up']);
    }
    topo.outsideNs = addNs(topo, 'outside');
    ip(['-n', router, 'link', 'add', 'out', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', topo.outsideNs]);
    ip(['-n', router, 'addr', 'add', `${OUTSIDE.router}/24`, 'dev', 'out']);
    ip(['-n', router, 'link', 'set', 'out', 'up']);
    ip(['-n', topo.outsideNs, 'addr', 'add', `${OUTSIDE.host}/24`, 'dev', 'eth0']);
    ip(['-n', topo.outsideNs, 'link', 'set', 'eth0', 'up']);
    // The outside host knows only the underlay networks, not the pod network:
    // pods reach it only through masquerade, as they would the internet.
    ip(['-n', topo.outsideNs, 'route', 'add', '192.168.0.0/16', 'via', OUTSIDE.router]);

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
      topo.nodes.push({ name: spec.name, ns, nsPath: `/var/run/netns/${ns}`, iface: 'eth0', ip: addr, cidr: `${addr}/24` });
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
