// The doctor's checks as pure functions of a node state, a lease view and
// probe results: a healthy three-node picture passes everything, and each
// fault below fails (or warns) exactly the check that should name it.
import { describe, expect, it } from 'vitest';
import { evaluate, pingAll, PING_CONCURRENCY, type CheckId, type CheckResult, type CheckStatus, type DoctorInputs } from '../../../src/cli/checks/index.js';
import { peerRows, staleEntries } from '../../../src/cli/checks/peers.js';
import { deriveFacts } from '../../../src/cli/checks/types.js';
import { effectiveRpFilter } from '../../../src/cli/checks/host.js';
import { buildStatus, formatStatus } from '../../../src/cli/status.js';
import { paintFor } from '../../../src/cli/checks/format.js';
import { parseNetworkConfig } from '../../../src/daemon/config.js';
import type { Lease } from '../../../src/daemon/types.js';
import { run, type NodeState } from '../../../src/node/state.js';

const MAC = { n1: 'aa:00:00:00:00:01', n2: 'ba:00:00:00:00:02', n3: 'cc:00:00:00:00:03' };

const lease = (subnet: string, publicIP: string, mac: string): Lease => ({
  subnet,
  publicIP,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
  nodeName: subnet.replace('/', '-'),
});

const link = (index: number, name: string, type: string, mtu: number, addresses: string[], extra: Partial<NodeState['links'][number]> = {}) => ({
  name,
  index,
  type,
  mtu,
  mac: `02:00:00:00:00:${String(index).padStart(2, '0')}`,
  up: true,
  masterIndex: 0,
  addresses,
  ...extra,
});

const route = (dst: string, dev: string, linkIndex: number, extra: Partial<NodeState['routes'][number]> = {}) => ({
  dst,
  dev,
  linkIndex,
  onlink: false,
  metric: 0,
  protocol: 4,
  scope: 0,
  ...extra,
});

/** n1 (192.168.1.10, 10.244.1.0/24) knows n2 on its segment and n3 behind a router. */
function healthy(): DoctorInputs {
  const state: NodeState = {
    netns: null,
    readAt: '2026-01-01T00:00:00.000Z',
    subnetFile: { path: '/run/flannel/subnet.env', exists: true, env: { network: '10.244.0.0/16', subnet: '10.244.1.1/24', mtu: 1450, ipMasq: true } },
    links: [
      link(1, 'lo', 'device', 65536, ['127.0.0.1/8']),
      link(2, 'eth0', 'veth', 1500, ['192.168.1.10/24']),
      link(3, 'flannel.1', 'vxlan', 1450, ['10.244.1.0/32'], { mac: MAC.n1 }),
      link(4, 'cni0', 'bridge', 1450, ['10.244.1.1/24']),
      link(5, 'veth0a1b2c3d', 'veth', 1450, [], { masterIndex: 4 }),
    ],
    routes: [
      route('default', 'eth0', 2, { gw: '192.168.1.1', protocol: 3 }),
      route('10.244.1.0/24', 'cni0', 4, { protocol: 2, scope: 253 }),
      route('10.244.2.0/24', 'flannel.1', 3, { gw: '10.244.2.0', onlink: true }),
      route('10.244.3.0/24', 'flannel.1', 3, { gw: '10.244.3.0', onlink: true }),
      route('192.168.1.0/24', 'eth0', 2, { protocol: 2, scope: 253 }),
    ],
    bridge: { ...link(4, 'cni0', 'bridge', 1450, ['10.244.1.1/24']), ports: [{ name: 'veth0a1b2c3d', mtu: 1450, up: true, hairpin: true }] },
    vxlan: {
      ...link(3, 'flannel.1', 'vxlan', 1450, ['10.244.1.0/32'], { mac: MAC.n1 }),
      vni: 1,
      local: '192.168.1.10',
      port: 8472,
      learning: false,
      devIndex: 2,
      dev: 'eth0',
    },
    neighbours: [
      { ip: '10.244.2.0', mac: MAC.n2, permanent: true, state: 0x80 },
      { ip: '10.244.3.0', mac: MAC.n3, permanent: true, state: 0x80 },
    ],
    fdb: [
      { mac: MAC.n2, dst: '192.168.1.11', permanent: true },
      { mac: MAC.n3, dst: '192.168.2.12', permanent: true },
    ],
    ipam: {
      dir: '/var/lib/cni/networks/cbr0',
      exists: true,
      pods: [{ ip: '10.244.1.2', containerId: 'c1', ifname: 'eth0', hostVeth: 'veth0a1b2c3d', vethPresent: true, vethMtu: 1450, vethMaster: 'cni0' }],
      total: 253,
      free: 252,
    },
    sysctl: {
      ipForward: '1',
      rpFilter: { all: 0, default: 0, 'flannel.1': 0, cni0: 0 },
      neighGcThresh: [128, 512, 1024],
      kernelRelease: '6.1.0-18-amd64',
    },
    iptables: {
      ok: true,
      forwardPolicy: 'ACCEPT',
      forward: ['-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'],
      flannelFwd: ['-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT', '-A FLANNEL-FWD -d 10.244.0.0/16 -j ACCEPT'],
      flannelMasq: ['1', '2', '3', '4', '5', '6'].map((n) => `-A FLANNEL-POSTRTG rule${n}`),
    },
  };
  return {
    state,
    view: {
      source: 'etcd',
      origin: 'etcd http://127.0.0.1:2379 /coreos.com/network',
      config: parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'),
      leases: [
        lease('10.244.1.0/24', '192.168.1.10', MAC.n1),
        lease('10.244.2.0/24', '192.168.1.11', MAC.n2),
        lease('10.244.3.0/24', '192.168.2.12', MAC.n3),
      ],
      ttl: { '10.244.1.0/24': 86_000 },
    },
    pings: [
      { target: '10.244.2.0', ok: true, ms: 0.1 },
      { target: '10.244.3.0', ok: true, ms: 0.3 },
    ],
    iptables: { ok: true, forwardMissing: [], masqMissing: [] },
  };
}

function results(inputs: DoctorInputs): Map<CheckId, CheckResult> {
  return new Map(evaluate(inputs).map((c) => [c.id, c]));
}

/** `expected` checks have that status, all others pass. */
function expectOnly(inputs: DoctorInputs, expected: Partial<Record<CheckId, CheckStatus>>): Map<CheckId, CheckResult> {
  const r = results(inputs);
  const got = Object.fromEntries([...r].map(([id, c]) => [id, c.status]));
  // The wireguard checks skip on the vxlan and host-gw nodes below.
  const want = Object.fromEntries([...r.keys()].map((id) => [id, expected[id] ?? (id.startsWith('wireguard-') ? 'skip' : 'pass')]));
  expect(got, JSON.stringify([...r.values()].filter((c) => c.status !== 'pass'), null, 1)).toEqual(want);
  return r;
}

describe('doctor checks (pure)', () => {
  it('a healthy node passes all sixteen vxlan checks (the two wireguard ones skip), in a fixed order', () => {
    const r = expectOnly(healthy(), {});
    expect([...r.keys()]).toEqual([
      'subnet-file', 'bridge-address', 'lease', 'vxlan-device', 'wireguard-device', 'underlay-interface', 'mtu', 'peer-entries',
      'stale-entries', 'vtep-reachability', 'wireguard-peers', 'ip-forward', 'rp-filter', 'forward-policy', 'masquerade', 'ipam-leaks', 'ipam-capacity',
      'kernel-limits',
    ]);
    expect(r.get('lease')!.message).toBe('10.244.1.0/24 held for 192.168.1.10 (key 10.244.1.0-24, expires in 23h53m)');
    expect(r.get('vtep-reachability')!.message).toBe('2 remote VTEPs answered through flannel.1 (0.10–0.30 ms)');
  });

  it('subnet-file: missing, unparsable, and FLANNEL_SUBNET not the lease (cni0 then disagrees too)', () => {
    const missing = healthy();
    missing.state.subnetFile = { path: '/run/flannel/subnet.env', exists: false };
    const r1 = results(missing);
    expect(r1.get('subnet-file')!.status).toBe('fail');
    expect(r1.get('subnet-file')!.message).toContain('does not exist');
    expect(r1.get('bridge-address')!.status).toBe('skip');
    expect(r1.get('masquerade')!.status).toBe('skip');

    const garbage = healthy();
    garbage.state.subnetFile = { path: '/x', exists: true, error: 'FLANNEL_MTU is missing' };
    expect(results(garbage).get('subnet-file')!.message).toBe('/x does not parse: FLANNEL_MTU is missing');

    const moved = healthy();
    moved.state.subnetFile.env!.subnet = '10.244.9.1/24';
    const r3 = expectOnly(moved, { 'subnet-file': 'fail', 'bridge-address': 'fail' });
    expect(r3.get('subnet-file')!.message).toContain("FLANNEL_SUBNET 10.244.9.1/24 does not match this node's lease 10.244.1.0/24 (want 10.244.1.1/24)");
    expect(r3.get('bridge-address')!.message).toBe(
      '"cni0" already has an IP address different from 10.244.9.1/24: 10.244.1.1/24 (the node\'s subnet changed under it); ' +
        '1 pod still holds old addresses, so pod ADDs fail until it is deleted: c1',
    );
    expect(r3.get('bridge-address')!.details).toEqual(['10.244.1.2: container c1']);

    // No pod left on the old subnet: the plugin moves the gateway at the next ADD.
    const empty = healthy();
    empty.state.subnetFile.env!.subnet = '10.244.9.1/24';
    empty.state.ipam.pods = [];
    const r4 = results(empty).get('bridge-address')!;
    expect(r4.status).toBe('warn');
    expect(r4.message).toContain('no pod holds an old address, so the next pod ADD moves cni0 to 10.244.9.1/24');
  });

  it('bridge-address: no bridge yet passes; no address or down fails', () => {
    const none = healthy();
    none.state.bridge = null;
    expect(results(none).get('bridge-address')!.status).toBe('pass');
    const bare = healthy();
    bare.state.bridge!.addresses = [];
    expect(results(bare).get('bridge-address')!.fix).toContain('ip addr add 10.244.1.1/24 dev cni0');
    const down = healthy();
    down.state.bridge!.up = false;
    expect(results(down).get('bridge-address')!.fix).toBe('ip link set cni0 up');
  });

  it('lease: no key for our public IP, two keys for it (shared address), source unreachable, none given', () => {
    const gone = healthy();
    gone.view.leases = gone.view.leases!.filter((l) => l.publicIP !== '192.168.1.10');
    const r = results(gone);
    expect(r.get('lease')!.status).toBe('fail');
    expect(r.get('lease')!.message).toBe('no lease in etcd http://127.0.0.1:2379 /coreos.com/network for this node\'s public IP 192.168.1.10');
    expect(r.get('subnet-file')!.message).toContain('this node holds no lease to compare with');

    const shared = healthy();
    shared.view.leases!.push(lease('10.244.7.0/24', '192.168.1.10', 'de:00:00:00:00:07'));
    const r2 = results(shared);
    expect(r2.get('lease')!.message).toContain('2 leases claim this node\'s public IP 192.168.1.10: 10.244.1.0/24, 10.244.7.0/24');
    expect(r2.get('lease')!.fix).toContain('--iface');

    const down = healthy();
    down.view = { source: 'etcd', origin: 'etcd http://x:2379 /p', error: 'no answer within 3000 ms' };
    const r3 = results(down);
    expect(r3.get('lease')!.status).toBe('fail');
    expect(r3.get('peer-entries')!.message).toContain('leases unreadable: checked flannel.1 against itself');
    expect(r3.get('peer-entries')!.status).toBe('pass');

    const none = healthy();
    none.view = { source: 'none', origin: 'none' };
    expectOnly(none, { lease: 'skip' });
  });

  it('lease (kube): podCIDR not assigned, annotations missing, public IP differs', () => {
    const base = () => {
      const i = healthy();
      i.view = { ...i.view, source: 'kube', origin: 'Kubernetes Nodes', node: { name: 'n1', found: true, podCIDR: '10.244.1.0/24' } };
      i.view.leases = i.view.leases!.map((l, n) => ({ ...l, nodeName: `n${n + 1}` }));
      return i;
    };
    expectOnly(base(), {});

    const noCidr = base();
    noCidr.view.node = { name: 'n1', found: true, podCIDRReason: 'spec.podCIDR is not assigned' };
    noCidr.view.leases = noCidr.view.leases!.filter((l) => l.nodeName !== 'n1');
    const r = results(noCidr);
    expect(r.get('lease')!.message).toBe('node n1: spec.podCIDR is not assigned');
    expect(r.get('lease')!.fix).toContain('kubectl patch node n1');

    const noAnn = base();
    noAnn.view.node!.leaseReason = 'annotation flannel.alpha.coreos.com/backend-data is missing';
    noAnn.view.leases = noAnn.view.leases!.filter((l) => l.nodeName !== 'n1');
    expect(results(noAnn).get('lease')!.message).toContain('no usable flannel annotations: annotation flannel.alpha.coreos.com/backend-data is missing');

    const nat = base();
    nat.view.leases![0]!.publicIP = '203.0.113.10';
    const r3 = results(nat);
    expect(r3.get('lease')!.status).toBe('warn');
  });

  it('vxlan-device: missing, wrong VNI/port, learning, MAC not the published VtepMAC, down', () => {
    const gone = healthy();
    gone.state.vxlan = null;
    const r = results(gone);
    expect(r.get('vxlan-device')!.message).toBe('flannel.1 does not exist');
    expect(r.get('mtu')!.status).toBe('skip');
    expect(r.get('vtep-reachability')!.status).toBe('skip');

    const attrs = healthy();
    attrs.state.vxlan!.vni = 2;
    attrs.state.vxlan!.port = 4789;
    const msg = results(attrs).get('vxlan-device')!.message;
    expect(msg).toContain('VNI 2, want 1 (etcd config)');
    expect(msg).toContain('dstport 4789, want 8472 (etcd config)');

    const mac = healthy();
    mac.state.vxlan!.mac = 'ee:00:00:00:00:99';
    const r3 = expectOnly(mac, { 'vxlan-device': 'fail' });
    expect(r3.get('vxlan-device')!.message).toContain('publishes VtepMAC aa:00:00:00:00:01');

    const down = healthy();
    down.state.vxlan!.up = false;
    expect(results(down).get('vxlan-device')!.fix).toBe('ip link set flannel.1 up');
  });

  it('underlay-interface: local address not on the device; a peer routed elsewhere; default route elsewhere with no peers warns', () => {
    const moved = healthy();
    moved.state.vxlan!.local = '10.0.2.15';
    expect(results(moved).get('underlay-interface')!.message).toBe("eth0 does not hold 10.0.2.15, the tunnels' source address");

    const split = healthy();
    split.state.links.push(link(9, 'eth1', 'veth', 1500, ['10.0.2.15/24']));
    split.state.routes[0] = route('default', 'eth1', 9, { gw: '10.0.2.2' });
    const r = results(split);
    expect(r.get('underlay-interface')!.details).toEqual(['192.168.2.12 (10.244.3.0-24): routed via eth1, not eth0']);

    const alone = healthy();
    alone.view.leases = alone.view.leases!.slice(0, 1);
    alone.state.links.push(link(9, 'eth1', 'veth', 1500, ['10.0.2.15/24']));
    alone.state.routes[0] = route('default', 'eth1', 9, { gw: '10.0.2.2' });
    alone.state.routes = alone.state.routes.filter((x) => x.dev !== 'flannel.1');
    alone.state.neighbours = [];
    alone.state.fdb = [];
    expect(results(alone).get('underlay-interface')!.status).toBe('warn');
  });

  it('mtu: flannel.1 above underlay − 50, FLANNEL_MTU above flannel.1, a pod with an old MTU', () => {
    const big = healthy();
    big.state.links[1]!.mtu = 1400;
    expect(results(big).get('mtu')!.message).toBe("flannel.1 MTU 1450 is above eth0's 1400 − 50 = 1350: full-size packets are lost after encapsulation");

    const env = healthy();
    env.state.subnetFile.env!.mtu = 1500;
    expect(results(env).get('mtu')!.message).toContain("FLANNEL_MTU 1500 is above flannel.1's 1450");

    const old = healthy();
    old.state.ipam.pods[0]!.vethMtu = 1400;
    const r = results(old);
    expect(r.get('mtu')!.status).toBe('warn');
    expect(r.get('mtu')!.details).toEqual(["pod 10.244.1.2 (c1) has MTU 1400, the node's FLANNEL_MTU is 1450"]);
    expect(r.get('mtu')!.message).toBe("1 pod with an MTU other than the node's: c1 (made before an MTU change?)");

    // The underlay MTU was raised: FLANNEL_MTU and the bridge went up, an old pod did not.
    const raised = healthy();
    raised.state.links[1]!.mtu = 9000;
    raised.state.vxlan!.mtu = 8950;
    raised.state.subnetFile.env!.mtu = 8950;
    const stale = results(raised).get('mtu')!;
    expect(stale.status).toBe('warn');
    expect(stale.message).toContain('c1');
    expect(stale.details).toContain('cni0 has MTU 1450, FLANNEL_MTU is 8950 (the next pod ADD sets the bridge to FLANNEL_MTU)');

    const jumbo = healthy();
    jumbo.state.ipam.pods[0]!.vethMtu = 9000;
    expect(results(jumbo).get('mtu')!.status).toBe('fail');
  });

  it('peer-entries: a neighbour with the wrong MAC, a missing route; such peers are not pinged', () => {
    const wrong = healthy();
    wrong.state.neighbours[0]!.mac = 'ff:00:00:00:00:00'.replace('ff', 'fe');
    wrong.pings = wrong.pings.filter((p) => p.target !== '10.244.2.0');
    const r = expectOnly(wrong, { 'peer-entries': 'fail' });
    expect(r.get('peer-entries')!.details).toEqual([
      '10.244.2.0/24 (192.168.1.11): neighbour 10.244.2.0 is fe:00:00:00:00:00, want ba:00:00:00:00:02 permanent',
    ]);
    expect(r.get('peer-entries')!.fix).toContain('ip neigh replace 10.244.2.0 lladdr ba:00:00:00:00:02 dev flannel.1 nud permanent');
    expect(r.get('vtep-reachability')!.message).toBe('1 remote VTEP answered through flannel.1 (0.30–0.30 ms)');

    const noRoute = healthy();
    noRoute.state.routes = noRoute.state.routes.filter((x) => x.dst !== '10.244.3.0/24');
    const rows = peerRows(noRoute.state, deriveFacts(noRoute));
    expect(rows.find((x) => x.subnet === '10.244.3.0/24')).toMatchObject({ route: 'missing', neigh: 'ok', fdb: 'ok' });
  });

  it('peer-entries: a VTEP MAC that moved to another node shows as wrong FDB and a stale entry', () => {
    const moved = healthy();
    moved.view.leases![1]!.publicIP = '192.168.1.21';
    const r = results(moved);
    expect(r.get('peer-entries')!.details![0]).toContain('FDB entry ba:00:00:00:00:02 points to 192.168.1.11, want dst 192.168.1.21');
    expect(r.get('peer-entries')!.fix).toContain('bridge fdb del ba:00:00:00:00:02 dev flannel.1 dst 192.168.1.11');
    expect(r.get('stale-entries')!.details).toEqual(['FDB ba:00:00:00:00:02 dst 192.168.1.11']);
  });

  it('peer-entries: refused leases warn (the agent refuses them too)', () => {
    const dup = healthy();
    dup.view.leases!.push(lease('10.244.4.0/24', '192.168.1.14', MAC.n2));
    const r = expectOnly(dup, { 'peer-entries': 'warn' });
    expect(r.get('peer-entries')!.details![0]).toContain('lease refused: VtepMAC ba:00:00:00:00:02 is already used by');
  });

  it('stale-entries: with leases, entries for a departed node; without, neighbours and FDB no route uses', () => {
    const left = healthy();
    left.view.leases = left.view.leases!.filter((l) => l.subnet !== '10.244.3.0/24');
    left.pings = left.pings.slice(0, 1);
    const r = expectOnly(left, { 'stale-entries': 'warn' });
    expect(r.get('stale-entries')!.details).toEqual([
      'route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink',
      'neighbour 10.244.3.0 lladdr cc:00:00:00:00:03 permanent',
      'FDB cc:00:00:00:00:03 dst 192.168.2.12',
    ]);
    // by destination only: `via`/`dev` would not match a route through a nexthop object
    expect(r.get('stale-entries')!.fix).toMatch(/by hand: ip route del 10\.244\.3\.0\/24;/);

    const kernel = healthy();
    kernel.view = { source: 'none', origin: 'none' };
    kernel.state.neighbours.push({ ip: '10.244.9.0', mac: 'de:00:00:00:00:09', permanent: false, state: 0x20 });
    kernel.state.fdb.push({ mac: 'dd:00:00:00:00:10', dst: '192.168.1.99', permanent: true });
    const s = staleEntries(kernel.state, deriveFacts(kernel));
    expect(s.neighbours).toEqual(['10.244.9.0 lladdr de:00:00:00:00:09 (not permanent)']);
    expect(s.fdb).toEqual(['dd:00:00:00:00:10 dst 192.168.1.99']);
  });

  it('peer-entries without leases: a route whose neighbour is missing fails, the stale-entry check stays quiet', () => {
    const kernel = healthy();
    kernel.view = { source: 'none', origin: 'none' };
    kernel.state.neighbours = kernel.state.neighbours.slice(1);
    kernel.state.fdb = kernel.state.fdb.slice(1);
    const r = expectOnly(kernel, { lease: 'skip', 'peer-entries': 'fail' });
    expect(r.get('peer-entries')!.details).toEqual(['10.244.2.0/24: route 10.244.2.0/24 via 10.244.2.0 has no neighbour entry for 10.244.2.0']);
  });

  it('vtep-reachability: an unanswered peer fails with the UDP port and checksum hint', () => {
    const lost = healthy();
    lost.pings[1] = { target: '10.244.3.0', ok: false };
    const r = expectOnly(lost, { 'vtep-reachability': 'fail' });
    expect(r.get('vtep-reachability')!.message).toBe('no echo reply through flannel.1 from 10.244.3.0/24 (192.168.2.12).');
    expect(r.get('vtep-reachability')!.fix).toBe('UDP 8472 blocked between nodes, or VXLAN checksum offload: ethtool -K flannel.1 tx-checksum-ip-generic off');

    const port = healthy();
    port.view.config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":4789}}');
    port.state.vxlan!.port = 4789;
    port.pings[0] = { target: '10.244.2.0', ok: false };
    expect(results(port).get('vtep-reachability')!.fix).toContain('UDP 4789 blocked');
  });

  it('without a network config, the device\'s own VNI and port are expected (a custom port is no failure)', () => {
    const custom = healthy();
    custom.view = { source: 'none', origin: 'none' };
    custom.state.vxlan!.port = 4789;
    custom.pings[0] = { target: '10.244.2.0', ok: false };
    const r = expectOnly(custom, { lease: 'skip', 'vtep-reachability': 'fail' });
    expect(r.get('vxlan-device')!.message).toContain('dstport 4789');
    expect(r.get('vxlan-device')!.message).toContain('no network config given: VNI and port not compared');
    expect(r.get('vtep-reachability')!.fix).toContain('UDP 4789 blocked');
  });

  it('ip-forward and rp-filter: the kernel applies max(all, interface)', () => {
    expect(effectiveRpFilter(1, 0)).toBe(1);
    expect(effectiveRpFilter(0, 2)).toBe(2);
    expect(effectiveRpFilter(2, 1)).toBe(2);
    expect(effectiveRpFilter(null, null)).toBeNull();

    const off = healthy();
    off.state.sysctl.ipForward = '0';
    expectOnly(off, { 'ip-forward': 'fail' });

    const strictAll = healthy();
    strictAll.state.sysctl.rpFilter.all = 1;
    const r = expectOnly(strictAll, { 'rp-filter': 'warn' });
    expect(r.get('rp-filter')!.message).toContain('on flannel.1, cni0');

    const loose = healthy();
    loose.state.sysctl.rpFilter = { all: 2, default: 1, 'flannel.1': 1, cni0: 1 };
    expectOnly(loose, {});
  });

  it('ipv6-forward: an ip6tables FORWARD policy DROP without FLANNEL-FWD drops the pods\' IPv6 traffic; on an IPv6-only node the IPv4 FORWARD chain does not matter', () => {
    const v6tables = (policy: string) => ({ ok: true, forwardPolicy: policy, forward: [], flannelFwd: null, flannelMasq: null });
    const dual = healthy();
    dual.state.subnetFile.env = { ...dual.state.subnetFile.env!, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    dual.state.sysctl.ipv6Forward = '1';
    dual.state.ipv6 = { vxlan: null, routes: [], neighbours: [], fdb: [], ip6tables: v6tables('DROP') };
    dual.ipv6Rules = { ok: true, forwardMissing: ['-A FLANNEL-FWD -s fd00:10:244::/56 -j ACCEPT'], masqMissing: [] };
    let r = results(dual).get('ipv6-forward');
    expect(r?.status, JSON.stringify(r)).toBe('fail');
    expect(r!.fix).toContain('ip6tables -A FORWARD -s fd00:10:244::/56 -j ACCEPT');
    dual.ipv6Rules.forwardMissing = [];
    expect(results(dual).get('ipv6-forward')!.status).toBe('pass');
    dual.state.ipv6.ip6tables = v6tables('ACCEPT');
    dual.ipv6Rules.forwardMissing = ['-A FLANNEL-FWD -s fd00:10:244::/56 -j ACCEPT'];
    expect(results(dual).get('ipv6-forward')!.status).toBe('pass');

    const only = healthy();
    only.state.subnetFile.env = { network: '', subnet: '', mtu: 1450, ipMasq: true, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    only.state.ipv6 = { vxlan: null, routes: [], neighbours: [], fdb: [], ip6tables: v6tables('ACCEPT') };
    only.state.iptables!.forwardPolicy = 'DROP';
    only.iptables.forwardMissing = ['-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT'];
    expect(results(only).get('forward-policy')!.status).toBe('skip');
  });

  it('ip-forward on a node with an IPv6 subnet: IPv6 forwarding off fails; on an IPv6-only node IPv4 forwarding is not needed', () => {
    const v6 = { vxlan: null, routes: [], neighbours: [], fdb: [] };
    const dual = healthy();
    dual.state.subnetFile.env = { ...dual.state.subnetFile.env!, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    dual.state.ipv6 = v6;
    dual.state.sysctl.ipv6Forward = '0';
    let r = results(dual).get('ip-forward')!;
    expect(r.status).toBe('fail');
    expect(r.message).toContain('net.ipv6.conf.all.forwarding = 0');
    expect(r.fix).toContain('sysctl -w net.ipv6.conf.all.forwarding=1');
    dual.state.sysctl.ipv6Forward = '1';
    r = results(dual).get('ip-forward')!;
    expect(r.status).toBe('pass');
    expect(r.message).toContain('net.ipv6.conf.all.forwarding = 1');

    const only = healthy();
    only.state.subnetFile.env = { network: '', subnet: '', mtu: 1450, ipMasq: true, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    only.state.ipv6 = v6;
    only.state.sysctl.ipForward = '0';
    only.state.sysctl.ipv6Forward = '1';
    expect(results(only).get('ip-forward')!.status).toBe('pass');
    only.state.sysctl.ipv6Forward = '0';
    expect(results(only).get('ip-forward')!.status).toBe('fail');
  });

  it('subnet-file on an IPv6-only node names the IPv6 pair it found, not an empty FLANNEL_SUBNET', () => {
    const only = healthy();
    only.state.subnetFile.env = { network: '', subnet: '', mtu: 1430, ipMasq: true, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    only.state.vxlan = null;
    only.view = { source: 'none', origin: 'none' };
    const r = results(only).get('subnet-file')!;
    expect(r.status).toBe('pass');
    expect(r.message).toMatch(/^FLANNEL_IPV6_SUBNET=fd00:10:244:1::1\/64 FLANNEL_IPV6_NETWORK=fd00:10:244::\/56 MTU=1430 IPMASQ=true; /);
  });

  it('forward-policy: DROP is fine with FLANNEL-FWD or equivalent FORWARD rules, fails without', () => {
    const drop = healthy();
    drop.state.iptables!.forwardPolicy = 'DROP';
    expectOnly(drop, {});

    const bare = healthy();
    bare.state.iptables!.forwardPolicy = 'DROP';
    bare.state.iptables!.forward = [];
    bare.iptables.forwardMissing = ['-t filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'];
    const r = expectOnly(bare, { 'forward-policy': 'fail' });
    expect(r.get('forward-policy')!.fix).toContain('iptables -A FORWARD -s 10.244.0.0/16 -j ACCEPT');

    const own = structuredClone(bare);
    own.state.iptables!.forward = ['-A FORWARD -s 10.244.0.0/16 -j ACCEPT', '-A FORWARD -d 10.244.0.0/16 -j ACCEPT'];
    expect(results(own).get('forward-policy')!.message).toBe('FORWARD policy DROP; FORWARD rules accept 10.244.0.0/16');

    const halfway = structuredClone(bare);
    halfway.state.iptables!.forward = ['-A FORWARD -s 10.244.0.0/16 -j ACCEPT'];
    expect(results(halfway).get('forward-policy')!.status).toBe('fail');
  });

  it('forward-policy in nftables mode: an iptables DROP policy fails even though the nft forward chain accepts', () => {
    const nft = healthy();
    nft.iptables.mode = 'nftables';
    nft.state.iptables!.forwardPolicy = 'DROP';
    nft.state.iptables!.forward = [];
    const r = expectOnly(nft, { 'forward-policy': 'fail' });
    expect(r.get('forward-policy')!.message).toContain('the nftables forward chain\'s accept does not override it');
    expect(r.get('forward-policy')!.fix).toContain('EnableNFTables: false');

    const accepting = healthy();
    accepting.iptables.mode = 'nftables';
    expectOnly(accepting, {}); // policy ACCEPT: nothing to say
    expect(results(accepting).get('masquerade')!.message).toContain('(nftables table ip flannel-ipv4)');

    const missing = healthy();
    missing.iptables = { ok: true, mode: 'nftables', forwardMissing: [], masqMissing: ['nft flannel-ipv4 postrtg: ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade'] };
    expectOnly(missing, { masquerade: 'fail' });
  });

  it('masquerade: missing rules fail; IPMASQ=false expects none; foreign rules in the chain warn', () => {
    const gone = healthy();
    gone.iptables.masqMissing = ['-t nat -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE'];
    const r = expectOnly(gone, { masquerade: 'fail' });
    expect(r.get('masquerade')!.details![0]).toMatch(/^missing: -t nat -A FLANNEL-POSTRTG/);

    const off = healthy();
    off.state.subnetFile.env!.ipMasq = false;
    off.iptables.masqMissing = null;
    expect(results(off).get('masquerade')!.message).toContain('FLANNEL_IPMASQ=false');

    const extra = healthy();
    extra.state.iptables!.flannelMasq!.push('-A FLANNEL-POSTRTG -s 10.244.8.0/24 -j RETURN');
    expectOnly(extra, { masquerade: 'warn' });
  });

  it('ipam: leaked leases warn with their files; an exhausted pool fails; no store yet passes', () => {
    const leak = healthy();
    leak.state.ipam.pods.push({ ip: '10.244.1.9', containerId: 'dead', ifname: 'eth0', hostVeth: 'vethdeadbeef', vethPresent: false });
    const r = expectOnly(leak, { 'ipam-leaks': 'warn' });
    expect(r.get('ipam-leaks')!.fix).toContain('rm /var/lib/cni/networks/cbr0/10.244.1.9');

    const full = healthy();
    full.state.ipam.free = 0;
    expect(expectOnly(full, { 'ipam-capacity': 'fail' }).get('ipam-capacity')!.fix).toContain('SubnetLen');
    // In Kubernetes mode the node's subnet is its podCIDR: net-conf.json's SubnetLen has no say in it
    const kubeFull = healthy();
    kubeFull.state.ipam.free = 0;
    kubeFull.view = { ...kubeFull.view, source: 'kube' };
    const kr = results(kubeFull).get('ipam-capacity')!;
    expect(kr.status).toBe('fail');
    expect(kr.fix).toContain('--node-cidr-mask-size');
    expect(kr.fix).not.toContain('SubnetLen');
    const tight = healthy();
    tight.state.ipam.free = 10;
    expectOnly(tight, { 'ipam-capacity': 'warn' });

    const fresh = healthy();
    fresh.state.ipam = { dir: '/var/lib/cni/networks/cbr0', exists: false, pods: [] };
    expectOnly(fresh, {});
  });

  it('host-gw backend: no VXLAN checks; peers are routes via their public IPs on our segment', () => {
    const hg = healthy();
    hg.view.config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}');
    hg.view.leases = hg.view.leases!.slice(0, 2).map((l) => ({ ...l, backendType: 'host-gw' as const, backendData: {} }));
    hg.state.vxlan = null;
    hg.state.neighbours = [];
    hg.state.fdb = [];
    hg.state.routes = hg.state.routes.filter((x) => x.dev !== 'flannel.1');
    hg.state.routes.push(route('10.244.2.0/24', 'eth0', 2, { gw: '192.168.1.11' }));
    hg.pings = [];
    const r = expectOnly(hg, { 'vxlan-device': 'skip', 'vtep-reachability': 'skip', 'kernel-limits': 'skip' });
    expect(r.get('peer-entries')!.message).toBe('route in place for 1 remote node');
    expect(r.get('mtu')!.message).toContain('eth0 1500');
  });

  it('DirectRouting: a same-segment peer needs only a route via its address; the routed one keeps the tunnel', () => {
    const dr = healthy();
    dr.view.config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}');
    dr.state.routes = dr.state.routes.filter((x) => x.dst !== '10.244.2.0/24');
    dr.state.routes.push(route('10.244.2.0/24', 'eth0', 2, { gw: '192.168.1.11' }));
    dr.state.neighbours = dr.state.neighbours.slice(1);
    dr.state.fdb = dr.state.fdb.slice(1);
    dr.pings = dr.pings.slice(1);
    const r = expectOnly(dr, {});
    expect(r.get('vtep-reachability')!.message).toMatch(/^1 remote VTEP answered/);
    const rows = peerRows(dr.state, deriveFacts(dr));
    expect(rows.map((x) => [x.subnet, x.route, x.neigh, x.fdb])).toEqual([
      ['10.244.2.0/24', 'ok', 'n/a', 'n/a'],
      ['10.244.3.0/24', 'ok', 'ok', 'ok'],
    ]);
  });
});

describe('status rendering', () => {
  it('shows the lease, the devices, every remote node with its entries (stale ones marked) and the pods', () => {
    const i = healthy();
    i.view.leases = i.view.leases!.filter((l) => l.subnet !== '10.244.3.0/24');
    i.state.ipam.pods.push({ ip: '10.244.1.9', containerId: 'dead', ifname: 'eth0', hostVeth: 'vethdeadbeef', vethPresent: false });
    const facts = deriveFacts(i);
    const report = buildStatus({ state: i.state, view: i.view, facts, rows: peerRows(i.state, facts) });
    expect(report.lease).toMatchObject({ subnet: '10.244.1.0/24', publicIP: '192.168.1.10', ttlSeconds: 86_000 });
    expect(report.remotes.map((r) => [r.subnet, r.source, r.route, r.neigh, r.fdb])).toEqual([
      ['10.244.2.0/24', 'lease', 'ok', 'ok', 'ok'],
      ['10.244.3.0/24', 'kernel', 'ok', 'ok', 'ok'],
    ]);
    const lines = formatStatus(report, paintFor({ isTTY: false })).split('\n');
    expect(lines).toContain('  lease       10.244.1.0/24 for 192.168.1.10 (etcd key 10.244.1.0-24, expires in 23h53m), VtepMAC aa:00:00:00:00:01');
    expect(lines).toContain('  vxlan       flannel.1 vni 1 local 192.168.1.10 dev eth0 dstport 8472 nolearning mtu 1450 mac aa:00:00:00:00:01 10.244.1.0/32 up');
    expect(lines).toContain('  iptables    FORWARD policy ACCEPT, FLANNEL-FWD 2 rules, FLANNEL-POSTRTG 6 rules');
    expect(lines).toContain('  10.244.2.0-24  10.244.2.0/24  192.168.1.11  ba:00:00:00:00:02  yes    yes    yes');
    expect(lines).toContain('  -              10.244.3.0/24  192.168.2.12  cc:00:00:00:00:03  yes    yes    yes  stale: no lease');
    expect(lines).toContain('  10.244.1.2  c1         eth0    veth0a1b2c3d  yes (cni0, mtu 1450)');
    expect(lines).toContain('  10.244.1.9  dead       eth0    vethdeadbeef  NO (leaked lease?)');
  });
  it('a lease whose etcd TTL ran out (-1 from etcd) shows as expired, as doctor says, not as "-1m-1s"', () => {
    const i = healthy();
    i.view.ttl = { '10.244.1.0/24': -1 };
    const facts = deriveFacts(i);
    const report = buildStatus({ state: i.state, view: i.view, facts, rows: peerRows(i.state, facts) });
    const lines = formatStatus(report, paintFor({ isTTY: false })).split('\n');
    expect(lines).toContain('  lease       10.244.1.0/24 for 192.168.1.10 (etcd key 10.244.1.0-24, expired), VtepMAC aa:00:00:00:00:01');
  });
  it('on an IPv6-only node, the missing IPv4 flannel.1 is no error: the IPv6 device is the one to show', () => {
    const i = healthy();
    i.state.subnetFile.env = { network: '', subnet: '', mtu: 1450, ipMasq: true, ipv6Network: 'fd00:10:244::/56', ipv6Subnet: 'fd00:10:244:1::1/64' };
    i.state.vxlan = null;
    i.state.ipv6 = { vxlan: null, routes: [], neighbours: [], fdb: [] };
    i.view = { source: 'none', origin: 'none' };
    const facts = deriveFacts(i);
    const report = buildStatus({ state: i.state, view: i.view, facts, rows: peerRows(i.state, facts) });
    const lines = formatStatus(report, paintFor({ isTTY: false })).split('\n');
    expect(lines).toContain('  vxlan       none (IPv6-only node)');
    expect(lines).toContain('  vxlan (v6)  no flannel-v6.N VXLAN device');
  });
  it('kernel-limits: before Linux 5.0, peers count against gc_thresh3: warns at 80%, fails at the limit; from 5.0 on it passes', () => {
    const withPeers = (n: number, release: string): DoctorInputs => {
      const i = healthy();
      i.state.sysctl.kernelRelease = release;
      i.view.leases = [i.view.leases![0]!, ...Array.from({ length: n }, (_, k) => lease(`10.${100 + (k >> 8)}.${k & 255}.0/24`, `192.168.${5 + (k >> 8)}.${k & 255}`, MAC.n2))];
      return i;
    };
    const near = results(withPeers(900, '4.19.0-27-amd64')).get('kernel-limits')!;
    expect(near.status).toBe('warn');
    expect(near.message).toBe('900 peers use 88% of gc_thresh3=1024 (kernel 4.19.0-27-amd64 counts permanent ARP entries): a few more nodes and neighbours are refused');
    expect(near.fix).toContain('gc_thresh3=3600');
    const over = results(withPeers(1024, '4.19.0-27-amd64')).get('kernel-limits')!;
    expect(over.status).toBe('fail');
    expect(over.message).toContain('refuses neighbours beyond gc_thresh3=1024');
    expect(results(withPeers(300, '4.19.0-27-amd64')).get('kernel-limits')!.status).toBe('pass');
    const modern = results(withPeers(5000, '6.1.0-18-amd64')).get('kernel-limits')!;
    expect(modern.status).toBe('pass');
    expect(modern.message).toBe('5000 peers: kernel 6.1.0-18-amd64 does not count permanent ARP entries against gc_thresh3');
    const unread = healthy();
    unread.state.sysctl.kernelRelease = '4.19.0';
    unread.state.sysctl.neighGcThresh = [null, null, null];
    expect(results(unread).get('kernel-limits')!.status).toBe('warn');
  });
});

describe('doctor probes', () => {
  it('pings a large cluster\'s VTEPs a bounded number at a time (one process each), and keeps every answer by target', async () => {
    const targets = Array.from({ length: 300 }, (_, i) => `10.${(i >> 8) + 1}.${i & 255}.0`);
    let inFlight = 0;
    let most = 0;
    const argvs: string[][] = [];
    const runner = async (argv: string[]) => {
      argvs.push(argv);
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      const target = argv.at(-1)!;
      // every third peer is silent
      return targets.indexOf(target) % 3 === 0
        ? { code: 1, stdout: '', stderr: '' }
        : { code: 0, stdout: 'rtt min/avg/max/mdev = 0.120/0.150/0.180/0.030 ms\n', stderr: '' };
    };
    const res = await pingAll(targets, undefined, runner);
    expect(argvs).toHaveLength(300);
    // a few dozen processes at a time, not one per node of a 1,000-node cluster, and the pool is used
    expect(most).toBeLessThanOrEqual(64);
    expect(most).toBe(PING_CONCURRENCY);
    expect(res.map((r) => r.target)).toEqual(targets);
    expect(res.filter((r) => !r.ok).map((r) => r.target)).toEqual(targets.filter((_, i) => i % 3 === 0));
    expect(res[1]).toEqual({ target: targets[1], ok: true, ms: 0.12 });
  });

  it('a node without ping: the VTEPs are reported as not probed (WARN, install ping), not as unreachable (FAIL, UDP 8472 blocked)', async () => {
    const inputs = healthy();
    const missing = [
      // what run() really answers for a binary that is not there
      await run(['/nonexistent/tsf-ping', '-c', '1', '10.244.2.0']),
      { code: 1, stdout: '', stderr: 'exec of "ping" failed: No such file or directory\n' },
      { code: 127, stdout: '', stderr: 'nsenter: failed to execute ping: No such file or directory\n' },
    ];
    for (const answer of missing) {
      inputs.pings = await pingAll(['10.244.2.0', '10.244.3.0'], undefined, async () => answer);
      const r = results(inputs).get('vtep-reachability')!;
      expect(r.status, JSON.stringify(r)).toBe('warn');
      expect(r.message).toContain('cannot run ping');
      expect(r.fix).toContain('iputils-ping');
    }
  });

  it('a ping killed by its own timeout is a failed probe (FAIL, no echo reply), not a missing ping (WARN, not probed)', async () => {
    // run()'s real answer for a process it killed on its timeout, as a ping
    // that hangs (a stalled nsenter, a DNS-less -n that never returns) gives
    const killed = await run(['sleep', '5'], 200);
    const pings = await pingAll(['10.244.2.0', '10.244.3.0'], undefined, async () => killed);
    expect(pings.map((p) => [p.ok, p.error])).toEqual([[false, undefined], [false, undefined]]);
    const inputs = healthy();
    inputs.pings = pings;
    const r = results(inputs).get('vtep-reachability')!;
    expect(r.status, JSON.stringify(r)).toBe('fail');
    expect(r.message).toContain('no echo reply');
    expect(r.message).not.toContain('cannot run ping');
  });
});
