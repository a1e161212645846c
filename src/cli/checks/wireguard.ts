// The wireguard backend seen from the node: flannel-wg and its key, one
// WireGuard peer per remote lease (decided by the agent's own planPeers and
// diffPeers, so doctor and agent never disagree), and whether each peer
// answers through the tunnel with a recent handshake.
import { canonicalCidr, networkAddress, parseCidr } from '../../net/ip.js';
import { diffPeers, planPeers, type DesiredPeer, type DumpPeer } from '../../daemon/backend/wireguard-peers.js';
import { WIREGUARD_OVERHEAD_V4 } from '../../daemon/backend/wireguard.js';
import { subnetOf, WIREGUARD_DEVICE, type NodeState } from '../../node/state.js';
import type { PeerRow } from './peers.js';
import { count, pass, pingNotRun, problem, skip, type CheckResult, type DoctorInputs, type Facts } from './types.js';

/** WireGuard drops a session after 180 s without a new handshake (REJECT_AFTER_TIME). */
export const HANDSHAKE_STALE_SECONDS = 180;

function clusterRouteOk(state: NodeState, network: string): boolean {
  return state.routes.some((r) => r.dst === network && r.dev === WIREGUARD_DEVICE && !r.gw);
}

function peerText(p: DesiredPeer): string {
  return `peer ${p.publicKey} endpoint ${p.endpoint} allowed-ips ${p.allowedIPs.join(',')}`;
}

function gatewayOf(allowed: string | undefined): string | undefined {
  const c = allowed ? parseCidr(allowed, 4) : undefined;
  return c ? networkAddress(c) : undefined;
}

function endpointIP(endpoint: string | undefined): string | undefined {
  return endpoint ? endpoint.replace(/:\d+$/, '').replace(/^\[|\]$/g, '') : undefined;
}

function peerRow(p: DumpPeer, extra: Partial<PeerRow>): PeerRow {
  const row: PeerRow = {
    subnet: p.allowedIPs.join(',') || '(none)',
    source: 'kernel',
    route: 'n/a',
    neigh: 'n/a',
    fdb: 'n/a',
    wgPeer: 'ok',
    publicKey: p.publicKey,
    handshake: p.latestHandshake,
    problems: [],
    repairs: [],
    ...extra,
  };
  const ip = endpointIP(p.endpoint);
  if (ip) row.publicIP = ip;
  return row;
}

/**
 * One row per remote node: with leases, every peer the agent would program
 * (compared with flannel-wg's), every refused lease, and every peer no lease
 * asks for; without, flannel-wg's own peers.
 */
export function wireguardRows(state: NodeState, facts: Facts): PeerRow[] {
  const dev = state.wireguard?.device;
  const current = dev?.peers ?? [];
  const network = facts.network ? parseCidr(facts.network, 4) : undefined;
  const own = facts.ownSubnet ? parseCidr(facts.ownSubnet, 4) : undefined;
  const backend = facts.backend;
  if (backend.type !== 'wireguard' || !network || !own || !facts.leases) {
    return current.map((p) => peerRow(p, { ...(gatewayOf(p.allowedIPs[0]) ? { pingTarget: gatewayOf(p.allowedIPs[0])! } : {}) }));
  }
  const routeOk = clusterRouteOk(state, canonicalCidr(network));
  const plan = planPeers(facts.remoteLeases, {
    network,
    ownSubnet: own,
    ownPublicKey: facts.ownLease?.backendData.PublicKey ?? dev?.publicKey ?? '',
    ownIPs: [facts.ownPublicIP, facts.ownLease?.publicIP].filter((x): x is string => Boolean(x)),
    port: backend.listenPort,
  });
  const settings = { persistentKeepalive: backend.persistentKeepaliveInterval, ...(backend.psk ? { psk: backend.psk } : {}) };
  const diff = diffPeers(plan.peers, current, settings);
  const added = new Set(diff.add.map((p) => p.publicKey));
  const updated = new Map(diff.update.map((u) => [u.peer.publicKey, u.why]));
  const byKey = new Map(current.map((p) => [p.publicKey, p]));
  const rows: PeerRow[] = plan.peers.map((p) => {
    const row: PeerRow = {
      subnet: p.allowedIPs.join(','),
      publicIP: p.lease.publicIP,
      publicKey: p.publicKey,
      source: 'lease',
      route: routeOk ? 'ok' : 'missing',
      neigh: 'n/a',
      fdb: 'n/a',
      wgPeer: added.has(p.publicKey) ? 'missing' : updated.has(p.publicKey) ? 'wrong' : 'ok',
      problems: [],
      repairs: [],
    };
    if (p.lease.nodeName) row.node = p.lease.nodeName;
    const have = byKey.get(p.publicKey);
    if (have) row.handshake = have.latestHandshake;
    if (!dev) row.problems.push(`${WIREGUARD_DEVICE} does not exist`);
    else if (row.wgPeer === 'missing') row.problems.push(`no peer for key ${p.publicKey}`);
    else if (row.wgPeer === 'wrong') row.problems.push(`peer ${p.publicKey}: ${updated.get(p.publicKey)!.join('; ')}`);
    if (row.wgPeer !== 'ok') row.repairs.push(`wg set ${WIREGUARD_DEVICE} ${peerText(p)}`);
    if (!routeOk) {
      row.problems.push(`no route ${canonicalCidr(network)} dev ${WIREGUARD_DEVICE}`);
      row.repairs.push(`ip route replace ${canonicalCidr(network)} dev ${WIREGUARD_DEVICE} scope link`);
    }
    if (row.problems.length === 0) row.pingTarget = gatewayOf(p.allowedIPs[0])!;
    return row;
  });
  for (const s of plan.skipped) {
    if (!s.error) continue;
    const row: PeerRow = { subnet: s.lease.subnet, publicIP: s.lease.publicIP, source: 'lease', route: 'n/a', neigh: 'n/a', fdb: 'n/a', problems: [], repairs: [], refused: s.reason };
    if (s.lease.nodeName) row.node = s.lease.nodeName;
    rows.push(row);
  }
  for (const key of diff.remove) {
    const p = byKey.get(key)!;
    rows.push(peerRow(p, { problems: ['no lease for this peer: the node left, or changed its key'], repairs: [`wg set ${WIREGUARD_DEVICE} peer ${key} remove`] }));
  }
  return rows;
}

export function checkWireguardDevice(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'wireguard-device';
  const { backend } = facts;
  if (backend.type !== 'wireguard') return skip(id, `${backend.type} backend: no WireGuard device`);
  const wg = inputs.state.wireguard;
  const dev = wg?.device;
  if (!dev) {
    return problem(
      id,
      'fail',
      `${WIREGUARD_DEVICE} does not exist`,
      'tsflanneld creates it at start and rebuilds it on every resync: check that it runs (a kernel without WireGuard needs wireguard-go: apt install wireguard-go)',
    );
  }
  if (dev.impl === 'other') return problem(id, 'fail', `${dev.name} is a ${dev.type} device, not WireGuard`, `ip link delete ${dev.name}; tsflanneld recreates it`);
  if (dev.error) {
    const fix =
      dev.impl === 'wireguard-go'
        ? 'wireguard-go is reached through /var/run/wireguard/flannel-wg.sock: run doctor in the node\'s mount namespace; if the socket is gone, ip link delete flannel-wg and tsflanneld starts wireguard-go again'
        : 'install wireguard-tools (wg)';
    return problem(id, 'fail', `wg cannot read ${dev.name} (${dev.impl}): ${dev.error}`, fix);
  }
  const wrong: string[] = [];
  let fix = 'restart tsflanneld: it sets the key, port, address and MTU back (it also does on every resync)';
  if (dev.listenPort !== backend.listenPort) wrong.push(`listening on ${dev.listenPort}, want ListenPort ${backend.listenPort}`);
  const published = facts.ownLease?.backendData.PublicKey;
  if (published && dev.publicKey !== published) {
    wrong.push(`public key ${dev.publicKey ?? 'none'}, but this node's lease publishes ${published}, so peers encrypt to a key this node does not hold`);
  }
  const key = wg.keyFile;
  if (!key.exists) {
    wrong.push(`key file ${key.path} is missing: the next agent start generates a new key and every node must re-key this peer`);
    fix = `restart tsflanneld to write ${key.path} (or set WIREGUARD_KEY_FILE to where the key is kept)`;
  } else if (key.error) wrong.push(`key file ${key.path}: ${key.error}`);
  else if (key.publicKey !== dev.publicKey) wrong.push(`key file ${key.path} holds another key (public ${key.publicKey}) than the device`);
  if (facts.ownSubnet) {
    const want = `${subnetOf(facts.ownSubnet).split('/')[0]}/32`;
    if (!dev.addresses.includes(want)) wrong.push(`address ${dev.addresses.join(', ') || 'none'}, want ${want}`);
  }
  if (facts.network && !clusterRouteOk(inputs.state, facts.network)) wrong.push(`no route ${facts.network} dev ${dev.name}`);
  if (!dev.up) wrong.push('down');
  if (wrong.length > 0) return problem(id, 'fail', `${dev.name}: ${wrong.join('; ')}`, fix);
  const impl = dev.impl === 'kernel' ? 'kernel WireGuard' : 'wireguard-go (this kernel has no WireGuard)';
  const loose = key.mode !== undefined && (key.mode & 0o077) !== 0;
  const msg = `${dev.name} on ${impl}, port ${dev.listenPort}, public key ${dev.publicKey}, mtu ${dev.mtu}, ${dev.addresses.join(' ')}, up; key file ${key.path}`;
  if (loose) return problem(id, 'warn', `${msg} is readable by others (mode ${key.mode!.toString(8)})`, `chmod 600 ${key.path}`);
  return pass(id, msg);
}

export function checkWireguardPeers(inputs: DoctorInputs, facts: Facts, rows: PeerRow[]): CheckResult {
  const id = 'wireguard-peers';
  if (facts.backend.type !== 'wireguard') return skip(id, `${facts.backend.type} backend: no WireGuard peers`);
  const dev = inputs.state.wireguard?.device;
  if (!dev || dev.error) return skip(id, `${WIREGUARD_DEVICE} unreadable (see wireguard-device)`);
  const targets = rows.filter((r) => r.pingTarget);
  if (targets.length === 0) return pass(id, 'no remote peer to probe');
  const now = inputs.wireguardProbe?.at ?? Math.floor(Date.parse(inputs.state.readAt) / 1000);
  const after = new Map((inputs.wireguardProbe?.peers ?? dev.peers).map((p) => [p.publicKey, p.latestHandshake]));
  const pings = new Map(inputs.pings.map((p) => [p.target, p]));
  const age = (r: PeerRow): number | undefined => {
    const t = (r.publicKey !== undefined ? after.get(r.publicKey) : undefined) ?? r.handshake ?? 0;
    return t > 0 ? Math.max(0, now - t) : undefined;
  };
  const who = (r: PeerRow) => `${r.node ? `${r.node} ` : ''}${r.subnet}${r.publicIP ? ` (${r.publicIP})` : ''}`;
  const failed = targets.filter((r) => !pings.get(r.pingTarget!)?.ok);
  const ages = targets.map(age).filter((a): a is number => a !== undefined);
  const notRun = pingNotRun(id, failed.map((r) => pings.get(r.pingTarget!)?.error), 'peer');
  if (notRun) return notRun;
  if (failed.length > 0) {
    const port = facts.backend.type === 'wireguard' ? facts.backend.listenPort : 51820;
    return problem(
      id,
      'fail',
      `no echo reply through ${dev.name} from ${failed.map(who).join(', ')}`,
      `UDP ${port} blocked between nodes, or that node holds another key for this one (compare wg show ${dev.name} on both)`,
      failed.map((r) => {
        const a = age(r);
        return `${who(r)}: ping ${r.pingTarget} got no reply; ${a === undefined ? 'no handshake ever' : `last handshake ${a} s ago${a > HANDSHAKE_STALE_SECONDS ? ' (session expired)' : ''}`}`;
      }),
    );
  }
  const [lo, hi] = [Math.min(...ages), Math.max(...ages)];
  const range = ages.length === 0 ? '' : lo === hi ? `; latest handshakes ${lo} s ago` : `; latest handshakes ${lo}–${hi} s ago`;
  return pass(id, `${count(targets.length, 'peer')} answered through ${dev.name}${range}`);
}

/** The pod MTU ceiling for the MTU check: flannel-wg's MTU, and the underlay minus WireGuard's 60 bytes. */
export function wireguardCeiling(state: NodeState, underlayMtu: number | undefined): { mtu: number; name: string; chain: string; over?: string } | undefined {
  const dev = state.wireguard?.device;
  if (!dev) return undefined;
  if (underlayMtu === undefined) return { mtu: dev.mtu, name: dev.name, chain: `${dev.name} ${dev.mtu}` };
  const max = underlayMtu - WIREGUARD_OVERHEAD_V4;
  const out: { mtu: number; name: string; chain: string; over?: string } = {
    mtu: dev.mtu,
    name: dev.name,
    chain: `underlay ${underlayMtu} − ${WIREGUARD_OVERHEAD_V4} = ${max} ≥ ${dev.name} ${dev.mtu}`,
  };
  if (dev.mtu > max) out.over = `${dev.name} MTU ${dev.mtu} is above the underlay's ${underlayMtu} − ${WIREGUARD_OVERHEAD_V4} = ${max}: full-size packets are lost after encryption`;
  return out;
}
