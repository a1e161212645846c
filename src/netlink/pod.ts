// One shim call per pod step (native/tsfnl/pod.go): each enters the pod's
// network namespace at most once, on a throw-away thread of the shim.
import { call } from './ffi.js';
import { NetlinkError } from './errors.js';
import type { Address, Link } from './types.js';

/** Failures of the pod ops that callers turn into specific errors. */
export type PodFailure = 'ifname-taken' | 'bridge-missing' | 'pod-link-gone' | 'not-netns';

/** The pod op failure tagged `reason`, if `err` is one. */
export function podFailure(err: unknown): PodFailure | undefined {
  return err instanceof NetlinkError ? (err.reason as PodFailure | undefined) : undefined;
}

export interface PodAttachmentRef {
  /** the pod's netns path (/var/run/netns/x, /proc/<pid>/ns/net) */
  netns: string;
  /** the host end of the pod's veth */
  hostName: string;
  /** the pod end's name inside its netns */
  ifname: string;
}

export interface PodInspection {
  /** the host veth of that name, or null */
  host: Link | null;
  /** the pod interface of that name, looked at only when the host veth is on the bridge */
  pod: Link | null;
  /** the pod interface's addresses (either family, with prefix) when it is the host veth's peer */
  podAddresses: string[];
}

/** What an earlier ADD of this attachment left; a fresh ADD costs one host lookup. */
export function inspectPod(ref: PodAttachmentRef & { bridgeIndex: number }): PodInspection {
  return call('pod.inspect', ref) as PodInspection;
}

/** pod.inspect that also reads the node side an ADD depends on. */
export interface PodAndNodeInspection extends PodInspection {
  /** the link named as the bridge (any type), or null when there is none */
  bridge: Link | null;
  /** its addresses, either family, every scope */
  bridgeAddrs: Address[];
  /** each asked host sysctl's value, '' when the key does not exist */
  hostSysctls: Record<string, string>;
}

/**
 * inspectPod with the bridge looked up by name first (its index then
 * decides whether the host veth is on it) and reported with its addresses,
 * plus host sysctls: everything an ADD checks before it makes the pod, read
 * from the kernel in one shim call instead of one per lookup.
 */
export function inspectPodAndNode(ref: PodAttachmentRef & { bridge: string; hostSysctls: string[] }): PodAndNodeInspection {
  const got = call('pod.inspect', { ...ref, bridgeIndex: 0 }) as Partial<PodAndNodeInspection> & PodInspection;
  return { ...got, bridge: got.bridge ?? null, bridgeAddrs: got.bridgeAddrs ?? [], hostSysctls: got.hostSysctls ?? {} };
}

export interface PodRoute {
  /** destination CIDR of either family; a /0 is that family's default route */
  dst: string;
  /** gateway of the same family; none = a direct route on the pod interface */
  gw?: string;
}

export interface PodSetup extends PodAttachmentRef {
  mtu?: number;
  /** bridge the host end joins */
  bridge: string;
  hairpin: boolean;
  /** written inside the pod's netns once its interface exists, before the addresses (slashes for dotted names) */
  sysctls?: { key: string; value: string }[];
  /** addresses with prefix, either family, e.g. 10.244.1.5/24, fd00:10:244:1::5/64 */
  addresses: string[];
  routes: PodRoute[];
  /** the pod end's MAC from its birth (six bytes, unicast); absent = the kernel's random one */
  mac?: string;
}

/**
 * Creates the pod's veth pair (peer born in the pod), joins the host end to
 * the bridge (hairpin, up), then sets the pod end's sysctls, addresses,
 * link up and routes. A host veth of that name left by an interrupted ADD
 * is replaced; an interface of that name in the pod that is not its peer
 * fails with 'ifname-taken'. On failure nothing of the pair is left.
 */
export function setupPod(spec: PodSetup): { host: Link; pod: Link } {
  return call('pod.setup', spec) as { host: Link; pod: Link };
}

export type PodTeardown = 'host' | 'pod' | 'kept' | 'none';

/**
 * Deletes the attachment's veth: by its host end, or, without one, the pod
 * interface when it carries an address in `leased` ('kept' when it carries
 * none: it is not this attachment's). Returns once the kernel has unlisted
 * the pair; a netns that is gone or is not one counts as nothing to remove.
 * Then, if the teardown succeeded, the host routes `dropRoutes` via
 * `dropRoutesDev` are deleted where they exist (never a failure).
 */
export function teardownPod(ref: PodAttachmentRef & { leased: string[]; dropRoutes?: string[]; dropRoutesDev?: string }): PodTeardown {
  return (call('pod.teardown', ref) as { removed: PodTeardown }).removed;
}
