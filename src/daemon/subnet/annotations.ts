// flannel's Node annotations: the wire contract between nodes in kube mode.
// Names and value formats are flannel's so tsflannel and flannel nodes can
// share a cluster and existing tooling keeps reading them.
import { canonicalCidr, cidrContainsCidr, parseCidr, parseIp, formatIp, type Family } from '../../net/ip.js';
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

/** Which families a lease carries: net-conf.json's EnableIPv4 / EnableIPv6. */
export interface LeaseFamilies {
  ipv4: boolean;
  ipv6: boolean;
}

/** IPv4 only: what a node gets when the config says nothing of IPv6. */
export const IPV4_ONLY: LeaseFamilies = { ipv4: true, ipv6: false };

/**
 * The node's pod CIDR of `family` in network-address form, or the reason
 * there is none. spec.podCIDRs holds one CIDR per family (at most two);
 * spec.podCIDR alone is read when podCIDRs is empty, as flannel does.
 */
export function nodePodCIDR(node: NodeLike, family: Family): { cidr: string } | { reason: string } {
  const candidates = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
  if (candidates.length === 0) return { reason: 'spec.podCIDR is not assigned' };
  if (candidates.length > 2) return { reason: `spec.podCIDRs has ${candidates.length} entries (at most 2 allowed)` };
  for (const text of candidates) {
    const cidr = parseCidr(text);
    if (!cidr) return { reason: `pod CIDR ${JSON.stringify(text)} is not a CIDR` };
    if (cidr.ip.family === family) return { cidr: canonicalCidr(cidr) };
  }
  return { reason: `the node has no IPv${family} pod CIDR` };
}

/** The node's IPv4 pod CIDR in network-address form, or the reason there is none. */
export function nodeIPv4PodCIDR(node: NodeLike): { cidr: string } | { reason: string } {
  return nodePodCIDR(node, 4);
}

/** The node's IPv6 pod CIDR in network-address form, or the reason there is none. */
export function nodeIPv6PodCIDR(node: NodeLike): { cidr: string } | { reason: string } {
  return nodePodCIDR(node, 6);
}

/** True when CIDR `inner` lies entirely inside `outer`, both of one family (IPv4 unless told). */
export function cidrContains(outer: string, inner: string, family: Family = 4): boolean {
  const o = parseCidr(outer, family);
  const i = parseCidr(inner, family);
  return o !== undefined && i !== undefined && cidrContainsCidr(o, i);
}

interface FamilyAnnotations {
  pod: { cidr: string };
  publicIP: string;
  backendData: BackendData;
}

/** One family's pod CIDR, backend data and public address from a Node; a string is the reason it was refused. */
function familyLease(node: NodeLike, keys: AnnotationKeys, family: Family, backendType: string): FamilyAnnotations | string {
  const ann = node.metadata?.annotations ?? {};
  const pod = nodePodCIDR(node, family);
  if ('reason' in pod) return pod.reason;
  const dataKey = family === 4 ? keys.backendData : keys.backendV6Data;
  const ipKey = family === 4 ? keys.publicIP : keys.publicIPv6;
  const name = family === 4 ? 'backend-data' : 'backend-v6-data';
  const dataText = ann[dataKey];
  if (dataText === undefined) return `annotation ${dataKey} is missing`;
  const backendData = parseBackendData(dataText);
  if (typeof backendData === 'string') return family === 4 ? backendData : backendData.replace('backend-data', name);
  if (backendType === 'vxlan' && backendData.VtepMAC === undefined) return `vxlan ${name} has no VtepMAC`;
  const ipText = ann[ipKey];
  if (ipText === undefined) return `annotation ${ipKey} is missing`;
  const ip = parseIp(ipText);
  if (!ip || ip.family !== family) return `${family === 4 ? 'public-ip' : 'public-ipv6'} ${JSON.stringify(ipText)} is not an IPv${family} address`;
  return { pod, publicIP: formatIp(ip), backendData };
}

/**
 * Builds the lease a Node advertises; null (with why) when it advertises
 * none or garbage. As flannel's nodeToLease, the families come from the
 * config: IPv4 reads podCIDR's IPv4 entry, backend-data and public-ip;
 * IPv6 its IPv6 entry, backend-v6-data and public-ipv6. An IPv6-only lease
 * has subnet '' and publicIP '' (the LeaseAttrs contract).
 */
export function leaseFromNode(node: NodeLike, prefix: string = DEFAULT_ANNOTATION_PREFIX, families: LeaseFamilies = IPV4_ONLY): LeaseResult {
  const keys = annotationKeys(prefix);
  const ann = node.metadata?.annotations ?? {};
  const refuse = (reason: string): LeaseResult => ({ lease: null, reason });

  if (ann[keys.kubeSubnetManager] !== 'true') return refuse(`annotation ${keys.kubeSubnetManager} is not "true"`);
  // The pod CIDR comes first: a node without one is merely not set up yet.
  for (const family of [4, 6] as const) {
    const pod = (family === 4 ? families.ipv4 : families.ipv6) ? nodePodCIDR(node, family) : undefined;
    if (pod && 'reason' in pod) return refuse(pod.reason);
  }

  const backendType = ann[keys.backendType];
  if (backendType === undefined) return refuse(`annotation ${keys.backendType} is missing`);
  if (!BACKEND_TYPES.has(backendType)) return refuse(`backend type ${JSON.stringify(backendType)} is not supported`);

  const v4 = families.ipv4 ? familyLease(node, keys, 4, backendType) : undefined;
  if (typeof v4 === 'string') return refuse(v4);
  const v6 = families.ipv6 ? familyLease(node, keys, 6, backendType) : undefined;
  if (typeof v6 === 'string') return refuse(v6);

  const lease: Lease = {
    subnet: v4?.pod.cidr ?? '',
    publicIP: v4?.publicIP ?? '',
    backendType: backendType as BackendConfig['type'],
    backendData: v4?.backendData ?? {},
  };
  if (v6) {
    lease.ipv6Subnet = v6.pod.cidr;
    lease.publicIPv6 = v6.publicIP;
    lease.backendV6Data = v6.backendData;
  }
  if (node.metadata?.name) lease.nodeName = node.metadata.name;
  return { lease };
}

/**
 * The annotations a node running the kube subnet manager publishes for
 * `attrs`: backend-data and public-ip when it has an IPv4 address,
 * backend-v6-data and public-ipv6 when it has an IPv6 one.
 */
export function annotationsFor(attrs: LeaseAttrs, prefix: string = DEFAULT_ANNOTATION_PREFIX): Record<string, string> {
  const keys = annotationKeys(prefix);
  const out: Record<string, string> = {};
  if (attrs.publicIP !== '') out[keys.backendData] = formatBackendData(attrs.backendData);
  out[keys.backendType] = attrs.backendType;
  if (attrs.publicIPv6 !== undefined) out[keys.backendV6Data] = formatBackendData(attrs.backendV6Data ?? {});
  out[keys.kubeSubnetManager] = 'true';
  if (attrs.publicIP !== '') out[keys.publicIP] = attrs.publicIP;
  if (attrs.publicIPv6 !== undefined) out[keys.publicIPv6] = attrs.publicIPv6;
  return out;
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
