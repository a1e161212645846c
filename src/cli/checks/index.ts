// Doctor in two halves: `gatherInputs` reads the node, the lease source and
// runs the probes (ping, iptables -C); `evaluate` turns that into one result
// per check without any I/O, which is what the unit tests drive.
import { IptablesManager, ruleText } from '../../daemon/traffic/iptables.js';
import { NFT_FORWARD_CHAIN, NFT_MASQ_CHAIN, NFT_TABLE, NFT_TABLE_V6, nftRules } from '../../daemon/traffic/nftables.js';
import { netnsCommand, readNodeState, run, type NodeState } from '../../node/state.js';
import { checkForwardPolicy, checkIpForward, checkIpv6Forward, checkMasquerade, checkRpFilter } from './host.js';
import { checkIpamCapacity, checkIpamLeaks } from './ipam.js';
import { checkKernelLimits } from './limits.js';
import type { NodeToolOptions } from './options.js';
import { checkPeerEntries, checkStaleEntries, checkVtepReachability, peerRows, pingTargets, type PeerRow } from './peers.js';
import { readClusterView, type ClusterView } from './source.js';
import { checkBridgeAddress, checkLease, checkSubnetFile } from './subnet.js';
import { deriveFacts, skip, type CheckResult, type DoctorInputs, type Facts, type IptablesProbe, type PingResult } from './types.js';
import { checkMtu, checkUnderlay, checkVxlanDevice } from './vxlan.js';
import { checkWireguardDevice, checkWireguardPeers } from './wireguard.js';
import { parseDump } from '../../daemon/backend/wireguard-peers.js';
import { WIREGUARD_DEVICE } from '../../node/state.js';
import { checkCniSocket, readCniSocket } from './cni-socket.js';
import { checkIpv6Masquerade, checkIpv6Overlay, ownIpv6Subnet } from './ipv6.js';

export * from './types.js';

/** Every check, in the order doctor prints them. */
export function evaluate(inputs: DoctorInputs): CheckResult[] {
  const facts = deriveFacts(inputs);
  const rows = peerRows(inputs.state, facts);
  const cniSocket = checkCniSocket(inputs.cniSocket);
  const results = [
    checkSubnetFile(inputs, facts),
    checkBridgeAddress(inputs),
    checkLease(inputs, facts),
    checkVxlanDevice(inputs, facts),
    checkWireguardDevice(inputs, facts),
    checkUnderlay(inputs, facts),
    checkMtu(inputs, facts),
    checkPeerEntries(inputs, facts, rows),
    checkStaleEntries(inputs, facts),
    checkVtepReachability(inputs, facts, rows),
    checkWireguardPeers(inputs, facts, rows),
    checkIpForward(inputs),
    checkRpFilter(inputs, facts),
    checkForwardPolicy(inputs, facts),
    checkMasquerade(inputs, facts),
    ...(inputs.state.ipv6 ? [checkIpv6Overlay(inputs, facts), checkIpv6Forward(inputs), checkIpv6Masquerade(inputs)] : []),
    checkIpamLeaks(inputs),
    checkIpamCapacity(inputs),
    ...(cniSocket ? [cniSocket] : []),
    checkKernelLimits(inputs, facts),
  ];
  return ipv6Only(inputs.state) ? results.map((r) => (IPV4_OVERLAY_CHECKS.has(r.id) ? skip(r.id, IPV6_ONLY) : r)) : results;
}

/** The checks of the IPv4 overlay (flannel.1, its lease, cni0's IPv4 gateway, the IPv4 rules and pool). */
const IPV4_OVERLAY_CHECKS = new Set<CheckResult['id']>([
  'bridge-address', 'lease', 'vxlan-device', 'underlay-interface', 'mtu', 'peer-entries', 'stale-entries', 'vtep-reachability', 'forward-policy', 'masquerade', 'ipam-capacity',
]);
const IPV6_ONLY = 'IPv6-only node (no FLANNEL_SUBNET): see ipv6-overlay, ipv6-forward and ipv6-masquerade';

/** An IPv6-only node: its subnet file has the IPv6 pair only. */
function ipv6Only(state: NodeState): boolean {
  const env = state.subnetFile.env;
  return env !== undefined && !env.subnet && Boolean(env.ipv6Subnet);
}

export interface NodeSnapshot {
  state: NodeState;
  view: ClusterView;
  facts: Facts;
  rows: PeerRow[];
}

/** Node state and lease view, with the VXLAN device the config names. */
export async function snapshot(opts: NodeToolOptions): Promise<NodeSnapshot> {
  const base = { subnetFile: opts.subnetFile, dataDir: opts.dataDir, network: opts.network, bridge: opts.bridge };
  const stateOpts = opts.netns ? { ...base, netns: opts.netns } : base;
  const [first, view] = await Promise.all([readNodeState(stateOpts), readClusterView(opts.source, opts.timeoutMs)]);
  let state = first;
  const backend = view.config?.backend;
  if (backend?.type === 'vxlan' && state.vxlan?.name !== `flannel.${backend.vni}`) {
    state = await readNodeState({ ...stateOpts, vxlanDevice: `flannel.${backend.vni}` });
  }
  if (backend?.type === 'wireguard' && !state.wireguard) state = await readNodeState({ ...stateOpts, wireguard: true });
  const withIp = opts.publicIP ? { state, view, publicIP: opts.publicIP } : { state, view };
  const facts = deriveFacts(withIp);
  return { state, view, facts, rows: peerRows(state, facts) };
}

const RTT = /rtt min\/avg\/max\/mdev = ([\d.]+)\//;

/**
 * Pings in flight at once. One process per remote node all at once would be
 * thousands of processes (and their pipes and memory) on a large cluster's
 * node; 32 at a time still probe 1,000 healthy peers in about 10 s.
 */
export const PING_CONCURRENCY = 32;

/** Pings every target through the node's own routes, PING_CONCURRENCY at a time; results in target order. */
export async function pingAll(targets: string[], netns?: string, runner: typeof run = run): Promise<PingResult[]> {
  const out: PingResult[] = new Array<PingResult>(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < targets.length; i = next++) {
      const target = targets[i]!;
      const res = await runner(netnsCommand(netns, ['ping', '-n', '-q', '-c', '2', '-i', '0.2', '-W', '1', target]), 5000);
      const m = RTT.exec(res.stdout);
      const r: PingResult = { target, ok: res.code === 0 };
      if (m?.[1]) r.ms = Number(m[1]);
      // Only a ping that could not start means "not probed": spawn's ENOENT
      // or EACCES, or ip netns exec's / nsenter's report of the same. One
      // killed on its timeout ran and got no reply in time: a failed probe.
      if (res.code !== 0 && (res.errno === 'ENOENT' || res.errno === 'EACCES' || /exec of "ping" failed|failed to execute ping/.test(res.stderr))) {
        r.error = res.stderr.trim().split('\n')[0] || 'ping could not be run';
      }
      out[i] = r;
    }
  };
  await Promise.all(Array.from({ length: Math.min(PING_CONCURRENCY, targets.length) }, worker));
  return out;
}

/**
 * nftables mode (EnableNFTables): the agent's table ip flannel-ipv4 exists.
 * Each of flannel's rules must be listed there (fully-random or not).
 */
async function probeNftables(state: NodeState, facts: Facts, netns?: string): Promise<IptablesProbe | undefined> {
  if (!facts.network || !facts.ownSubnet) return undefined;
  const res = await run(netnsCommand(netns, ['nft', 'list', 'table', 'ip', NFT_TABLE]), 5000);
  if (res.code !== 0) return undefined;
  const lines = new Set(res.stdout.split('\n').map((l) => l.trim()));
  const want = nftRules({ network: facts.network, subnet: facts.ownSubnet, ipMasq: true, forwardRules: true, randomFully: false });
  const has = (rule: string) => lines.has(rule) || lines.has(`${rule} fully-random`);
  const missing = (chain: string, rules: string[]) => rules.filter((r) => !has(r)).map((r) => `nft ${NFT_TABLE} ${chain}: ${r}`);
  return {
    ok: true,
    mode: 'nftables',
    forwardMissing: missing(NFT_FORWARD_CHAIN, want.forward),
    masqMissing: state.subnetFile.env?.ipMasq ? missing(NFT_MASQ_CHAIN, want.postrtg) : null,
  };
}

/**
 * The IPv6 rule set of a node with an IPv6 subnet: nft's `ip6 flannel-ipv6`
 * when that table exists, else flannel's chains through ip6tables.
 */
async function probeIpv6Rules(state: NodeState, netns?: string): Promise<IptablesProbe | undefined> {
  const env = state.subnetFile.env;
  const subnet = ownIpv6Subnet(state);
  if (!state.ipv6 || !env?.ipv6Network || !subnet) return undefined;
  const rules = { network: env.ipv6Network, subnet, ipMasq: true, forwardRules: true, randomFully: false };
  const nft = await run(netnsCommand(netns, ['nft', 'list', 'table', 'ip6', NFT_TABLE_V6]), 5000);
  if (nft.code === 0) {
    const lines = new Set(nft.stdout.split('\n').map((l) => l.trim()));
    const want = nftRules(rules);
    const missing = (chain: string, list: string[]) =>
      list.filter((r) => !lines.has(r) && !lines.has(`${r} fully-random`)).map((r) => `nft ${NFT_TABLE_V6} ${chain}: ${r}`);
    return { ok: true, mode: 'nftables', forwardMissing: missing(NFT_FORWARD_CHAIN, want.forward), masqMissing: env.ipMasq ? missing(NFT_MASQ_CHAIN, want.postrtg) : null };
  }
  const v6 = state.ipv6.ip6tables;
  if (!v6?.ok) return { ok: false, error: v6?.error ?? 'ip6tables not read', forwardMissing: [], masqMissing: null };
  try {
    // --random-fully as the agent decides it: where ip6tables knows it
    const common = { network: rules.network, subnet: rules.subnet, binary: netnsCommand(netns, ['ip6tables']) };
    const forward = new IptablesManager({ ...common, ipMasq: false, forwardRules: true });
    const masq = new IptablesManager({ ...common, ipMasq: true, forwardRules: false });
    return { ok: true, forwardMissing: (await forward.listMissing()).map(ruleText), masqMissing: env.ipMasq ? (await masq.listMissing()).map(ruleText) : null };
  } catch (err) {
    return { ok: false, error: (err as Error).message, forwardMissing: [], masqMissing: null };
  }
}

async function probeIptables(state: NodeState, facts: Facts, netns?: string): Promise<IptablesProbe> {
  const nft = await probeNftables(state, facts, netns);
  if (nft) return nft;
  if (!state.iptables?.ok) return { ok: false, error: state.iptables?.error ?? 'not read', forwardMissing: [], masqMissing: null };
  if (!facts.network || !facts.ownSubnet) {
    return { ok: false, error: 'the cluster network or this node\'s subnet is unknown', forwardMissing: [], masqMissing: null };
  }
  const binary = netnsCommand(netns, ['iptables']);
  const common = { network: facts.network, subnet: facts.ownSubnet, binary };
  try {
    const forward = new IptablesManager({ ...common, ipMasq: false, forwardRules: true });
    const forwardMissing = (await forward.listMissing()).map(ruleText);
    let masqMissing: string[] | null = null;
    if (state.subnetFile.env?.ipMasq) {
      const masq = new IptablesManager({ ...common, ipMasq: true, forwardRules: false });
      masqMissing = (await masq.listMissing()).map(ruleText);
    }
    return { ok: true, forwardMissing, masqMissing };
  } catch (err) {
    return { ok: false, error: (err as Error).message, forwardMissing: [], masqMissing: null };
  }
}

export async function gatherInputs(opts: NodeToolOptions): Promise<DoctorInputs> {
  const snap = await snapshot(opts);
  const [pings, iptables, cniSocket, ipv6Rules] = await Promise.all([
    pingAll(pingTargets(snap.rows), opts.netns),
    probeIptables(snap.state, snap.facts, opts.netns),
    readCniSocket(opts.cniSocket),
    probeIpv6Rules(snap.state, opts.netns),
  ]);
  const inputs: DoctorInputs = { state: snap.state, view: snap.view, pings, iptables, cniSocket };
  if (ipv6Rules) inputs.ipv6Rules = ipv6Rules;
  // The pings made the handshakes: read them again to judge how fresh they are.
  if (snap.facts.backend.type === 'wireguard' && snap.state.wireguard?.device && !snap.state.wireguard.device.error) {
    const res = await run(netnsCommand(opts.netns, ['wg', 'show', WIREGUARD_DEVICE, 'dump']));
    if (res.code === 0) {
      try {
        inputs.wireguardProbe = { at: Math.floor(Date.now() / 1000), peers: parseDump(res.stdout).peers };
      } catch {
        // the device state read before stands
      }
    }
  }
  if (opts.publicIP) inputs.publicIP = opts.publicIP;
  return inputs;
}
