// The VXLAN backend beside a subnet cni0 still serves, in a node netns: a
// per-peer route `<subnet> via <subnet>.0 dev flannel.1 onlink` has the key
// of cni0's connected route (same prefix, main table, metric 0), so writing
// it would replace that route and cut the node off its own pods there; and
// removing it later would not bring the connected route back. flannel.1's
// own /32 makes no subnet route, so it never competes with cni0's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import type { Lease } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const NETWORK = '10.244.0.0/16';
const CONNECTED = '10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1';

function peer(subnet: string, n: number): Lease {
  return { subnet, publicIP: `172.16.200.${n}`, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `6a:00:00:00:01:0${n}` }, nodeName: `peer${n}` };
}

describe.skipIf(requireOrSkip('backend-vxlan-served', { root: isRoot }))('VXLAN backend and a subnet cni0 still serves', () => {
  let node: string;
  let pod: string;
  const ip = (ns: string, ...a: string[]): string => execFileSync('ip', ['-n', ns, ...a], { encoding: 'utf8' });
  const routes = (...sel: string[]): string[] => ip(node, 'route', 'show', ...sel).split('\n').map((l) => l.trim()).filter(Boolean);
  const reachable = (to: string): boolean => {
    const once = () => spawnSync('ip', ['netns', 'exec', node, 'ping', '-c', '1', '-W', '1', to], { stdio: 'ignore' }).status === 0;
    return once() || once();
  };
  const ext = { name: 'eth0', index: 0, mtu: 1500, ip: '172.16.200.1', cidr: '172.16.200.1/16', publicIP: '172.16.200.1' };
  const backend = (): VxlanBackend => new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: NETWORK, netns: nsPath(node) });

  beforeAll(() => {
    node = addNetns('vxsrv');
    pod = addNetns('vxsrvpod');
    ip(node, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip(node, 'addr', 'add', ext.cidr, 'dev', 'eth0');
    ip(node, 'link', 'set', 'eth0', 'up');
    ip(node, 'link', 'set', 'eth1', 'up');
    // cni0 on 10.244.1.1/24 with one pod, 10.244.1.2
    ip(node, 'link', 'add', 'cni0', 'type', 'bridge');
    ip(node, 'addr', 'add', '10.244.1.1/24', 'dev', 'cni0');
    ip(node, 'link', 'set', 'cni0', 'up');
    ip(node, 'link', 'add', 'vethpod', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod);
    ip(node, 'link', 'set', 'vethpod', 'master', 'cni0', 'up');
    ip(pod, 'addr', 'add', '10.244.1.2/24', 'dev', 'eth0');
    ip(pod, 'link', 'set', 'eth0', 'up');
    ip(pod, 'route', 'add', 'default', 'via', '10.244.1.1');
  });
  afterAll(() => cleanupAll());

  it('flannel.1\'s own /32 in cni0\'s subnet makes no subnet route: cni0\'s connected route stays', async () => {
    const b = backend();
    await b.prepare(ext);
    await b.configure({ subnet: '10.244.1.0/24', publicIP: ext.ip, backendType: 'vxlan', backendData: {} });
    expect(b.reconcile([peer('10.244.2.0/24', 2)]).errors).toEqual([]);
    expect(routes('10.244.1.0/24')).toEqual([CONNECTED]);
    expect(ip(node, 'route', 'show', 'table', 'all', 'dev', 'flannel.1').split('\n').filter((l) => l.includes('10.244.1.'))).toEqual([
      'local 10.244.1.0 table local proto kernel scope host src 10.244.1.0 ',
    ]);
    expect(reachable('10.244.1.2')).toBe(true);
    b.reconcile([]);
  });

  it('never routes another node\'s lease onto the subnet cni0 still serves (this node moved off it), in the exact and the edge pass; routes it once the address is gone', async () => {
    // This node's subnet moved to 10.244.5.0/24; its old pods still live on cni0's 10.244.1.0/24,
    // which another node now holds.
    const b = backend();
    await b.prepare(ext);
    await b.configure({ subnet: '10.244.5.0/24', publicIP: ext.ip, backendType: 'vxlan', backendData: {} });
    const taker = peer('10.244.1.0/24', 3);
    const report = b.reconcile([taker]);
    expect(report.errors.join('\n')).toMatch(/10\.244\.1\.0\/24.*still served on this node by cni0 \(10\.244\.1\.1\/24\)/);
    expect(routes('10.244.1.0/24')).toEqual([CONNECTED]);
    expect(reachable('10.244.1.2')).toBe(true);
    // a lease event (the edge path) holds it back too, while the others are routed
    const other = peer('10.244.7.0/24', 4);
    expect(b.update([taker, other]).errors.join('\n')).toMatch(/10\.244\.1\.0\/24.*cni0/);
    expect(routes('10.244.1.0/24')).toEqual([CONNECTED]);
    expect(routes('10.244.7.0/24')).toEqual([expect.stringMatching(/^10\.244\.7\.0\/24 nhid \d+ via 10\.244\.7\.0 dev flannel\.1 onlink$/)]);
    expect(reachable('10.244.1.2')).toBe(true);
    // the old pods gone, the bridge moved: the lease is routed as any peer's
    ip(node, 'addr', 'del', '10.244.1.1/24', 'dev', 'cni0');
    try {
      expect(b.reconcile([taker, other]).errors).toEqual([]);
      expect(routes('10.244.1.0/24')).toEqual([expect.stringMatching(/^10\.244\.1\.0\/24 nhid \d+ via 10\.244\.1\.0 dev flannel\.1 onlink$/)]);
    } finally {
      b.reconcile([]);
      ip(node, 'addr', 'add', '10.244.1.1/24', 'dev', 'cni0');
    }
    expect(routes('10.244.1.0/24')).toEqual([CONNECTED]);
  });
});
