// The host-gw backend: no encapsulation, one route per remote node via its
// underlay address. That only works when every node shares our L2 segment,
// so leases from beyond a router are refused, not half-programmed. The IPv6
// instance (family 6) routes each lease's IPv6 subnet via its PublicIPv6.
import type { Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { Backend, BackendData, ExternalInterface, HostGwBackendConfig, Lease, ReconcileReport } from '../types.js';
import type { Cidr, Family } from '../../net/ip.js';
import { baseMetric, diffNexthops, diffRoutes, planHostGw, type RouteForm } from './plan.js';
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
  withoutServedSubnets,
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

  reconcile(leases: Lease[]): ReconcileReport {
    const remote = this.views.all(leases);
    const { ext, extCidr, own } = this;
    if (!ext || !extCidr || !own) throw new Error('HostGwBackend.reconcile called before prepare() and configure()');
    const report = emptyReport();
    const { usable, skipped } = withoutServedSubnets(remote, { family: this.family, network: this.network, own, nsOpts: this.nsOpts, log: this.log });
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
