// Remote nodes: what each lease asks of the kernel (the agent's own plan
// functions decide that, so doctor and agent never disagree about it),
// compared with what flannel.1 holds; entries no lease explains; and whether
// each remote VTEP answers.
import {
  diffFdb,
  diffNeighs,
  diffRoutes,
  ownedRoute,
  planHostGw,
  planVxlan,
  type CurrentRoute,
  type DesiredRoute,
  type LeasePlan,
  type Plan,
  type Skipped,
} from '../../daemon/backend/plan.js';
import { compareAddresses, parseCidr } from '../../net/ip.js';
import { kernelPeers, linkByName, type KernelRoute, type NodeState } from '../../node/state.js';
import { wireguardRows } from './wireguard.js';
import { count, pass, pingNotRun, problem, skip, type CheckResult, type DoctorInputs, type Facts, type PingResult } from './types.js';

export type EntryStatus = 'ok' | 'missing' | 'wrong' | 'n/a';

export interface PeerRow {
  /** etcd key suffix or Kubernetes node name; absent for kernel-only rows */
  node?: string;
  subnet: string;
  publicIP?: string;
  vtepMac?: string;
  /** lease = from the subnet manager; kernel = only flannel.1 knows it */
  source: 'lease' | 'kernel';
  route: EntryStatus;
  neigh: EntryStatus;
  fdb: EntryStatus;
  /** what is wrong, one phrase each */
  problems: string[];
  /** commands that would put the entries right */
  repairs: string[];
  /** the address to ping through the tunnel, when the peer is fully programmed over flannel.1 */
  pingTarget?: string;
  /** the plan refused this lease (the agent does too) */
  refused?: string;
  /** wireguard: the peer's public key, its state on flannel-wg, its latest handshake (unix s, 0 = never) */
  publicKey?: string;
  wgPeer?: EntryStatus;
  handshake?: number;
}

/** The agent's plan for the remote leases, or undefined when it cannot be made. */
export function planFor(state: NodeState, facts: Facts): Plan | undefined {
  const network = facts.network ? parseCidr(facts.network, 4) : undefined;
  const own = facts.ownSubnet ? parseCidr(facts.ownSubnet, 4) : undefined;
  const underlay = underlayDevice(state, facts);
  const local = state.vxlan?.local || facts.ownPublicIP;
  const extText = underlay?.addresses.find((a) => a.split('/')[0] === local) ?? underlay?.addresses[0];
  const ext = extText ? parseCidr(extText, 4) : undefined;
  if (!network || !own || !ext || !facts.leases) return undefined;
  const ownIPs = [...new Set([local, facts.ownPublicIP].filter((x): x is string => Boolean(x)))];
  const ctx = { network, ownSubnet: own, extCidr: ext, ownIPs };
  return facts.backend.type === 'vxlan'
    ? planVxlan(facts.remoteLeases, ctx, { directRouting: facts.backend.directRouting })
    : planHostGw(facts.remoteLeases, ctx);
}

/** The interface overlay traffic leaves through: flannel.1's dev, else the one holding our public IP. */
export function underlayDevice(state: NodeState, facts: Facts) {
  const byDev = linkByName(state, state.vxlan?.dev);
  if (byDev) return byDev;
  const ip = facts.ownPublicIP;
  return ip ? state.links.find((l) => l.addresses.some((a) => a.split('/')[0] === ip)) : undefined;
}

function routeText(r: Pick<KernelRoute, 'dst' | 'gw' | 'dev' | 'onlink'>): string {
  return `${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`;
}

function desiredDev(route: DesiredRoute, state: NodeState, facts: Facts): string {
  return route.via === 'overlay' ? (state.vxlan?.name ?? facts.vxlanName) : (underlayDevice(state, facts)?.name ?? '?');
}

function compareLease(p: LeasePlan, state: NodeState, facts: Facts): PeerRow {
  const dev = desiredDev(p.route, state, facts);
  const vx = state.vxlan?.name ?? facts.vxlanName;
  const row: PeerRow = {
    subnet: p.route.dst,
    publicIP: p.lease.publicIP,
    source: 'lease',
    route: 'missing',
    neigh: p.neigh ? 'missing' : 'n/a',
    fdb: p.fdb ? 'missing' : 'n/a',
    problems: [],
    repairs: [],
  };
  if (p.lease.nodeName) row.node = p.lease.nodeName;
  if (p.lease.backendData.VtepMAC) row.vtepMac = p.lease.backendData.VtepMAC.toLowerCase();
  const wantRoute = { dst: p.route.dst, gw: p.route.gw, dev, onlink: p.route.via === 'overlay' };
  const routes = state.routes.filter((r) => r.dst === p.route.dst);
  if (routes.some((r) => r.dev === dev && r.gw === p.route.gw && (!wantRoute.onlink || r.onlink))) row.route = 'ok';
  else {
    row.route = routes.length > 0 ? 'wrong' : 'missing';
    row.problems.push(
      routes.length > 0
        ? `route is "${routeText(routes[0]!)}", want "${routeText(wantRoute)}"`
        : `route ${routeText(wantRoute)} missing`,
    );
    row.repairs.push(`ip route replace ${routeText(wantRoute)}`);
  }
  if (p.neigh) {
    const n = state.neighbours.find((x) => x.ip === p.neigh!.ip);
    if (n && n.permanent && n.mac === p.neigh.mac) row.neigh = 'ok';
    else {
      row.neigh = n ? 'wrong' : 'missing';
      row.problems.push(
        n
          ? `neighbour ${n.ip} is ${n.mac}${n.permanent ? '' : ' (not permanent)'}, want ${p.neigh.mac} permanent`
          : `neighbour ${p.neigh.ip} lladdr ${p.neigh.mac} missing`,
      );
      row.repairs.push(`ip neigh replace ${p.neigh.ip} lladdr ${p.neigh.mac} dev ${vx} nud permanent`);
    }
  }
  if (p.fdb) {
    const f = p.fdb;
    const same = state.fdb.filter((e) => e.mac === f.mac);
    if (same.some((e) => e.dst === f.dst)) row.fdb = 'ok';
    else {
      row.fdb = same.length > 0 ? 'wrong' : 'missing';
      row.problems.push(
        same.length > 0
          ? `FDB entry ${f.mac} points to ${same.map((e) => e.dst || '(none)').join(', ')}, want dst ${f.dst}`
          : `FDB entry ${f.mac} dst ${f.dst} missing`,
      );
      if (same.length > 0) row.repairs.push(`bridge fdb del ${f.mac} dev ${vx} dst ${same[0]!.dst}`);
      row.repairs.push(`bridge fdb append ${f.mac} dev ${vx} dst ${f.dst} self permanent`);
    }
  }
  if (p.route.via === 'overlay' && row.problems.length === 0) row.pingTarget = p.route.gw;
  return row;
}

function refusedRow(s: Skipped): PeerRow {
  const row: PeerRow = {
    subnet: s.lease.subnet,
    publicIP: s.lease.publicIP,
    source: 'lease',
    route: 'n/a',
    neigh: 'n/a',
    fdb: 'n/a',
    problems: [],
    repairs: [],
    refused: s.reason,
  };
  if (s.lease.nodeName) row.node = s.lease.nodeName;
  if (s.lease.backendData.VtepMAC) row.vtepMac = s.lease.backendData.VtepMAC.toLowerCase();
  return row;
}

/** Kernel-only view: each overlay route should lead to a permanent neighbour and an FDB entry. */
function kernelRows(state: NodeState): PeerRow[] {
  return kernelPeers(state).map((k) => {
    const row: PeerRow = {
      subnet: k.subnet,
      source: 'kernel',
      route: 'ok',
      neigh: k.neigh ? 'ok' : k.mac ? 'wrong' : 'missing',
      fdb: k.fdb ? 'ok' : 'missing',
      problems: [],
      repairs: [],
    };
    if (k.publicIP) row.publicIP = k.publicIP;
    if (k.mac) row.vtepMac = k.mac;
    if (!k.mac) row.problems.push(`route ${k.subnet} via ${k.gateway} has no neighbour entry for ${k.gateway}`);
    else if (!k.neigh) row.problems.push(`neighbour ${k.gateway} (${k.mac}) is not permanent`);
    if (k.mac && !k.fdb) row.problems.push(`no FDB entry for ${k.mac}: the kernel cannot tell which node it lives on`);
    if (row.problems.length === 0) row.pingTarget = k.gateway;
    // No `dev`/`via`: the kernel matches a route through a nexthop object by id only.
    else row.repairs.push(`restart tsflanneld on this node, or delete the route: ip route del ${k.subnet}`);
    return row;
  });
}

/**
 * One row per remote node. With leases: every lease the agent would
 * program, every lease it refuses, and every overlay route no lease
 * explains. Without: flannel.1's own routes.
 */
export function peerRows(state: NodeState, facts: Facts): PeerRow[] {
  if (facts.backend.type === 'wireguard') return wireguardRows(state, facts);
  const plan = planFor(state, facts);
  if (!plan) return kernelRows(state);
  const rows = plan.plans.map((p) => compareLease(p, state, facts));
  for (const s of plan.skipped) if (s.error) rows.push(refusedRow(s));
  const known = new Set(rows.map((r) => r.subnet));
  for (const k of kernelRows(state)) {
    if (known.has(k.subnet)) continue;
    k.problems = ['no lease for this subnet: the node left or its lease expired'];
    k.repairs = [];
    delete k.pingTarget;
    rows.push(k);
  }
  return rows.sort((a, b) => compareAddresses(a.subnet, b.subnet));
}

export interface StaleEntries {
  routes: string[];
  neighbours: string[];
  fdb: string[];
  /** wireguard: peers on flannel-wg no lease asks for */
  peers?: string[];
  repairs: string[];
}

/** Entries on our devices that no lease asks for (with leases), or that nothing leads to (without). */
export function staleEntries(state: NodeState, facts: Facts): StaleEntries {
  const out: StaleEntries = { routes: [], neighbours: [], fdb: [], repairs: [] };
  const vx = state.vxlan;
  const plan = planFor(state, facts);
  const vxName = vx?.name ?? facts.vxlanName;
  if (plan) {
    const network = parseCidr(facts.network ?? '', 4);
    const underlay = underlayDevice(state, facts)?.name;
    const current: CurrentRoute[] = [];
    for (const r of state.routes) {
      const via = r.dev === vxName ? 'overlay' : r.dev === underlay ? 'underlay' : undefined;
      if (!via || !network) continue;
      const cur: CurrentRoute = { dst: r.dst, via, onlink: r.onlink, metric: r.metric, protocol: r.protocol };
      if (r.gw) cur.gw = r.gw;
      if (ownedRoute(cur, network)) current.push(cur);
    }
    const routes = diffRoutes(plan.plans.map((p) => p.route), current);
    for (const r of routes.remove) {
      const dev = r.via === 'overlay' ? vxName : (underlay ?? '?');
      out.routes.push(routeText({ dst: r.dst, gw: r.gw, dev, onlink: r.onlink }) + (r.metric ? ` metric ${r.metric}` : ''));
      // By destination and metric only: `via`/`dev` would not match a route through a nexthop object (`nhid N`).
      out.repairs.push(`ip route del ${r.dst}${r.metric ? ` metric ${r.metric}` : ''}`);
    }
    if (facts.backend.type === 'wireguard') {
      for (const r of wireguardRows(state, facts).filter((x) => x.source === 'kernel')) {
        (out.peers ??= []).push(`${r.publicKey} (allowed IPs ${r.subnet}${r.publicIP ? `, endpoint ${r.publicIP}` : ''})`);
        out.repairs.push(...r.repairs);
      }
    }
    if (vx) {
      const neighs = diffNeighs(
        plan.plans.flatMap((p) => (p.neigh ? [p.neigh] : [])),
        state.neighbours.map((n) => ({ ip: n.ip, mac: n.mac, permanent: n.permanent })),
      );
      for (const n of neighs.remove) {
        out.neighbours.push(`${n.ip} lladdr ${n.mac}${n.permanent ? ' permanent' : ''}`);
        out.repairs.push(`ip neigh del ${n.ip} dev ${vxName}`);
      }
      const fdb = diffFdb(
        plan.plans.flatMap((p) => (p.fdb ? [p.fdb] : [])),
        state.fdb.map((e) => ({ mac: e.mac, dst: e.dst })),
      );
      for (const e of fdb.remove) {
        out.fdb.push(`${e.mac} dst ${e.dst || '(none)'}`);
        out.repairs.push(`bridge fdb del ${e.mac} dev ${vxName}${e.dst ? ` dst ${e.dst}` : ''}`);
      }
    }
    return out;
  }
  if (!vx) return out;
  // Without leases: neighbours no overlay route uses, FDB entries no neighbour uses.
  const gateways = new Set(state.routes.filter((r) => r.dev === vx.name && r.gw).map((r) => r.gw));
  const macs = new Set<string>();
  for (const n of state.neighbours) {
    if (gateways.has(n.ip) && n.permanent) {
      macs.add(n.mac);
      continue;
    }
    out.neighbours.push(`${n.ip} lladdr ${n.mac}${n.permanent ? ' permanent' : ' (not permanent)'}`);
    out.repairs.push(`ip neigh del ${n.ip} dev ${vx.name}`);
  }
  for (const e of state.fdb) {
    if (macs.has(e.mac)) continue;
    out.fdb.push(`${e.mac} dst ${e.dst || '(none)'}`);
    out.repairs.push(`bridge fdb del ${e.mac} dev ${vx.name}${e.dst ? ` dst ${e.dst}` : ''}`);
  }
  return out;
}

function describePeer(r: PeerRow): string {
  const who = r.node && r.node !== r.subnet.replace('/', '-') ? `${r.node} ` : '';
  return `${who}${r.subnet}${r.publicIP ? ` (${r.publicIP})` : ''}`;
}

/** Why the kernel was checked against itself rather than against leases; '' when it was not. */
function kernelOnlyReason(inputs: DoctorInputs, facts: Facts): string {
  if (planFor(inputs.state, facts)) return '';
  const dev = inputs.state.vxlan?.name ?? facts.vxlanName;
  if (inputs.view.source === 'none') return `no lease source: checked ${dev} against itself`;
  if (inputs.view.error) return `leases unreadable: checked ${dev} against itself`;
  return `this node's subnet or underlay address is unknown: checked ${dev} against itself`;
}

export function checkPeerEntries(inputs: DoctorInputs, facts: Facts, rows: PeerRow[]): CheckResult {
  const id = 'peer-entries';
  const reason = kernelOnlyReason(inputs, facts);
  const leaseMode = reason === '';
  const note = leaseMode ? '' : ` (${reason})`;
  if (facts.backend.type === 'vxlan' && !inputs.state.vxlan && leaseMode === false) {
    return skip(id, `no ${facts.vxlanName} and no lease list: nothing to compare (see vxlan-device)`);
  }
  const relevant = rows.filter((r) => r.source === 'lease' || !leaseMode);
  const bad = relevant.filter((r) => r.problems.length > 0 && !r.refused);
  const refused = relevant.filter((r) => r.refused);
  const details = [
    ...bad.map((r) => `${describePeer(r)}: ${r.problems.join('; ')}`),
    ...refused.map((r) => `${describePeer(r)}: lease refused: ${r.refused}`),
  ];
  if (bad.length > 0) {
    const repairs = bad.flatMap((r) => r.repairs);
    return problem(
      id,
      'fail',
      `${count(bad.length, 'remote node')} not fully programmed on this node${note}`,
      `tsflanneld restores them within --resync-period (is it running?); by hand: ${repairs.slice(0, 3).join('; ')}${repairs.length > 3 ? '; ...' : ''}`,
      details,
    );
  }
  const ok = relevant.length - refused.length;
  if (refused.length > 0) {
    return problem(id, 'warn', `${count(ok, 'remote node')} programmed; ${count(refused.length, 'lease')} refused${note}`, 'fix the refused leases (see details); the agent refuses them too', details);
  }
  if (ok === 0) return pass(id, leaseMode ? 'no other node holds a lease' : `no overlay routes on ${inputs.state.vxlan?.name ?? facts.vxlanName}${note}`);
  const kinds = facts.backend.type === 'vxlan' ? 'route, neighbour and FDB entry' : facts.backend.type === 'wireguard' ? 'WireGuard peer' : 'route';
  return pass(id, `${kinds} in place for ${count(ok, 'remote node')}${note}`);
}

export function checkStaleEntries(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'stale-entries';
  const stale = staleEntries(inputs.state, facts);
  const reason = kernelOnlyReason(inputs, facts);
  const leaseMode = reason === '';
  const details = [
    ...stale.routes.map((r) => `route ${r}`),
    ...stale.neighbours.map((n) => `neighbour ${n}`),
    ...stale.fdb.map((e) => `FDB ${e}`),
    ...(stale.peers ?? []).map((p) => `WireGuard peer ${p}`),
  ];
  const what = leaseMode ? 'that no lease asks for (nodes that left?)' : 'that no overlay route uses';
  if (details.length > 0) {
    return problem(
      id,
      'warn',
      `${count(details.length, 'entry', 'entries')} ${what}`,
      `tsflanneld removes them on its next resync (is it running?); by hand: ${stale.repairs.slice(0, 3).join('; ')}${stale.repairs.length > 3 ? '; ...' : ''}`,
      details,
    );
  }
  return pass(id, leaseMode ? 'every entry belongs to a current lease' : `every entry is in use (${reason})`);
}

export function checkVtepReachability(inputs: DoctorInputs, facts: Facts, rows: PeerRow[]): CheckResult {
  const id = 'vtep-reachability';
  if (facts.backend.type !== 'vxlan') return skip(id, `${facts.backend.type} backend: no VXLAN tunnels to probe`);
  if (!inputs.state.vxlan) return skip(id, `no ${facts.vxlanName} (see vxlan-device)`);
  const targets = rows.filter((r) => r.pingTarget);
  const notPinged = rows.filter((r) => !r.pingTarget && !r.refused && r.source === 'lease' && r.problems.length > 0);
  if (targets.length === 0) {
    return notPinged.length > 0 ? skip(id, 'no fully programmed remote node to probe (see peer-entries)') : pass(id, 'no remote VTEP to probe');
  }
  const results = new Map(inputs.pings.map((p) => [p.target, p]));
  const failed: PeerRow[] = [];
  const times: number[] = [];
  for (const r of targets) {
    const res: PingResult | undefined = results.get(r.pingTarget!);
    if (res?.ok) {
      if (res.ms !== undefined) times.push(res.ms);
    } else failed.push(r);
  }
  const skipped = notPinged.map((r) => `${describePeer(r)}: not probed, its entries are incomplete (see peer-entries)`);
  const notRun = pingNotRun(id, failed.map((r) => results.get(r.pingTarget!)?.error), 'remote VTEP');
  if (notRun) return notRun;
  if (failed.length > 0) {
    const port = facts.backend.port;
    const noLease = facts.leases !== undefined && !facts.ownLease ? ' This node holds no lease, so the others have no route back to it.' : '';
    return problem(
      id,
      'fail',
      `no echo reply through ${inputs.state.vxlan.name} from ${failed.map(describePeer).join(', ')}.${noLease}`,
      `UDP ${port} blocked between nodes, or VXLAN checksum offload: ethtool -K ${inputs.state.vxlan.name} tx-checksum-ip-generic off`,
      [...failed.map((r) => `${describePeer(r)}: ping ${r.pingTarget} (its VTEP ${r.vtepMac ?? '?'}) got no reply`), ...skipped],
    );
  }
  const range = times.length > 0 ? ` (${Math.min(...times).toFixed(2)}–${Math.max(...times).toFixed(2)} ms)` : '';
  return pass(id, `${count(targets.length, 'remote VTEP')} answered through ${inputs.state.vxlan.name}${range}`, skipped);
}

/** The addresses to ping: each fully programmed peer's gateway on its VTEP. */
export function pingTargets(rows: PeerRow[]): string[] {
  return [...new Set(rows.flatMap((r) => (r.pingTarget ? [r.pingTarget] : [])))];
}
