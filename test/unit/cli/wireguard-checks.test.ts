// Doctor and status on a wireguard node, as pure functions of the node
// state: a healthy node passes, and each fault fails the check that names it.
import { describe, expect, it } from 'vitest';
import { evaluate, type CheckId, type CheckResult, type DoctorInputs } from '../../../src/cli/checks/index.js';
import { peerRows } from '../../../src/cli/checks/peers.js';
import { deriveFacts } from '../../../src/cli/checks/types.js';
import { buildStatus, formatStatus } from '../../../src/cli/status.js';
import { paintFor } from '../../../src/cli/checks/format.js';
import { parseNetworkConfig } from '../../../src/daemon/config.js';
import type { Lease } from '../../../src/daemon/types.js';
import type { NodeState } from '../../../src/node/state.js';

const KEY = (n: number) => Buffer.alloc(32, n).toString('base64');
const NOW = Date.parse('2026-01-01T00:00:00.000Z') / 1000;

const lease = (n: number, publicIP: string): Lease => ({
  subnet: `10.244.${n}.0/24`,
  publicIP,
  backendType: 'wireguard',
  backendData: { PublicKey: KEY(n) },
  nodeName: `node${n}`,
});

const link = (index: number, name: string, type: string, mtu: number, addresses: string[]) => ({
  name, index, type, mtu, mac: '', up: true, masterIndex: 0, addresses,
});

const peer = (n: number, ip: string) => ({
  publicKey: KEY(n),
  endpoint: `${ip}:51820`,
  allowedIPs: [`10.244.${n}.0/24`],
  latestHandshake: NOW - 5,
  rxBytes: 1,
  txBytes: 1,
  persistentKeepalive: 0,
});

/** node1 (192.168.1.10, 10.244.1.0/24) with node2 on its segment and node3 behind a router, on wireguard-go. */
function healthy(): DoctorInputs {
  const state: NodeState = {
    netns: null,
    readAt: '2026-01-01T00:00:00.000Z',
    subnetFile: { path: '/run/flannel/subnet.env', exists: true, env: { network: '10.244.0.0/16', subnet: '10.244.1.1/24', mtu: 1440, ipMasq: true } },
    links: [link(1, 'lo', 'device', 65536, ['127.0.0.1/8']), link(2, 'eth0', 'veth', 1500, ['192.168.1.10/24']), link(3, 'flannel-wg', 'tuntap', 1440, ['10.244.1.0/32']), link(4, 'cni0', 'bridge', 1440, ['10.244.1.1/24'])],
    routes: [
      { dst: 'default', gw: '192.168.1.1', dev: 'eth0', linkIndex: 2, onlink: false, metric: 0, protocol: 3, scope: 0 },
      { dst: '10.244.0.0/16', dev: 'flannel-wg', linkIndex: 3, onlink: false, metric: 0, protocol: 3, scope: 253 },
      { dst: '10.244.1.0/24', dev: 'cni0', linkIndex: 4, onlink: false, metric: 0, protocol: 2, scope: 253 },
      { dst: '192.168.1.0/24', dev: 'eth0', linkIndex: 2, onlink: false, metric: 0, protocol: 2, scope: 253 },
    ],
    bridge: { ...link(4, 'cni0', 'bridge', 1440, ['10.244.1.1/24']), ports: [] },
    vxlan: null,
    neighbours: [],
    fdb: [],
    ipam: { dir: '/var/lib/cni/networks/cbr0', exists: true, pods: [], total: 253, free: 253 },
    sysctl: { ipForward: '1', rpFilter: { all: 0, default: 0, cni0: 0 } },
    iptables: {
      ok: true,
      forwardPolicy: 'ACCEPT',
      forward: ['-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'],
      flannelFwd: ['-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT', '-A FLANNEL-FWD -d 10.244.0.0/16 -j ACCEPT'],
      flannelMasq: ['1', '2', '3', '4', '5', '6'].map((n) => `-A FLANNEL-POSTRTG rule${n}`),
    },
    wireguard: {
      device: { ...link(3, 'flannel-wg', 'tuntap', 1440, ['10.244.1.0/32']), impl: 'wireguard-go', publicKey: KEY(1), listenPort: 51820, peers: [peer(2, '192.168.1.11'), peer(3, '192.168.2.12')] },
      keyFile: { path: '/run/flannel/wgkey', exists: true, mode: 0o600, publicKey: KEY(1) },
    },
  };
  return {
    state,
    view: {
      source: 'etcd',
      origin: 'etcd http://127.0.0.1:2379 /coreos.com/network',
      config: parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}'),
      leases: [lease(1, '192.168.1.10'), lease(2, '192.168.1.11'), lease(3, '192.168.2.12')],
    },
    pings: [
      { target: '10.244.2.0', ok: true, ms: 0.4 },
      { target: '10.244.3.0', ok: true, ms: 0.6 },
    ],
    iptables: { ok: true, forwardMissing: [], masqMissing: [] },
    wireguardProbe: { at: NOW, peers: [peer(2, '192.168.1.11'), peer(3, '192.168.2.12')] },
  };
}

const results = (inputs: DoctorInputs) => new Map<CheckId, CheckResult>(evaluate(inputs).map((c) => [c.id, c]));
const notPassing = (inputs: DoctorInputs) => [...results(inputs).values()].filter((c) => c.status !== 'pass').map((c) => `${c.id}:${c.status}`);

describe('doctor on a wireguard node (pure)', () => {
  it('a healthy node passes everything but the three VXLAN checks, which skip', () => {
    expect(notPassing(healthy())).toEqual(['vxlan-device:skip', 'vtep-reachability:skip', 'kernel-limits:skip']);
    const r = results(healthy());
    expect(r.get('wireguard-device')!.message).toBe(
      `flannel-wg on wireguard-go (this kernel has no WireGuard), port 51820, public key ${KEY(1)}, mtu 1440, 10.244.1.0/32, up; key file /run/flannel/wgkey`,
    );
    expect(r.get('wireguard-peers')!.message).toBe('2 peers answered through flannel-wg; latest handshakes 5 s ago');
    expect(r.get('peer-entries')!.message).toBe('WireGuard peer in place for 2 remote nodes');
    expect(r.get('mtu')!.message).toContain('underlay 1500 − 60 = 1440 ≥ flannel-wg 1440');
  });

  it('a missing peer, a wrong endpoint and a stale peer fail peer-entries with wg set repairs; they are not pinged', () => {
    const i = healthy();
    const dev = i.state.wireguard!.device!;
    dev.peers = [{ ...peer(3, '192.0.2.1'), allowedIPs: ['10.244.3.0/24'] }, peer(9, '192.168.1.99')];
    const r = results(i);
    const pe = r.get('peer-entries')!;
    expect(pe.status).toBe('fail');
    expect(pe.details).toEqual([
      `node2 10.244.2.0/24 (192.168.1.11): no peer for key ${KEY(2)}`,
      `node3 10.244.3.0/24 (192.168.2.12): peer ${KEY(3)}: endpoint 192.0.2.1:51820 != 192.168.2.12:51820`,
    ]);
    const stale = r.get('stale-entries')!;
    expect(stale.status).toBe('warn');
    expect(stale.details).toEqual([`WireGuard peer ${KEY(9)} (allowed IPs 10.244.9.0/24, endpoint 192.168.1.99)`]);
    expect(stale.fix).toContain(`wg set flannel-wg peer ${KEY(9)} remove`);
    expect(pe.fix).toContain(`wg set flannel-wg peer ${KEY(2)} endpoint 192.168.1.11:51820 allowed-ips 10.244.2.0/24`);
    const rows = peerRows(i.state, deriveFacts(i));
    expect(rows.filter((x) => x.pingTarget)).toEqual([]);
    expect(rows.find((x) => x.publicKey === KEY(9))!.repairs).toEqual([`wg set flannel-wg peer ${KEY(9)} remove`]);
  });

  it('wireguard-device: missing, unreadable through wg, published key not the device key, key file gone, wrong port, no cluster route', () => {
    const gone = healthy();
    gone.state.wireguard!.device = null;
    expect(results(gone).get('wireguard-device')!.message).toBe('flannel-wg does not exist');

    const noSocket = healthy();
    noSocket.state.wireguard!.device!.error = 'Unable to access interface: Protocol not supported';
    const ns = results(noSocket);
    expect(ns.get('wireguard-device')!.status).toBe('fail');
    expect(ns.get('wireguard-device')!.fix).toContain("run doctor in the node's mount namespace");
    expect(ns.get('wireguard-peers')!.status).toBe('skip');

    const rekeyed = healthy();
    rekeyed.view.leases![0] = { ...lease(1, '192.168.1.10'), backendData: { PublicKey: KEY(7) } };
    expect(results(rekeyed).get('wireguard-device')!.message).toContain(`but this node's lease publishes ${KEY(7)}, so peers encrypt to a key this node does not hold`);

    const noFile = healthy();
    noFile.state.wireguard!.keyFile = { path: '/run/flannel/wgkey', exists: false };
    expect(results(noFile).get('wireguard-device')!.message).toContain('key file /run/flannel/wgkey is missing');

    const port = healthy();
    port.state.wireguard!.device!.listenPort = 4444;
    expect(results(port).get('wireguard-device')!.message).toContain('listening on 4444, want ListenPort 51820');

    const route = healthy();
    route.state.routes = route.state.routes.filter((x) => x.dev !== 'flannel-wg');
    const rr = results(route);
    expect(rr.get('wireguard-device')!.message).toContain('no route 10.244.0.0/16 dev flannel-wg');
    expect(rr.get('peer-entries')!.fix).toContain('ip route replace 10.244.0.0/16 dev flannel-wg scope link');

    const loose = healthy();
    loose.state.wireguard!.keyFile.mode = 0o644;
    const lr = results(loose).get('wireguard-device')!;
    expect([lr.status, lr.fix]).toEqual(['warn', 'chmod 600 /run/flannel/wgkey']);
  });

  it('wireguard-peers: an unanswered peer fails with the port hint and its handshake age', () => {
    const i = healthy();
    i.pings[1] = { target: '10.244.3.0', ok: false };
    i.wireguardProbe!.peers[1] = { ...peer(3, '192.168.2.12'), latestHandshake: 0 };
    const c = results(i).get('wireguard-peers')!;
    expect(c.status).toBe('fail');
    expect(c.fix).toContain('UDP 51820 blocked between nodes');
    expect(c.details).toEqual(['node3 10.244.3.0/24 (192.168.2.12): ping 10.244.3.0 got no reply; no handshake ever']);
  });

  it('wireguard-peers: a host without ping warns that the peers were not probed, instead of blaming UDP 51820', () => {
    const i = healthy();
    i.pings = i.pings.map((p) => ({ target: p.target, ok: false, error: 'spawn ping ENOENT' }));
    const c = results(i).get('wireguard-peers')!;
    expect(c.status, JSON.stringify(c)).toBe('warn');
    expect(c.message).toContain('cannot run ping');
    expect(c.fix).toContain('iputils-ping');
  });

  it('mtu: flannel-wg above the underlay − 60 fails', () => {
    const i = healthy();
    i.state.wireguard!.device!.mtu = 1480;
    const c = results(i).get('mtu')!;
    expect(c.status).toBe('fail');
    expect(c.message).toContain('flannel-wg MTU 1480 is above the underlay\'s 1500 − 60 = 1440');
  });

  it('status shows the device, the key file and one row per peer with its handshake', () => {
    const i = healthy();
    const facts = deriveFacts(i);
    const text = formatStatus(buildStatus({ state: i.state, view: i.view, facts, rows: peerRows(i.state, facts) }), paintFor({ isTTY: false }));
    expect(text).toContain(`wireguard   flannel-wg (wireguard-go) port 51820 public key ${KEY(1)} mtu 1440 10.244.1.0/32 up, 2 peer(s), key file /run/flannel/wgkey (600)`);
    expect(text).toMatch(/node2\s+10\.244\.2\.0\/24\s+192\.168\.1\.11\s+AgICAgICAg…\s+yes\s+yes\s+5 s ago/);
    expect(text).toContain(`PublicKey ${KEY(1)}`);
  });
});
