// The host-gw backend: no encapsulation, one route per remote node via its
// underlay address. That only works when every node shares our L2 segment,
// so leases from beyond a router are refused, not half-programmed. The IPv6
// instance (family 6) routes each lease's IPv6 subnet via its PublicIPv6.
import type { Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { Backend, BackendData, ExternalInterface, HostGwBackendConfig, Lease, ReconcileReport } from '../types.js';
import { cidrContainsCidr, cidrOverlaps, parseCidr, sameNetwork, type Cidr, type Family } from '../../net/ip.js';
import { baseMetric, diffNexthops, diffRoutes, planHostGw, type RouteForm, type Skipped } from './plan.js';
import { externalView, LeaseViews } from './family.js';
import {
  checkExternal,
  emptyReport,
  errorText,
  leaseError,
  netnsOpts,
  nexthopDelEntry,
  NexthopSupport,
  planContext,
  applyEntries,
  readOwnedRoutes,
  removal,
  requireCidr,
  routeDelEntry,
  routeReplaceEntry,
  silentLogger,
  SkipLog,
  type BatchOutcome,
  type RouteDevices,
} from './common.js';

export interface HostGwBackendOptions {
  config?: HostGwBackendConfig;
  /** the cluster network of `family`: routes via the underlay to subnets inside it are ours */
  network: string;
  /** 4 (default) or 6: which half of each lease this instance routes */
  family?: Family;
  netns?: string;
  logger?: Logger;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  readonly family: Family;
  private readonly views: LeaseViews;
  private readonly network: Cidr;
  private readonly nsOpts: nl.InNetns;
  private readonly log: Logger;
  private readonly skipLog: SkipLog;
  private readonly nexthops: NexthopSupport;
  private ext?: ExternalInterface;
  private extCidr?: Cidr;
  private own?: Cidr;

  constructor(opts: HostGwBackendOptions) {
    this.family = opts.family ?? 4;
    this.views = new LeaseViews(this.family);
    this.network = requireCidr(opts.network, 'cluster network', this.family);
    this.nsOpts = netnsOpts(opts.netns);
    this.log = (opts.logger ?? silentLogger).child({ backend: 'host-gw', ...(this.family === 6 ? { family: 6 } : {}) });
    this.skipLog = new SkipLog(this.log);
    this.nexthops = new NexthopSupport(this.log);
  }

  async prepare(extAll: ExternalInterface): Promise<BackendData> {
    const ext = externalView(extAll, this.family);
    const cidr = checkExternal(ext, this.family);
    // Peers route to our pods via the address we publish; behind NAT that
    // address is not on the segment, so no route via it could work.
    if (ext.publicIP !== ext.ip) {
      throw new Error(
        `host-gw needs the public IP to be the interface address (${ext.publicIP} != ${ext.ip} on ${ext.name}); probably behind NAT — use vxlan`,
      );
    }
    this.ext = ext;
    this.extCidr = cidr;
    this.log.info({ iface: ext.name, ip: ext.ip }, 'host-gw config');
    return {};
  }

  async configure(own: Lease): Promise<{ mtu: number }> {
    if (!this.ext) throw new Error('HostGwBackend.configure called before prepare()');
    const view = this.views.of(own);
    if (!view) throw new Error(`our lease has no IPv${this.family} subnet`);
    this.own = requireCidr(view.subnet, 'own subnet', this.family);
    return { mtu: this.ext.mtu };
  }

  /**
   * A route to a subnet that an interface of this node still serves (cni0
   * keeps the old gateway while pods of the old subnet live) would replace
   * the kernel's connected route and cut the node off those pods: the lease
   * is this node's own from before an address change (host-gw leases carry
   * nothing but the address, so nothing else tells it apart), or another
   * node's on the subnet this node is moving off. It is routed once the
   * address is gone. Only an address of the SAME network counts: a host-gw
   * route displaces a connected route of equal prefix only, and a wider one
   * (docker0's 172.17.0.1/16 in a 172.16.0.0/12 cluster, an underlay address
   * inside the cluster network) keeps its route while the /24 wins for the
   * lease's pods, as it did before this check existed.
   */
  private withoutServedSubnets(remote: Lease[]): { usable: Lease[]; skipped: Skipped[] } {
    let served: { cidr: string; net: Cidr; linkIndex: number }[];
    try {
      served = nl
        .addrList({ ...this.nsOpts, family: this.family === 6 ? 'inet6' : 'inet' })
        .flatMap((a) => {
          const net = parseCidr(a.cidr, this.family);
          return net && cidrContainsCidr(this.network, net) ? [{ cidr: a.cidr, net, linkIndex: a.linkIndex }] : [];
        });
    } catch (err) {
      this.log.warn({ err: errorText(err) }, 'could not list the node\'s addresses');
      return { usable: remote, skipped: [] };
    }
    if (served.length === 0) return { usable: remote, skipped: [] };
    const usable: Lease[] = [];
    const held: { lease: Lease; on: (typeof served)[number] }[] = [];
    for (const lease of remote) {
      // remote leases are this family's views already
      const net = parseCidr(lease.subnet, this.family);
      const on = net && served.find((s) => sameNetwork(s.net, net));
      if (!on || (this.own && cidrOverlaps(this.own, net))) usable.push(lease);
      else held.push({ lease, on });
    }
    if (held.length === 0) return { usable, skipped: [] };
    // Device names for the message, read only when a lease is held back (rare): no link dump on other passes.
    let names: Map<number, string>;
    try {
      names = new Map(nl.linkList(this.nsOpts).map((l) => [l.index, l.name]));
    } catch (err) {
      this.log.warn({ err: errorText(err) }, 'could not list the node\'s addresses');
      return { usable: remote, skipped: [] };
    }
    const skipped: Skipped[] = held.map(({ lease, on }) => ({
      lease,
      reason: `subnet is still served on this node by ${names.get(on.linkIndex) ?? `link ${on.linkIndex}`} (${on.cidr}); routed once that address is gone (this node's own lease from before an address change?)`,
      error: true,
    }));
    return { usable, skipped };
  }

  reconcile(leases: Lease[]): ReconcileReport {
    const remote = this.views.all(leases);
    const { ext, extCidr, own } = this;
    if (!ext || !extCidr || !own) throw new Error('HostGwBackend.reconcile called before prepare() and configure()');
    const report = emptyReport();
    const { usable, skipped } = this.withoutServedSubnets(remote);
    const plan = planHostGw(usable, planContext(this.network, own, ext, extCidr));
    this.skipLog.record([...skipped, ...plan.skipped], report);
    const devs: RouteDevices = { underlay: ext.name };
    let current;
    try {
      current = readOwnedRoutes(ext.name, 'underlay', this.network, this.nsOpts);
    } catch (err) {
      report.errors.push(`reading routes on ${ext.name}: ${errorText(err)}`);
      return report;
    }
    this.nexthops.note(current.nexthopsUnsupported);
    const useNexthops = this.nexthops.enabled;
    const desired = plan.plans.map((p) => p.route);
    const nhDiff = useNexthops ? diffNexthops(desired, current.nexthops) : undefined;
    const form: RouteForm = nhDiff ? { kind: 'nexthop', nexthops: nhDiff.use } : { kind: 'plain' };
    const diff = diffRoutes(desired, current.routes, baseMetric(this.family), form);
    // Removals first, then every write, then the nexthops no route uses any more, all in one batch.
    const entries: nl.BatchEntry[] = [];
    const outcomes: BatchOutcome[] = [];
    for (const r of diff.remove) {
      entries.push(routeDelEntry(r, devs));
      outcomes.push(removal(`route ${r.dst}${r.gw ? ` via ${r.gw}` : ''}`));
    }
    const writes = new Map(diff.write.map((w) => [w.route.dst, w]));
    for (const p of plan.plans) {
      const w = writes.get(p.route.dst);
      if (!w) {
        report.programmed++;
        continue;
      }
      entries.push(routeReplaceEntry(p.route, devs, undefined, useNexthops));
      outcomes.push({
        ok: (rep) => {
          if (w.existed) rep.updated++;
          else rep.added++;
          rep.programmed++;
        },
        fail: (rep, err) => leaseError(rep, p.lease, 'route', err),
      });
    }
    for (const n of nhDiff?.remove ?? []) {
      entries.push(nexthopDelEntry(n, devs));
      outcomes.push(removal(`nexthop ${n.id} via ${n.gw ?? '-'}`, false));
    }
    this.nexthops.note(applyEntries(entries, outcomes, this.nsOpts, report).nexthopsUnsupported);
    return report;
  }
}
