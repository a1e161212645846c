// The host-gw backend: no encapsulation, one route per remote node via its
// underlay address. That only works when every node shares our L2 segment,
// so leases from beyond a router are refused, not half-programmed.
import type { Logger } from 'pino';
import type * as nl from '../../netlink/index.js';
import type { Backend, BackendData, ExternalInterface, HostGwBackendConfig, Lease, ReconcileReport } from '../types.js';
import type { Cidr } from '../../net/ip.js';
import { diffRoutes, planHostGw } from './plan.js';
import {
  checkExternal,
  emptyReport,
  errorText,
  leaseError,
  netnsOpts,
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
  /** the cluster network: routes via the underlay to subnets inside it are ours */
  network: string;
  netns?: string;
  logger?: Logger;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  private readonly network: Cidr;
  private readonly nsOpts: nl.InNetns;
  private readonly log: Logger;
  private readonly skipLog: SkipLog;
  private ext?: ExternalInterface;
  private extCidr?: Cidr;
  private own?: Cidr;

  constructor(opts: HostGwBackendOptions) {
    this.network = requireCidr(opts.network, 'cluster network');
    this.nsOpts = netnsOpts(opts.netns);
    this.log = (opts.logger ?? silentLogger).child({ backend: 'host-gw' });
    this.skipLog = new SkipLog(this.log);
  }

  async prepare(ext: ExternalInterface): Promise<BackendData> {
    const cidr = checkExternal(ext);
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
    this.own = requireCidr(own.subnet, 'own subnet');
    return { mtu: this.ext.mtu };
  }

  reconcile(remote: Lease[]): ReconcileReport {
    const { ext, extCidr, own } = this;
    if (!ext || !extCidr || !own) throw new Error('HostGwBackend.reconcile called before prepare() and configure()');
    const report = emptyReport();
    const plan = planHostGw(remote, planContext(this.network, own, ext, extCidr));
    this.skipLog.record(plan.skipped, report);
    const devs: RouteDevices = { underlay: ext.name };
    let current;
    try {
      current = readOwnedRoutes(ext.name, 'underlay', this.network, this.nsOpts);
    } catch (err) {
      report.errors.push(`reading routes on ${ext.name}: ${errorText(err)}`);
      return report;
    }
    const diff = diffRoutes(plan.plans.map((p) => p.route), current);
    // Removals first, then every write, all in one batch.
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
      entries.push(routeReplaceEntry(p.route, devs));
      outcomes.push({
        ok: (rep) => {
          if (w.existed) rep.updated++;
          else rep.added++;
          rep.programmed++;
        },
        fail: (rep, err) => leaseError(rep, p.lease, 'route', err),
      });
    }
    applyEntries(entries, outcomes, this.nsOpts, report);
    return report;
  }
}
