// The shapes every check shares, and the facts they all start from: which
// network and backend are expected, which lease is ours and which are the
// others'. Deriving them once keeps each check a small pure function of the
// node state, the cluster view and the probe results.
import type { BackendConfig, Lease } from '../../daemon/types.js';
import { DEFAULT_VNI, DEFAULT_VXLAN_PORT } from '../../daemon/config.js';
import { defaultRoute, linkByName, subnetOf, type NodeState } from '../../node/state.js';
import type { ClusterView } from './source.js';
import type { DumpPeer } from '../../daemon/backend/wireguard-peers.js';
import type { CniSocketState } from './cni-socket.js';

export const CHECK_IDS = [
  'subnet-file',
  'bridge-address',
  'lease',
  'vxlan-device',
  'wireguard-device',
  'underlay-interface',
  'mtu',
  'peer-entries',
  'stale-entries',
  'vtep-reachability',
  'wireguard-peers',
  'ip-forward',
  'rp-filter',
  'forward-policy',
  'masquerade',
  'ipam-leaks',
  'ipam-capacity',
  'cni-socket',
  'kernel-limits',
] as const;

/** Checks of the IPv6 overlay: reported only on a node with an IPv6 subnet (or a flannel-v6 device). */
export const IPV6_CHECK_IDS = ['ipv6-overlay', 'ipv6-forward', 'ipv6-masquerade'] as const;

export type CheckId = (typeof CHECK_IDS)[number] | (typeof IPV6_CHECK_IDS)[number];
export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  id: CheckId;
  status: CheckStatus;
  /** one line: what was found */
  message: string;
  /** one line: what to do about it (warn and fail) */
  fix?: string;
  /** one line per affected item */
  details?: string[];
}

export interface PingResult {
  /** the address pinged: the remote subnet's network address on its VTEP */
  target: string;
  ok: boolean;
  /** round trip of the fastest reply */
  ms?: number;
  /** ping itself could not be run (not installed): the target was not probed */
  error?: string;
}

export interface IptablesProbe {
  /** false when iptables could not be run */
  ok: boolean;
  error?: string;
  /** FLANNEL-FWD rules (and jump) not in place, as `iptables -S` text */
  forwardMissing: string[];
  /** masquerade rules not in place; null when FLANNEL_IPMASQ is not true */
  masqMissing: string[] | null;
  /** where the agent's rules live: nftables when table ip flannel-ipv4 exists (EnableNFTables) */
  mode?: 'iptables' | 'nftables';
}

export interface DoctorInputs {
  state: NodeState;
  view: ClusterView;
  /** --public-ip: the address our lease advertises, when it is not flannel.1's local */
  publicIP?: string;
  pings: PingResult[];
  iptables: IptablesProbe;
  /** the IPv6 rule set (ip6tables or nft ip6 flannel-ipv6), on a node with an IPv6 subnet */
  ipv6Rules?: IptablesProbe;
  /** wireguard: flannel-wg's peers read again after the pings, with the time (unix s) */
  wireguardProbe?: { at: number; peers: DumpPeer[] };
  /** the agent's CNI socket; absent = not looked at */
  cniSocket?: CniSocketState;
}

export interface Facts {
  /** the cluster network: from the config, else FLANNEL_NETWORK */
  network?: string;
  backend: BackendConfig;
  /** true when the backend came from the network config, false = flannel's defaults */
  backendKnown: boolean;
  /** the name the VXLAN device should have */
  vxlanName: string;
  /** the address our lease should advertise */
  ownPublicIP?: string;
  /** leases with a source; undefined = no lease list (kernel state only) */
  leases?: Lease[];
  ownLease?: Lease;
  /** leases claiming our public IP (more than one is a problem) */
  ownCandidates: Lease[];
  /** our subnet in network form: the lease's, else FLANNEL_SUBNET's */
  ownSubnet?: string;
  remoteLeases: Lease[];
}

export function firstAddress(cidr: string): string {
  return cidr.split('/')[0] ?? '';
}

/** Facts every check relies on; pure. */
export function deriveFacts(inputs: Pick<DoctorInputs, 'state' | 'view' | 'publicIP'>): Facts {
  const { state, view } = inputs;
  const env = state.subnetFile.env;
  const network = view.config?.network ?? env?.network;
  // Without a config the device's own VNI and port are all there is to go by.
  const backend: BackendConfig = view.config?.backend ?? {
    type: 'vxlan',
    vni: state.vxlan && state.vxlan.vni >= 0 ? state.vxlan.vni : DEFAULT_VNI,
    port: state.vxlan && state.vxlan.port > 0 ? state.vxlan.port : DEFAULT_VXLAN_PORT,
    directRouting: false,
  };
  const vxlanName = backend.type === 'vxlan' ? `flannel.${backend.vni}` : (state.vxlan?.name ?? 'flannel.1');
  let ownPublicIP = inputs.publicIP ?? (state.vxlan?.local || undefined);
  if (!ownPublicIP) {
    const def = defaultRoute(state);
    const dev = linkByName(state, def?.dev);
    if (dev?.addresses[0]) ownPublicIP = firstAddress(dev.addresses[0]);
  }
  const facts: Facts = {
    backend,
    backendKnown: view.config !== undefined,
    vxlanName,
    ownCandidates: [],
    remoteLeases: [],
  };
  if (network) facts.network = network;
  if (ownPublicIP) facts.ownPublicIP = ownPublicIP;
  if (view.leases) {
    facts.leases = view.leases;
    if (view.source === 'kube') {
      const mine = view.leases.find((l) => l.nodeName === view.node?.name);
      if (mine) facts.ownCandidates = [mine];
    } else {
      facts.ownCandidates = view.leases.filter((l) => l.publicIP === ownPublicIP);
    }
    // With several claimants, the one matching the subnet file is the one the node uses.
    const envSubnet = env ? subnetOf(env.subnet) : undefined;
    const own = facts.ownCandidates.find((l) => l.subnet === envSubnet) ?? facts.ownCandidates[0];
    if (own) facts.ownLease = own;
    facts.remoteLeases = view.leases.filter((l) => !facts.ownCandidates.includes(l));
  }
  const ownSubnet = facts.ownLease?.subnet ?? (env ? subnetOf(env.subnet) : undefined);
  if (ownSubnet) facts.ownSubnet = ownSubnet;
  return facts;
}

export function pass(id: CheckId, message: string, details?: string[]): CheckResult {
  return details && details.length > 0 ? { id, status: 'pass', message, details } : { id, status: 'pass', message };
}

export function skip(id: CheckId, message: string): CheckResult {
  return { id, status: 'skip', message };
}

export function problem(id: CheckId, status: 'warn' | 'fail', message: string, fix: string, details?: string[]): CheckResult {
  const r: CheckResult = { id, status, message, fix };
  if (details && details.length > 0) r.details = details;
  return r;
}

/**
 * A warning when none of the failed pings ran (no ping on this host), which
 * says nothing about the tunnels; undefined when any of them did run.
 * `errors` holds each failed target's PingResult.error.
 */
export function pingNotRun(id: CheckId, errors: readonly (string | undefined)[], noun: string): CheckResult | undefined {
  const unrun = errors.filter((e): e is string => e !== undefined);
  if (errors.length === 0 || unrun.length !== errors.length) return undefined;
  return problem(
    id,
    'warn',
    `cannot run ping (${unrun[0]}): ${count(errors.length, noun)} not probed`,
    'install ping (iputils-ping) on this host, or run doctor in the agent\'s pod (kubectl exec), which has it',
  );
}

/** "1 thing" / "2 things" */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}
