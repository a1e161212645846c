// flannel's Node annotations: the wire contract between nodes in kube mode.
// Names and value formats are flannel's so tsflannel and flannel nodes can
// share a cluster and existing tooling keeps reading them.
import { canonicalCidr, cidrContainsCidr, parseCidr, parseIp, formatIp } from '../../net/ip.js';
import type { BackendConfig, BackendData, Lease, LeaseAttrs } from '../types.js';

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';

/** flannel's annotation names (suffixes after `<prefix>/`), IPv4 and IPv6. */
export const ANNOTATION_SUFFIXES = {
  kubeSubnetManager: 'kube-subnet-manager',
  backendType: 'backend-type',
  backendData: 'backend-data',
  backendV6Data: 'backend-v6-data',
  publicIP: 'public-ip',
  publicIPv6: 'public-ipv6',
  /** user-set: published as public-ip instead of the detected address (NAT) */
  publicIPOverwrite: 'public-ip-overwrite',
  publicIPv6Overwrite: 'public-ipv6-overwrite',
  /** user-set: read at start-up, acts like --public-ip */
  nodePublicIP: 'node-public-ip',
  nodePublicIPv6: 'node-public-ipv6',
} as const;

export type AnnotationKeys = { readonly [K in keyof typeof ANNOTATION_SUFFIXES]: string };

export class AnnotationPrefixError extends Error {
  override readonly name = 'AnnotationPrefixError';
}

// A DNS subdomain, as Kubernetes requires for the prefix of a qualified name.
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Full annotation keys for `prefix` (a trailing `/` is accepted, as flannel does). */
export function annotationKeys(prefix: string = DEFAULT_ANNOTATION_PREFIX): AnnotationKeys {
  const bare = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (!DNS_SUBDOMAIN.test(bare)) {
    throw new AnnotationPrefixError(`annotation prefix ${JSON.stringify(prefix)} is not a DNS subdomain`);
  }
  return Object.fromEntries(
    Object.entries(ANNOTATION_SUFFIXES).map(([field, suffix]) => [field, `${bare}/${suffix}`]),
  ) as AnnotationKeys;
}

/** The few Node fields leases depend on; a V1Node fits this shape. */
export interface NodeLike {
  metadata?: { name?: string; annotations?: Record<string, string> };
  spec?: { podCIDR?: string; podCIDRs?: string[] };
}

export type LeaseResult = { lease: Lease; reason?: undefined } | { lease: null; reason: string };

const BACKEND_TYPES: ReadonlySet<string> = new Set<BackendConfig['type']>(['vxlan', 'host-gw', 'wireguard']);
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** `backend-data` text: flannel writes `{"VNI":1,"VtepMAC":"..."}`, and `null` when there is none (host-gw). */
export function formatBackendData(data: BackendData): string {
  const out: BackendData = {};
  if (data.VNI !== undefined) out.VNI = data.VNI;
  if (data.VtepMAC !== undefined) out.VtepMAC = data.VtepMAC.toLowerCase();
  if (data.PublicKey !== undefined) out.PublicKey = data.PublicKey;
  return Object.keys(out).length === 0 ? 'null' : JSON.stringify(out);
}

/** Parses `backend-data`; a string is the reason it was refused. */
export function parseBackendData(text: string): BackendData | string {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'backend-data is not JSON';
  }
  if (raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) return 'backend-data is not a JSON object';
  const obj = raw as Record<string, unknown>;
  const data: BackendData = {};
  if (obj.VNI !== undefined && obj.VNI !== null) {
    if (typeof obj.VNI !== 'number' || !Number.isInteger(obj.VNI) || obj.VNI < 0 || obj.VNI > 0xffffff) {
      return 'backend-data VNI is not a 24-bit integer';
    }
    data.VNI = obj.VNI;
  }
  if (obj.VtepMAC !== undefined && obj.VtepMAC !== null) {
    if (typeof obj.VtepMAC !== 'string' || !MAC.test(obj.VtepMAC.toLowerCase())) {
      return 'backend-data VtepMAC is not a MAC address';
    }
    data.VtepMAC = obj.VtepMAC.toLowerCase();
  }
  if (obj.PublicKey !== undefined && obj.PublicKey !== null) {
    if (typeof obj.PublicKey !== 'string') return 'backend-data PublicKey is not a string';
    data.PublicKey = obj.PublicKey;
  }
  return data;
}

/** The node's IPv4 pod CIDR in network-address form, or the reason there is none. */
export function nodeIPv4PodCIDR(node: NodeLike): { cidr: string } | { reason: string } {
  const candidates = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  if (candidates.length === 0) return { reason: 'spec.podCIDR is not assigned' };
  if (candidates.length > 2) return { reason: `spec.podCIDRs has ${candidates.length} entries (at most 2 allowed)` };
  for (const text of candidates) {
    const cidr = parseCidr(text);
    if (!cidr) return { reason: `pod CIDR ${JSON.stringify(text)} is not a CIDR` };
    if (cidr.ip.family === 4) return { cidr: canonicalCidr(cidr) };
  }
  return { reason: 'the node has no IPv4 pod CIDR' };
}

/** True when IPv4 CIDR `inner` lies entirely inside `outer`. */
export function cidrContains(outer: string, inner: string): boolean {
  const o = parseCidr(outer, 4);
  const i = parseCidr(inner, 4);
  return o !== undefined && i !== undefined && cidrContainsCidr(o, i);
}

/** Builds the lease a Node advertises; null (with why) when it advertises none or garbage. */
export function leaseFromNode(node: NodeLike, prefix: string = DEFAULT_ANNOTATION_PREFIX): LeaseResult {
  const keys = annotationKeys(prefix);
  const ann = node.metadata?.annotations ?? {};
  const refuse = (reason: string): LeaseResult => ({ lease: null, reason });

  if (ann[keys.kubeSubnetManager] !== 'true') return refuse(`annotation ${keys.kubeSubnetManager} is not "true"`);
  const pod = nodeIPv4PodCIDR(node);
  if ('reason' in pod) return refuse(pod.reason);

  const backendType = ann[keys.backendType];
  if (backendType === undefined) return refuse(`annotation ${keys.backendType} is missing`);
  if (!BACKEND_TYPES.has(backendType)) return refuse(`backend type ${JSON.stringify(backendType)} is not supported`);

  const dataText = ann[keys.backendData];
  if (dataText === undefined) return refuse(`annotation ${keys.backendData} is missing`);
  const backendData = parseBackendData(dataText);
  if (typeof backendData === 'string') return refuse(backendData);
  if (backendType === 'vxlan' && backendData.VtepMAC === undefined) return refuse('vxlan backend-data has no VtepMAC');

  const ipText = ann[keys.publicIP];
  if (ipText === undefined) return refuse(`annotation ${keys.publicIP} is missing`);
  const ip = parseIp(ipText);
  if (!ip || ip.family !== 4) return refuse(`public-ip ${JSON.stringify(ipText)} is not an IPv4 address`);

  const lease: Lease = {
    subnet: pod.cidr,
    publicIP: formatIp(ip),
    backendType: backendType as BackendConfig['type'],
    backendData,
  };
  if (node.metadata?.name) lease.nodeName = node.metadata.name;
  return { lease };
}

/** The annotations a node running the kube subnet manager publishes for `attrs`. */
export function annotationsFor(attrs: LeaseAttrs, prefix: string = DEFAULT_ANNOTATION_PREFIX): Record<string, string> {
  const keys = annotationKeys(prefix);
  return {
    [keys.backendData]: formatBackendData(attrs.backendData),
    [keys.backendType]: attrs.backendType,
    [keys.kubeSubnetManager]: 'true',
    [keys.publicIP]: attrs.publicIP,
  };
}

/** The subset of `desired` whose values `current` does not already have. */
export function annotationChanges(
  current: Record<string, string> | undefined,
  desired: Record<string, string>,
): Record<string, string> {
  const changes: Record<string, string> = {};
  for (const [key, value] of Object.entries(desired)) {
    if (current?.[key] !== value) changes[key] = value;
  }
  return changes;
}
