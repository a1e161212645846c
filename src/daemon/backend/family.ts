// One backend implementation for both families: a backend of family 6 sees
// each lease through its IPv6 view (flannel's IPv6Subnet, PublicIPv6 and
// BackendV6Data in the places of Subnet, PublicIP and BackendData), so the
// planning, the peer model and the kernel diff are the IPv4 code unchanged.
// Family 4 uses the lease itself: IPv4 pays nothing for this.
import type { ExternalInterface, Lease } from '../types.js';
import { formatIp, parseCidr, parseIp, type Family } from '../../net/ip.js';

/**
 * The lease as a backend of `family` reads it (IPv4: the lease itself);
 * undefined when the node has no IPv6 lease (an IPv4-only node in a dual-stack cluster gets no
 * IPv6 entries, and nothing is logged for it on every pass).
 */
export function leaseView(lease: Lease, family: Family): Lease | undefined {
  if (family === 4) return lease;
  if (!lease.ipv6Subnet) return undefined;
  const view: Lease = {
    subnet: lease.ipv6Subnet,
    publicIP: lease.publicIPv6 ?? '',
    backendType: lease.backendType,
    backendData: lease.backendV6Data ?? {},
  };
  if (lease.nodeName !== undefined) view.nodeName = lease.nodeName;
  if (lease.expiration !== undefined) view.expiration = lease.expiration;
  return view;
}

/**
 * Views of the leases one backend is handed, cached per lease object: the
 * same lease keeps the same view, so the per-lease plan cache and the peer
 * model's identity checks work for IPv6 as they do for IPv4.
 */
export class LeaseViews {
  private cache = new WeakMap<Lease, Lease | null>();

  constructor(readonly family: Family) {}

  of(lease: Lease): Lease | undefined {
    if (this.family === 4) return lease;
    let v = this.cache.get(lease);
    if (v === undefined || !current(v, lease)) {
      v = leaseView(lease, 6) ?? null;
      this.cache.set(lease, v);
    }
    return v ?? undefined;
  }

  /**
   * The views of every lease that has one; for IPv4 the list itself (a lease
   * without an IPv4 subnet is refused by the planner, as it always was).
   */
  all(leases: readonly Lease[]): Lease[] {
    if (this.family === 4) return leases as Lease[];
    const out: Lease[] = [];
    for (const l of leases) {
      const v = this.of(l);
      if (v) out.push(v);
    }
    return out;
  }
}

/**
 * Whether a cached IPv6 view still shows `lease` (a lease changed in place
 * gets a new view, so the plans made from the old one are not reused).
 */
function current(view: Lease | null, lease: Lease): boolean {
  if (view === null) return !lease.ipv6Subnet;
  return (
    view.subnet === lease.ipv6Subnet &&
    view.publicIP === (lease.publicIPv6 ?? '') &&
    view.backendType === lease.backendType &&
    // the view holds lease.backendV6Data itself (or an empty object in its place)
    view.backendData === (lease.backendV6Data ?? view.backendData) &&
    view.nodeName === lease.nodeName
  );
}

/**
 * The external interface as a backend of `family` uses it: `ip`, `cidr` and
 * `publicIP` of that family. Throws when the interface has no address of
 * that family (dual-stack needs both on the same interface, as in flannel).
 */
export function externalView(ext: ExternalInterface, family: Family): ExternalInterface {
  if (family === 4) return ext;
  const ip = ext.ipv6 ? parseIp(ext.ipv6, 6) : undefined;
  const cidr = ext.ipv6Cidr ? parseCidr(ext.ipv6Cidr, 6) : undefined;
  if (!ip || !cidr) {
    throw new Error(
      `external interface ${ext.name} has no global IPv6 address: IPv6 (EnableIPv6) needs one on the same interface as IPv4 (or pick one with --iface)`,
    );
  }
  const text = formatIp(ip);
  const pub = ext.publicIPv6 ? parseIp(ext.publicIPv6, 6) : ip;
  if (!pub) throw new Error(`public IPv6 ${JSON.stringify(ext.publicIPv6)} is not an IPv6 address`);
  return { name: ext.name, index: ext.index, mtu: ext.mtu, ip: text, cidr: `${text}/${cidr.prefix}`, publicIP: formatIp(pub) };
}
