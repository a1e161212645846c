// `tsflannel status`: this node's lease and subnet file, cni0, flannel.1,
// the remote nodes it knows (from flannel.1's entries, and from the subnet
// manager when one is given) and the local pods; on a node with an IPv6
// subnet also flannel-v6, its remote nodes and the ip6tables chains.
// Read-only.
import type { Argv } from 'yargs';
import { snapshot, type NodeSnapshot } from './checks/index.js';
import { nodeToolCommand, type NodeToolOptions } from './checks/options.js';
import { table, type Paint } from './checks/format.js';
import type { EntryStatus, PeerRow } from './checks/peers.js';
import type { BackendConfig, Lease } from '../daemon/types.js';
import { kernelPeers, type KernelPeer, type NodeState, type PodAttachment } from '../node/state.js';
import type { ClusterView } from './checks/source.js';
import { cniPathLine, readCniSocket, type CniSocketState } from './checks/cni-socket.js';

export interface StatusReport {
  netns: string | null;
  /** the backend from the network config, else vxlan */
  backend: BackendConfig['type'];
  source: { kind: ClusterView['source']; origin: string; error?: string; configError?: string };
  lease: (Lease & { ttlSeconds?: number }) | null;
  readAt: string;
  subnetFile: NodeState['subnetFile'];
  bridge: NodeState['bridge'];
  vxlan: NodeState['vxlan'];
  /** flannel-wg and the key file (wireguard backend, or when flannel-wg exists) */
  wireguard: NodeState['wireguard'] | null;
  sysctl: NodeState['sysctl'];
  iptables: NodeState['iptables'] | null;
  remotes: PeerRow[];
  pods: PodAttachment[];
  ipam: { dir: string; exists: boolean; leases: number; total?: number; free?: number; error?: string };
  /** which path pod calls take: the agent's socket, or the standalone fallback */
  cniPath?: CniSocketState;
  /** the IPv6 overlay, on a node with an IPv6 subnet or a flannel-v6 device */
  ipv6?: {
    vxlan: NodeState['vxlan'];
    /** remote nodes as flannel-v6's routes, neighbours and FDB describe them */
    remotes: KernelPeer[];
    ip6tables: NodeState['iptables'] | null;
  };
}

export function buildStatus(snap: NodeSnapshot): StatusReport {
  const { state, view, facts, rows } = snap;
  const source: StatusReport['source'] = { kind: view.source, origin: view.origin };
  if (view.error) source.error = view.error;
  if (view.configError) source.configError = view.configError;
  let lease: StatusReport['lease'] = null;
  if (facts.ownLease) {
    lease = { ...facts.ownLease };
    const ttl = view.ttl?.[facts.ownLease.subnet];
    if (ttl !== undefined) lease.ttlSeconds = ttl;
  }
  const ipam: StatusReport['ipam'] = { dir: state.ipam.dir, exists: state.ipam.exists, leases: state.ipam.pods.length };
  if (state.ipam.total !== undefined) ipam.total = state.ipam.total;
  if (state.ipam.free !== undefined) ipam.free = state.ipam.free;
  if (state.ipam.error) ipam.error = state.ipam.error;
  return {
    netns: state.netns,
    readAt: state.readAt,
    backend: facts.backend.type,
    source,
    lease,
    subnetFile: state.subnetFile,
    bridge: state.bridge,
    vxlan: state.vxlan,
    wireguard: state.wireguard ?? null,
    sysctl: state.sysctl,
    iptables: state.iptables ?? null,
    remotes: rows,
    pods: state.ipam.pods,
    ipam,
    ...(state.ipv6 ? { ipv6: { vxlan: state.ipv6.vxlan, remotes: kernelPeers(state.ipv6), ip6tables: state.ipv6.ip6tables ?? null } } : {}),
  };
}

function mark(s: EntryStatus, p: Paint): string {
  switch (s) {
    case 'ok':
      return p.green('yes');
    case 'missing':
      return p.red('MISSING');
    case 'wrong':
      return p.red('WRONG');
    default:
      return p.dim('-');
  }
}

function ttlText(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(seconds % 60).padStart(2, '0')}s`;
}

function leaseLine(r: StatusReport): string {
  if (r.source.kind === 'none') return 'not looked up (give --etcd-endpoints or --kube-subnet-mgr)';
  if (r.source.error) return `cannot read ${r.source.origin}: ${r.source.error}`;
  if (!r.lease) return `none found in ${r.source.origin}`;
  const l = r.lease;
  // etcd answers -1 for a lease that ran out between the read and the TTL query
  const ttl = l.ttlSeconds === undefined ? '' : l.ttlSeconds < 0 ? ', expired' : `, expires in ${ttlText(l.ttlSeconds)}`;
  return `${l.subnet} for ${l.publicIP} (${r.source.kind} ${r.source.kind === 'etcd' ? 'key' : 'node'} ${l.nodeName ?? '?'}${ttl}), ${l.backendData.PublicKey ? `PublicKey ${l.backendData.PublicKey}` : `VtepMAC ${l.backendData.VtepMAC ?? '-'}`}`;
}

function wireguardLine(r: StatusReport, p: Paint): string {
  const wg = r.wireguard;
  const dev = wg?.device;
  const key = wg ? `key file ${wg.keyFile.path}${wg.keyFile.exists ? (wg.keyFile.mode !== undefined ? ` (${wg.keyFile.mode.toString(8)})` : '') : p.red(' MISSING')}` : '';
  if (!dev) return `${p.red('no flannel-wg device')}${key ? `, ${key}` : ''}`;
  const impl = dev.impl === 'kernel' ? 'kernel' : dev.impl === 'wireguard-go' ? 'wireguard-go' : p.red(dev.type);
  if (dev.error) return `${dev.name} (${impl}) ${p.red(`wg cannot read it: ${dev.error}`)}, ${key}`;
  return `${dev.name} (${impl}) port ${dev.listenPort ?? '?'} public key ${dev.publicKey ?? '-'} mtu ${dev.mtu} ${dev.addresses.join(' ') || 'no address'} ${dev.up ? 'up' : p.red('DOWN')}, ${dev.peers.length} peer(s), ${key}`;
}

function iptablesLine(ipt: StatusReport['iptables'], tool = 'iptables'): string {
  if (!ipt) return 'not read';
  if (!ipt.ok) return `cannot run ${tool}: ${ipt.error ?? '?'}`;
  const fwd = ipt.flannelFwd === null ? 'no FLANNEL-FWD' : `FLANNEL-FWD ${ipt.flannelFwd.length} rules`;
  const masq = ipt.flannelMasq === null ? 'no FLANNEL-POSTRTG' : `FLANNEL-POSTRTG ${ipt.flannelMasq.length} rules`;
  return `FORWARD policy ${ipt.forwardPolicy ?? '?'}, ${fwd}, ${masq}`;
}

export function formatStatus(r: StatusReport, p: Paint): string {
  const out: string[] = [];
  const where = r.netns ? `netns ${r.netns}` : 'this network namespace';
  out.push(p.bold(`tsflannel status: ${where}`), '');
  const sf = r.subnetFile;
  const env = sf.env;
  const fileText = !sf.exists
    ? p.red(`${sf.path}: missing`)
    : env
      ? `${sf.path}: ${env.network ? `FLANNEL_NETWORK=${env.network} FLANNEL_SUBNET=${env.subnet} ` : ''}${env.ipv6Subnet ? `FLANNEL_IPV6_NETWORK=${env.ipv6Network} FLANNEL_IPV6_SUBNET=${env.ipv6Subnet} ` : ''}FLANNEL_MTU=${env.mtu} FLANNEL_IPMASQ=${env.ipMasq}`
      : p.red(`${sf.path}: ${sf.error ?? 'unreadable'}`);
  const br = r.bridge;
  const brText = br
    ? `${br.name} ${br.addresses.join(' ') || 'no address'} mtu ${br.mtu} ${br.up ? 'up' : p.red('DOWN')}, ${br.ports.length} port(s)${br.ports.length ? `: ${br.ports.map((x) => x.name).join(' ')}` : ''}`
    : 'no bridge yet (created at the first pod ADD)';
  const vx = r.vxlan;
  const snapBackend = r.backend;
  // An IPv6-only node's subnet file has no FLANNEL_SUBNET: it has no IPv4 flannel.1 to miss.
  const ipv6Only = env !== undefined && !env.subnet && Boolean(env.ipv6Subnet);
  const vxText = vx
    ? `${vx.name} vni ${vx.vni} local ${vx.local || '-'} dev ${vx.dev ?? '-'} dstport ${vx.port} ${vx.learning ? 'learning' : 'nolearning'} mtu ${vx.mtu} mac ${vx.mac} ${vx.addresses.join(' ') || 'no address'} ${vx.up ? 'up' : p.red('DOWN')}`
    : ipv6Only
      ? 'none (IPv6-only node)'
      : snapBackend === 'vxlan'
      ? p.red('no flannel.N VXLAN device')
      : `none (${snapBackend} backend)`;
  const rp = Object.entries(r.sysctl.rpFilter).map(([k, v]) => `${k}=${v ?? '?'}`).join(' ');
  const rows: [string, string][] = [
    ['lease', leaseLine(r)],
    ['subnet file', fileText],
    ['bridge', brText],
    ['vxlan', vxText],
    ...(r.wireguard || snapBackend === 'wireguard' ? [['wireguard', wireguardLine(r, p)] as [string, string]] : []),
    ['sysctl', `ip_forward=${r.sysctl.ipForward ?? '?'}${r.ipv6 ? ` ipv6 forwarding=${r.sysctl.ipv6Forward ?? '?'}` : ''} rp_filter ${rp}`],
    ['iptables', iptablesLine(r.iptables)],
  ];
  if (r.ipv6) {
    const v6 = r.ipv6.vxlan;
    const v6Text = v6
      ? `${v6.name} vni ${v6.vni} local ${v6.local || '-'} dev ${v6.dev ?? '-'} dstport ${v6.port} ${v6.learning ? 'learning' : 'nolearning'} mtu ${v6.mtu} mac ${v6.mac} ${v6.addresses.join(' ') || 'no address'} ${v6.up ? 'up' : p.red('DOWN')}`
      : snapBackend === 'vxlan'
        ? p.red('no flannel-v6.N VXLAN device')
        : `none (${snapBackend} backend)`;
    rows.splice(4, 0, ['vxlan (v6)', v6Text]);
    rows.push(['ip6tables', iptablesLine(r.ipv6.ip6tables, 'ip6tables')]);
  }
  if (r.cniPath) rows.push(['CNI calls', r.cniPath.answering || r.cniPath.kind === 'off' ? cniPathLine(r.cniPath) : p.yellow(cniPathLine(r.cniPath))]);
  for (const [k, v] of rows) out.push(`  ${k.padEnd(12)}${v}`);

  out.push('');
  const fromLeases = r.remotes.some((x) => x.source === 'lease') || (r.source.kind !== 'none' && !r.source.error);
  out.push(p.bold(`Remote nodes (${fromLeases ? `leases from ${r.source.kind}, checked against the kernel` : 'from flannel.1\'s routes, neighbours and FDB'}): ${r.remotes.length}`));
  if (r.remotes.length > 0 && snapBackend === 'wireguard') {
    const now = Math.floor(Date.parse(r.readAt) / 1000);
    const body = r.remotes.map((x) => [
      x.node ?? '-',
      x.subnet,
      x.publicIP ?? '-',
      x.publicKey ? `${x.publicKey.slice(0, 10)}…` : '-',
      mark(x.wgPeer ?? 'n/a', p),
      mark(x.route, p),
      x.handshake ? `${Math.max(0, now - x.handshake)} s ago` : p.dim('never'),
      x.refused ? p.red(`lease refused: ${x.refused}`) : x.source === 'kernel' && fromLeases ? p.yellow('stale: no lease') : x.problems.length ? p.red(x.problems.join('; ')) : '',
    ]);
    out.push(...table(['NODE', 'SUBNET', 'PUBLIC IP', 'PUBLIC KEY', 'PEER', 'ROUTE', 'HANDSHAKE', 'NOTE'], body));
  } else if (r.remotes.length > 0) {
    const body = r.remotes.map((x) => [
      x.node ?? '-',
      x.subnet,
      x.publicIP ?? '-',
      x.vtepMac ?? '-',
      mark(x.route, p),
      mark(x.neigh, p),
      mark(x.fdb, p),
      x.refused ? p.red(`lease refused: ${x.refused}`) : x.source === 'kernel' && fromLeases ? p.yellow('stale: no lease') : x.problems.length ? p.red(x.problems.join('; ')) : '',
    ]);
    out.push(...table(['NODE', 'SUBNET', 'PUBLIC IP', 'VTEP MAC', 'ROUTE', 'NEIGH', 'FDB', 'NOTE'], body));
  }

  if (r.ipv6?.vxlan) {
    const v6 = r.ipv6;
    out.push('');
    out.push(p.bold(`IPv6 remote nodes (from ${v6.vxlan!.name}'s routes, neighbours and FDB): ${v6.remotes.length}`));
    if (v6.remotes.length > 0) {
      const yes = (ok: boolean) => (ok ? p.green('yes') : p.red('MISSING'));
      const body = v6.remotes.map((x) => [x.subnet, x.gateway, x.publicIP ?? '-', x.mac ?? '-', yes(x.route), yes(x.neigh), yes(x.fdb)]);
      out.push(...table(['SUBNET', 'GATEWAY', 'PUBLIC IPV6', 'VTEP MAC', 'ROUTE', 'NEIGH', 'FDB'], body));
    }
  }

  out.push('');
  const ipam = r.ipam;
  const pool = ipam.total !== undefined ? `, ${ipam.free} of ${ipam.total} addresses free` : '';
  out.push(p.bold(`Pods (IPAM ${ipam.dir}: ${ipam.leases} lease(s)${pool})`));
  if (ipam.error) out.push(`  ${p.red(ipam.error)}`);
  if (r.pods.length > 0) {
    const body = r.pods.map((pod) => [
      pod.ip,
      pod.containerId,
      pod.ifname ?? '-',
      pod.hostVeth ?? '-',
      pod.vethPresent ? p.green(`yes (${pod.vethMaster ?? 'no master'}, mtu ${pod.vethMtu})`) : p.red('NO (leaked lease?)'),
    ]);
    out.push(...table(['IP', 'CONTAINER', 'IFNAME', 'HOST VETH', 'VETH PRESENT'], body));
  }
  return out.join('\n') + '\n';
}

export async function runStatus(opts: NodeToolOptions): Promise<StatusReport> {
  const [snap, cniPath] = await Promise.all([snapshot(opts), readCniSocket(opts.cniSocket)]);
  return { ...buildStatus(snap), cniPath };
}

export function statusCommand(cli: Argv): Argv {
  return nodeToolCommand(cli, {
    name: 'status',
    describe: 'show this node\'s lease, subnet file, cni0, flannel.1, the remote nodes it has programmed, and its pods',
    run: runStatus,
    format: formatStatus,
  });
}
